"""What only the embedded marketplace does: one SQLite file, its schema, its block clock,
and the Ledger it shares with the chain indexer.

Every behaviour both backends share (tasks, slots, commit-reveal, verdicts, settlement, close,
expiry, review grace, races for slots) is in the contract suite, tests/marketplace_contract/,
which runs against this backend too. The clock here is frozen (one block per 10^9 s, or an
injected wall clock) so blocks move only when a test moves them.
"""

from __future__ import annotations

import random
import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from substrateinterface import Keypair

from decentralml.marketplace import embedded
from decentralml.marketplace.embedded import EmbeddedMarketplace
from decentralml.marketplace.ledger import Ledger
from decentralml.protocol.accounts import contributor_dev_keypair, dev_keypair
from decentralml.protocol.commitment import result_commitment
from decentralml.protocol.errors import (
    AlreadyAssigned,
    AlreadyCommitted,
    ConfigError,
    InsufficientBalance,
    InvalidResult,
    InvalidTaskSpec,
    MarketplaceError,
    NoResultYet,
    NotAssignee,
    NotCommitted,
    NotCreator,
    ResultAlreadySent,
    TaskFull,
    TaskNotOpen,
    UnknownSubmission,
    UnknownTask,
    VerdictAlreadyGiven,
)
from decentralml.protocol.records import (
    ResultSubmissionStatus,
    TaskResult,
    TaskSpec,
    TaskStatus,
    Verdict,
)
from tests.helpers import commit_and_send

FROZEN = 1e9  # seconds per block: the wall clock never reaches block 1 during a test
ALICE = dev_keypair("Alice")
BOB, CHARLIE, DAVE, EVE, FERDIE = (contributor_dev_keypair(i) for i in range(5))
START = 1_000


def spec(pays: int = 300, slots: int = 3, expires: int = 100, **extra: Any) -> TaskSpec:
    return TaskSpec(
        question="train the MNIST model on your shard",
        pays_amount=pays,
        max_assignments=slots,
        expiration_block=expires,
        **extra,
    )


def result(name: str = "r", accuracy: float = 0.9) -> TaskResult:
    return TaskResult(
        result_path=f"memory://tasks/0/results/{name}.safetensors",
        sha256="ab" * 32,
        num_examples=600,
        metrics={"accuracy": accuracy, "loss": 0.25},
        base_fingerprint="fp",
    )


def commitment_of(worker: Keypair, sha256: str = "ab" * 32) -> str:
    """The worker's commitment to a result with this digest (``result()``'s by default)."""
    return result_commitment(worker.ss58_address, sha256)


def dump(path: Path) -> list[str]:
    conn = sqlite3.connect(str(path))
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


@pytest.fixture
def market(tmp_path: Path) -> EmbeddedMarketplace:
    m = EmbeddedMarketplace(tmp_path / "market.db", block_time_seconds=FROZEN)
    m.fund(ALICE.ss58_address, START)
    return m


def with_results(market: EmbeddedMarketplace, *workers: Keypair, **kw: Any) -> list[int]:
    """A task by Alice (id 0 when first) with one result from each worker; the submission ids."""
    task_id = market.create_task(ALICE, spec(**kw))
    ids = []
    for worker in workers:
        sid = market.assign_task(worker, task_id)
        commit_and_send(market, worker, sid, result(str(sid)))
        ids.append(sid)
    return ids


# --- the file ---------------------------------------------------------------------------------


def test_no_credentials_in_schema(market: EmbeddedMarketplace) -> None:
    text = "\n".join(dump(market.path)).lower()
    assert "credential" not in text and "secret" not in text


def test_a_commitment_records_its_block_and_a_repeat_does_not_move_it(
    market: EmbeddedMarketplace,
) -> None:
    """The commit order itself is in the contract suite; the block is the file's own column."""
    first = market.create_task(ALICE, spec(round_number=1))
    second = market.create_task(ALICE, spec(round_number=2))
    bob_1 = market.assign_task(BOB, first)
    charlie_1 = market.assign_task(CHARLIE, first)
    bob_2 = market.assign_task(BOB, second)
    market.advance_blocks(1)
    market.commit_result(BOB, bob_2, commitment_of(BOB))
    market.commit_result(CHARLIE, charlie_1, commitment_of(CHARLIE))
    market.advance_blocks(2)
    market.commit_result(BOB, bob_1, commitment_of(BOB, "cd" * 32))
    market.commit_result(BOB, bob_2, commitment_of(BOB))  # a repeat
    rows = sqlite3.connect(market.path).execute(
        "SELECT submission_id, commit_block FROM submissions ORDER BY submission_id"
    )
    assert dict(rows.fetchall()) == {bob_1: 3, charlie_1: 1, bob_2: 1}


