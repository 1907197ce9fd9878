"""The backends the marketplace contract suite runs against, and what each one can do.

A ``Backend`` is a fresh, empty ``Marketplace`` plus what a test needs around it that the
Protocol does not give: accounts with money, a block clock to move, the backend's raw state
(to prove a refusal wrote nothing) and the fees a write cost. Where two backends differ
legitimately the difference is a capability here, never a copy of a test:

* ``escrows``: ``create_task`` holds ``pays_amount`` and close/expiry refunds it (embedded);
  a chain announces the reward and pays it from the creator's free balance at acceptance.
  Tests state what was paid and what is still promised (``cost``); the capability decides
  whether the promised part has left the creator's balance.
* ``charges_fees`` (``ChargesFees``): every write costs its signer a fee. Balances are checked
  net of the fees the chain reports (``Books``), so amounts stay exact on every backend.
* ``review_grace``: blocks after expiry after which an unjudged result is accepted and paid
  (embedded); ``None`` where there is no escrow to pay it from (a chain).
* ``write_lag``: how many blocks after ``current_block()`` a write made now is judged at
  (0 embedded; 1 on a chain, where a write lands in the next block).

Adding a backend: write a builder like ``embedded`` below and add it to ``BACKENDS``; the
whole suite in this folder then runs against it.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from substrateinterface import Keypair

from decentralml.marketplace import ChargesFees, Marketplace
from decentralml.marketplace.embedded import EmbeddedMarketplace
from decentralml.protocol.accounts import canonical_address
from decentralml.protocol.commitment import result_commitment
from decentralml.protocol.errors import MarketplaceError
from decentralml.protocol.records import TaskResult, TaskSpec, ValidationStrategy
from tests.helpers import commit_and_send

FROZEN = 1e9
"""Seconds per embedded block: the wall clock never reaches the next block during a test, so
blocks move only when a test moves them."""

GRACE = 50
"""The embedded backend's review grace in this suite (short, so it can be crossed)."""

START = 1_000
"""A creator's funds, in units of ``Backend.unit``."""

RaceOutcome = int | str
"""A racer's submission id, or the name of the error that refused it."""


@dataclass
class Backend:
    name: str
    market: Marketplace
    unit: int
    """Amounts in tests are multiples of this: 1 embedded; on a chain rewards must dwarf fees
    and the existential deposit."""
    escrows: bool
    review_grace: int | None
    write_lag: int
    _advance: Callable[[int], None]
    _set_funds: Callable[[str, int], None]
    fee_allowance: int
    """What a contributor is given for its own writes' fees (0 where writes are free)."""
    raw_state: Callable[[], object]
    """The backend's own record of everything written (the SQLite file's dump; the chain head
    and the index's records): unchanged means nothing at all was written."""
    party: Callable[[str], Marketplace]
    """Another process's view of the same marketplace (``party("main")`` reopens this one's
    own storage, another name is a new party with fresh local state)."""
    race_for_slots: Callable[[int, list[Keypair]], list[RaceOutcome]]
    """Each keypair tries to take a slot of the task at the same time, from its own process
    (embedded) or in one block (chain); outcomes in keypair order."""
    escrow_total: Callable[[], int] | None = None
    """What the marketplace holds in escrow, where it escrows."""
    _fees_paid: Callable[[str, int], int] | None = None
    """Fees an address paid in the blocks after a block, where writes are charged."""
    _mnemonics: dict[bytes, str] = field(default_factory=dict)
    """Every account's mnemonic, by public key: respelled keys and racing processes sign
    with them."""

    # --- accounts ----------------------------------------------------------------------

    def account(self, funds: int = 0, *, fee_allowance: bool = True) -> Keypair:
        """A fresh account holding exactly ``funds``, plus (``fee_allowance``) what its own
        writes cost where writes cost a fee."""
        mnemonic = Keypair.generate_mnemonic()
        keypair = Keypair.create_from_mnemonic(mnemonic)
        self._mnemonics[keypair.public_key] = mnemonic
        amount = funds + (self.fee_allowance if fee_allowance else 0)
        if amount:
            self._set_funds(keypair.ss58_address, amount)
        return keypair

    def respelled(self, keypair: Keypair, ss58_format: int) -> Keypair:
        """The same signing key, its address spelled with another SS58 prefix."""
        mnemonic = self._mnemonics[keypair.public_key]
        return Keypair.create_from_mnemonic(mnemonic, ss58_format=ss58_format)

    @property
    def charges_fees(self) -> bool:
        return isinstance(self.market, ChargesFees)

    def cost(self, *, paid: int, promised: int = 0) -> int:
        """What a creator's balance lost (fees aside) having ``paid`` rewards while its
        unfinished tasks still promise ``promised``: held in escrow, or not yet taken."""
        return paid + (promised if self.escrows else 0)

    def fees_paid(self, keypair: Keypair, since_block: int) -> int:
        """Fees ``keypair`` paid in the blocks after ``since_block``."""
        if not self.charges_fees:
            return 0
        assert self._fees_paid is not None, f"{self.name} charges fees: say how to read them"
        return self._fees_paid(keypair.ss58_address, since_block)

    def books(self, *keypairs: Keypair) -> Books:
        return Books(self, keypairs)

    def assert_escrow(self, amount: int) -> None:
        """Where rewards are escrowed, the marketplace holds exactly ``amount``."""
        if self.escrow_total is not None:
            assert self.escrow_total() == amount

    # --- the block clock ---------------------------------------------------------------

    def write_block(self) -> int:
        """The block a write made now is judged at."""
        return self.market.current_block() + self.write_lag

    def advance(self, blocks: int) -> None:
        if blocks < 0:
            raise ValueError(f"cannot move the clock back ({blocks} blocks)")
        if blocks:
            self._advance(blocks)

    def advance_to(self, block: int) -> None:
        """Move the clock until reads see ``block`` (``current_block() == block``)."""
        now = self.market.current_block()
        if block < now:
            raise AssertionError(f"block {block} is past (now {now}): give the test more room")
        self.advance(block - now)

    def writes_land_at(self, block: int) -> None:
        """Move the clock until the next write is judged at ``block``."""
        self.advance_to(block - self.write_lag)

    # --- specs -------------------------------------------------------------------------

    def spec(
        self, pays: int | None = None, slots: int = 3, expires_in: int = 1000, **extra: Any
    ) -> TaskSpec:
        """A task paying ``pays`` (300 units by default) that expires ``expires_in`` blocks
        after the block the next write is judged at."""
        return TaskSpec(
            question=extra.pop("question", "train the MNIST model on your shard"),
            pays_amount=300 * self.unit if pays is None else pays,
            max_assignments=slots,
            expiration_block=self.write_block() + expires_in,
            **extra,
        )


