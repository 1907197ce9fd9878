"""The contributor's and creator's round helpers on a real embedded marketplace (SQLite), fast:
until now they ran only inside the slow end-to-end rounds. Retried steps must be no-ops."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from decentralml.contributor import assign, commit, find_open_task, held_submission, submit
from decentralml.creator import results_complete
from decentralml.io.storage import StoredArtifact
from decentralml.marketplace.embedded import EmbeddedMarketplace
from decentralml.ml.training import TrainingOutcome
from decentralml.protocol.accounts import contributor_dev_keypair, dev_keypair
from decentralml.protocol.errors import TaskFull
from decentralml.protocol.records import ResultSubmissionStatus, TaskSpec

ALICE = dev_keypair("Alice")
BOB, CHARLIE, DAVE = (contributor_dev_keypair(i) for i in range(3))
OUTCOME = TrainingOutcome({"000.bias": np.zeros(2, np.float32)}, 60, {"accuracy": 0.5})
ARTIFACT = StoredArtifact("memory://round-0/results/submission-0.safetensors", "ab" * 32, 10)


@pytest.fixture
def market(tmp_path: Path) -> EmbeddedMarketplace:
    market = EmbeddedMarketplace(tmp_path / "m.sqlite", block_time_seconds=1e9)
    market.fund(ALICE.ss58_address, 10_000)
    return market


_TASKS = itertools.count()


def open_task(market: EmbeddedMarketplace, slots: int = 2, expires: int = 20) -> int:
    """A new task each call: the same spec again would be a retried create of the first."""
    question = f"train {next(_TASKS)}"
    spec = TaskSpec(question, 100 * slots, slots, expires, global_weights_sha256="cd" * 32)
    return market.create_task(ALICE, spec)


def test_find_open_task_skips_done_held_and_full_tasks(market: EmbeddedMarketplace) -> None:
    assert find_open_task(market, BOB, set()) is None
    first, second, third = (open_task(market, slots=1) for _ in range(3))
    assert find_open_task(market, BOB, set()).task_id == first  # the oldest first
    assert find_open_task(market, BOB, {first}).task_id == second  # already worked on
    market.assign_task(CHARLIE, second)  # full now: no longer open
    assert find_open_task(market, BOB, {first}).task_id == third
    market.advance_blocks(20)  # every task expired
    assert find_open_task(market, BOB, set()) is None


def test_a_retried_assignment_returns_the_slot_already_held(market: EmbeddedMarketplace) -> None:
    task_id = open_task(market, slots=2)
    assert held_submission(market, BOB, task_id) is None
    sid = assign(market, BOB, task_id)
    assert held_submission(market, BOB, task_id) == sid
    assert assign(market, BOB, task_id) == sid  # retried: the same slot, not a second one
    task = market.get_task(task_id)
    assert task.assigned == 1 and task.open_slots == 1
    assign(market, CHARLIE, task_id)
    with pytest.raises(TaskFull):  # a third contributor, not a retry: refused
        assign(market, DAVE, task_id)


def test_a_retried_submit_sends_the_result_once(market: EmbeddedMarketplace) -> None:
    task = market.get_task(open_task(market))
    sid = assign(market, BOB, task.task_id)
    commit(market, BOB, sid, ARTIFACT.sha256)
    first = submit(market, BOB, task, sid, ARTIFACT, OUTCOME)
    stored = market.get_submission(sid)
    assert stored.status is ResultSubmissionStatus.PendingValidation and stored.result == first
    again = submit(market, BOB, task, sid, ARTIFACT, OUTCOME)  # retried after a crash
    assert again == first and market.get_submission(sid) == stored
    market.ledger.send_task_result(BOB.ss58_address, sid, first, 0)  # the rule itself: a no-op
    assert market.get_submission(sid) == stored


def test_results_complete_when_every_slot_has_a_result_or_time_is_up(
    market: EmbeddedMarketplace,
) -> None:
    task_id = open_task(market, slots=2, expires=20)
    task = market.get_task(task_id)
    assert not results_complete(task, [], 0)
    bob = assign(market, BOB, task_id)
    charlie = assign(market, CHARLIE, task_id)
    commit(market, BOB, bob, ARTIFACT.sha256)
    submit(market, BOB, task, bob, ARTIFACT, OUTCOME)
    submissions = market.list_task_results(task_id)
    assert not results_complete(task, submissions, 19)  # charlie may still send
    assert results_complete(task, submissions, 20)  # expired: no more can come
    commit(market, CHARLIE, charlie, ARTIFACT.sha256)
    submit(market, CHARLIE, task, charlie, ARTIFACT, OUTCOME)
    market.accept(ALICE, bob)  # a verdict does not make a result go away
    assert results_complete(task, market.list_task_results(task_id), 0)
