"""Whole rounds, refusals and retries through the Protocol: the same on every backend."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from decentralml.protocol.errors import (
    AlreadyAssigned,
    InsufficientBalance,
    InvalidResult,
    InvalidTaskSpec,
    MarketplaceError,
    NotAssignee,
    NotCreator,
    PendingResults,
    ResultAlreadySent,
    TaskFull,
    TaskNotOpen,
    UnknownTask,
    VerdictAlreadyGiven,
)
from decentralml.protocol.records import ResultSubmissionStatus, TaskStatus, Verdict
from tests.marketplace_contract.backends import (
    Backend,
    People,
    commitment_of,
    result,
    state,
    with_results,
)


def test_a_round_through_the_protocol(backend: Backend, people: People) -> None:
    market, U = backend.market, backend.unit
    alice, bob, charlie = people.alice, people.bob, people.charlie
    books = backend.books(alice, bob, charlie)
    task_id, (s0, s1) = with_results(backend, alice, bob, charlie)
    assert (task_id, s0, s1) == (0, 0, 1)
    task = market.get_task(task_id)
    assert task.status is TaskStatus.InProgress and task.assigned == 2
    assert task.creator == alice.ss58_address
    assert [t.task_id for t in market.list_tasks()] == [task_id]
    assert market.get_submission(s1).result == result(str(s1))
    statuses = [s.status for s in market.list_task_results(task_id)]
    assert statuses == [ResultSubmissionStatus.PendingValidation] * 2

    paid = market.settle(alice, [Verdict(s0, True, "good"), Verdict(s1, False, "too weak")])
    assert paid == {s0: 100 * U, s1: 0}
    assert (books.net(bob), books.net(charlie)) == (100 * U, 0)
    assert books.net(alice) == -backend.cost(paid=100 * U, promised=200 * U)
    assert market.get_submission(s1).reason == "too weak"

    before = state(backend, alice, bob)
    assert market.accept(alice, s0) == 0  # a repeat writes and pays nothing
    assert state(backend, alice, bob) == before

    assert market.close_task(alice, task_id) == 200 * U
    task = market.get_task(task_id)
    assert (task.status, task.paid, task.refunded) == (TaskStatus.Completed, 100 * U, 200 * U)
    assert books.net(alice) == -backend.cost(paid=100 * U)
    assert market.list_tasks() == []
    assert market.close_task(alice, task_id) == 0


def test_refused_operations_change_nothing_and_cost_nothing(
    backend: Backend, people: People
) -> None:
    """Each refusal raises the rule's own error, and leaves every task, submission, balance
    and the backend's raw record as they were: no fee is spent on a refused write."""
    market, U = backend.market, backend.unit
    alice, bob, charlie, dave = people.alice, people.bob, people.charlie, people.dave
    poor = backend.account(10 * U, fee_allowance=False)
    books = backend.books(alice)
    busy, (bob_sid, charlie_sid) = with_results(
        backend, alice, bob, charlie, pays=300 * U, slots=2, expires_in=40
    )
    market.accept(alice, bob_sid)
    ending = market.create_task(alice, backend.spec(pays=100 * U, expires_in=3))

    def refused(*operations: tuple[type[MarketplaceError], Callable[[], object]]) -> None:
        before = state(backend, alice, bob, charlie, dave, poor)
        for error, operation in operations:
            with pytest.raises(error):
                operation()
            assert state(backend, alice, bob, charlie, dave, poor) == before, error

    refused(
        (InvalidTaskSpec, lambda: market.create_task(alice, backend.spec(expires_in=0))),
        (InvalidTaskSpec, lambda: market.create_task(alice, backend.spec(pays=0))),
        (InsufficientBalance, lambda: market.create_task(alice, backend.spec(pays=10**9 * U))),
        (InsufficientBalance, lambda: market.create_task(poor, backend.spec())),
        (AlreadyAssigned, lambda: market.assign_task(bob, busy)),
        (TaskFull, lambda: market.assign_task(dave, busy)),
        (UnknownTask, lambda: market.assign_task(dave, 99)),
        (ResultAlreadySent, lambda: market.send_task_result(bob, bob_sid, result())),
        (NotAssignee, lambda: market.send_task_result(dave, charlie_sid, result())),
        (NotAssignee, lambda: market.commit_result(dave, charlie_sid, commitment_of(dave))),
        (ResultAlreadySent, lambda: market.commit_result(bob, bob_sid, commitment_of(bob))),
        (InvalidResult, lambda: market.commit_result(bob, bob_sid, "AB" * 32)),
        (NotCreator, lambda: market.accept(bob, charlie_sid)),
        (VerdictAlreadyGiven, lambda: market.reject(alice, bob_sid, "too late")),
        (PendingResults, lambda: market.close_task(alice, busy)),
        (NotCreator, lambda: market.close_task(bob, ending)),
    )
    backend.advance_to(market.get_task(ending).spec.expiration_block + 1)
    refused(
        (TaskNotOpen, lambda: market.assign_task(dave, ending)),
        (NotCreator, lambda: market.close_task(bob, ending)),
        (PendingResults, lambda: market.close_task(alice, busy)),
    )
    assert market.get_task(ending).status is TaskStatus.Withdrawn
    assert books.net(alice) == -backend.cost(paid=150 * U, promised=150 * U)


def test_resubmitted_writes_are_not_duplicated_and_cost_nothing(
    backend: Backend, people: People
) -> None:
    """Every write retried after an unknown outcome is recognised: the same task, the same
    commitment, the same result; nothing is written, escrowed or charged twice."""
    market, alice, bob = backend.market, people.alice, people.bob
    spec = backend.spec()
    task_id = market.create_task(alice, spec)
    sid = market.assign_task(bob, task_id)
    market.commit_result(bob, sid, commitment_of(bob))
    before = state(backend, alice, bob)
    market.commit_result(bob, sid, commitment_of(bob))
    assert state(backend, alice, bob) == before
    market.send_task_result(bob, sid, result())
    before = state(backend, alice, bob)
    assert market.create_task(alice, spec) == task_id  # the same open spec: the same task
    market.send_task_result(bob, sid, result())
    assert state(backend, alice, bob) == before
    assert len(market.list_tasks(open_only=False)) == 1