@dataclass(frozen=True)
class People:
    alice: Keypair  # the creator, holding START units (fees, where charged, come out of them)
    bob: Keypair  # contributors: nothing but what their own writes cost
    charlie: Keypair
    dave: Keypair
    eve: Keypair


class Books:
    """Balances since a moment, net of the fees each account paid since then: what the
    marketplace itself moved, the same on every backend."""

    def __init__(self, backend: Backend, keypairs: tuple[Keypair, ...]) -> None:
        self.backend = backend
        self.since = backend.market.current_block()
        self.start = {kp.public_key: backend.market.balance(kp.ss58_address) for kp in keypairs}

    def net(self, keypair: Keypair) -> int:
        """Balance now less balance then, fees paid in between added back."""
        now = self.backend.market.balance(keypair.ss58_address)
        fees = self.backend.fees_paid(keypair, self.since)
        return now - self.start[keypair.public_key] + fees


# --- shared builders ---------------------------------------------------------------------------


def result(name: str = "r", accuracy: float = 0.9, sha256: str = "ab" * 32) -> TaskResult:
    return TaskResult(
        result_path=f"memory://tasks/0/results/{name}.safetensors",
        sha256=sha256,
        num_examples=600,
        metrics={"accuracy": accuracy, "loss": 0.25},
        base_fingerprint="fp",
    )


def commitment_of(worker: Keypair, sha256: str = "ab" * 32) -> str:
    """The worker's commitment to a result with this digest (``result()``'s by default)."""
    return result_commitment(worker.ss58_address, sha256)


def full_spec(backend: Backend) -> TaskSpec:
    """A spec with every field set."""
    return backend.spec(
        validation_strategy=ValidationStrategy.ManualAccept,
        assets_path="s3://bucket/tasks/0/assets.tar.gz",
        assets_sha256="cd" * 32,
        global_weights_path="s3://bucket/tasks/0/global.safetensors",
        global_weights_sha256="ef" * 32,
        round_number=4,
        model="mnist_mlp",
        epochs=2,
        storage_endpoint="http://127.0.0.1:8333",
    )


def with_results(
    backend: Backend, creator: Keypair, *workers: Keypair, **spec_args: Any
) -> tuple[int, list[int]]:
    """A task by ``creator`` with one committed result from each worker (``result(str(sid))``):
    the task id and the submission ids."""
    market = backend.market
    task_id = market.create_task(creator, backend.spec(**spec_args))
    sids = []
    for worker in workers:
        sid = market.assign_task(worker, task_id)
        commit_and_send(market, worker, sid, result(str(sid)))
        sids.append(sid)
    return task_id, sids


def state(backend: Backend, *accounts: Keypair) -> tuple[object, ...]:
    """Everything a refused or repeated write must leave as it was: every task and submission,
    the accounts' balances (so no fee was spent either) and the backend's raw record."""
    market = backend.market
    tasks = market.list_tasks(open_only=False)
    return (
        tasks,
        [market.list_task_results(task.task_id) for task in tasks],
        [market.balance(account.ss58_address) for account in accounts],
        backend.raw_state(),
    )


# --- embedded ----------------------------------------------------------------------------------


