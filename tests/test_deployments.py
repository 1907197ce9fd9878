"""prefect.yaml for real: a Prefect server with basic auth, the two work pools, process workers
started in another folder (a clone-like folder holding only a config), and the deployments
running rounds there: parameters override the config, and the trigger chains rounds."""

from __future__ import annotations

import os
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from decentralml.io.packaging import SETTINGS_FILE
from decentralml.marketplace.base import Marketplace
from decentralml.protocol.records import ResultSubmissionStatus, TaskStatus
from decentralml.runtime.backends import open_marketplace
from decentralml.runtime.config import RunConfig, parse_config
from tests.helpers import ROOT, small_config
from tests.prefect_server import AUTH, PREFECT
from tests.prefect_server import stop as _stop

pytestmark = [pytest.mark.slow, pytest.mark.integration]
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@pytest.fixture(scope="module")
def deployed(prefect_server) -> dict:
    """Both pools created and every deployment of prefect.yaml deployed, from the project."""
    for pool in ("decentralml-creator", "decentralml-contributors"):
        _prefect(prefect_server, "work-pool", "create", pool, "--type", "process")
    out = _prefect(prefect_server, "--no-prompt", "deploy", "--all")
    assert {"creator-train", "creator-next-round", "contributor-agent"} <= set(out.split()), out
    return prefect_server


@pytest.fixture(scope="module")
def elsewhere(deployed, tmp_path_factory) -> Iterator[Path]:
    """Another clone-like folder holding only a config (relative state paths, 3 rounds of 5
    slots, 2 epochs: the overrides below change them), and a process worker per pool started
    in yet another folder, told where to work only by DECENTRALML_WORKDIR."""
    folder = tmp_path_factory.mktemp("elsewhere")
    data = small_config(folder, rounds=3, contributors=5, **{"training.epochs": 2})
    data["marketplace"]["path"] = ".decentralml/marketplace.sqlite"
    data["storage"]["url"] = "file://.decentralml/storage"
    (folder / "config.yaml").write_text(yaml.safe_dump(data))
    worker_dir = tmp_path_factory.mktemp("worker-cwd")
    env = {**deployed, "DECENTRALML_WORKDIR": str(folder), "PYTHONPATH": str(ROOT)}
    workers = [
        subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", pool],
            env=env,
            cwd=worker_dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pool in ("decentralml-creator", "decentralml-contributors")
    ]
    try:
        yield folder
    finally:
        for worker in workers:
            _stop(worker)


