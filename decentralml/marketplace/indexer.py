"""Derive the marketplace state from the chain: replay remark records through the Ledger rules.

The chain only stores records (remarks) and moves money (transfers); what they MEAN is decided
here, by the same rules as the embedded marketplace (``Ledger(track_balances=False)``). Every
indexer replaying the same finalized blocks from the same ``start_block`` derives the same
tasks, submissions and ids, so no party has to trust another's database.

Replay order is chain order: block number, extrinsic index, call index inside a batch_all.
Only successful extrinsics count (ChainClient drops failed ones). A record the rules refuse
(a non-assignee's result, a result without its commitment, a stranger's verdict, an assignment
to a full task) is kept in ``chain_records`` with the refusal, and changes nothing else. An
accept verdict the rules allow counts only if the same extrinsic pays the contributor exactly
what the task's payment rule gives it (``rules.accept_amount``) with a transfer no earlier
verdict used: an "Accepted" status in the index therefore always means paid on chain.
docs/chain-protocol.md is the specification, and tests/conformance its vectors.

The cache lives in one SQLite file: the Ledger tables, ``chain_records`` (the outcome of each
record, which writers read back to learn their ids) and ``chain_index`` (genesis hash,
start block, record format, last indexed block and its hash). A different genesis, a
different start block, another record format (an index built from dml1 records), a head
below the last indexed block or a changed hash at that height (a restarted dev chain) means
the cache cannot be continued: it is deleted and rebuilt from ``start_block``. A
crash while a block was half applied is detected the same way (an ``applying`` marker) and
also rebuilds, because Ledger writes and the progress marker are separate transactions.
"""

from __future__ import annotations