def test_an_old_schema_file_is_migrated(tmp_path: Path) -> None:
    """A file written before commit-reveal (no commitment columns, no commit counter, a result
    sent without commitment) opens, keeps its data, and takes commitments."""
    path = tmp_path / "old.sqlite"
    old = EmbeddedMarketplace(path, block_time_seconds=FROZEN)
    old.fund(ALICE.ss58_address, START)
    task_id = old.create_task(ALICE, spec())
    old_sid = old.assign_task(BOB, task_id)
    conn = sqlite3.connect(path)
    with conn:
        for column in ("commitment", "commit_block", "commit_seq"):
            conn.execute(f"ALTER TABLE submissions DROP COLUMN {column}")
        conn.execute("DELETE FROM meta WHERE key = 'next_commit_seq'")
        conn.execute(
            "UPDATE submissions SET status = 'PendingValidation', result_path = 'memory://old', "
            "result_sha256 = ?, num_examples = 5, metrics_json = '{}', base_fingerprint = '', "
            "result_block = 0 WHERE submission_id = ?",
            ("ab" * 32, old_sid),
        )
    columns = {row[1] for row in conn.execute("PRAGMA table_info(submissions)")}
    conn.close()
    assert "commitment" not in columns

    market = EmbeddedMarketplace(path, block_time_seconds=FROZEN)
    legacy = market.get_submission(old_sid)
    assert (legacy.commitment, legacy.commit_order) == ("", None)
    assert legacy.result is not None and legacy.result.result_path == "memory://old"
    assert market.accept(ALICE, old_sid) == 100  # verdicts on old results still work
    sid = market.assign_task(CHARLIE, task_id)
    commit_and_send(market, CHARLIE, sid, result())
    assert market.get_submission(sid).commit_order == 0
    EmbeddedMarketplace(path, block_time_seconds=FROZEN)  # opening again changes nothing
    assert market.get_submission(sid).commitment == commitment_of(CHARLIE)


# --- the block clock ----------------------------------------------------------------------------


def test_block_clock_is_shared_through_the_file(tmp_path: Path) -> None:
    first = EmbeddedMarketplace(tmp_path / "m.db", block_time_seconds=FROZEN)
    second = EmbeddedMarketplace(tmp_path / "m.db", block_time_seconds=FROZEN)
    assert first.current_block() == second.current_block() == 0
    assert first.advance_blocks(7) == 7
    assert second.current_block() == 7
    assert second.genesis_time == first.genesis_time
    with pytest.raises(ConfigError, match="block_time_seconds"):
        EmbeddedMarketplace(tmp_path / "m.db", block_time_seconds=6.0)


