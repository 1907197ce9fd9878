"""The creator's verdicts and settlements, and what they pay: the same on every backend.

Balances are checked net of fees (``Books``); what a creator's balance lost is
``backend.cost(paid=..., promised=...)``: the rewards paid, plus what its unfinished tasks still
promise where the backend escrows it.
"""

from __future__ import annotations

import pytest

from decentralml.creator import settle_and_close
from decentralml.protocol.errors import NoResultYet, NotCreator, PendingResults, VerdictAlreadyGiven
from decentralml.protocol.records import ResultSubmissionStatus, TaskStatus, Verdict
from tests.marketplace_contract.backends import Backend, People, state, with_results


def test_only_the_creator_judges_and_closes_in_any_spelling(
    backend: Backend, people: People
) -> None:
    market, alice = backend.market, people.alice
    task_id, (sid,) = with_results(backend, alice, people.bob)
    for actor in (people.bob, people.charlie):
        with pytest.raises(NotCreator):
            market.accept(actor, sid)
        with pytest.raises(NotCreator):
            market.reject(actor, sid, "no")
        with pytest.raises(NotCreator):
            market.close_task(actor, task_id)
    assert market.get_submission(sid).status is ResultSubmissionStatus.PendingValidation
    assert market.accept(backend.respelled(alice, 2), sid) == 100 * backend.unit


def test_a_verdict_needs_a_result(backend: Backend, people: People) -> None:
    market, alice = backend.market, people.alice
    task_id = market.create_task(alice, backend.spec())
    sid = market.assign_task(people.bob, task_id)
    with pytest.raises(NoResultYet):
        market.accept(alice, sid)
    with pytest.raises(NoResultYet):
        market.reject(alice, sid, "nothing sent")


def test_a_repeated_accept_pays_once(backend: Backend, people: People) -> None:
    market, U, alice, bob = backend.market, backend.unit, people.alice, people.bob
    books = backend.books(alice, bob)
    task_id, (sid,) = with_results(backend, alice, bob, pays=300 * U + 1, slots=3)
    assert market.accept(alice, sid) == 100 * U
    before = state(backend, alice, bob)
    assert market.accept(alice, sid) == 0
    assert state(backend, alice, bob) == before  # nothing written, nothing paid
    assert books.net(bob) == 100 * U
    assert books.net(alice) == -backend.cost(paid=100 * U, promised=200 * U + 1)
    backend.assert_escrow(200 * U + 1)
    submission = market.get_submission(sid)
    assert (submission.status, submission.paid) == (ResultSubmissionStatus.Accepted, 100 * U)
    assert market.get_task(task_id).paid == 100 * U


def test_a_retried_settlement_reports_the_payments_that_landed(
    backend: Backend, people: People
) -> None:
    """Regression (a chain demo's summary showed 0 paid to each of three contributors that
    had received 10^12): a round's settlement retried after its first attempt landed pays
    nothing more, and reports what the marketplace recorded, not the retry's return."""
    market, U, alice = backend.market, backend.unit, people.alice
    task_id, (bob, charlie) = with_results(
        backend, alice, people.bob, people.charlie, pays=300 * U, slots=3
    )
    verdicts = [Verdict(bob, True, "ok"), Verdict(charlie, False, "too far")]
    market.settle(alice, verdicts, close_task_id=task_id)  # the attempt that landed
    before = state(backend, alice, people.bob)
    payments, refund = settle_and_close(market, alice, task_id, verdicts)  # the retry
    assert state(backend, alice, people.bob) == before  # nothing written, nothing paid
    assert payments == {bob: 100 * U, charlie: 0}
    assert refund == 200 * U


def test_an_accepted_result_cannot_be_rejected_nor_a_rejected_one_accepted(
    backend: Backend, people: People
) -> None:
    market, alice, bob, charlie = backend.market, people.alice, people.bob, people.charlie
    books = backend.books(bob, charlie)
    _, (bob_sid, charlie_sid) = with_results(backend, alice, bob, charlie)
    market.reject(alice, bob_sid, "weights are not finite")
    with pytest.raises(VerdictAlreadyGiven):
        market.accept(alice, bob_sid)
    market.accept(alice, charlie_sid)
    with pytest.raises(VerdictAlreadyGiven):
        market.reject(alice, charlie_sid, "changed my mind")
    assert books.net(bob) == 0
    assert books.net(charlie) == 100 * backend.unit
    assert market.get_submission(charlie_sid).status is ResultSubmissionStatus.Accepted


def test_a_rejection_records_its_reason_and_a_repeat_changes_nothing(
    backend: Backend, people: People
) -> None:
    market, alice, bob = backend.market, people.alice, people.bob
    books = backend.books(bob)
    _, (sid,) = with_results(backend, alice, bob)
    market.reject(alice, sid, "shape mismatch in dense/kernel")
    before = state(backend, alice, bob)
    market.reject(alice, sid, "second reason")
    assert state(backend, alice, bob) == before
    submission = market.get_submission(sid)
    assert submission.status is ResultSubmissionStatus.Rejected
    assert submission.reason == "shape mismatch in dense/kernel"
    assert submission.paid == 0
    assert books.net(bob) == 0