def _prefect(env: dict, *args: str) -> str:
    done = subprocess.run(
        [PREFECT, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def _run_deployment(env: dict, name: str, **parameters: object) -> None:
    """`prefect deployment run NAME -p key=value ...` with the worker folder's config."""
    options = [("-p", f"{k}={v}") for k, v in {"config_path": "config.yaml", **parameters}.items()]
    _prefect(env, "deployment", "run", name, *[part for option in options for part in option])


def _api(env: dict, path: str, body: dict | None = None, auth: tuple | None = AUTH) -> list:
    response = httpx.post(f"{env['PREFECT_API_URL']}{path}", json=body or {}, auth=auth)
    response.raise_for_status()
    return response.json()


def _runs_of(env: dict, deployment: str) -> list[dict]:
    [found] = [d for d in _api(env, "/deployments/filter") if d["name"] == deployment]
    body = {
        "flow_runs": {"deployment_id": {"any_": [found["id"]]}},
        "sort": "EXPECTED_START_TIME_ASC",
    }
    return _api(env, "/flow_runs/filter", body)


def _wait_final(env: dict, deployment: str, count: int, timeout: float) -> list[dict]:
    """The deployment's flow runs, once `count` of them are final (or one failed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = _runs_of(env, deployment)
        states = [run["state_type"] for run in runs]
        if sum(s in FINAL for s in states) >= count or {"FAILED", "CRASHED"} & set(states):
            return runs
        time.sleep(1)
    raise AssertionError(f"{deployment}: {count} final runs not reached in {timeout}s: {runs}")


def _logs(env: dict, *runs: dict) -> str:
    """The last log lines of each run that did not complete: what a failed assertion shows."""
    lines = []
    for run in runs:
        if run["state_type"] != "COMPLETED":
            body = {"logs": {"flow_run_id": {"any_": [run["id"]]}}, "sort": "TIMESTAMP_DESC"}
            found = _api(env, "/logs/filter", {**body, "limit": 15})
            lines += [f"{run['name']}: {log['message'][:500]}" for log in reversed(found)]
    return "\n".join(lines)


def _events(env: dict, name: str, resource: str | None = None, related: str | None = None) -> list:
    """The server's events called ``name``, oldest first, about ``resource`` and/or related
    to ``related`` (resource ids)."""
    query: dict = {"event": {"name": [name]}, "order": "ASC"}
    if resource:
        query["resource"] = {"id": [resource]}
    if related:
        query["related"] = {"id": [related]}
    response = httpx.post(
        f"{env['PREFECT_API_URL']}/events/filter", json={"filter": query, "limit": 50}, auth=AUTH
    )
    response.raise_for_status()
    return response.json()["events"]


def _wait_event(env: dict, name: str, flow_run_id: str, timeout: float) -> dict:
    """The first event ``name`` related to a flow run, once the server has it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _events(env, name, related=f"prefect.flow-run.{flow_run_id}")
        if found:
            return found[0]
        time.sleep(1)
    raise AssertionError(f"no {name} event for flow run {flow_run_id} in {timeout}s")


def _run_tasks(market: Marketplace, run: str) -> list:
    return [t for t in market.list_tasks(open_only=False) if f"/runs/{run}/" in t.spec.assets_path]


def _market_in(folder: Path) -> Marketplace:
    """The marketplace of the worker's folder (its config's path is relative to it)."""
    config = _config_in(folder)
    return open_marketplace(config.marketplace.model_copy(
        update={"path": str(folder / config.marketplace.path)}
    ))  # fmt: skip


def _config_in(folder: Path) -> RunConfig:
    return parse_config(yaml.safe_load((folder / "config.yaml").read_text()))


def _settings(folder: Path, assets_url: str) -> dict:
    """The training settings a task's package carries (relative URL: from the worker's folder)."""
    with tarfile.open(folder / assets_url.removeprefix("file://")) as package:
        member = next(m for m in package.getmembers() if m.name.endswith(SETTINGS_FILE))
        return yaml.safe_load(package.extractfile(member).read())


def test_an_unauthenticated_client_is_refused(deployed):
    url = deployed["PREFECT_API_URL"]
    assert httpx.post(f"{url}/deployments/filter", json={}).status_code == 401
    assert httpx.post(f"{url}/deployments/filter", json={}, auth=("x", "y")).status_code == 401
    anonymous = {k: v for k, v in deployed.items() if k != "PREFECT_API_AUTH_STRING"}
    refused = subprocess.run(
        [PREFECT, "deployment", "ls"], env=anonymous, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode != 0 and "401" in refused.stdout + refused.stderr
    assert "creator-train" in _prefect(deployed, "deployment", "ls")


def test_stored_deployments_hold_no_path_of_the_deployer(deployed):
    deployments = {d["name"]: d for d in _api(deployed, "/deployments/filter")}
    stored = repr(deployments) + repr(_api(deployed, "/automations/filter"))
    for folder in {str(ROOT), str(ROOT.parent), os.getcwd(), str(Path.home())}:
        assert folder not in stored
    for deployment in deployments.values():
        assert deployment["pull_steps"] == [{"flows.pull_steps.enter_workdir": {}}]
        assert deployment["path"] is None and ".py" not in deployment["entrypoint"]
    pools = {name: d["work_pool_name"] for name, d in deployments.items()}
    assert pools == {
        "creator-train": "decentralml-creator",
        "creator-next-round": "decentralml-creator",
        "creator-wait-for-results": "decentralml-creator",
        "contributor-agent": "decentralml-contributors",
    }
    [schedule] = deployments["creator-next-round"]["schedules"]
    assert schedule["active"] is False  # shipped inactive


def test_a_worker_elsewhere_runs_a_round_with_the_run_overrides(deployed, elsewhere):
    _run_deployment(deployed, "contributor-agent/contributor-agent", shard_index=0, max_tasks=1)
    started = time.monotonic()
    _run_deployment(
        deployed,
        "creator-train-from-config/creator-train",
        rounds=1,
        contributors=1,
        epochs=1,
        run_name="overridden",
    )
    [creator] = _wait_final(deployed, "creator-train", 1, timeout=420)
    seconds = time.monotonic() - started
    [agent] = _wait_final(deployed, "contributor-agent", 1, timeout=120)
    states = (creator["state_type"], agent["state_type"])
    assert states == ("COMPLETED", "COMPLETED"), _logs(deployed, creator, agent)
    print(f"\nprefect deployment run -> settled round: {seconds:.1f} s")

    # The state is in the worker's DECENTRALML_WORKDIR, under the overridden run name.
    market = _market_in(elsewhere)
    [task] = _run_tasks(market, "overridden")  # rounds=1, not the config's 3
    assert task.status is TaskStatus.Completed
    assert task.spec.max_assignments == 1  # contributors=1, not the config's 5 slots
    assert _settings(elsewhere, task.spec.assets_path)["epochs"] == 1  # not the config's 2
    [submission] = market.list_task_results(task.task_id)
    assert submission.status is ResultSubmissionStatus.Accepted
    assert submission.paid == task.spec.pays_amount


def test_the_trigger_chains_rounds_until_the_training_is_complete(deployed, elsewhere):
    agents_before = len(_runs_of(deployed, "contributor-agent"))  # all final
    _run_deployment(deployed, "contributor-agent/contributor-agent", shard_index=0, max_tasks=2)
    _run_deployment(
        deployed,
        "creator-next-round/creator-next-round",
        rounds=2,
        contributors=1,
        epochs=1,
        run_name="chained",
    )
    runs = _wait_final(deployed, "creator-next-round", 2, timeout=600)
    assert [run["state_type"] for run in runs] == ["COMPLETED", "COMPLETED"], runs
    first, second = runs
    assert second["created_by"]["type"] == "AUTOMATION"  # started by the trigger, not by us
    # The chain stops because the last round announces nothing: once the second run's process
    # has exited (so every event it emitted was sent), the only announcement of the run is the
    # first round's, the one the trigger answered with the second run.
    _wait_event(deployed, "prefect.worker.executed-flow-run", second["id"], timeout=120)
    announced = _events(deployed, "decentralml.round.settled", resource="decentralml.run.chained")
    assert [event["payload"]["round"] for event in announced] == [1], announced
    assert f"prefect.flow-run.{first['id']}" in {
        r["prefect.resource.id"] for r in announced[0]["related"]
    }
    assert len(_runs_of(deployed, "creator-next-round")) == 2
    given = {k: v for k, v in second["parameters"].items() if v is not None}
    assert given == first["parameters"]  # the overrides carried over (unset ones as None)
    assert second["parameters"]["run_name"] == "chained"

    market = _market_in(elsewhere)
    tasks = _run_tasks(market, "chained")
    assert [t.spec.round_number for t in tasks] == [1, 2]  # rounds=2: the chain stopped
    for task in tasks:
        assert task.status is TaskStatus.Completed
        [submission] = market.list_task_results(task.task_id)
        assert submission.status is ResultSubmissionStatus.Accepted
    *_, agent = _wait_final(deployed, "contributor-agent", agents_before + 1, timeout=120)
    assert agent["parameters"]["max_tasks"] == 2 and agent["state_type"] == "COMPLETED"