class WallClock:
    """Stands in for the ``time`` module the embedded clock reads (only ``time()``)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


def test_block_clock_follows_wall_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = WallClock(1_700_000_000.0)
    monkeypatch.setattr(embedded, "time", clock)
    market = EmbeddedMarketplace(tmp_path / "m.db", block_time_seconds=6.0)
    genesis = market.genesis_time
    assert genesis == clock.now and market.current_block() == 0
    clock.now = genesis + 5.999
    assert market.current_block() == 0
    clock.now = genesis + 6.0
    assert market.current_block() == 1
    clock.now = genesis + 60.0
    assert market.current_block() == 10
    assert market.advance_blocks(5) == 15  # every process's clock moves together
    clock.now = genesis - 3600.0  # the wall clock stepped back: never below genesis
    assert market.current_block() == 5


# --- atomicity --------------------------------------------------------------------------------


def test_a_refused_operation_leaves_the_file_byte_for_byte_even_a_due_expiry_refund(
    market: EmbeddedMarketplace,
) -> None:
    """Expired tasks are settled lazily, inside the next write's transaction: a refused write
    rolls that settlement back too (the contract suite checks what every backend shows)."""
    bob_sid, charlie_sid = with_results(market, BOB, CHARLIE, pays=300, slots=2, expires=10)
    market.accept(ALICE, bob_sid)
    market.create_task(ALICE, spec(pays=100, expires=5))  # task 1 will be settleable
    market.advance_blocks(6)
    before = dump(market.path)
    refused: list[Callable[[], object]] = [
        lambda: market.create_task(ALICE, spec(pays=10**9, expires=50)),
        lambda: market.create_task(ALICE, spec(pays=0, expires=50)),
        lambda: market.assign_task(DAVE, 0),
        lambda: market.assign_task(DAVE, 1),
        lambda: market.send_task_result(BOB, bob_sid, result()),
        lambda: market.send_task_result(DAVE, charlie_sid, result()),
        lambda: market.commit_result(BOB, bob_sid, commitment_of(BOB)),
        lambda: market.commit_result(DAVE, charlie_sid, commitment_of(DAVE)),
        lambda: market.accept(BOB, charlie_sid),
        lambda: market.reject(ALICE, bob_sid, "too late"),
        lambda: market.close_task(ALICE, 0),
        lambda: market.close_task(BOB, 1),
        lambda: market.assign_task(DAVE, 99),
    ]
    for operation in refused:
        with pytest.raises(MarketplaceError):
            operation()
        assert dump(market.path) == before, operation
    # Task 1's expiry refund happens once something that is not refused runs:
    assert market.balance(ALICE.ss58_address) == START - 300 - 100 + 100


# --- the Ledger the chain indexer shares -------------------------------------------------------


def test_ledger_without_balances_keeps_the_rules(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "index.db", track_balances=False)
    task_id = ledger.create_task(ALICE.ss58_address, spec(pays=300, slots=1), block=3)
    sid = ledger.assign_task(BOB.ss58_address, task_id, block=4)
    with pytest.raises(TaskFull):
        ledger.assign_task(CHARLIE.ss58_address, task_id, block=4)
    ledger.commit_result(BOB.ss58_address, sid, commitment_of(BOB), block=5)
    ledger.send_task_result(BOB.ss58_address, sid, result(), block=5)
    assert ledger.accept(ALICE.ss58_address, sid, block=6) == 300
    assert ledger.close_task(ALICE.ss58_address, task_id, block=7) == 0
    assert ledger.get_task(task_id).status is TaskStatus.Completed
    with pytest.raises(ValueError):
        ledger.balance(ALICE.ss58_address)


def test_ledger_settle_expired_reports_refunds(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.fund(ALICE.ss58_address, 500)
    ledger.create_task(ALICE.ss58_address, spec(pays=300, expires=10), block=0)
    ledger.create_task(ALICE.ss58_address, spec(pays=200, expires=20), block=0)
    assert ledger.settle_expired(9) == []
    assert ledger.settle_expired(10) == [(0, 300)]
    assert ledger.settle_expired(10) == []
    assert ledger.balance(ALICE.ss58_address) == 300
    assert ledger.balance(ALICE.ss58_address, block=25) == 500


# --- conservation under random operations -------------------------------------------------------

PEOPLE = [ALICE, BOB, CHARLIE, DAVE, EVE, FERDIE, contributor_dev_keypair(5)]


class RandomSession:
    """Random, often invalid, operations. It remembers who created each task and who holds each
    submission, and picks the right actor most of the time, so that every rule is reached
    both by operations that succeed and by operations that are refused."""

    def __init__(self, market: EmbeddedMarketplace, rng: random.Random) -> None:
        self.market, self.rng = market, rng
        self.creators: list[Keypair] = []  # by task id
        self.workers: list[tuple[Keypair, Keypair]] = []  # by submission id: (worker, creator)
        self.sent: list[int] = []  # submission ids with a result

    def who(self, likely: Keypair | None = None) -> Keypair:
        if likely is not None and self.rng.random() < 0.7:
            return likely
        return self.rng.choice(PEOPLE)

    def recent(self, count: int) -> int:
        """Mostly one of the last few ids (where the action is), sometimes any id or an
        unknown one."""
        if count and self.rng.random() < 0.8:
            return max(0, count - 1 - self.rng.randrange(4))
        return self.rng.randrange(count + 1)

    def task_id(self) -> int:
        return self.recent(len(self.creators))

    def submission_id(self) -> int:
        return self.recent(len(self.workers))

    def creator_of_task(self, task_id: int) -> Keypair | None:
        return self.creators[task_id] if task_id < len(self.creators) else None

    def party(self, submission_id: int, index: int) -> Keypair | None:
        return self.workers[submission_id][index] if submission_id < len(self.workers) else None

    def fund(self) -> None:
        self.market.fund(self.who(ALICE).ss58_address, self.rng.randint(1, 1500))

    def create(self) -> None:
        now = self.market.current_block()
        task = spec(
            pays=self.rng.randint(-1, 700),
            slots=self.rng.randint(0, 4),
            expires=now + self.rng.choice([-1, 0, 2, 5, 10, 20, 40]),
        )
        creator = self.who(ALICE)
        self.market.create_task(creator, task)
        self.creators.append(creator)

    def assign(self) -> None:
        task_id = self.task_id()
        worker = self.who()
        self.market.assign_task(worker, task_id)
        self.workers.append((worker, self.creators[task_id]))

    def commit(self) -> None:
        """Mostly the commitment to ``result()`` of the submission's assignee; sometimes
        another result's, so that a later send does not match it."""
        sid = self.submission_id()
        owner = self.party(sid, 0) or BOB
        sha256 = "ab" * 32 if self.rng.random() < 0.8 else "cd" * 32
        commitment = result_commitment(owner.ss58_address, sha256)
        self.market.commit_result(self.who(owner), sid, commitment)

    def send(self) -> None:
        sid = self.submission_id()
        self.market.send_task_result(self.who(self.party(sid, 0)), sid, result())
        self.sent.append(sid)

    def accept(self) -> None:
        sid = self.submission_id()
        self.market.accept(self.who(self.party(sid, 1)), sid)

    def reject(self) -> None:
        sid = self.submission_id()
        self.market.reject(self.who(self.party(sid, 1)), sid, "random")

    def settle(self) -> None:
        """A batch, mostly of results that were sent (a batch with one refused verdict is
        refused as a whole, so random ids alone would almost never succeed)."""
        pool = self.sent[-4:] if self.sent and self.rng.random() < 0.7 else [self.submission_id()]
        sids = [self.rng.choice(pool) for _ in range(self.rng.randint(1, 2))]
        verdicts = [Verdict(sid, self.rng.random() < 0.6, "batch") for sid in sids]
        self.market.settle(self.who(self.party(sids[0], 1)), verdicts)

    def close(self) -> None:
        task_id = self.task_id()
        self.market.close_task(self.who(self.creator_of_task(task_id)), task_id)

    def advance(self) -> None:
        self.market.advance_blocks(self.rng.randint(0, 3))


