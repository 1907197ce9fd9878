"""A contributor's commitment and result (commit-reveal): the same on every backend."""

from __future__ import annotations

import pytest

from decentralml.protocol.errors import (
    AlreadyCommitted,
    InvalidResult,
    NotAssignee,
    NotCommitted,
    ResultAlreadySent,
    TaskNotOpen,
)
from decentralml.protocol.records import ResultSubmissionStatus, TaskResult
from tests.helpers import commit_and_send
from tests.marketplace_contract.backends import Backend, People, commitment_of, result, state

# --- the result ----------------------------------------------------------------------------------


def test_a_result_only_from_the_assignee_and_only_once(backend: Backend, people: People) -> None:
    market, alice, bob = backend.market, people.alice, people.bob
    task_id = market.create_task(alice, backend.spec())
    sid = market.assign_task(bob, task_id)
    with pytest.raises(NotAssignee):
        market.send_task_result(people.charlie, sid, result())
    with pytest.raises(NotAssignee):
        market.send_task_result(alice, sid, result())
    assert market.get_submission(sid).status is ResultSubmissionStatus.Assigned
    commit_and_send(market, bob, sid, result(accuracy=0.875))
    stored = market.get_submission(sid)
    assert stored.status is ResultSubmissionStatus.PendingValidation
    assert stored.result == result(accuracy=0.875)
    with pytest.raises(ResultAlreadySent):
        market.send_task_result(bob, sid, result(accuracy=0.5))
    assert market.get_submission(sid).result == result(accuracy=0.875)


def test_no_result_after_expiry(backend: Backend, people: People) -> None:
    market, bob = backend.market, people.bob
    task_id = market.create_task(people.alice, backend.spec(expires_in=10))
    sid = market.assign_task(bob, task_id)
    market.commit_result(bob, sid, commitment_of(bob))
    backend.writes_land_at(market.get_task(task_id).spec.expiration_block)
    with pytest.raises(TaskNotOpen):
        market.send_task_result(bob, sid, result())
    assert market.get_submission(sid).result is None


def test_no_result_on_a_closed_task(backend: Backend, people: People) -> None:
    market, alice, bob = backend.market, people.alice, people.bob
    task_id = market.create_task(alice, backend.spec(pays=300 * backend.unit))
    sid = market.assign_task(bob, task_id)
    market.commit_result(bob, sid, commitment_of(bob))
    assert market.close_task(alice, task_id) == 300 * backend.unit
    with pytest.raises(TaskNotOpen):
        market.send_task_result(bob, sid, result())


@pytest.mark.parametrize(
    ("num_examples", "metrics"),
    [(0, {}), (-5, {}), (2**64 - 1, {}), (10, {"loss": float("nan")})],
    ids=["no-examples", "negative", "beyond-sqlite", "nan-metric"],
)
def test_unusable_result_numbers_are_refused_before_anything_is_recorded(
    backend: Backend, people: People, num_examples: int, metrics: dict[str, float]
) -> None:
    market, bob = backend.market, people.bob
    task_id = market.create_task(people.alice, backend.spec(pays=100 * backend.unit, slots=1))
    sid = market.assign_task(bob, task_id)
    market.commit_result(bob, sid, commitment_of(bob))
    before = state(backend, bob)
    with pytest.raises(InvalidResult):
        market.send_task_result(
            bob, sid, TaskResult("memory://r", "ab" * 32, num_examples, metrics)
        )
    assert state(backend, bob) == before
    assert market.get_submission(sid).status is ResultSubmissionStatus.Assigned


# --- the commitment ------------------------------------------------------------------------------


def test_a_result_needs_a_commitment_first(backend: Backend, people: People) -> None:
    market, bob = backend.market, people.bob
    task_id = market.create_task(people.alice, backend.spec())
    sid = market.assign_task(bob, task_id)
    before = state(backend, bob)
    with pytest.raises(NotCommitted, match="commit_result"):
        market.send_task_result(bob, sid, result())
    assert state(backend, bob) == before  # refused before anything (a fee too) is spent
    market.commit_result(bob, sid, commitment_of(bob))
    committed = market.get_submission(sid)
    assert (committed.commitment, committed.commit_order) == (commitment_of(bob), 0)
    assert committed.status is ResultSubmissionStatus.Assigned and committed.result is None
    market.send_task_result(bob, sid, result())
    assert market.get_submission(sid).result == result()


def test_a_result_must_match_the_commitment(backend: Backend, people: People) -> None:
    market, bob = backend.market, people.bob
    task_id = market.create_task(people.alice, backend.spec())
    sid = market.assign_task(bob, task_id)
    market.commit_result(bob, sid, commitment_of(bob, "cd" * 32))
    with pytest.raises(InvalidResult, match="does not match the submission's commitment"):
        market.send_task_result(bob, sid, result())  # sha256 "ab" * 32
    assert market.get_submission(sid).result is None
    revealed = TaskResult("memory://r", "CD" * 32, 600)  # the digest in upper case is the same
    market.send_task_result(bob, sid, revealed)
    assert market.get_submission(sid).result == revealed


