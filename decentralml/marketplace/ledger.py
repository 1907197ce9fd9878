"""The marketplace state on SQLite, changed only as the rulebook (rules.py) allows, with the
clock and the identities supplied by the caller.

Every method that changes state takes the actor's ADDRESS and the BLOCK at which it acts, so
the same rules serve two callers: the embedded marketplace (its own block clock, keypairs from
the environment) and the chain indexer (marketplace/indexer.py), which replays Substrate
records with the signer's address and the record's block number (it catches
``MarketplaceError`` and skips the record). Each write reads the records it needs as domain
records, asks ``rules`` and applies the answer inside one transaction.

Concurrency: each operation runs in ONE transaction started with ``BEGIN IMMEDIATE`` (WAL
mode, 30 s busy timeout), so several processes can share one file and a refused operation
rolls back and changes nothing. Each thread keeps its connection to a file between operations
(``_thread_connection``): agents poll the marketplace thousands of times a run, and opening a
connection per operation was most of each call's cost.

Amounts are stored as decimal TEXT: the pallet's Balance is u128, which SQLite's 64-bit
INTEGER cannot hold. No storage credentials exist in the schema.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from decentralml.io.storage import Retries, with_retries
from decentralml.protocol import rules
from decentralml.protocol.accounts import canonical_address
from decentralml.protocol.errors import (
    InsufficientBalance,
    UnknownSubmission,
    UnknownTask,
)
from decentralml.protocol.records import (
    Reputation,
    ResultSubmissionStatus,
    Submission,
    Task,
    TaskResult,
    TaskSpec,
    TaskStatus,
    TaskType,
    ValidationStrategy,
    Verdict,
)
from decentralml.protocol.rules import MAX_ID

BUSY_TIMEOUT_SECONDS = 30.0
T = TypeVar("T")

OPEN_RETRIES = Retries()
"""How often, and after which waits, an open of a ledger whose file stayed locked is tried:
the one retry policy of our own failures (decentralml.io.storage.Retries)."""
_sleep: Callable[[float], None] = time.sleep  # the clock of those waits (tests inject one)


class _LockedOpen(sqlite3.OperationalError):
    """The file stayed locked through SQLite's busy timeout while opening: contention."""


def retry_locked(open_once: Callable[[], T], what: str) -> T:
    """``open_once()``, tried again on the one retry schedule (``OPEN_RETRIES``) while SQLite
    answers that the file is locked or busy; any other error at once, the last refusal as it
    is. Opening one file from 50-200 agents at once while the creator writes is contention,
    our own, not a broken file: agents died of it ("database is locked", sometimes within
    seconds, before SQLite's busy timeout) and their rounds waited out their timeouts a slot
    short (docs/benchmarks.md, issue 20)."""

    def once() -> T:
        try:
            return open_once()
        except sqlite3.OperationalError as error:
            if _is_lock_contention(error) and not isinstance(error, _LockedOpen):
                raise _LockedOpen(*error.args) from error
            raise

    return with_retries(
        once,
        OPEN_RETRIES.attempts,
        OPEN_RETRIES.delays,
        retry_on=(_LockedOpen,),
        sleep=lambda seconds: _sleep(seconds),  # looked up per call: tests replace it
        what=what,
    )


def _is_lock_contention(error: sqlite3.OperationalError) -> bool:
    """SQLite's "database is locked" / "database is busy": another connection's turn."""
    text = str(error).lower()
    return "locked" in text or "busy" in text


_PENDING = ResultSubmissionStatus.PendingValidation.value

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('total_issuance', '0');
INSERT OR IGNORE INTO meta (key, value) VALUES ('next_commit_seq', '0');
CREATE TABLE IF NOT EXISTS accounts (address TEXT PRIMARY KEY, balance TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    task_id INTEGER PRIMARY KEY,
    creator TEXT NOT NULL,
    question TEXT NOT NULL,
    pays_amount TEXT NOT NULL,
    max_assignments INTEGER NOT NULL,
    expiration_block INTEGER NOT NULL,
    validation_strategy TEXT NOT NULL,
    task_type TEXT NOT NULL,
    assets_path TEXT NOT NULL,
    assets_sha256 TEXT NOT NULL,
    global_weights_path TEXT NOT NULL,
    global_weights_sha256 TEXT NOT NULL,
    round_number INTEGER NOT NULL,
    model TEXT NOT NULL DEFAULT '',
    epochs INTEGER NOT NULL DEFAULT 0,
    storage_endpoint TEXT NOT NULL DEFAULT '',
    payment_rule TEXT NOT NULL DEFAULT 'per_result',
    min_reputation INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    created_block INTEGER NOT NULL,
    assigned INTEGER NOT NULL DEFAULT 0,
    paid TEXT NOT NULL DEFAULT '0',
    refunded TEXT NOT NULL DEFAULT '0',
    finished_block INTEGER
);
CREATE INDEX IF NOT EXISTS tasks_unfinished ON tasks (expiration_block)
    WHERE finished_block IS NULL;
