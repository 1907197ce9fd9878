"""A creator killed with SIGKILL at any step of a round, then run again, finishes the training:
the open round is resumed (not published and escrowed again), nobody is paid twice, and the
weights that were paid for are never lost (they are checkpointed before the settlement).

The creator runs as ``decentralml train`` in a subprocess; ``DECENTRALML_CRASH_AT`` makes it
kill itself at a named step (decentralml/runtime/crashpoints.py). Contributor agents run in
threads of the test process throughout, as they would on their own machines.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from decentralml.contributor import Contributor
from decentralml.creator import FINISHED
from decentralml.marketplace.embedded import EmbeddedMarketplace
from decentralml.protocol.records import ResultSubmissionStatus, TaskStatus
from decentralml.runtime.backends import contributor_keypair, open_store
from flows.contributor import run_agent
from tests.helpers import ROOT, write_config

pytestmark = [pytest.mark.slow]

ROUNDS, CONTRIBUTORS, PAYS = 2, 2, 1_000_000


def creator_process(path, crash_at: str | None) -> subprocess.CompletedProcess:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(ROOT)}
    env.pop("DECENTRALML_CRASH_AT", None)
    if crash_at:
        env["DECENTRALML_CRASH_AT"] = crash_at
    command = [sys.executable, "-m", "decentralml_cli", "train", "--config", str(path)]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize(
    "crash_at", ["publishing", "published", "reviewed", "checkpointed", "settled"]
)
def test_a_killed_creator_resumes_and_pays_each_result_once(tmp_path, prefect_harness, crash_at):
    _kill_and_resume(tmp_path, crash_at, outage=False)


def _kill_and_resume(tmp_path, crash_at: str, outage: bool, strategy: str = "fedavg") -> None:
    """``decentralml train`` killed at ``crash_at`` while contributor agents keep working, then
    run again (with ``outage``, only once the marketplace is past expiry + grace): each round
    published once, each result paid once, every round checkpointed."""
    path, config = write_config(
        tmp_path,
        rounds=ROUNDS,
        contributors=CONTRIBUTORS,
        strategy=strategy,
        **{"task.max_assignments": CONTRIBUTORS, "task.pays_amount": PAYS},
    )
    market = EmbeddedMarketplace(config.marketplace.path)
    store = open_store(config.storage)
    stop = threading.Event()
    agents = [
        Contributor(market, store, contributor_keypair(config.marketplace, i), i)
        for i in range(CONTRIBUTORS)
    ]
    with ThreadPoolExecutor(CONTRIBUTORS) as pool:
        running = [pool.submit(run_agent, a, 0.2, 0, stop, ROUNDS) for a in agents]
        try:
            killed = creator_process(path, crash_at)
            assert killed.returncode == -9, killed.stderr[-2000:]
            if outage:
                if crash_at != "publishing":  # the contributors deliver while it is away
                    _wait_sent(market, 0, CONTRIBUTORS, timeout=600)
                market.advance_blocks(OUTAGE_BLOCKS)
            resumed = creator_process(path, None)
            assert resumed.returncode == 0, resumed.stderr[-3000:]
        finally:
            stop.set()
        for agent in running:
            agent.result(timeout=600)
    _assert_paid_once_and_checkpointed(market, store, config, agents)


OUTAGE_BLOCKS = 200 + 600 + 1
"""Past the default expiry (200 blocks) and review grace (600): the ledger pays by itself."""


def _wait_sent(market: EmbeddedMarketplace, task_id: int, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len([s for s in market.list_task_results(task_id) if s.result]) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"{count} results of task {task_id} not sent within {timeout} s")


@pytest.mark.parametrize(
    "crash_at", ["publishing", "published", "reviewed", "checkpointing", "checkpointed"]
)
def test_a_creator_back_after_expiry_and_grace_pays_nothing_twice(
    tmp_path, prefect_harness, crash_at
):
    """The outside crash test at every kill point: the creator is killed, stays away past
    expiry + grace (the marketplace pays the round's unjudged results by itself), and comes
    back. Each round is published once, each result paid once, every paid result's weights
    federated into a checkpoint, and the training finishes. ``checkpointing`` uses FedAvgM,
    whose momentum is checkpointed before the weights: the kill leaves half a checkpoint."""
    strategy = "fedavgm" if crash_at == "checkpointing" else "fedavg"
    _kill_and_resume(tmp_path, crash_at, outage=True, strategy=strategy)


def _assert_paid_once_and_checkpointed(market, store, config, agents) -> None:
    tasks = market.list_tasks(open_only=False)
    assert [t.spec.round_number for t in tasks] == list(range(1, ROUNDS + 1))  # none twice
    assert all(t.status in FINISHED for t in tasks)
    reward = PAYS // CONTRIBUTORS
    for task in tasks:
        results = market.list_task_results(task.task_id)
        assert [s.status for s in results] == [ResultSubmissionStatus.Accepted] * CONTRIBUTORS
        assert all(s.paid == reward for s in results)
    for agent in agents:
        assert market.balance(agent.keypair.ss58_address) == reward * ROUNDS  # paid once each
    assert market.escrow_total() == 0
    balances = market.ledger.balances()
    assert sum(balances.values()) == market.total_issuance()  # nothing created or lost
    for round_number in range(1, ROUNDS + 1):
        assert store.exists(store.checkpoint_url(config.name, round_number))


def test_a_result_landing_after_the_wait_is_judged_in_the_same_settlement(
    tmp_path, prefect_harness
):
    """The finding: a result arriving between the end of the wait and the settlement made the
    settlement fail ("task 0 has results awaiting a verdict"), nobody was paid. A contributor
    killed mid-training leaves its slot empty: the round settles with the others."""
    import numpy as np

    from decentralml.contributor import assign, result_url
    from decentralml.creator.session import open_session
    from decentralml.io.weights import encode
    from decentralml.protocol.records import TaskResult, Verdict
    from flows.creator import publish, run_round
    from tests.helpers import commit_and_send

    _, config = write_config(
        tmp_path,
        **{
            "task.max_assignments": 3,
            "round_timeout_seconds": 0.5,
            "task.validation_strategy": "ManualAccept",
        },
    )
    session = open_session(config, run="late")
    market, store = session.creator.market, session.creator.store
    task = market.get_task(publish(session, 1))
    rng = np.random.default_rng(0)

    def send(index: int, sid: int) -> None:
        worker = contributor_keypair(config.marketplace, index)
        tensors = {
            n: (t + rng.normal(0, 0.01, t.shape)).astype(t.dtype)
            for n, t in session.global_tensors.items()
        }
        artifact = store.put(result_url(task, sid), encode(tensors))
        commit_and_send(market, worker, sid, TaskResult(artifact.url, artifact.sha256, 1000))

    early = assign(market, contributor_keypair(config.marketplace, 0), task.task_id)
    late = assign(market, contributor_keypair(config.marketplace, 1), task.task_id)
    killed = assign(market, contributor_keypair(config.marketplace, 2), task.task_id)  # never sends
    send(0, early)

    def decide(candidate) -> Verdict:  # the late result lands while the creator reviews
        if market.get_submission(late).result is None:
            send(1, late)
        return Verdict(candidate.submission_id, True, "looks fine")

    report = run_round(session, 1, task.task_id, decide)
    assert sorted(report.accepted) == [early, late]
    assert market.get_submission(late).status is ResultSubmissionStatus.Accepted
    finished = market.get_task(task.task_id)
    assert finished.status in FINISHED  # the killed contributor's empty slot did not block it
    assert market.get_submission(killed).status is ResultSubmissionStatus.Assigned
    assert finished.refunded == finished.spec.pays_amount - 2 * finished.spec.reward_per_result


def test_a_crashed_training_run_closes_its_task_and_refunds(tmp_path, prefect_harness, monkeypatch):
    """The finding: a cancelled Prefect run left its task InProgress with its escrow. The
    deployment entry's state hooks close the open task when the run crashes or is cancelled
    (here a KeyboardInterrupt right after publishing, as Ctrl-C or a cancellation raises)."""
    from flows.creator import train_from_config

    path, config = write_config(tmp_path, **{"task.pays_amount": PAYS})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DECENTRALML_CRASH_AT", "published")
    monkeypatch.setenv("DECENTRALML_CRASH_MODE", "interrupt")
    with pytest.raises(KeyboardInterrupt):
        train_from_config(str(path))
    market = EmbeddedMarketplace(config.marketplace.path)
    [task] = market.list_tasks(open_only=False)
    assert (task.status, task.paid, task.refunded) == (TaskStatus.Withdrawn, 0, PAYS)
    assert market.escrow_total() == 0
