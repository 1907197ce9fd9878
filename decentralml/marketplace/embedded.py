"""The embedded marketplace: the Ledger's rules on one SQLite file, with a block clock.

No node to run: a creator and its contributors (threads or separate processes) share one file.
Blocks advance with wall time (``block_time_seconds`` per block, as on a Substrate chain) from
a genesis time stored in the file, so every process computes the same block; tests and demos
move time forward with ``advance_blocks``. Actors are substrate-interface keypairs, of which
only the SS58 address is read, so the same code runs against the Substrate backend.
"""

from __future__ import annotations

import math
import sqlite3
import time
from pathlib import Path

from substrateinterface import Keypair

from decentralml.marketplace.ledger import (
    Ledger,
    read_transaction,
    retry_locked,
    write_transaction,
)
from decentralml.protocol.errors import ConfigError
from decentralml.protocol.records import (
    Reputation,
    Submission,
    Task,
    TaskResult,
    TaskSpec,
    Verdict,
)

_CLOCK_SCHEMA = """
CREATE TABLE IF NOT EXISTS embedded_clock (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    genesis_time REAL NOT NULL,
    block_time_seconds REAL NOT NULL,
    block_offset INTEGER NOT NULL
)
"""


DEFAULT_REVIEW_GRACE_BLOCKS = 600
"""An hour of 6-second blocks after expiry for the creator to judge, then results are paid."""


class EmbeddedMarketplace:
    """The Marketplace Protocol over a local Ledger (balances tracked, dev faucet ``fund``)."""

    def __init__(
        self,
        path: str | Path,
        block_time_seconds: float = 6.0,
        review_grace_blocks: int = DEFAULT_REVIEW_GRACE_BLOCKS,
    ) -> None:
        if not block_time_seconds > 0:
            raise ConfigError(f"block_time_seconds must be > 0, got {block_time_seconds}")
        self.ledger = Ledger(path, track_balances=True, review_grace_blocks=review_grace_blocks)
        self.path = self.ledger.path
        self.genesis_time, self.block_time_seconds = retry_locked(
            lambda: self._init_clock(block_time_seconds),
            f"opening the embedded marketplace's clock in {self.path}",
        )

    def _init_clock(self, block_time_seconds: float) -> tuple[float, float]:
        """Store genesis on first use; later processes adopt it. A different block time
        would make processes disagree on the block, so it is refused rather than ignored."""
        with write_transaction(self.path) as conn:
            conn.execute(_CLOCK_SCHEMA)
            conn.execute(
                "INSERT OR IGNORE INTO embedded_clock VALUES (0, ?, ?, 0)",
                (time.time(), float(block_time_seconds)),
            )
            row = conn.execute(
                "SELECT genesis_time, block_time_seconds FROM embedded_clock"
            ).fetchone()
        genesis, stored = float(row[0]), float(row[1])
        if stored != float(block_time_seconds):
            raise ConfigError(
                f"{self.path} was created with block_time_seconds={stored}, not "
                f"{block_time_seconds}; use the same value everywhere or a new file"
            )
        return genesis, stored

    # --- clock ---

    def current_block(self) -> int:
        """floor((now - genesis) / block_time) + offset, never below 0 (wall clocks step)."""
        with read_transaction(self.path) as conn:
            offset = _offset(conn)
        elapsed = max(0.0, time.time() - self.genesis_time)
        return math.floor(elapsed / self.block_time_seconds) + offset

    def advance_blocks(self, n: int) -> int:
        """Move every process's clock ``n`` blocks forward; returns the new block."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        with write_transaction(self.path) as conn:
            conn.execute("UPDATE embedded_clock SET block_offset = block_offset + ?", (n,))
        return self.current_block()

    # --- writes ---

    def create_task(self, creator: Keypair, spec: TaskSpec) -> int:
        return self.ledger.create_task(creator.ss58_address, spec, self.current_block())

    def assign_task(self, worker: Keypair, task_id: int) -> int:
        return self.ledger.assign_task(worker.ss58_address, task_id, self.current_block())

    def commit_result(self, worker: Keypair, submission_id: int, commitment: str) -> None:
        self.ledger.commit_result(
            worker.ss58_address, submission_id, commitment, self.current_block()
        )

    def send_task_result(self, worker: Keypair, submission_id: int, result: TaskResult) -> None:
        self.ledger.send_task_result(
            worker.ss58_address, submission_id, result, self.current_block()
        )

    def accept(self, creator: Keypair, submission_id: int) -> int:
        return self.ledger.accept(creator.ss58_address, submission_id, self.current_block())

    def reject(self, creator: Keypair, submission_id: int, reason: str) -> None:
        self.ledger.reject(creator.ss58_address, submission_id, reason, self.current_block())

    def settle(
        self, creator: Keypair, verdicts: list[Verdict], close_task_id: int | None = None
    ) -> dict[int, int]:
        """All verdicts (and the close) in one SQLite transaction: all or nothing."""
        return self.ledger.settle(
            creator.ss58_address, verdicts, self.current_block(), close_task_id
        )

    def close_task(self, creator: Keypair, task_id: int) -> int:
        return self.ledger.close_task(creator.ss58_address, task_id, self.current_block())

    def fund(self, address: str, amount: int) -> None:
        """Dev faucet: mint ``amount`` to ``address`` (counted in total_issuance)."""
        self.ledger.fund(address, amount)

    # --- reads (expired tasks are settled first, so reads show the refunds and payments) ---

    def get_task(self, task_id: int) -> Task:
        return self.ledger.get_task(task_id, block=self.current_block())

    def list_tasks(self, open_only: bool = True) -> list[Task]:
        return self.ledger.list_tasks(open_only, block=self.current_block())

    def get_submission(self, submission_id: int) -> Submission:
        return self.ledger.get_submission(submission_id, block=self.current_block())

    def list_task_results(self, task_id: int) -> list[Submission]:
        return self.ledger.list_task_results(task_id, block=self.current_block())

    def balance(self, address: str) -> int:
        return self.ledger.balance(address, block=self.current_block())

    def reputation(self, address: str) -> Reputation:
        return self.ledger.reputation(address, block=self.current_block())

    def total_issuance(self) -> int:
        return self.ledger.total_issuance()

    def escrow_total(self) -> int:
        return self.ledger.escrow_total(block=self.current_block())


def _offset(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT block_offset FROM embedded_clock").fetchone()
    return int(row[0])
