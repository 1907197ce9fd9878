"""A deployment's training run suspends instead of holding its process while it waits: for
ManualAccept's reviewer (flows/manual_review.py) and for the round's results (flows/waker.py).

A real `prefect server start` (tests/prefect_server.py) and the creator's training deployment
and the round's waker served by a real Prefect runner in another process (``serve``: each run
is a fresh child process, as a process worker starts it). The round is published before the
deployment runs (the plain engines, no Prefect), so the deployment's run resumes it from the
marketplace and storage. A reviewer is played through the HTTP API, as the UI's Resume button
does it. Each resume starts the run again from the top: the tests check that nothing is
published or paid twice and that the answers given so far are replayed in order.
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


def _manual(timeout_seconds: int) -> dict:
    return {
        "task.validation_strategy": "ManualAccept",
        "task.manual_timeout_seconds": timeout_seconds,
    }


def _publish(tmp: Path, run: str, shards: tuple[int, ...] = (0, 1), **overrides) -> dict:
    """One round of ``run`` (two slots), published in its own marketplace and storage under
    ``tmp``, with a real result from each of ``shards``."""
    path, config = write_config(
        tmp,
        contributors=20,  # small shards: quick training
        **{
            "task.max_assignments": 2,
            "task.pays_amount": 1000,
            "data.holdout_examples": 2000,
            **overrides,
        },
    )
    session = open_session(config, run=run)
    market = session.creator.market
    published = {"path": path, "config": config, "market": market,
                 "task_id": publish_round(session, 1)}  # fmt: skip
    return {**published, "sids": _contribute(published, shards)}


def _contribute(published: dict, shards: tuple[int, ...]) -> list[int]:
    """A real result from each of ``shards`` for the published round; their submission ids."""
    config, market = published["config"], published["market"]
    task, store = market.get_task(published["task_id"]), open_store(config.storage)
    sent = [
        contribute_once(
            Contributor(market, store, contributor_keypair(config.marketplace, i), i), task
        )
        for i in shards
    ]
    return [receipt.submission_id for receipt in sent]


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
    """The training deployment and the round's waker, served by a runner in its own process."""
    script = (
        "from prefect import serve\n"
        "from flows.creator import train_from_config\n"
        "from flows.waker import wait_and_resume\n"
        "serve(train_from_config.to_deployment(name='suspend-review'),\n"
        "      wait_and_resume.to_deployment(name='creator-wait-for-results'))\n"
    )
    runner = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env={**prefect_server, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while len(_post(prefect_server, "/deployments/filter")) < 2:
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


def _suspended(env: dict, run_id: str, key: str, timeout: float = 240) -> dict:
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
    published = _publish(tmp_path, RUN, **_manual(600))
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
    published = _publish(tmp_path, run, **_manual(15))
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


def _processes_of(run_id: str) -> list[int]:
    """The ids of this machine's processes running flow run ``run_id`` (the runner gives each
    run's process its id in PREFECT__FLOW_RUN_ID)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if f"PREFECT__FLOW_RUN_ID={run_id}".encode() in environ:
            found.append(int(entry.name))
    return found


def _gone(run_id: str, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while _processes_of(run_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    return not _processes_of(run_id)


def _waker_of(env: dict, run: str) -> dict:
    """The waker's flow run for ``run``'s round 1, once it runs in its own process."""
    name = f"{run}-round-1-wait-for-results"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = [r for r in _post(env, "/flow_runs/filter") if r["name"] == name]
        if found and found[0]["state_type"] == "RUNNING" and _processes_of(found[0]["id"]):
            return found[0]
        time.sleep(1)
    raise AssertionError(f"no running waker {name} in 120 s")


def test_a_round_waiting_for_results_suspends_and_its_waker_resumes_it_once(
    served, tmp_path
) -> None:
    """Issue 18, part 4: no result is in when the deployment's run reaches the wait, so the run
    suspends (its process exits) and the waker waits, without TensorFlow; contributors send
    their results, the waker resumes the run, and its rerun settles the round once."""
    run = "suspended-wait"
    published = _publish(
        tmp_path, run, shards=(), round_timeout_seconds=600, suspend_after_seconds=0
    )
    market, task_id = published["market"], published["task_id"]
    run_id = _start(served, published, run)

    suspended = _suspended(served, run_id, f"results-task-{task_id}")
    assert suspended["state"]["state_details"]["pause_reschedule"] is True
    assert _gone(run_id), "the suspended run's process is still there"
    waker = _waker_of(served, run)
    [pid] = _processes_of(waker["id"])
    assert "tensorflow" not in Path(f"/proc/{pid}/maps").read_text()  # the waker is light
    [resumer] = [a for a in _post(served, "/automations/filter") if run_id in json.dumps(a)]
    assert resumer["trigger"]["within"] == 600 + 120  # Prefect wakes it if the waker dies

    sids = _contribute(published, (0, 1))
    final = _final(served, run_id)
    assert final["state"]["type"] == "COMPLETED", final["state"]
    assert _flow_run(served, waker["id"])["state"]["type"] == "COMPLETED"

    [task] = [
        t for t in market.list_tasks(open_only=False) if f"/runs/{run}/" in t.spec.assets_path
    ]
    assert task.task_id == task_id and task.status is TaskStatus.Completed  # never republished
    for sid in sids:
        submission = market.get_submission(sid)
        assert submission.status is ResultSubmissionStatus.Accepted and submission.paid == 500
    assert market.get_task(task_id).refunded == 0  # each result paid once: 2 × 500 = escrow
    assert [a for a in _post(served, "/automations/filter") if run_id in json.dumps(a)] == []


def test_results_within_the_grace_settle_without_suspending(served, tmp_path) -> None:
    """A round whose results come within ``suspend_after_seconds`` waits for them in its
    process and never suspends: a quick round does not pay the resumed run's start-up."""
    run = "quick-wait"
    published = _publish(
        tmp_path, run, shards=(), round_timeout_seconds=600, suspend_after_seconds=300
    )
    run_id = _start(served, published, run)
    sids = _contribute(published, (0, 1))
    final = _final(served, run_id)
    assert final["state"]["type"] == "COMPLETED", final["state"]
    assert "Suspended" not in _state_names(served, run_id)
    assert {published["market"].get_submission(sid).paid for sid in sids} == {500}


def test_without_the_waker_deployment_the_round_waits_in_its_process(served, tmp_path) -> None:
    """No ``creator-wait-for-results`` deployment: one warning, and the round waits for its
    results in its own process, as before; it is not lost. The module's last test: it deletes
    the waker's deployment."""
    [waker] = [
        d for d in _post(served, "/deployments/filter") if d["name"] == "creator-wait-for-results"
    ]
    url = f"{served['PREFECT_API_URL']}/deployments/{waker['id']}"
    _answered(lambda: httpx.delete(url, auth=AUTH, timeout=TIMEOUT))
    run = "unwoken-wait"
    published = _publish(tmp_path, run, shards=(), round_timeout_seconds=600)
    run_id = _start(served, published, run)

    deadline = time.monotonic() + 240
    while not _warned(served, "waits for its results in this process"):
        assert time.monotonic() < deadline, "no warning that the round waits in its process"
        assert _flow_run(served, run_id)["state"]["name"] != "Suspended"
        time.sleep(1)
    sids = _contribute(published, (0, 1))
    final = _final(served, run_id)
    assert final["state"]["type"] == "COMPLETED", final["state"]
    assert "Suspended" not in _state_names(served, run_id)
    market = published["market"]
    assert {market.get_submission(sid).paid for sid in sids} == {500}


def _state_names(env: dict, run_id: str) -> set[str]:
    """Every state the flow run went through."""
    states = _answered(lambda: httpx.get(
        f"{env['PREFECT_API_URL']}/flow_run_states/", params={"flow_run_id": run_id},
        auth=AUTH, timeout=TIMEOUT,
    )).json()  # fmt: skip
    return {state["name"] for state in states}


def _warned(env: dict, text: str) -> bool:
    body = {"logs": {"level": {"ge_": 30}}, "sort": "TIMESTAMP_DESC", "limit": 50}
    return any(text in log["message"] for log in _post(env, "/logs/filter", body))
