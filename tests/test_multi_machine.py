"""The whole multi-machine path, as its users run it (the acceptance test of deployments).

- The creator's team: one Prefect server with basic auth, the deployments of prefect.yaml, a
  process worker on the creator pool started in a folder of its own and pointed at the
  creator's working folder only by DECENTRALML_WORKDIR.
- Two contributors, strangers: `decentralml contribute` in separate processes and folders,
  configured only by environment (marketplace, key, S3 credentials; no config file), one
  reporting to a Prefect server of its own, the other in Prefect's ephemeral mode. Neither
  can reach the creator's Prefect: they share only the marketplace and the storage.
- Storage: a real S3 server (SeaweedFS); the contributors find its endpoint on the task record.
- ManualAccept: the training's deployment run suspends for the reviewer's form; the test reads
  the suspended run and its form through the API and resumes it with a decision per submission.

Checked: exactly the approved submission is paid, the other rejected with the reviewer's
reason; the runs, their states and the round's keyed artifacts read back through the API; each
contributor's runs are on its own Prefect, none on the creator's. The time from
`prefect deployment run` to the settled round is printed (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from decentralml.marketplace.embedded import EmbeddedMarketplace
from decentralml.protocol.records import ResultSubmissionStatus, TaskStatus
from tests.helpers import ROOT, small_config
from tests.prefect_server import PREFECT, start_server, stop
from tests.test_s3_round import BUCKET, KEY, SECRET, WeedServer, _create_bucket, weed_binary

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CONTRIBUTOR_KEYS = ("//Bob", "//Charlie")
REJECTION = "reviewer: these weights do not match our data"


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> Iterator[WeedServer]:
    binary = weed_binary()
    server = WeedServer(binary, tmp_path_factory.mktemp("weed") / "data")
    saved = {name: os.environ.get(name) for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET)
    server.start()
    try:
        server.wait_until_serving()
        _create_bucket(server.endpoint_url)
        yield server
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def contributor_prefect(tmp_path_factory) -> Iterator[dict]:
    """The first contributor's own Prefect server: no auth, nothing shared with the creator."""
    server, env = start_server(tmp_path_factory.mktemp("contributor-prefect"), auth=None)
    try:
        yield env
    finally:
        stop(server)


def _creator_folder(root: Path, s3: WeedServer, market_path: Path) -> Path:
    """The creator's working folder: a config and nothing else (state on S3 and the shared
    marketplace). ManualAccept, 2 slots, 1 round of 1 epoch."""
    folder = root / "creator"
    folder.mkdir()
    data = small_config(folder, contributors=2, rounds=1)
    data["name"] = "mm"
    data["task"].update(
        max_assignments=2, pays_amount=1000, validation_strategy="ManualAccept",
        manual_timeout_seconds=900,
    )  # fmt: skip
    data["marketplace"]["path"] = str(market_path)
    data["storage"] = {"url": f"s3://{BUCKET}/multi-machine", "endpoint_url": s3.endpoint_url}
    data["round_timeout_seconds"] = 600
    (folder / "config.yaml").write_text(yaml.safe_dump(data))
    return folder