import fcntl
import hashlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from decentralml.chain import codec
from decentralml.chain.client import ChainClient, ChainExtrinsic, Remark, Transfer, public_key_hex
from decentralml.marketplace.ledger import Ledger, read_transaction, write_transaction
from decentralml.protocol import errors
from decentralml.protocol.accounts import canonical_address
from decentralml.protocol.errors import ConfigError, MarketplaceError
from decentralml.protocol.records import Submission, Verdict

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chain_index (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chain_records (
    block_number INTEGER NOT NULL,
    extrinsic_index INTEGER NOT NULL,
    item_index INTEGER NOT NULL,
    signer TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    applied INTEGER NOT NULL,
    entity_id INTEGER,
    amount TEXT NOT NULL DEFAULT '0',
    error_type TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (block_number, extrinsic_index, item_index)
);
CREATE INDEX IF NOT EXISTS chain_records_by_signer
    ON chain_records (signer, payload_sha256, block_number);
"""


_SQLITE_MAX_INT = 2**63 - 1

_RECORD_FORMAT = codec.PREFIX.decode("ascii")
"""An index built by a reader of another record version (dml1) is rebuilt, not continued."""


class UnpaidAccept(MarketplaceError):
    """An accept verdict whose extrinsic does not pay the contributor its reward: ignored."""


@dataclass(frozen=True)
class RecordOutcome:
    """What the rules made of one record: the id it created or targeted, what it moved
    (reward paid or refund), or why it was refused."""

    block_number: int
    extrinsic_index: int
    item_index: int
    signer: str
    kind: str
    applied: bool
    entity_id: int | None
    amount: int
    error_type: str
    error: str
    payload_sha256: str
    """sha256 of the record's exact bytes: how a writer recognizes its own records."""

    def raise_if_refused(self) -> None:
        """Re-raise a refusal as the rule's own error type (TaskFull, NotAssignee, ...)."""
        if self.applied:
            return
        cls = getattr(errors, self.error_type, None)
        if not (isinstance(cls, type) and issubclass(cls, MarketplaceError)):
            cls = UnpaidAccept if self.error_type == "UnpaidAccept" else MarketplaceError
        raise cls(
            f"{self.error} (the {self.kind} record in block {self.block_number}, extrinsic "
            f"{self.extrinsic_index} is on chain but the marketplace rules ignore it; its fee "
            "was spent)"
        )


@dataclass(frozen=True)
class _Applied:
    entity_id: int | None
    amount: int = 0


class ChainIndexer:
    """Keeps a Ledger file in step with the chain's finalized blocks. Safe to share between
    threads, and between processes on one file (a lock file serializes syncs)."""

    def __init__(self, client: ChainClient, path: str | Path, start_block: int = 0) -> None:
        if start_block < 0:
            raise ValueError(f"start_block must be >= 0, got {start_block}")
        self.client = client
        self.path = Path(path)
        self.start_block = start_block
        self.blocks_scanned = 0
        """Blocks read from the chain by this instance (shows incremental syncs in tests)."""
        self.rebuilds = 0
        self._lock = threading.RLock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.ledger = self._open()

    # --- files and progress ------------------------------------------------------------

    def _open(self) -> Ledger:
        self._refuse_foreign_file()
        conn = sqlite3.connect(self.path)  # our tables first: they mark the file as an index
        try:
            conn.executescript(_SCHEMA)
        finally:
            conn.close()
        return Ledger(self.path, track_balances=False)

    def _refuse_foreign_file(self) -> None:
        """An index is deleted and rebuilt at will: never adopt a file holding other state
        (an embedded marketplace, say), or a rebuild would destroy it."""
        if not self.path.exists():
            return
        conn = sqlite3.connect(self.path)
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        finally:
            conn.close()
        if tables and "chain_index" not in tables:
            raise ConfigError(
                f"{self.path} holds data that is not a chain index (an embedded marketplace?); "
                "give the Substrate marketplace its own index file"
            )

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        with self._lock, open(f"{self.path}.lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _progress(self) -> dict[str, str]:
        with read_transaction(self.path) as conn:
            rows = conn.execute("SELECT key, value FROM chain_index").fetchall()
        return {row["key"]: row["value"] for row in rows}

    @staticmethod
    def _set_progress(conn: sqlite3.Connection, **values: object) -> None:
        conn.executemany(
            "INSERT INTO chain_index (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [(key, str(value)) for key, value in values.items()],
        )

    def last_indexed_block(self) -> int:
        """The last block replayed; ``start_block - 1`` before the first sync."""
        return int(self._progress().get("last_block", self.start_block - 1))

    def _stale_reason(self, progress: dict[str, str], genesis: str, head: int) -> str:
        """Why the cache cannot be continued on this chain, or "" if it can."""
        if not progress.get("genesis_hash"):
            return "new index"
        if progress["genesis_hash"] != genesis:
            return "another chain (genesis hash differs)"
        if int(progress.get("start_block", -1)) != self.start_block:
            return f"start block changed to {self.start_block}"
        if progress.get("record_format") != _RECORD_FORMAT:
            return f"built from other records than {_RECORD_FORMAT}"
        if progress.get("applying"):
            return f"interrupted while applying block {progress['applying']}"
        last = int(progress.get("last_block", self.start_block - 1))
        if last > head:
            return f"chain head {head} is below the last indexed block {last} (restarted?)"
        if last >= self.start_block and self.client.block_hash(last) != progress.get(
            "last_block_hash"
        ):
            return f"block {last} has another hash now (the chain was restarted or reorganized)"
        return ""

    def _rebuild(self, genesis: str) -> None:
        """Forget everything derived from another chain and start over from start_block."""
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        self.ledger = self._open()
        with write_transaction(self.path) as conn:
            self._set_progress(
                conn,
                genesis_hash=genesis,
                start_block=self.start_block,
                record_format=_RECORD_FORMAT,
                last_block=self.start_block - 1,
                last_block_hash="",
                applying="",
            )

    # --- sync ----------------------------------------------------------------------------

    def sync(self) -> int:
        """Replay every finalized block not yet indexed; returns the last indexed block."""
        with self._file_lock():
            genesis = self.client.genesis_hash()
            head = self.client.finalized_head_number()
            progress = self._progress()
            if self._stale_reason(progress, genesis, head):
                if progress.get("genesis_hash"):
                    self.rebuilds += 1
                self._rebuild(genesis)
            last = self.last_indexed_block()
            for number in range(max(last + 1, self.start_block), head + 1):
                self._index_block(number)
            if head >= self.start_block and head > last:
                with write_transaction(self.path) as conn:
                    self._set_progress(
                        conn, last_block=head, last_block_hash=self.client.block_hash(head)
                    )
            last = self.last_indexed_block()
            if last >= 0:
                self.ledger.settle_expired(last)  # reads then show refunds at expiry
            return last

    def _index_block(self, number: int) -> None:
        extrinsics = self.client.block_extrinsics(number)
        self.blocks_scanned += 1
        if not any(_has_record(extrinsic) for extrinsic in extrinsics):
            return
        with write_transaction(self.path) as conn:
            self._set_progress(conn, applying=number)
        outcomes = [o for extrinsic in extrinsics for o in self._apply_extrinsic(extrinsic)]
        with write_transaction(self.path) as conn:
            conn.executemany(
                "INSERT INTO chain_records (block_number, extrinsic_index, item_index, signer, "
                "kind, payload_sha256, applied, entity_id, amount, error_type, error) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                outcomes,
            )
            self._set_progress(
                conn,
                last_block=number,
                last_block_hash=self.client.block_hash(number),
                applying="",
            )

    def _apply_extrinsic(self, extrinsic: ChainExtrinsic) -> list[tuple[object, ...]]:
        signer = canonical_address(extrinsic.signer)
        payments = list(extrinsic.transfers)  # each transfer can back one accept verdict
        rows: list[tuple[object, ...]] = []
        for item_index, item in enumerate(extrinsic.items):
            if not isinstance(item, Remark):
                continue
            record = codec.decode(item.payload)
            if record is None:
                continue  # someone else's remark
            block = extrinsic.block_number
            try:
                applied = self._apply(record, signer, block, payments)
                result = (1, applied.entity_id, str(applied.amount), "", "")
            except MarketplaceError as exc:
                result = (0, _target_id(record), "0", type(exc).__name__, str(exc))
            rows.append(
                (
                    block,
                    extrinsic.extrinsic_index,
                    item_index,
                    signer,
                    type(record).__name__,
                    hashlib.sha256(item.payload).hexdigest(),
                    *result,
                )
            )
        return rows

    def _apply(
        self, record: codec.Record, signer: str, block: int, payments: list[Transfer]
    ) -> _Applied:
        ledger = self.ledger
        if isinstance(record, codec.TaskCreated):
            return _Applied(ledger.create_task(signer, record.spec, block))
        if isinstance(record, codec.Assign):
            return _Applied(ledger.assign_task(signer, record.task_id, block))
        if isinstance(record, codec.Commit):
            ledger.commit_result(signer, record.submission_id, record.commitment, block)
            return _Applied(record.submission_id)
        if isinstance(record, codec.Result):
            ledger.send_task_result(signer, record.submission_id, record.result, block)
            return _Applied(record.submission_id)
        if isinstance(record, codec.VerdictRecord):
            return self._apply_verdict(record, signer, block, payments)
        return _Applied(record.task_id, ledger.close_task(signer, record.task_id, block))

    def _apply_verdict(
        self, record: codec.VerdictRecord, signer: str, block: int, payments: list[Transfer]
    ) -> _Applied:
        """The Ledger's rules decide first (the creator's verdict on a result, not a repeat,
        an amount the payment rule allows); only then must the extrinsic pay the accept."""
        sid = record.submission_id
        verdict = Verdict(sid, record.accept, record.reason, record.amount, record.value)
        paid = self.ledger.settle(
            signer, [verdict], block, payment=lambda s, amount: _take_payment(s, amount, payments)
        )[sid]
        return _Applied(sid, paid)

    # --- reading outcomes ----------------------------------------------------------------

    def outcomes(self, block_number: int, extrinsic_index: int) -> list[RecordOutcome]:
        """The outcomes of one extrinsic's records, in call order."""
        with read_transaction(self.path) as conn:
            rows = conn.execute(
                "SELECT * FROM chain_records WHERE block_number = ? AND extrinsic_index = ? "
                "ORDER BY item_index",
                (block_number, extrinsic_index),
            ).fetchall()
        return [_outcome(row) for row in rows]

    def find_outcomes(
        self, signer: str, payloads: Sequence[bytes], after_block: int
    ) -> list[RecordOutcome]:
        """The outcomes of the first extrinsic in which ``signer`` wrote any of ``payloads``
        after ``after_block`` (to recover when a submission's fate was unknown), or [].
        Compare its outcomes' ``payload_sha256`` to tell the same write from an overlap."""
        digests = [hashlib.sha256(payload).hexdigest() for payload in payloads]
        marks = ",".join("?" * len(digests))
        with read_transaction(self.path) as conn:
            row = conn.execute(
                "SELECT block_number, extrinsic_index FROM chain_records WHERE signer = ? "
                f"AND payload_sha256 IN ({marks}) AND block_number > ? "
                "ORDER BY block_number, extrinsic_index LIMIT 1",
                (canonical_address(signer), *digests, after_block),
            ).fetchone()
        return [] if row is None else self.outcomes(row[0], row[1])

    def all_outcomes(self) -> list[RecordOutcome]:
        with read_transaction(self.path) as conn:
            rows = conn.execute(
                "SELECT * FROM chain_records ORDER BY block_number, extrinsic_index, item_index"
            ).fetchall()
        return [_outcome(row) for row in rows]


def _has_record(extrinsic: ChainExtrinsic) -> bool:
    return any(codec.decode(payload) is not None for payload in extrinsic.remarks)


def _target_id(record: codec.Record) -> int | None:
    """The id a refused record named, None when it cannot name a row (beyond SQLite's range)."""
    if isinstance(record, codec.Assign | codec.Close):
        target = record.task_id
    elif isinstance(record, codec.Commit | codec.Result | codec.VerdictRecord):
        target = record.submission_id
    else:
        return None
    return target if target <= _SQLITE_MAX_INT else None


def _take_payment(submission: Submission, reward: int, payments: list[Transfer]) -> None:
    """Consume the first unused transfer of the extrinsic that pays this accept (``reward``:
    what the task's payment rule gives it, rules.accept_amount); refuse the verdict if there
    is none. Called only for an accept the rules record, so a refused or repeated verdict
    leaves the transfers to the extrinsic's other verdicts."""
    worker = public_key_hex(submission.worker)
    for index, payment in enumerate(payments):
        if payment.dest == worker and payment.amount == reward:
            del payments[index]
            return
    raise UnpaidAccept(
        f"accept of submission {submission.submission_id} without a transfer of {reward} to "
        f"{submission.worker} in the same extrinsic"
    )


def _outcome(row: sqlite3.Row) -> RecordOutcome:
    return RecordOutcome(
        block_number=row["block_number"],
        extrinsic_index=row["extrinsic_index"],
        item_index=row["item_index"],
        signer=row["signer"],
        kind=row["kind"],
        applied=bool(row["applied"]),
        entity_id=row["entity_id"],
        amount=int(row["amount"]),
        error_type=row["error_type"],
        error=row["error"],
        payload_sha256=row["payload_sha256"],
    )