def test_a_copied_commitment_is_useless_to_the_copier(backend: Backend, people: People) -> None:
    """Charlie copies Bob's commitment (public) and then Bob's result record: the commitment
    binds Bob's key, so Charlie's reveal of the same digest does not match it."""
    market, bob, charlie = backend.market, people.bob, people.charlie
    task_id = market.create_task(people.alice, backend.spec())
    bob_sid = market.assign_task(bob, task_id)
    charlie_sid = market.assign_task(charlie, task_id)
    market.commit_result(bob, bob_sid, commitment_of(bob))
    copied = market.get_submission(bob_sid).commitment
    market.commit_result(charlie, charlie_sid, copied)  # the form is valid: it is recorded
    market.send_task_result(bob, bob_sid, result())
    with pytest.raises(InvalidResult, match="does not match"):
        market.send_task_result(charlie, charlie_sid, market.get_submission(bob_sid).result)
    with pytest.raises(AlreadyCommitted):  # nor can Charlie re-commit to the copied bytes
        market.commit_result(charlie, charlie_sid, commitment_of(charlie))


def test_only_the_assignee_commits_in_any_spelling(backend: Backend, people: People) -> None:
    market, alice, bob = backend.market, people.alice, people.bob
    task_id = market.create_task(alice, backend.spec())
    sid = market.assign_task(backend.respelled(bob, 2), task_id)
    for stranger in (people.charlie, alice):
        with pytest.raises(NotAssignee):
            market.commit_result(stranger, sid, commitment_of(stranger))
    assert market.get_submission(sid).commitment == ""
    market.commit_result(backend.respelled(bob, 0), sid, commitment_of(bob))  # any spelling
    assert market.get_submission(sid).commitment == commitment_of(backend.respelled(bob, 2))


def test_a_commitment_is_made_once_and_an_identical_repeat_is_a_no_op(
    backend: Backend, people: People
) -> None:
    market, bob = backend.market, people.bob
    task_id = market.create_task(people.alice, backend.spec())
    sid = market.assign_task(bob, task_id)
    market.commit_result(bob, sid, commitment_of(bob))
    before = state(backend, bob)
    market.commit_result(bob, sid, commitment_of(bob))  # a retried step
    assert state(backend, bob) == before
    with pytest.raises(AlreadyCommitted):
        market.commit_result(bob, sid, commitment_of(bob, "cd" * 32))
    assert state(backend, bob) == before
    market.send_task_result(bob, sid, result())
    with pytest.raises(ResultAlreadySent):
        market.commit_result(bob, sid, commitment_of(bob))
    stored = market.get_submission(sid)
    assert stored.commitment == commitment_of(bob) and stored.commit_order == 0


@pytest.mark.parametrize(
    "bad", ["", "ab" * 31, "AB" * 32, "ab" * 32 + "00", "zz" * 32, " " + "ab" * 31 + "a"]
)
def test_malformed_commitments_are_refused(backend: Backend, people: People, bad: str) -> None:
    market, bob = backend.market, people.bob
    task_id = market.create_task(people.alice, backend.spec())
    sid = market.assign_task(bob, task_id)
    before = state(backend, bob)
    with pytest.raises(InvalidResult, match="64 lowercase hex"):
        market.commit_result(bob, sid, bad)
    assert state(backend, bob) == before
    assert market.get_submission(sid).commitment == ""


def test_no_commitment_after_expiry_or_close(backend: Backend, people: People) -> None:
    market, alice, bob = backend.market, people.alice, people.bob
    expiring = market.create_task(alice, backend.spec(expires_in=20))
    closed = market.create_task(alice, backend.spec(round_number=1))
    late = market.assign_task(bob, expiring)
    shut = market.assign_task(bob, closed)
    market.close_task(alice, closed)
    with pytest.raises(TaskNotOpen):
        market.commit_result(bob, shut, commitment_of(bob))
    backend.writes_land_at(market.get_task(expiring).spec.expiration_block)
    with pytest.raises(TaskNotOpen):
        market.commit_result(bob, late, commitment_of(bob))
    assert market.get_submission(late).commitment == ""
    assert market.get_submission(late).commit_order is None


def test_commit_order_spans_submissions_and_tasks(backend: Backend, people: People) -> None:
    """Commitments are numbered marketplace-wide in the order they were made; a repeat takes
    no new number."""
    market, alice, bob, charlie = backend.market, people.alice, people.bob, people.charlie
    first = market.create_task(alice, backend.spec(round_number=1))
    second = market.create_task(alice, backend.spec(round_number=2))
    bob_1 = market.assign_task(bob, first)
    charlie_1 = market.assign_task(charlie, first)
    bob_2 = market.assign_task(bob, second)
    assert market.get_submission(bob_1).commit_order is None
    backend.advance(1)
    market.commit_result(bob, bob_2, commitment_of(bob))
    market.commit_result(charlie, charlie_1, commitment_of(charlie))
    backend.advance(2)
    market.commit_result(bob, bob_1, commitment_of(bob, "cd" * 32))
    market.commit_result(bob, bob_2, commitment_of(bob))  # a repeat takes no new number
    orders = {sid: market.get_submission(sid).commit_order for sid in (bob_1, charlie_1, bob_2)}
    assert orders == {bob_2: 0, charlie_1: 1, bob_1: 2}