def dump(path: Path) -> list[str]:
    conn = sqlite3.connect(str(path))
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def _open_embedded(path: Path) -> EmbeddedMarketplace:
    return EmbeddedMarketplace(path, block_time_seconds=FROZEN, review_grace_blocks=GRACE)


def _assign_in_process(
    path: str, mnemonic: str, task_id: int, index: int, barrier: Any, results: Any
) -> None:
    """Run in a spawned process: wait for the others, then try to take a slot."""
    market = _open_embedded(Path(path))
    worker = Keypair.create_from_mnemonic(mnemonic)
    barrier.wait(timeout=120)
    try:
        results.put((index, market.assign_task(worker, task_id)))
    except MarketplaceError as exc:
        results.put((index, type(exc).__name__))


def _embedded_race(
    path: Path, mnemonics: dict[bytes, str], task_id: int, workers: list[Keypair]
) -> list[RaceOutcome]:
    """One spawned process per worker, all released at once onto the same file."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(workers))
    results = ctx.Queue()
    processes = [
        ctx.Process(
            target=_assign_in_process,
            args=(str(path), mnemonics[w.public_key], task_id, i, barrier, results),
        )
        for i, w in enumerate(workers)
    ]
    for process in processes:
        process.start()
    outcomes = dict(results.get(timeout=180) for _ in processes)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return [outcomes[i] for i in range(len(workers))]


def embedded(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    path = tmp_path / "market.sqlite"
    market = _open_embedded(path)
    mnemonics: dict[bytes, str] = {}
    return Backend(
        name="embedded",
        market=market,
        unit=1,
        escrows=True,
        review_grace=GRACE,
        write_lag=0,
        _advance=market.advance_blocks,
        _set_funds=market.fund,
        fee_allowance=0,
        raw_state=lambda: dump(path),
        party=lambda name: _open_embedded(path),
        race_for_slots=partial(_embedded_race, path, mnemonics),
        escrow_total=market.escrow_total,
        _mnemonics=mnemonics,
    )


# --- substrate (a real chopsticks chain, tests/chain_fixture.py) ---------------------------------

CHAIN_UNIT = 10**10
"""One test unit on the chain: 0.01 of a 12-decimal token, over 10x what a write costs, so a
reward of 100 units is 1 token."""

CHAIN_FEE_ALLOWANCE = 10**12
"""What a contributor is given for fees: hundreds of writes."""


def substrate(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    from decentralml.chain.client import ChainClient
    from decentralml.marketplace.substrate import SubstrateMarketplace
    from tests.chain_fixture import fund, in_one_block

    client: ChainClient = request.getfixturevalue("chain_client")
    chain_url: str = request.getfixturevalue("chain_url")
    start = client.finalized_head_number() + 1  # earlier blocks belong to other tests

    def open_party(name: str, party_client: ChainClient | None = None) -> SubstrateMarketplace:
        return SubstrateMarketplace(party_client or client, tmp_path / f"{name}.sqlite", start)

    market = open_party("main")

    fees_by_block: dict[int, dict[str, int]] = {}  # finalized blocks never change

    def fees_paid(address: str, since: int) -> int:
        """From the chain's own fee events (the AuditsChain capability), not the index."""
        for number in range(since + 1, market.current_block() + 1):
            if number not in fees_by_block:
                fees_by_block[number] = dict(market.audit(number, number).fees)
        account = canonical_address(address)
        return sum(fees.get(account, 0) for number, fees in fees_by_block.items() if number > since)

    def raw_state() -> object:
        market.sync()
        return market.current_block(), market.indexer.all_outcomes()

    def race(task_id: int, workers: list[Keypair]) -> list[RaceOutcome]:
        """Each racer on its own connection and index; all their extrinsics in ONE block."""
        clients = [ChainClient(chain_url) for _ in workers]
        try:
            markets = [open_party(f"racer{i}", c) for i, c in enumerate(clients)]
            for racer_market in markets:
                racer_market.sync()  # load metadata and index before the block is held
            actions = [
                partial(racer_market.assign_task, worker, task_id)
                for racer_market, worker in zip(markets, workers, strict=True)
            ]
            outcomes = in_one_block(client, actions)
        finally:
            for racer_client in clients:
                racer_client.close()
        return [o if isinstance(o, int) else type(o).__name__ for o in outcomes]

    return Backend(
        name="substrate",
        market=market,
        unit=CHAIN_UNIT,
        escrows=False,
        review_grace=None,
        write_lag=1,
        _advance=lambda n: client.rpc("dev_newBlock", [{"count": n}]),
        _set_funds=lambda address, amount: fund(client, address, amount),
        fee_allowance=CHAIN_FEE_ALLOWANCE,
        raw_state=raw_state,
        party=open_party,
        race_for_slots=race,
        _fees_paid=fees_paid,
    )


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Backend]] = {
    "embedded": embedded,
    "substrate": substrate,
}
"""Every backend the contract suite runs against."""

BACKEND_MARKS: dict[str, list[pytest.MarkDecorator]] = {
    "substrate": [pytest.mark.integration],  # needs a real chain (tests/chain_fixture.py)
}
