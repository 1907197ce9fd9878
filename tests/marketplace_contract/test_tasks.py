"""Creating and listing tasks, ids, and the dev faucet: the same on every backend."""

from __future__ import annotations

import pytest

from decentralml.marketplace import DevFaucet, Marketplace
from decentralml.protocol.errors import (
    InsufficientBalance,
    InvalidTaskSpec,
    UnknownSubmission,
    UnknownTask,
)
from decentralml.protocol.records import TaskSpec, TaskStatus
from tests.marketplace_contract.backends import (
    START,
    Backend,
    People,
    commitment_of,
    full_spec,
    result,
    state,
)


def test_every_backend_is_a_marketplace(backend: Backend) -> None:
    assert isinstance(backend.market, Marketplace)


def test_ids_start_at_zero_and_submission_ids_are_global(backend: Backend, people: People) -> None:
    market, U, alice, bob = backend.market, backend.unit, people.alice, people.bob
    books = backend.books(alice)
    assert market.create_task(alice, backend.spec(pays=300 * U)) == 0
    assert market.create_task(alice, backend.spec(pays=200 * U)) == 1
    assert books.net(alice) == -backend.cost(paid=0, promised=500 * U)
    backend.assert_escrow(500 * U)
    assert market.assign_task(bob, 1) == 0
    assert market.assign_task(bob, 0) == 1  # submission ids are global


def test_the_full_spec_is_stored_with_its_creator_and_creation_block(
    backend: Backend, people: People
) -> None:
    market = backend.market
    spec = full_spec(backend)
    created_at = backend.write_block()
    task = market.get_task(market.create_task(people.alice, spec))
    assert task.spec == spec
    assert task.creator == people.alice.ss58_address
    assert task.status is TaskStatus.Created
    assert (task.assigned, task.paid, task.refunded) == (0, 0, 0)
    assert task.created_block == created_at


@pytest.mark.parametrize(
    "bad",
    [
        {"pays": 0},
        {"pays": -5},
        {"slots": 0},
        {"pays": 2, "slots": 3},  # less than one unit of reward per slot
        {"expires_in": 0},
        {"question": "   "},
    ],
    ids=["nothing-paid", "negative-pay", "no-slot", "pay-below-slots", "expired", "blank"],
)
def test_an_invalid_spec_is_refused_and_costs_nothing(
    backend: Backend, people: People, bad: dict[str, object]
) -> None:
    before = state(backend, people.alice)
    with pytest.raises(InvalidTaskSpec):
        backend.market.create_task(people.alice, backend.spec(**bad))  # type: ignore[arg-type]
    assert state(backend, people.alice) == before
    assert backend.market.list_tasks(open_only=False) == []


def test_the_expiration_must_be_after_the_block_the_task_is_created_in(
    backend: Backend, people: People
) -> None:
    backend.advance(10)
    now = backend.write_block()
    late = TaskSpec("train", 300 * backend.unit, 3, expiration_block=now)
    with pytest.raises(InvalidTaskSpec):
        backend.market.create_task(people.alice, late)
    on_time = TaskSpec("train", 300 * backend.unit, 3, expiration_block=now + 1)
    assert backend.market.create_task(people.alice, on_time) == 0


def test_a_creator_cannot_promise_more_than_it_holds(backend: Backend, people: People) -> None:
    market, U, alice = backend.market, backend.unit, people.alice
    poor = backend.account(fee_allowance=False)  # holds nothing
    before = state(backend, alice, poor)
    with pytest.raises(InsufficientBalance, match="fund"):
        market.create_task(alice, backend.spec(pays=START * U + 1, slots=1))
    with pytest.raises(InsufficientBalance, match="fund"):
        market.create_task(poor, backend.spec(pays=3 * U, slots=1))
    assert state(backend, alice, poor) == before
    books = backend.books(alice)
    assert market.create_task(alice, backend.spec(pays=START * U, slots=1)) == 0
    assert books.net(alice) == -backend.cost(paid=0, promised=START * U)
    with pytest.raises(InsufficientBalance):  # everything it holds is promised already
        market.create_task(alice, backend.spec(pays=3 * U, slots=1, round_number=2))


def test_the_same_spec_again_while_its_task_is_unfinished_is_the_same_task(
    backend: Backend, people: People
) -> None:
    """A create retried after an unknown outcome must not open (or escrow) a second task."""
    market, alice = backend.market, people.alice
    spec = backend.spec()
    task_id = market.create_task(alice, spec)
    before = state(backend, alice)
    assert market.create_task(alice, spec) == task_id
    assert state(backend, alice) == before
    assert len(market.list_tasks(open_only=False)) == 1


def test_list_tasks_shows_open_tasks_only_and_all_on_request(
    backend: Backend, people: People
) -> None:
    market, U, alice = backend.market, backend.unit, people.alice
    full = market.create_task(alice, backend.spec(pays=10 * U, slots=1))
    market.assign_task(people.bob, full)
    closed = market.create_task(alice, backend.spec(pays=10 * U, round_number=1))
    market.close_task(alice, closed)
    expiring = market.create_task(alice, backend.spec(pays=10 * U, expires_in=5))
    lasting = market.create_task(alice, backend.spec(pays=10 * U, expires_in=50))
    assert [t.task_id for t in market.list_tasks()] == [expiring, lasting]
    backend.advance_to(market.get_task(expiring).spec.expiration_block)
    assert [t.task_id for t in market.list_tasks()] == [lasting]
    assert [t.task_id for t in market.list_tasks(open_only=False)] == [0, 1, 2, 3]


def test_unknown_ids_are_refused(backend: Backend, people: People) -> None:
    market, alice, bob = backend.market, people.alice, people.bob
    with pytest.raises(UnknownTask):
        market.assign_task(bob, 7)
    with pytest.raises(UnknownTask):
        market.get_task(0)
    with pytest.raises(UnknownSubmission):
        market.send_task_result(bob, 3, result())
    with pytest.raises(UnknownSubmission):
        market.commit_result(bob, 3, commitment_of(bob))
    with pytest.raises(UnknownSubmission):
        market.accept(alice, 3)


def test_ids_beyond_sqlite_integers_are_unknown(backend: Backend, people: People) -> None:
    """Ids on chain are u64; one SQLite cannot hold names nothing, and is not an error."""
    with pytest.raises(UnknownTask):
        backend.market.close_task(people.alice, 2**64 - 1)
    with pytest.raises(UnknownSubmission):
        backend.market.get_submission(2**63)


def test_the_dev_faucet_adds_to_a_balance_and_the_account_stays_usable(
    backend: Backend, people: People
) -> None:
    market, U, alice = backend.market, backend.unit, people.alice
    if not isinstance(market, DevFaucet):
        pytest.skip(f"{backend.name} has no dev faucet")
    market.create_task(alice, backend.spec())
    before = market.balance(alice.ss58_address)
    market.fund(alice.ss58_address, 5 * U)
    assert market.balance(alice.ss58_address) == before + 5 * U
    assert market.create_task(alice, backend.spec(slots=1)) == 1  # e.g. its nonce was kept
