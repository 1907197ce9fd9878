"""How a task ends: closed by its creator or expired, and what is refunded (or, without
escrow, no longer promised). The same on every backend; balances are net of fees."""

from __future__ import annotations

import pytest

from decentralml.protocol.errors import PendingResults, TaskNotOpen, VerdictAlreadyGiven
from decentralml.protocol.records import ResultSubmissionStatus, TaskStatus
from tests.marketplace_contract.backends import Backend, People, with_results


def test_close_refunds_exactly_what_was_not_paid(backend: Backend, people: People) -> None:
    market, U, alice, bob = backend.market, backend.unit, people.alice, people.bob
    books = backend.books(alice, bob)
    task_id, (bob_sid, charlie_sid) = with_results(
        backend, alice, bob, people.charlie, pays=300 * U + 1, slots=3
    )
    market.accept(alice, bob_sid)
    market.reject(alice, charlie_sid, "too few examples")
    assert market.close_task(alice, task_id) == 200 * U + 1
    assert market.close_task(alice, task_id) == 0
    assert books.net(alice) == -backend.cost(paid=100 * U)
    assert books.net(bob) == 100 * U
    task = market.get_task(task_id)
    assert (task.status, task.paid, task.refunded) == (TaskStatus.Completed, 100 * U, 200 * U + 1)
    backend.assert_escrow(0)
    assert market.list_tasks() == []


def test_a_task_closed_without_payment_is_withdrawn(backend: Backend, people: People) -> None:
    market, U, alice = backend.market, backend.unit, people.alice
    books = backend.books(alice)
    task_id = market.create_task(alice, backend.spec(pays=300 * U))
    market.assign_task(people.bob, task_id)  # assigned but no result: nothing to wait for
    assert market.close_task(alice, task_id) == 300 * U
    assert market.get_task(task_id).status is TaskStatus.Withdrawn
    assert books.net(alice) == 0


def test_close_is_refused_while_results_await_a_verdict(backend: Backend, people: People) -> None:
    market, U, alice = backend.market, backend.unit, people.alice
    books = backend.books(alice)
    task_id, (bob_sid, charlie_sid) = with_results(backend, alice, people.bob, people.charlie)
    with pytest.raises(PendingResults, match=rf"\[{bob_sid}, {charlie_sid}\]"):
        market.close_task(alice, task_id)
    market.accept(alice, bob_sid)
    with pytest.raises(PendingResults, match=rf"\[{charlie_sid}\]"):
        market.close_task(alice, task_id)
    market.reject(alice, charlie_sid, "late")
    assert market.close_task(alice, task_id) == 200 * U
    assert books.net(alice) == -backend.cost(paid=100 * U)


def test_expiry_finishes_a_task_without_pending_results(backend: Backend, people: People) -> None:
    market, U, alice = backend.market, backend.unit, people.alice
    books = backend.books(alice)
    first, (sid,) = with_results(backend, alice, people.bob, pays=300 * U, expires_in=10)
    market.assign_task(people.charlie, first)  # never sends a result
    second = market.create_task(alice, backend.spec(pays=50 * U, expires_in=15))
    market.accept(alice, sid)
    backend.advance_to(market.get_task(first).spec.expiration_block)
    assert books.net(alice) == -backend.cost(paid=100 * U, promised=50 * U)
    task = market.get_task(first)
    assert (task.status, task.refunded) == (TaskStatus.Completed, 200 * U)
    assert market.get_task(second).status is TaskStatus.Created
    assert market.close_task(alice, first) == 0
    backend.advance_to(market.get_task(second).spec.expiration_block)
    with pytest.raises(TaskNotOpen):
        market.assign_task(people.dave, second)
    task = market.get_task(second)
    assert (task.status, task.paid, task.refunded) == (TaskStatus.Withdrawn, 0, 50 * U)
    assert books.net(alice) == -backend.cost(paid=100 * U)
    backend.assert_escrow(0)
    assert market.list_tasks() == []


def test_expiry_waits_for_pending_verdicts(backend: Backend, people: People) -> None:
    market, U, alice, bob = backend.market, backend.unit, people.alice, people.bob
    books = backend.books(alice, bob)
    task_id, (bob_sid, charlie_sid) = with_results(
        backend, alice, bob, people.charlie, pays=300 * U, expires_in=10
    )
    backend.advance_to(market.get_task(task_id).spec.expiration_block + 5)
    assert books.net(alice) == -backend.cost(paid=0, promised=300 * U)  # kept for the verdicts
    assert market.get_task(task_id).status is TaskStatus.InProgress
    assert market.list_tasks() == []
    with pytest.raises(TaskNotOpen):
        market.assign_task(people.dave, task_id)
    assert market.accept(alice, bob_sid) == 100 * U
    assert books.net(alice) == -backend.cost(paid=100 * U, promised=200 * U)
    market.reject(alice, charlie_sid, "late validation failed")
    task = market.get_task(task_id)
    assert (task.status, task.paid, task.refunded) == (TaskStatus.Completed, 100 * U, 200 * U)
    assert books.net(alice) == -backend.cost(paid=100 * U)
    assert books.net(bob) == 100 * U
    backend.assert_escrow(0)


def test_results_left_unjudged_past_the_review_grace_are_paid_and_the_rest_refunded(
    backend: Backend, people: People
) -> None:
    """A task that expired with a pending result kept its escrow forever. Now, like MTurk's
    auto-approval, a backend with a review grace pays such a result once the grace is over."""
    grace = backend.review_grace
    if grace is None:
        pytest.skip(f"{backend.name} has no review grace (nothing escrowed to pay from)")
    market, U, alice, bob = backend.market, backend.unit, people.alice, people.bob
    books = backend.books(alice, bob)
    task_id, (bob_sid, charlie_sid) = with_results(
        backend, alice, bob, people.charlie, pays=300 * U, expires_in=10
    )
    expiry = market.get_task(task_id).spec.expiration_block
    backend.writes_land_at(expiry + grace - 1)  # expired, still within the creator's grace
    assert market.get_submission(bob_sid).status is ResultSubmissionStatus.PendingValidation
    market.reject(alice, charlie_sid, "checked in time: refused")
    backend.advance_to(expiry + grace)
    paid = market.get_submission(bob_sid)
    assert (paid.status, paid.paid) == (ResultSubmissionStatus.Accepted, 100 * U)
    assert paid.reason == (
        f"not judged within {grace} blocks after the task expired: accepted and paid"
    )
    task = market.get_task(task_id)
    assert (task.status, task.paid, task.refunded) == (TaskStatus.Completed, 100 * U, 200 * U)
    assert books.net(bob) == 100 * U
    assert books.net(alice) == -backend.cost(paid=100 * U)
    backend.assert_escrow(0)
    with pytest.raises(VerdictAlreadyGiven):
        market.reject(alice, bob_sid, "too late to refuse")


def test_without_a_review_grace_an_unjudged_result_waits_for_its_creator(
    backend: Backend, people: People
) -> None:
    if backend.review_grace is not None:
        pytest.skip(f"{backend.name} pays unjudged results after {backend.review_grace} blocks")
    market, U, alice = backend.market, backend.unit, people.alice
    task_id, (sid,) = with_results(backend, alice, people.bob, expires_in=5)
    backend.advance_to(market.get_task(task_id).spec.expiration_block + 20)
    assert market.get_submission(sid).status is ResultSubmissionStatus.PendingValidation
    assert market.get_task(task_id).status is TaskStatus.InProgress
    assert market.accept(alice, sid) == 100 * U
    assert market.get_task(task_id).status is TaskStatus.Completed