CREATE TABLE IF NOT EXISTS submissions (
    submission_id INTEGER PRIMARY KEY,
    task_id INTEGER NOT NULL REFERENCES tasks (task_id),
    worker TEXT NOT NULL,
    status TEXT NOT NULL,
    assigned_block INTEGER NOT NULL,
    result_path TEXT,
    result_sha256 TEXT,
    num_examples INTEGER,
    metrics_json TEXT,
    base_fingerprint TEXT,
    result_block INTEGER,
    reason TEXT NOT NULL DEFAULT '',
    paid TEXT NOT NULL DEFAULT '0',
    verdict_block INTEGER,
    commitment TEXT,
    commit_block INTEGER,
    commit_seq INTEGER,
    value REAL,
    UNIQUE (task_id, worker)
);
CREATE INDEX IF NOT EXISTS submissions_pending ON submissions (task_id)
    WHERE status = '{_PENDING}';
"""

_COMMIT_COLUMNS = (
    ("commitment", "TEXT"),
    ("commit_block", "INTEGER"),
    ("commit_seq", "INTEGER"),
    ("value", "REAL"),
)
"""Added with commit-reveal; files created before it get them by ALTER TABLE on open."""

_TASK_RECORD_COLUMNS = (
    ("model", "TEXT NOT NULL DEFAULT ''"),
    ("epochs", "INTEGER NOT NULL DEFAULT 0"),
    ("storage_endpoint", "TEXT NOT NULL DEFAULT ''"),
    ("payment_rule", "TEXT NOT NULL DEFAULT 'per_result'"),
    ("min_reputation", "INTEGER NOT NULL DEFAULT 0"),
)
"""Added for contributors' filters and storage access; old files get them (at their defaults,
as TaskSpec has them) by ALTER TABLE on open."""

_SETTLEABLE = f"""
SELECT * FROM tasks AS t
WHERE t.finished_block IS NULL AND t.expiration_block <= ?
  AND NOT EXISTS (
    SELECT 1 FROM submissions AS s WHERE s.task_id = t.task_id AND s.status = '{_PENDING}')