def test_settle_records_and_pays_a_batch_once(backend: Backend, people: People) -> None:
    market, U, alice = backend.market, backend.unit, people.alice
    workers = (people.bob, people.charlie, people.dave)
    books = backend.books(alice, *workers)
    task_id, (bob, charlie, dave) = with_results(backend, alice, *workers, pays=300 * U + 1)
    verdicts = [
        Verdict(bob, True, "held-out accuracy 0.91 >= 0.80"),
        Verdict(charlie, False, "held-out accuracy 0.12 is below 0.80"),
        Verdict(dave, True, "held-out accuracy 0.88 >= 0.80"),
    ]
    assert market.settle(alice, verdicts) == {bob: 100 * U, charlie: 0, dave: 100 * U}
    before = state(backend, alice, *workers)
    assert market.settle(alice, verdicts) == {bob: 0, charlie: 0, dave: 0}  # a retry pays 0
    assert state(backend, alice, *workers) == before
    assert [books.net(worker) for worker in workers] == [100 * U, 0, 100 * U]
    assert market.get_submission(bob).reason == "held-out accuracy 0.91 >= 0.80"
    assert market.get_submission(charlie).reason == "held-out accuracy 0.12 is below 0.80"
    assert market.close_task(alice, task_id) == 100 * U + 1
    assert books.net(alice) == -backend.cost(paid=200 * U)


def test_settle_is_all_or_nothing(backend: Backend, people: People) -> None:
    market, alice, bob = backend.market, people.alice, people.bob
    _, (bob_sid, charlie_sid) = with_results(backend, alice, bob, people.charlie)
    market.reject(alice, charlie_sid, "corrupt file")
    before = state(backend, alice, bob)
    with pytest.raises(VerdictAlreadyGiven):
        market.settle(
            alice, [Verdict(bob_sid, True, "ok"), Verdict(charlie_sid, True, "ok after all")]
        )
    with pytest.raises(NotCreator):
        market.settle(bob, [Verdict(bob_sid, True, "self-approved")])
    with pytest.raises(VerdictAlreadyGiven, match="two opposite verdicts"):
        market.settle(alice, [Verdict(bob_sid, True, "ok"), Verdict(bob_sid, False, "no")])
    assert state(backend, alice, bob) == before
    assert market.get_submission(bob_sid).status is ResultSubmissionStatus.PendingValidation


def test_settle_with_close_finishes_the_task_in_the_same_unit(
    backend: Backend, people: People
) -> None:
    """With ``close_task_id`` the verdicts, payments and close are one transaction (one batch
    on chain): refused as a whole while a result would be left without a verdict."""
    market, U, alice, bob = backend.market, backend.unit, people.alice, people.bob
    books = backend.books(alice, bob)
    task_id, sids = with_results(backend, alice, bob, people.charlie, pays=900 * U)
    before = state(backend, alice, bob)
    with pytest.raises(PendingResults, match=str(sids[1])):  # charlie's result is undecided
        market.settle(alice, [Verdict(sids[0], True, "ok")], close_task_id=task_id)
    assert state(backend, alice, bob) == before  # refused as a whole: nothing paid
    assert market.get_submission(sids[0]).status is ResultSubmissionStatus.PendingValidation

    verdicts = [Verdict(sids[0], True, "ok"), Verdict(sids[1], False, "bad")]
    paid = market.settle(alice, verdicts, close_task_id=task_id)
    assert paid == {sids[0]: 300 * U, sids[1]: 0}
    task = market.get_task(task_id)
    assert task.status is TaskStatus.Completed and task.refunded == 600 * U
    assert books.net(alice) == -backend.cost(paid=300 * U)
    assert books.net(bob) == 300 * U
    backend.assert_escrow(0)


def test_a_restarted_creator_re_running_its_settlement_pays_nothing_twice(
    backend: Backend, people: People
) -> None:
    """A creator process that died after settling, restarted on the same marketplace (or,
    where parties keep local state, on a fresh copy of it), settles again: nothing is paid
    or written twice."""
    alice, U = people.alice, backend.unit
    _, (s0, s1) = with_results(backend, alice, people.bob, people.charlie)
    verdicts = [Verdict(s0, True, "ok"), Verdict(s1, True, "ok")]
    assert backend.market.settle(alice, verdicts) == {s0: 100 * U, s1: 100 * U}
    before = state(backend, alice, people.bob, people.charlie)
    for restarted in (backend.party("main"), backend.party("fresh")):
        assert restarted.settle(alice, verdicts) == {s0: 0, s1: 0}
    assert state(backend, alice, people.bob, people.charlie) == before
    statuses = [s.status for s in backend.party("fresh").list_task_results(0)]
    assert statuses == [ResultSubmissionStatus.Accepted] * 2
