"""Taking a task's slots: the same on every backend."""

from __future__ import annotations

from collections import Counter

import pytest

from decentralml.protocol.errors import AlreadyAssigned, TaskFull, TaskNotOpen
from decentralml.protocol.records import TaskStatus
from tests.helpers import commit_and_send
from tests.marketplace_contract.backends import Backend, People, result


def test_no_more_assignments_than_slots(backend: Backend, people: People) -> None:
    market = backend.market
    task_id = market.create_task(people.alice, backend.spec(slots=3))
    workers = (people.bob, people.charlie, people.dave)
    assert [market.assign_task(worker, task_id) for worker in workers] == [0, 1, 2]
    with pytest.raises(TaskFull):
        market.assign_task(people.eve, task_id)
    task = market.get_task(task_id)
    assert (task.assigned, task.open_slots, task.status) == (3, 0, TaskStatus.InProgress)
    stored = [s.worker for s in market.list_task_results(task_id)]
    assert stored == [worker.ss58_address for worker in workers]


def test_a_task_is_created_until_its_first_assignment(backend: Backend, people: People) -> None:
    market = backend.market
    task_id = market.create_task(people.alice, backend.spec())
    assert market.get_task(task_id).status is TaskStatus.Created
    market.assign_task(people.bob, task_id)
    assert market.get_task(task_id).status is TaskStatus.InProgress


def test_one_slot_per_contributor_whatever_the_address_prefix(
    backend: Backend, people: People
) -> None:
    market, bob = backend.market, people.bob
    task_id = market.create_task(people.alice, backend.spec(slots=3))
    sid = market.assign_task(backend.respelled(bob, 2), task_id)  # Kusama's prefix
    with pytest.raises(AlreadyAssigned):
        market.assign_task(bob, task_id)
    with pytest.raises(AlreadyAssigned):
        market.assign_task(backend.respelled(bob, 0), task_id)  # Polkadot's
    assert market.get_task(task_id).assigned == 1
    assert market.get_submission(sid).worker == bob.ss58_address  # stored canonical (42)
    commit_and_send(market, bob, sid, result())  # the assignee, in another spelling


def test_no_assignment_at_or_after_expiry(backend: Backend, people: People) -> None:
    market = backend.market
    task_id = market.create_task(people.alice, backend.spec(expires_in=5))
    expiry = market.get_task(task_id).spec.expiration_block
    backend.writes_land_at(expiry - 1)
    market.assign_task(people.bob, task_id)  # the block before expiry: allowed
    backend.writes_land_at(expiry)
    assert backend.write_block() == expiry
    with pytest.raises(TaskNotOpen):
        market.assign_task(people.charlie, task_id)
    assert market.get_task(task_id).assigned == 1


def test_no_assignment_on_a_closed_task(backend: Backend, people: People) -> None:
    market = backend.market
    task_id = market.create_task(people.alice, backend.spec())
    market.close_task(people.alice, task_id)
    with pytest.raises(TaskNotOpen):
        market.assign_task(people.bob, task_id)


def test_contributors_racing_for_the_last_slots_get_exactly_max_assignments(
    backend: Backend, people: People
) -> None:
    """Contributors try at the same moment, each from its own process (or in one block):
    exactly the free slots are taken, every other racer is told TaskFull."""
    market = backend.market
    task_id = market.create_task(people.alice, backend.spec(slots=2))
    racers = [people.bob, people.charlie, people.dave, people.eve]
    outcomes = backend.race_for_slots(task_id, racers)
    assert Counter(o if isinstance(o, str) else "assigned" for o in outcomes) == Counter(
        {"assigned": 2, "TaskFull": 2}
    ), outcomes
    assert sorted(o for o in outcomes if isinstance(o, int)) == [0, 1]
    winners = {r.ss58_address for r, o in zip(racers, outcomes, strict=True) if isinstance(o, int)}
    task = market.get_task(task_id)
    assert task.assigned == 2 and task.open_slots == 0
    assert {s.worker for s in market.list_task_results(task_id)} == winners
    with pytest.raises(TaskFull):  # a late one is refused too
        market.assign_task(backend.account(), task_id)