ORDER BY t.task_id
"""

_OVERDUE = f"""
SELECT DISTINCT t.* FROM tasks AS t JOIN submissions AS s ON s.task_id = t.task_id
WHERE t.finished_block IS NULL AND s.status = '{_PENDING}' AND t.expiration_block + ? <= ?
ORDER BY t.task_id
"""
"""Candidates for auto-acceptance (an index-backed filter; rules.auto_accepted decides)."""

AUTO_ACCEPTED = rules.AUTO_ACCEPTED  # kept importable from here for older callers

PaymentCheck = Callable[[Submission, int], None]
"""Called with an accepted submission and what the accept pays, once the rules allow the
accept and before it is recorded; raises a MarketplaceError when that was not paid (the
chain indexer: no matching transfer in the verdict's extrinsic), which refuses the verdict."""


# --- connections and transactions -----------------------------------------------------------


def connect(path: str | Path) -> sqlite3.Connection:
    """A fresh connection in autocommit mode: transactions are begun explicitly, so that every
    write can start with BEGIN IMMEDIATE (take the write lock first, decide second)."""
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


class _Held:
    """A thread's kept connection and what it was opened on (process, file identity)."""

    __slots__ = ("busy", "conn", "file", "pid")

    def __init__(self, conn: sqlite3.Connection, file: tuple[int, int]) -> None:
        self.conn, self.file, self.pid, self.busy = conn, file, os.getpid(), False


_per_thread = threading.local()


def _file_identity(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


@contextmanager
def _thread_connection(path: str | Path) -> Iterator[sqlite3.Connection]:
    """This thread's connection to ``path``, opened on first use and kept for the next
    operations (sqlite3 connections belong to their thread). A fresh one-off connection is
    used instead when the kept one is busy (an operation inside another on this thread), and
    the kept one is replaced when the file was replaced or deleted (a kept connection would
    still see the old inode), after a fork (a connection must not cross one) and when it was
    left inside a transaction."""
    key = os.path.abspath(path)
    held: dict[str, _Held] = _per_thread.__dict__.setdefault("held", {})
    entry = held.get(key)
    if entry is not None and entry.busy:
        conn = connect(key)
        try:
            yield conn
        finally:
            conn.close()
        return
    file = _file_identity(key)
    if entry is not None and (
        entry.pid != os.getpid() or entry.file != file or entry.conn.in_transaction
    ):
        del held[key]
        if entry.pid == os.getpid():  # a forked child leaves its parent's connection alone
            entry.conn.close()
        entry = None
    if entry is None:
        conn = connect(key)
        file = _file_identity(key)  # connecting may have created the file
        if file is None:  # nothing to recognise it by next time: use it once
            try:
                yield conn
            finally:
                conn.close()
            return
        entry = held[key] = _Held(conn, file)
    entry.busy = True
    try:
        yield entry.conn
    finally:
        entry.busy = False


@contextmanager
def write_transaction(path: str | Path) -> Iterator[sqlite3.Connection]:
    """One BEGIN IMMEDIATE transaction: committed if the block ends normally, rolled back (so
    nothing changes) if it or the commit raises. Holding the write lock from the first read
    makes check-then-write races across processes impossible."""
    with _thread_connection(path) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


@contextmanager
def read_transaction(path: str | Path) -> Iterator[sqlite3.Connection]:
    """A read snapshot, so that a task and its submissions are read consistently."""
    with _thread_connection(path) as conn:
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("ROLLBACK")


# --- row conversion ---------------------------------------------------------------------------


def _submissions(conn: sqlite3.Connection, task_id: int) -> list[Submission]:
    """Every submission of the task, by id."""
    rows = conn.execute(
        "SELECT * FROM submissions WHERE task_id = ? ORDER BY submission_id", (task_id,)
    ).fetchall()
    return [_submission_from_row(row) for row in rows]


def _reputation(conn: sqlite3.Connection, worker: str) -> Reputation:
    """The worker's reputation (protocol.rules.reputation) from its judged submissions."""
    rows = conn.execute(
        "SELECT s.*, t.creator AS task_creator FROM submissions AS s "
        "JOIN tasks AS t ON t.task_id = s.task_id WHERE s.worker = ? AND s.status IN (?, ?)",
        (worker, ResultSubmissionStatus.Accepted.value, ResultSubmissionStatus.Rejected.value),
    ).fetchall()
    return rules.reputation(((_submission_from_row(r), r["task_creator"]) for r in rows), worker)


def _task_from_row(row: sqlite3.Row) -> Task:
    spec = TaskSpec(
        question=row["question"],
        pays_amount=int(row["pays_amount"]),
        max_assignments=row["max_assignments"],
        expiration_block=row["expiration_block"],
        validation_strategy=ValidationStrategy(row["validation_strategy"]),
        task_type=TaskType(row["task_type"]),
        assets_path=row["assets_path"],
        assets_sha256=row["assets_sha256"],
        global_weights_path=row["global_weights_path"],
        global_weights_sha256=row["global_weights_sha256"],
        round_number=row["round_number"],
        model=row["model"],
        epochs=row["epochs"],
        storage_endpoint=row["storage_endpoint"],
        payment_rule=row["payment_rule"],
        min_reputation=row["min_reputation"],
    )
    return Task(
        task_id=row["task_id"],
        creator=row["creator"],
        spec=spec,
        status=TaskStatus(row["status"]),
        created_block=row["created_block"],
        assigned=row["assigned"],
        paid=int(row["paid"]),
        refunded=int(row["refunded"]),
    )


def _submission_from_row(row: sqlite3.Row) -> Submission:
    result = None
    if row["result_path"] is not None:
        result = TaskResult(
            result_path=row["result_path"],
            sha256=row["result_sha256"],
            num_examples=row["num_examples"],
            metrics=json.loads(row["metrics_json"]),
            base_fingerprint=row["base_fingerprint"],
        )
    return Submission(
        submission_id=row["submission_id"],
        task_id=row["task_id"],
        worker=row["worker"],
        status=ResultSubmissionStatus(row["status"]),
        assigned_block=row["assigned_block"],
        result=result,
        reason=row["reason"],
        paid=int(row["paid"]),
        value=row["value"],
        commitment=row["commitment"] or "",
        commit_order=row["commit_seq"],
    )


# --- record lookups (the rules themselves are in rules.py) -----------------------------------


def _task_row(conn: sqlite3.Connection, task_id: int) -> sqlite3.Row:
    if not 0 <= task_id <= MAX_ID:
        raise UnknownTask(f"no task {task_id}; list_tasks() shows the existing ones")
    row = conn.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
    if row is None:
        raise UnknownTask(f"no task {task_id}; list_tasks() shows the existing ones")
    return row


def _submission_row(conn: sqlite3.Connection, submission_id: int) -> sqlite3.Row:
    if not 0 <= submission_id <= MAX_ID:
        raise UnknownSubmission(f"no submission {submission_id}")
    row = conn.execute(
        "SELECT * FROM submissions WHERE submission_id = ?", (submission_id,)
    ).fetchone()
    if row is None:
        raise UnknownSubmission(f"no submission {submission_id}")
    return row


def _with_task(conn: sqlite3.Connection, submission_id: int) -> tuple[Submission, Task]:
    """A submission and its task as domain records, for the rules."""
    submission = _submission_from_row(_submission_row(conn, submission_id))
    return submission, _task_from_row(_task_row(conn, submission.task_id))


def _next_id(conn: sqlite3.Connection, table: str, column: str) -> int:
    """Ids start at 0, as on chain (an INTEGER PRIMARY KEY alone would start at 1)."""
    row = conn.execute(f"SELECT COALESCE(MAX({column}) + 1, 0) FROM {table}").fetchone()
    return int(row[0])


# --- balances ---------------------------------------------------------------------------------


def _balance(conn: sqlite3.Connection, address: str) -> int:
    row = conn.execute("SELECT balance FROM accounts WHERE address = ?", (address,)).fetchone()
    return int(row[0]) if row else 0


def _set_balance(conn: sqlite3.Connection, address: str, amount: int) -> None:
    conn.execute(
        "INSERT INTO accounts (address, balance) VALUES (?, ?) "
        "ON CONFLICT (address) DO UPDATE SET balance = excluded.balance",
        (address, str(amount)),
    )


def _get_meta_int(conn: sqlite3.Connection, key: str) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return int(row[0])


def _add_missing_columns(
    conn: sqlite3.Connection, table: str, columns: tuple[tuple[str, str], ...]
) -> None:
    """Give a table created by an older version the columns added since: old submissions keep
    NULL commitment columns (uncommitted), old tasks the TaskSpec defaults. Runs inside the
    caller's write transaction."""
    present = {row["name"] for row in conn.execute(f"PRAGMA table_info({table})")}
    for name, sql_type in columns:
        if name not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {sql_type}")


def _take_commit_seq(conn: sqlite3.Connection) -> int:
    """The next marketplace-wide commitment number (0, 1, 2, ... in the order of commits)."""
    seq = _get_meta_int(conn, "next_commit_seq")
    conn.execute("UPDATE meta SET value = ? WHERE key = 'next_commit_seq'", (str(seq + 1),))
    return seq


class Ledger:
    """The marketplace state and its rules. Addresses are stored in one canonical SS58 form
    (prefix 42), so two spellings of one key are one account.

    ``track_balances=False`` is for an indexer of a chain that holds the balances itself: the
    rules, escrow bookkeeping (paid/refunded per task) and statuses still apply, but no
    account balance is read or changed.

    ``review_grace_blocks``: like a marketplace's auto-approval delay (Amazon Mechanical Turk
    pays an assignment its requester did not review in time), a result still awaiting a
    verdict this many blocks after its task expired is accepted and paid from the escrow, and
    the task then refunds the rest; nobody's money stays locked. None (an indexer: the chain
    holds no escrow to pay from) leaves such results to their creator.
    """

    def __init__(
        self,
        path: str | Path,
        track_balances: bool = True,
        review_grace_blocks: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.track_balances = track_balances
        self.review_grace_blocks = review_grace_blocks
        self._init_schema()

    def _init_schema(self) -> None:
        """The schema, created or completed, the file's lock contention ridden out
        (``retry_locked``)."""
        retry_locked(self._create_schema, f"opening the marketplace ledger {self.path}")

    def _create_schema(self) -> None:
        conn = connect(self.path)
        try:
            # Only a file not yet in WAL mode is switched: the switch needs the file to
            # itself, and SQLite may refuse it at once ("database is locked", no busy wait)
            # while other connections come and go.
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}COMMIT;")
            conn.execute("BEGIN IMMEDIATE")
            try:
                _add_missing_columns(conn, "submissions", _COMMIT_COLUMNS)
                _add_missing_columns(conn, "tasks", _TASK_RECORD_COLUMNS)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    # --- balance movements (no-ops when the chain tracks balances) ---

    def _credit(self, conn: sqlite3.Connection, address: str, amount: int) -> None:
        if self.track_balances and amount:
            _set_balance(conn, address, _balance(conn, address) + amount)

    def _debit(self, conn: sqlite3.Connection, address: str, amount: int) -> None:
        if not self.track_balances:
            return
        held = _balance(conn, address)
        if held < amount:
            raise InsufficientBalance(
                f"{address} holds {held} but {amount} is needed; fund the account first"
            )
        _set_balance(conn, address, held - amount)

    # --- settlement ---

    def _finish(self, conn: sqlite3.Connection, task: sqlite3.Row, block: int) -> int:
        """End a task: refund what was not paid to its creator. Returns the refund."""
        paid = int(task["paid"])
        refund = int(task["pays_amount"]) - paid
        status = TaskStatus.Completed if paid > 0 else TaskStatus.Withdrawn
        conn.execute(
            "UPDATE tasks SET status = ?, refunded = ?, finished_block = ? WHERE task_id = ?",
            (status.value, str(refund), block, task["task_id"]),
        )
        self._credit(conn, task["creator"], refund)
        return refund

    def _settle_expired(self, conn: sqlite3.Connection, block: int) -> list[tuple[int, int]]:
        grace = self.review_grace_blocks
        if grace is not None:
            for row in conn.execute(_OVERDUE, (grace, block)).fetchall():
                task = _task_from_row(row)
                for verdict in rules.auto_accepted(
                    task, _submissions(conn, task.task_id), block, grace
                ):
                    self._accept(conn, task.creator, verdict, block)
        rows = conn.execute(_SETTLEABLE, (block,)).fetchall()
        return [
            (row["task_id"], self._finish(conn, row, block))
            for row in rows
            if rules.expired(_task_from_row(row), block)
        ]

    def _nothing_to_settle(self, conn: sqlite3.Connection, block: int) -> bool:
        if self.review_grace_blocks is not None:
            overdue = conn.execute(_OVERDUE, (self.review_grace_blocks, block)).fetchone()
            if overdue is not None:
                return False
        return conn.execute(_SETTLEABLE, (block,)).fetchone() is None

    def settle_expired(self, block: int) -> list[tuple[int, int]]:
        """Accept results left unjudged past the review grace (see the class), then finish every
        task past its expiration_block with no result awaiting a verdict and refund its
        creator; returns [(task_id, refund)]. A read-only check runs first, so
        calling this before every read costs no write lock when there is nothing to do."""
        with read_transaction(self.path) as conn:
            if self._nothing_to_settle(conn, block):
                return []
        with write_transaction(self.path) as conn:
            return self._settle_expired(conn, block)

    def _settle_if_asked(self, block: int | None) -> None:
        if block is not None:
            self.settle_expired(block)

    # --- writes ---

    def fund(self, address: str, amount: int) -> None:
        """Dev faucet: mint ``amount`` to ``address``, counted in total_issuance so that the
        conservation of value stays checkable."""
        if not self.track_balances:
            raise ValueError("this ledger does not track balances; fund accounts on the chain")
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise ValueError(f"amount must be a positive integer, got {amount!r}")
        account = canonical_address(address)
        with write_transaction(self.path) as conn:
            issuance = _get_meta_int(conn, "total_issuance")
            conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'total_issuance'", (str(issuance + amount),)
            )
            self._credit(conn, account, amount)

    def create_task(self, creator: str, spec: TaskSpec, block: int) -> int:
        """Validate the spec, escrow pays_amount from the creator, open the task (ids from 0).
        The same spec again while its task is unfinished is a retried create: its id is
        returned and nothing is escrowed twice (rules.resubmitted_task)."""
        account = canonical_address(creator)
        with write_transaction(self.path) as conn:
            self._settle_expired(conn, block)
            unfinished = conn.execute(
                "SELECT * FROM tasks WHERE creator = ? AND finished_block IS NULL", (account,)
            ).fetchall()
            again = rules.resubmitted_task(map(_task_from_row, unfinished), account, spec)
            if again is not None:
                return again.task_id
            rules.enforce(rules.validate_spec(spec, block))
            self._debit(conn, account, spec.pays_amount)
            task_id = _next_id(conn, "tasks", "task_id")
            conn.execute(
                "INSERT INTO tasks (task_id, creator, question, pays_amount, max_assignments, "
                "expiration_block, validation_strategy, task_type, assets_path, assets_sha256, "
                "global_weights_path, global_weights_sha256, round_number, model, epochs, "
                "storage_endpoint, payment_rule, min_reputation, status, created_block) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    task_id,
                    account,
                    spec.question,
                    str(spec.pays_amount),
                    spec.max_assignments,
                    spec.expiration_block,
                    ValidationStrategy(spec.validation_strategy).value,
                    TaskType(spec.task_type).value,
                    spec.assets_path,
                    spec.assets_sha256,
                    spec.global_weights_path,
                    spec.global_weights_sha256,
                    spec.round_number,
                    spec.model,
                    spec.epochs,
                    spec.storage_endpoint,
                    spec.payment_rule,
                    spec.min_reputation,
                    TaskStatus.Created.value,
                    block,
                ),
            )
            return task_id

    def assign_task(self, worker: str, task_id: int, block: int) -> int:
        """Give the worker one of the task's slots; returns the (global) submission id."""
        account = canonical_address(worker)
        with write_transaction(self.path) as conn:
            self._settle_expired(conn, block)
            task = _task_from_row(_task_row(conn, task_id))
            holding = rules.held_submission(_submissions(conn, task_id), account)
            standing = _reputation(conn, account) if task.spec.min_reputation else None
            rules.enforce(rules.can_assign(task, holding, account, block, standing))
            submission_id = _next_id(conn, "submissions", "submission_id")
            conn.execute(
                "INSERT INTO submissions (submission_id, task_id, worker, status, assigned_block)"
                " VALUES (?, ?, ?, ?, ?)",
                (submission_id, task_id, account, ResultSubmissionStatus.Assigned.value, block),
            )
            conn.execute(
                "UPDATE tasks SET assigned = assigned + 1, status = ? WHERE task_id = ?",
                (TaskStatus.InProgress.value, task_id),
            )
            return submission_id

    def commit_result(self, worker: str, submission_id: int, commitment: str, block: int) -> None:
        """Record the assignee's commitment to its result (decentralml.protocol.commitment), before
        expiry and before any result, once. Repeating the same commitment changes nothing (a
        retried step); another one is refused with AlreadyCommitted. Each commitment takes the
        next marketplace-wide commit number (``Submission.commit_order``)."""
        account = canonical_address(worker)
        rules.enforce(rules.check_commitment(commitment))
        with write_transaction(self.path) as conn:
            self._settle_expired(conn, block)
            submission, task = _with_task(conn, submission_id)
            if not rules.enforce(rules.can_commit(task, submission, account, commitment, block)):
                return
            conn.execute(
                "UPDATE submissions SET commitment = ?, commit_block = ?, commit_seq = ? "
                "WHERE submission_id = ?",
                (commitment, block, _take_commit_seq(conn), submission_id),
            )

    def send_task_result(
        self, worker: str, submission_id: int, result: TaskResult, block: int
    ) -> None:
        """Record the assignee's result (the reveal), once, before expiry; it must match the
        submission's commitment (commit_result first). The submission then awaits a verdict
        (PendingValidation)."""
        account = canonical_address(worker)
        rules.enforce(rules.check_result(result))
        metrics_json = json.dumps(dict(result.metrics), sort_keys=True)
        with write_transaction(self.path) as conn:
            self._settle_expired(conn, block)
            submission, task = _with_task(conn, submission_id)
            if not rules.enforce(rules.can_send_result(task, submission, account, result, block)):
                return
            conn.execute(
                "UPDATE submissions SET status = ?, result_path = ?, result_sha256 = ?, "
                "num_examples = ?, metrics_json = ?, base_fingerprint = ?, result_block = ? "
                "WHERE submission_id = ?",
                (
                    _PENDING,
                    result.result_path,
                    result.sha256,
                    result.num_examples,
                    metrics_json,
                    result.base_fingerprint,
                    block,
                    submission_id,
                ),
            )

    def _judge(
        self, conn: sqlite3.Connection, creator: str, verdict: Verdict
    ) -> tuple[Submission, Task] | None:
        """The submission and its task when the verdict is to be recorded; None for a repeat
        (the same verdict already given), so a retried step pays nothing twice."""
        submission, task = _with_task(conn, verdict.submission_id)
        if rules.enforce(rules.can_judge(task, submission, creator, verdict.accept)):
            return submission, task
        return None

    def _accept(
        self,
        conn: sqlite3.Connection,
        creator: str,
        verdict: Verdict,
        block: int,
        payment: PaymentCheck | None = None,
    ) -> int:
        judged = self._judge(conn, creator, verdict)
        if judged is None:
            return 0
        submission, task = judged
        reward = rules.enforce_amount(rules.accept_amount(task, verdict))
        if payment is not None:
            payment(submission, reward)
        conn.execute(
            "UPDATE submissions SET status = ?, paid = ?, reason = ?, verdict_block = ?, "
            "value = ? WHERE submission_id = ?",
            (
                ResultSubmissionStatus.Accepted.value,
                str(reward),
                verdict.reason,
                block,
                verdict.value,
                verdict.submission_id,
            ),
        )
        conn.execute(
            "UPDATE tasks SET paid = ? WHERE task_id = ?", (str(task.paid + reward), task.task_id)
        )
        self._credit(conn, submission.worker, reward)
        return reward

    def _reject(self, conn: sqlite3.Connection, creator: str, verdict: Verdict, block: int) -> None:
        if self._judge(conn, creator, verdict) is None:
            return
        conn.execute(
            "UPDATE submissions SET status = ?, reason = ?, verdict_block = ?, value = ? "
            "WHERE submission_id = ?",
            (
                ResultSubmissionStatus.Rejected.value,
                verdict.reason,
                block,
                verdict.value,
                verdict.submission_id,
            ),
        )

    def accept(self, creator: str, submission_id: int, block: int, reason: str = "") -> int:
        """Pay the contributor pays_amount // max_assignments. Idempotent: a repeat accept
        pays 0, so a retried settlement step can never pay twice."""
        return self.settle(creator, [Verdict(submission_id, True, reason)], block)[submission_id]

    def reject(self, creator: str, submission_id: int, reason: str, block: int) -> None:
        """Refuse a result and record why. A repeat reject changes nothing (the first reason
        stays); rejecting an accepted (paid) result is refused."""
        self.settle(creator, [Verdict(submission_id, False, reason)], block)

    def settle(
        self,
        creator: str,
        verdicts: list[Verdict],
        block: int,
        close_task_id: int | None = None,
        *,
        payment: PaymentCheck | None = None,
    ) -> dict[int, int]:
        """Record a round's verdicts (with their reasons) and pay the accepted ones, all in one
        transaction: if any verdict is refused, none is recorded. Returns what this call paid
        per submission (0 for a rejection or a repeat), so a retried settle pays nothing twice.
        With ``close_task_id`` the task is also closed (refunded) in the same transaction.
        An expired task whose last pending result gets its verdict is refunded here.
        ``payment`` checks that each accept to be recorded (not a repeat) was paid."""
        account = canonical_address(creator)
        paid: dict[int, int] = {}
        with write_transaction(self.path) as conn:
            self._settle_expired(conn, block)
            for verdict in rules.distinct_verdicts(verdicts):
                sid = verdict.submission_id
                if verdict.accept:
                    pay = self._accept(conn, account, verdict, block, payment)
                    paid[sid] = paid.get(sid, 0) + pay
                else:
                    self._reject(conn, account, verdict, block)
                    paid.setdefault(sid, 0)
            self._settle_expired(conn, block)
            if close_task_id is not None:
                self._close(conn, account, close_task_id, block)
        return paid

    def close_task(self, creator: str, task_id: int, block: int) -> int:
        """End the task now and refund what was not paid. Returns the refund; 0 if the task
        was already finished (closed before, or settled at expiry)."""
        account = canonical_address(creator)
        with write_transaction(self.path) as conn:
            self._settle_expired(conn, block)
            return self._close(conn, account, task_id, block)

    def _close(self, conn: sqlite3.Connection, account: str, task_id: int, block: int) -> int:
        row = _task_row(conn, task_id)
        submissions = _submissions(conn, task_id)
        if not rules.enforce(rules.can_close(_task_from_row(row), submissions, account)):
            return 0
        return self._finish(conn, row, block)

    # --- reads (pass ``block`` to see expired tasks settled first) ---

    def get_task(self, task_id: int, block: int | None = None) -> Task:
        self._settle_if_asked(block)
        with read_transaction(self.path) as conn:
            return _task_from_row(_task_row(conn, task_id))

    def list_tasks(self, open_only: bool = True, block: int | None = None) -> list[Task]:
        """All tasks by id, or only the open ones: unfinished, with a free slot and, when
        ``block`` is given, not yet expired at that block."""
        self._settle_if_asked(block)
        query = "SELECT * FROM tasks"
        if open_only:  # an index-backed filter; rules.listed_open decides
            query += " WHERE finished_block IS NULL AND assigned < max_assignments"
        with read_transaction(self.path) as conn:
            rows = conn.execute(query + " ORDER BY task_id").fetchall()
        tasks = [_task_from_row(row) for row in rows]
        return [t for t in tasks if rules.listed_open(t, block)] if open_only else tasks

    def reputation(self, worker: str, block: int | None = None) -> Reputation:
        """The worker's reputation as ``assign_task`` judges it (protocol.rules.reputation)."""
        self._settle_if_asked(block)
        with read_transaction(self.path) as conn:
            return _reputation(conn, canonical_address(worker))

    def get_submission(self, submission_id: int, block: int | None = None) -> Submission:
        self._settle_if_asked(block)
        with read_transaction(self.path) as conn:
            return _submission_from_row(_submission_row(conn, submission_id))

    def list_task_results(self, task_id: int, block: int | None = None) -> list[Submission]:
        """Every submission of the task (any status), by id."""
        self._settle_if_asked(block)
        with read_transaction(self.path) as conn:
            _task_row(conn, task_id)
            rows = conn.execute(
                "SELECT * FROM submissions WHERE task_id = ? ORDER BY submission_id", (task_id,)
            ).fetchall()
        return [_submission_from_row(row) for row in rows]

    def balance(self, address: str, block: int | None = None) -> int:
        self._require_balances()
        account = canonical_address(address)
        self._settle_if_asked(block)
        with read_transaction(self.path) as conn:
            return _balance(conn, account)

    def balances(self) -> dict[str, int]:
        """Every account's balance, by canonical address (for audits and tests)."""
        self._require_balances()
        with read_transaction(self.path) as conn:
            rows = conn.execute("SELECT address, balance FROM accounts").fetchall()
        return {row["address"]: int(row["balance"]) for row in rows}

    def total_issuance(self) -> int:
        """Everything ever minted by fund(): equals all balances plus escrow_total()."""
        with read_transaction(self.path) as conn:
            return _get_meta_int(conn, "total_issuance")

    def escrow_total(self, block: int | None = None) -> int:
        """Value held by unfinished tasks: pays_amount - paid for each."""
        self._settle_if_asked(block)
        with read_transaction(self.path) as conn:
            rows = conn.execute(
                "SELECT pays_amount, paid FROM tasks WHERE finished_block IS NULL"
            ).fetchall()
        return sum(int(row["pays_amount"]) - int(row["paid"]) for row in rows)

    def _require_balances(self) -> None:
        if not self.track_balances:
            raise ValueError("this ledger does not track balances; read them from the chain")
