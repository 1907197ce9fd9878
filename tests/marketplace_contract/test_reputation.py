"""A worker's reputation and the tasks that ask for one: the same on every backend (issue 16:
an account costs nothing to make, so Sybils and a poisoner refused last round come back fresh;
a task can ask ``min_reputation`` and the marketplace enforces it at assignment)."""

from __future__ import annotations

import pytest

from decentralml.protocol.errors import InvalidTaskSpec, TooLittleReputation
from decentralml.protocol.records import Reputation, Verdict
from tests.helpers import commit_and_send
from tests.marketplace_contract.backends import Backend, People, result


def _judged(backend: Backend, people: People, verdicts: dict) -> dict[str, int]:
    """One task of alice's, a result from each worker in ``verdicts`` (worker -> accept),
    settled with those verdicts; returns what each was paid."""
    market, alice = backend.market, people.alice
    task_id = market.create_task(alice, backend.spec(slots=3, question="earlier work"))
    sids = {}
    for worker in verdicts:
        sids[worker] = market.assign_task(worker, task_id)
        commit_and_send(market, worker, sids[worker], result())
    paid = market.settle(
        alice,
        [Verdict(sids[w], accept, "" if accept else "a copy") for w, accept in verdicts.items()],
        close_task_id=task_id,
    )
    return {w.ss58_address: paid[sids[w]] for w in verdicts}


def test_a_task_asking_reputation_refuses_newcomers_and_refused_workers(
    backend: Backend, people: People
) -> None:
    market, alice, bob, charlie = backend.market, people.alice, people.bob, people.charlie
    paid = _judged(backend, people, {bob: True, charlie: False})
    assert market.reputation(bob.ss58_address) == Reputation(
        accepted=1, refused=0, earned=paid[bob.ss58_address], creators=1
    )
    assert market.reputation(charlie.ss58_address) == Reputation(refused=1)
    assert market.reputation(people.dave.ss58_address) == Reputation()  # a fresh account

    picky = market.create_task(alice, backend.spec(min_reputation=1, question="proven only"))
    assert market.get_task(picky).spec.min_reputation == 1  # on the record
    for outsider in (charlie, people.dave):  # refused before, and never seen
        with pytest.raises(TooLittleReputation, match="at least 1"):
            market.assign_task(outsider, picky)
    assert market.get_task(picky).assigned == 0
    market.assign_task(bob, picky)
    assert market.get_task(picky).assigned == 1


def test_a_creator_accepting_its_own_results_earns_no_reputation(
    backend: Backend, people: People
) -> None:
    market, alice = backend.market, people.alice
    _judged(backend, people, {alice: True, people.bob: True})
    assert market.reputation(alice.ss58_address).accepted == 0
    assert market.reputation(people.bob.ss58_address).accepted == 1


def test_a_negative_minimum_is_refused_before_any_fee(backend: Backend, people: People) -> None:
    market, alice = backend.market, people.alice
    before = market.balance(alice.ss58_address)
    with pytest.raises(InvalidTaskSpec, match="min_reputation"):
        market.create_task(alice, backend.spec(min_reputation=-1))
    assert market.balance(alice.ss58_address) == before and market.list_tasks(False) == []
