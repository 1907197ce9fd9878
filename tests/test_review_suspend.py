"""ManualAccept from a deployment suspends the training's run instead of holding its process.

A real `prefect server start` (tests/prefect_server.py) and the creator's training deployment
served by a real Prefect runner in another process (``flow.serve``: each run is a fresh child
process, as a process worker starts it). The round is published and its two results sent
before the deployment runs (the plain engines, no Prefect), so the deployment's run resumes it
from the marketplace and storage. A reviewer is played through the HTTP API, as the UI's
Resume button does it. Each Resume starts the run again from the top: the test checks that
nothing is published or paid twice and that the answers given so far are replayed in order.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from decentralml.contributor import Contributor
from decentralml.contributor.procedure import contribute_once
from decentralml.creator.round import publish_round
from decentralml.creator.session import open_session
from decentralml.protocol.records import ResultSubmissionStatus, TaskStatus
from decentralml.runtime.backends import contributor_keypair, open_store
from tests.helpers import ROOT, write_config
from tests.prefect_server import AUTH, PREFECT
from tests.prefect_server import stop as stop_process

pytestmark = [pytest.mark.slow, pytest.mark.integration]
RUN = "suspended-review"
DEPLOYMENT = "creator-train-from-config/suspend-review"
TIMEOUT = 60  # seconds for one API call: the server shares two cores with TensorFlow


def _publish(tmp: Path, run: str, timeout_seconds: int) -> dict:
    """One ManualAccept round of ``run``, published, with two real results (shards 0 and 1),
    in its own marketplace and storage under ``tmp``."""
    path, config = write_config(
        tmp,
        contributors=20,  # small shards: quick training
        **{
            "task.max_assignments": 2,
            "task.pays_amount": 1000,
            "task.validation_strategy": "ManualAccept",
            "task.manual_timeout_seconds": timeout_seconds,
            "data.holdout_examples": 2000,
        },
    )
    session = open_session(config, run=run)
    market = session.creator.market
    task = market.get_task(publish_round(session, 1))
    store = open_store(config.storage)
    sent = [
        contribute_once(
            Contributor(market, store, contributor_keypair(config.marketplace, i), i), task
        )
        for i in (0, 1)
    ]
    return {"path": path, "market": market, "task_id": task.task_id,
            "sids": [receipt.submission_id for receipt in sent]}  # fmt: skip


def _start(env: dict, published: dict, run: str) -> str:
    """`prefect deployment run` of the training for ``run``; returns the flow run's id."""
    done = subprocess.run(
        [PREFECT, "deployment", "run", DEPLOYMENT, "-p", f"config_path={published['path']}",
         "-p", f"run_name={run}", "-p", "rounds=1"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return re.search(r"UUID: ([0-9a-f-]{36})", done.stdout).group(1)


@pytest.fixture(scope="module")
def served(prefect_server) -> dict:
    """The training deployment, served by a runner in its own process."""
    script = "from flows.creator import train_from_config as f; f.serve(name='suspend-review')"
    runner = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env={**prefect_server, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not _post(prefect_server, "/deployments/filter"):
            assert time.monotonic() < deadline, "the deployment was not served in 120 s"
            time.sleep(1)
        yield prefect_server
    finally:
        stop_process(runner)


def _answered(send) -> httpx.Response:
    """A request, sent again while the server answers 503: Prefect's server says so when its
    database is busy (CI runs two test workers on 2 cores) and rolls the request back, and
    Prefect's own client retries it the same way (PREFECT_CLIENT_MAX_RETRIES)."""
    for wait in (1, 2, 4, 8, None):
        response = send()
        if response.status_code != 503 or wait is None:
            response.raise_for_status()
            return response
        time.sleep(wait)
    raise AssertionError("unreachable")


def _post(env: dict, path: str, body: dict | None = None):
    url = f"{env['PREFECT_API_URL']}{path}"
    return _answered(lambda: httpx.post(url, json=body or {}, auth=AUTH, timeout=TIMEOUT)).json()


def _flow_run(env: dict, run_id: str) -> dict:
    url = f"{env['PREFECT_API_URL']}/flow_runs/{run_id}"
    return _answered(lambda: httpx.get(url, auth=AUTH, timeout=TIMEOUT)).json()


def _suspended(env: dict, run_id: str, key: str, timeout: float = 300) -> dict:
    """The run once it is Suspended on the review question ``key``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = _flow_run(env, run_id)
        state = run["state"]
        if state["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
            raise AssertionError(f"the run ended {state['name']}: {state['message']}")
        if state["name"] == "Suspended" and state["state_details"]["pause_key"] == key:
            return run
        assert state["name"] != "Paused", "the run paused: its process waits for the reviewer"
        time.sleep(1)
    raise AssertionError(f"the run did not suspend on {key} in {timeout} s: {state}")


def _form_text(env: dict, run: dict) -> str:
    key = run["state"]["state_details"]["run_input_keyset"]["description"]
    response = httpx.get(f"{env['PREFECT_API_URL']}/flow_runs/{run['id']}/input/{key}", auth=AUTH)
    response.raise_for_status()
    return response.json()


def _states_of_subflows(env: dict, run: str, timeout: float = 30) -> set[str]:
    """The state types of the training's subflow runs (named after ``run``), once none is
    Running."""
    deadline = time.monotonic() + timeout
    while True:
        runs = _post(env, "/flow_runs/filter")
        states = {r["state_type"] for r in runs if r["name"].startswith(f"{run}-")}
        if "RUNNING" not in states or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def _resume(env: dict, run_id: str, decisions: list[dict]) -> None:
    result = _post(env, f"/flow_runs/{run_id}/resume", {"run_input": {"decisions": decisions}})
    assert result["status"] == "ACCEPT", result


def _final(env: dict, run_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = _flow_run(env, run_id)
        if run["state"]["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
            return run
        time.sleep(1)
    raise AssertionError(f"the run did not finish in {timeout} s")


def test_the_review_suspends_the_deployment_run_and_a_resume_settles_it_once(
    served, tmp_path
) -> None:
    published = _publish(tmp_path, RUN, timeout_seconds=600)
    market, task_id, (good, bad) = published["market"], published["task_id"], published["sids"]
    run = {"id": _start(served, published, RUN)}
    first = f"review-task-{task_id}-{good}-{bad}-1"  # the round's first question

    # Suspended, not Paused: no process waits for the reviewer.
    run = _suspended(served, run["id"], first)
    assert f"Task {task_id}: 2 submission(s) await your decision" in _form_text(served, run)
    assert run["state"]["state_details"]["pause_reschedule"] is True
    # The attempt's subflows (the training's, the round's) end too: none shows Running.
    assert _states_of_subflows(served, RUN) == {"CANCELLED"}
    pending = {market.get_submission(s).status for s in (good, bad)}
    assert pending == {ResultSubmissionStatus.PendingValidation}

    # A refused answer: the rerun replays it, refuses it again and asks the next question.
    _resume(served, run["id"], [{"submission_id": 999, "accept": True}])
    again = _suspended(served, run["id"], f"review-task-{task_id}-{good}-{bad}-2")
    assert "refused: submission 999 is not pending review" in _form_text(served, again)

    answer = [
        {"submission_id": good, "accept": True, "reason": "checked the curves"},
        {"submission_id": bad, "accept": False, "reason": "not from our data"},
    ]
    _resume(served, run["id"], answer)
    final = _final(served, run["id"])
    assert final["state"]["type"] == "COMPLETED", final["state"]

    [task] = [
        t for t in market.list_tasks(open_only=False) if f"/runs/{RUN}/" in t.spec.assets_path
    ]
    assert task.task_id == task_id and task.status is TaskStatus.Completed  # never republished
    accepted, rejected = market.get_submission(good), market.get_submission(bad)
    assert accepted.status is ResultSubmissionStatus.Accepted and accepted.paid == 500
    assert rejected.status is ResultSubmissionStatus.Rejected and rejected.paid == 0
    assert rejected.reason == "not from our data"
    assert market.get_task(task_id).refunded == 500  # paid once: 500 + 500 refunded = escrow


def test_an_unanswered_review_settles_with_the_default_and_fails_with_the_rounds_message(
    served, tmp_path
) -> None:
    """Nobody answers: at ``task.manual_timeout_seconds`` Prefect itself resumes the run (an
    automation the review leaves behind), whose rerun applies ``task.manual_default``."""
    run = "unanswered-review"
    published = _publish(tmp_path, run, timeout_seconds=15)
    market, task_id, sids = published["market"], published["task_id"], published["sids"]
    run_id = _start(served, published, run)
    _suspended(served, run_id, f"review-task-{task_id}-{'-'.join(map(str, sids))}-1")
    final = _final(served, run_id)
    assert final["state"]["type"] == "FAILED", final["state"]
    assert "no result accepted: 2 rejected, 0 deferred" in final["state"]["message"]
    for sid in sids:
        submission = market.get_submission(sid)
        assert submission.status is ResultSubmissionStatus.Rejected and submission.paid == 0
        assert submission.reason == "no decision before the timeout (default: reject)"
    assert market.get_task(task_id).refunded == 1000
    owned = [a for a in _post(served, "/automations/filter") if str(run_id) in json.dumps(a)]
    assert owned == []  # the resumer is gone with the review (other tests' may remain)