def assert_conserved(market: EmbeddedMarketplace) -> None:
    balances = market.ledger.balances()
    assert all(amount >= 0 for amount in balances.values())
    assert sum(balances.values()) + market.ledger.escrow_total() == market.total_issuance()


def assert_tasks_consistent(market: EmbeddedMarketplace) -> None:
    for task in market.ledger.list_tasks(open_only=False):
        submissions = market.list_task_results(task.task_id)
        accepted = [s for s in submissions if s.status is ResultSubmissionStatus.Accepted]
        assert len(submissions) == task.assigned <= task.spec.max_assignments
        assert len({s.worker for s in submissions}) == len(submissions)
        assert task.paid == sum(s.paid for s in submissions)
        assert task.paid == len(accepted) * task.spec.reward_per_result
        finished = task.status in (TaskStatus.Completed, TaskStatus.Withdrawn)
        assert task.paid + task.refunded == (task.spec.pays_amount if finished else task.paid)


def test_conservation_under_random_operations(tmp_path: Path) -> None:
    """After every one of 500 random operations (most of them refused): value is conserved,
    every task's books add up, and a refused operation left the file byte-for-byte as it was."""
    market = EmbeddedMarketplace(tmp_path / "random.db", block_time_seconds=FROZEN)
    session = RandomSession(market, random.Random(20240611))
    kinds = ["fund", "create", "create", "assign", "assign", "assign", "commit", "commit"]
    kinds += ["commit", "send", "send", "send"]
    kinds += ["accept", "accept", "reject", "settle", "close", "advance"]
    outcomes: Counter[tuple[str, bool]] = Counter()
    refusals: Counter[str] = Counter()
    for step in range(500):
        kind = session.rng.choice(kinds)
        before = dump(market.path)
        try:
            getattr(session, kind)()
            outcomes[(kind, True)] += 1
        except MarketplaceError as exc:
            outcomes[(kind, False)] += 1
            refusals[type(exc).__name__] += 1
            assert dump(market.path) == before, (step, kind)
        assert_conserved(market)
        if step % 25 == 0:
            assert_tasks_consistent(market)
    assert_tasks_consistent(market)
    for kind in ("create", "assign", "commit", "send", "accept", "reject", "settle", "close"):
        assert outcomes[(kind, True)] > 0 and outcomes[(kind, False)] > 0, (kind, outcomes)
    expected_refusals = {
        InvalidTaskSpec, InsufficientBalance, UnknownTask, UnknownSubmission, TaskNotOpen,
        TaskFull, AlreadyAssigned, NotAssignee, ResultAlreadySent, NotCreator, NoResultYet,
        VerdictAlreadyGiven, NotCommitted, AlreadyCommitted, InvalidResult,
    }  # fmt: skip
    assert {e.__name__ for e in expected_refusals} <= set(refusals), refusals
    statuses = {task.status for task in market.ledger.list_tasks(open_only=False)}
    assert TaskStatus.Withdrawn in statuses and TaskStatus.Completed in statuses, statuses