def _prefect(env: dict, *args: str) -> str:
    done = subprocess.run(
        [PREFECT, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def _stranger_env(home: Path, market_path: Path, key: str) -> dict[str, str]:
    """A contributor's whole configuration: its environment. No creator's Prefect URL or
    auth string, no config file."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PREFECT_API", "PREFECT_SERVER_API"))
    }
    env.update(
        PREFECT_HOME=str(home / "prefect-home"),
        PREFECT_LOGGING_LEVEL="WARNING",
        DECENTRALML_MARKETPLACE_URL=str(market_path),
        DECENTRALML_CONTRIBUTOR_URI=key,
        AWS_ACCESS_KEY_ID=KEY,
        AWS_SECRET_ACCESS_KEY=SECRET,
        PYTHONPATH=str(ROOT),
    )
    return env


def _start_contributor(folder: Path, env: dict, index: int) -> subprocess.Popen:
    folder.mkdir()
    return subprocess.Popen(
        [sys.executable, "-m", "decentralml_cli", "contribute", "--index", str(index),
         "--max-tasks", "1"],
        cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _suspended_training(env: dict, timeout: float):
    """The creator's training run once it is Suspended for the reviewer's form (a deployment's
    run suspends: no process waits for the reviewer)."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateName,
    )

    names = FlowRunFilterStateName(any_=["Suspended"])
    suspended = FlowRunFilter(state=FlowRunFilterState(name=names))
    deadline = time.monotonic() + timeout
    with _client(env) as client:
        while time.monotonic() < deadline:
            for run in client.read_flow_runs(flow_run_filter=suspended):
                if run.name.startswith("train-from-"):
                    return run
            time.sleep(1)
    raise AssertionError(f"no training suspended for review within {timeout} s")


def _client(env: dict):
    from prefect.client.orchestration import SyncPrefectClient

    auth = env.get("PREFECT_API_AUTH_STRING")
    return SyncPrefectClient(env["PREFECT_API_URL"], auth_string=auth)


def _settings_of(env: dict):
    """Prefect's settings in this process pointed at the server of ``env`` (for the module
    functions that take no client: read_flow_run_input, resume_flow_run)."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    return temporary_settings(
        {
            PREFECT_API_URL: env["PREFECT_API_URL"],
            PREFECT_API_AUTH_STRING: env.get("PREFECT_API_AUTH_STRING"),
        }
    )


def _flow_runs(env: dict) -> dict[str, str]:
    """Flow run name -> state type; of runs sharing a name (the suspended training's first
    attempt at a round, then its resumed one), the latest."""
    from prefect.client.schemas.sorting import FlowRunSort

    with _client(env) as client:
        runs = client.read_flow_runs(sort=FlowRunSort.EXPECTED_START_TIME_ASC)
        return {run.name: run.state_type.value for run in runs}


def _wait_settled(market: EmbeddedMarketplace, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = market.list_tasks(open_only=False)
        if tasks and tasks[0].status is TaskStatus.Completed:
            return time.monotonic()
        time.sleep(0.5)
    raise AssertionError(f"the round did not settle within {timeout} s")


def test_a_round_across_trust_domains_on_s3_with_manual_review(
    tmp_path: Path, s3: WeedServer, prefect_server: dict, contributor_prefect: dict
) -> None:
    from prefect.flow_runs import resume_flow_run
    from prefect.input.run_input import read_flow_run_input

    creator_env = prefect_server
    market_path = tmp_path / "shared" / "marketplace.sqlite"
    market_path.parent.mkdir()
    creator_dir = _creator_folder(tmp_path, s3, market_path)
    _prefect(creator_env, "work-pool", "create", "decentralml-creator", "--type", "process")
    _prefect(creator_env, "--no-prompt", "deploy", "--name", "creator-train")
    worker_dir = tmp_path / "creator-worker"
    worker_dir.mkdir()
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", "decentralml-creator"],
        env={**creator_env, "DECENTRALML_WORKDIR": str(creator_dir), "PYTHONPATH": str(ROOT)},
        cwd=worker_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    own_server = {
        **_stranger_env(tmp_path / "bob", market_path, CONTRIBUTOR_KEYS[0]),
        "PREFECT_API_URL": contributor_prefect["PREFECT_API_URL"],
    }
    ephemeral = _stranger_env(tmp_path / "charlie", market_path, CONTRIBUTOR_KEYS[1])
    contributors = [
        _start_contributor(tmp_path / "bob", own_server, 0),
        _start_contributor(tmp_path / "charlie", ephemeral, 1),
    ]
    try:
        started = time.monotonic()
        _prefect(creator_env, "deployment", "run", "creator-train-from-config/creator-train",
                 "-p", "config_path=config.yaml")  # fmt: skip
        run = _suspended_training(creator_env, timeout=600)

        # The reviewer's view, read through the API: both submissions with held-out metrics.
        market = EmbeddedMarketplace(market_path)
        [task] = market.list_tasks(open_only=False)
        assert task.spec.storage_endpoint == s3.endpoint_url  # what the strangers used
        submissions = {s.worker: s for s in market.list_task_results(task.task_id)}
        assert all(s.status is ResultSubmissionStatus.PendingValidation
                   for s in submissions.values())  # fmt: skip
        keys = run.state.state_details.run_input_keyset
        with _settings_of(creator_env):
            description = read_flow_run_input(keys["description"], flow_run_id=run.id)
        rows = [line for line in description.splitlines() if line.startswith("| ")]
        ids = sorted(s.submission_id for s in submissions.values())
        assert all(any(row.startswith(f"| {sid} |") for row in rows) for sid in ids), description
        approved, refused = ids
        answer = [
            {"submission_id": approved, "accept": True, "reason": "reviewer: fine"},
            {"submission_id": refused, "accept": False, "reason": REJECTION},
        ]
        with _settings_of(creator_env):
            resume_flow_run(run.id, run_input={"decisions": answer})
        settled = _wait_settled(market, timeout=300)
        print(f"\nprefect deployment run -> settled round: {settled - started:.1f} s")
        outputs = [process.communicate(timeout=120) for process in contributors]
        creator_runs = _wait_final(creator_env, "mm-train")  # before its worker stops
    finally:
        for process in (*contributors, worker):
            stop(process)

    for process, (out, err) in zip(contributors, outputs, strict=True):
        assert process.returncode == 0 and "Traceback" not in err, err[-3000:]
        assert "contributed to 1 task(s)" in out

    paid = market.get_submission(approved)
    rejected = market.get_submission(refused)
    assert paid.status is ResultSubmissionStatus.Accepted and paid.paid == 500
    assert rejected.status is ResultSubmissionStatus.Rejected and rejected.paid == 0
    assert rejected.reason == REJECTION
    assert market.get_task(task.task_id).refunded == 500

    assert creator_runs["mm-train"] == "COMPLETED", creator_runs
    assert creator_runs[f"mm-round-1-task-{task.task_id}"] == "COMPLETED"
    assert not [name for name in creator_runs if name.startswith(("agent-", "contributor-"))]
    bob_runs = _flow_runs(contributor_prefect)
    assert (
        bob_runs.get("agent-0") == "COMPLETED"
        and bob_runs.get(f"contributor-0-task-{task.task_id}") == "COMPLETED"
    ), bob_runs

    with _client(creator_env) as client:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        [table] = client.read_latest_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["mm-round-1-submissions"]))
        )
    rows = table.data if isinstance(table.data, list) else json.loads(table.data)
    verdicts = {int(row["submission"]): row for row in rows}
    assert verdicts[approved]["verdict"] == "accepted" and verdicts[approved]["paid"] == 500
    assert verdicts[refused]["verdict"] == "rejected" and verdicts[refused]["reason"] == REJECTION
    assert httpx.get(f"{creator_env['PREFECT_API_URL']}/health").status_code == 200


def _wait_final(env: dict, name: str, timeout: float = 120) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    runs = _flow_runs(env)
    while runs.get(name) not in {"COMPLETED", "FAILED", "CRASHED"} and time.monotonic() < deadline:
        time.sleep(1)
        runs = _flow_runs(env)
    return runs
