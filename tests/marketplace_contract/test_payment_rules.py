"""A task's payment rule, the same on every backend (protocol.rules.accept_amount).

``per_result`` pays the seed's fixed share and no other amount; ``value`` pays what each
verdict names, the task's payments together at most its reward, and every verdict keeps the
value it was given. Escrow stays paid + refunded.
"""

from __future__ import annotations

import pytest

from decentralml.protocol.errors import InvalidAmount
from decentralml.protocol.records import ResultSubmissionStatus, Verdict
from tests.marketplace_contract.backends import Backend, People, state, with_results


def test_a_value_task_pays_what_each_verdict_names(backend: Backend, people: People) -> None:
    market, U, alice = backend.market, backend.unit, people.alice
    books = backend.books(alice, people.bob, people.charlie, people.dave)
    task_id, (bob, charlie, dave) = with_results(
        backend, alice, people.bob, people.charlie, people.dave, payment_rule="value"
    )
    assert market.get_task(task_id).spec.payment_rule == "value"
    verdicts = [
        Verdict(bob, True, "value +0.1200", amount=170 * U, value=0.12),
        Verdict(charlie, True, "value +0.0400", amount=60 * U, value=0.04),
        Verdict(dave, False, "value -0.0300 <= 0: it makes the round worse", value=-0.03),
    ]
    paid = market.settle(alice, verdicts, close_task_id=task_id)
    assert paid == {bob: 170 * U, charlie: 60 * U, dave: 0}
    assert books.net(people.bob) == 170 * U and books.net(people.charlie) == 60 * U
    task = market.get_task(task_id)
    assert (task.paid, task.refunded) == (230 * U, 70 * U)  # escrow = paid + refunded
    assert books.net(alice) == -backend.cost(paid=230 * U)
    backend.assert_escrow(0)
    recorded = {s.submission_id: s for s in market.list_task_results(task_id)}
    assert recorded[bob].value == pytest.approx(0.12) and recorded[bob].paid == 170 * U
    assert recorded[dave].status is ResultSubmissionStatus.Rejected
    assert recorded[dave].value == pytest.approx(-0.03)


def test_amounts_over_the_reward_are_refused_and_nothing_is_recorded(
    backend: Backend, people: People
) -> None:
    market, U, alice = backend.market, backend.unit, people.alice
    task_id, (bob, charlie) = with_results(
        backend, alice, people.bob, people.charlie, payment_rule="value"
    )
    before = state(backend, alice, people.bob, people.charlie)
    too_much = [Verdict(bob, True, "", amount=200 * U), Verdict(charlie, True, "", amount=101 * U)]
    with pytest.raises(InvalidAmount, match="more than its reward"):
        market.settle(alice, too_much)
    assert state(backend, alice, people.bob, people.charlie) == before
    assert market.get_task(task_id).paid == 0


def test_a_per_result_task_pays_its_fixed_share_only(backend: Backend, people: People) -> None:
    market, U, alice = backend.market, backend.unit, people.alice
    _, (bob,) = with_results(backend, alice, people.bob)
    with pytest.raises(InvalidAmount, match="per accepted result"):
        market.settle(alice, [Verdict(bob, True, "", amount=250 * U)])
    assert market.settle(alice, [Verdict(bob, True, "", amount=100 * U)]) == {bob: 100 * U}
