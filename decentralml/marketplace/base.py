"""The one small interface every marketplace backend implements.

Optional capabilities are small Protocols of their own, checked with ``isinstance``, so that
flows and the CLI ask what a backend can do, never which backend it is.

Actors are substrate-interface ``Keypair`` objects: the embedded backend only reads their SS58
address, the Substrate backend signs with them. Either way the caller's identity is the key, so
switching backends is a config change, not a code change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from substrateinterface import Keypair

from decentralml.protocol import rules
from decentralml.protocol.errors import CreatorCannotPay
from decentralml.protocol.records import (
    Reputation,
    Submission,
    Task,
    TaskResult,
    TaskSpec,
    Verdict,
)

if TYPE_CHECKING:
    from decentralml.chain.audit import ChainAudit
    from decentralml.marketplace.books import PaymentCheck


@runtime_checkable
class Marketplace(Protocol):
    def create_task(self, creator: Keypair, spec: TaskSpec) -> int:
        """Open a task; returns its id. A backend with escrow holds ``spec.pays_amount`` from
        the creator; one without (a chain) announces it and lets contributors check the
        creator's standing (ReportsCreatorStanding). The same spec again while its task is
        unfinished returns that task (rules.resubmitted_task)."""

    def get_task(self, task_id: int) -> Task: ...

    def list_tasks(self, open_only: bool = True) -> list[Task]: ...

    def assign_task(self, worker: Keypair, task_id: int) -> int:
        """Take one slot of the task; returns the submission id."""

    def commit_result(self, worker: Keypair, submission_id: int, commitment: str) -> None:
        """Record the assignee's commitment to its result before uploading it."""

    def send_task_result(self, worker: Keypair, submission_id: int, result: TaskResult) -> None:
        """Record the result (the reveal); it must match the submission's commitment."""

    def get_submission(self, submission_id: int) -> Submission: ...

    def list_task_results(self, task_id: int) -> list[Submission]: ...

    def accept(self, creator: Keypair, submission_id: int) -> int:
        """Pay the contributor ``pays_amount // max_assignments``; a repeat pays 0."""

    def reject(self, creator: Keypair, submission_id: int, reason: str) -> None: ...

    def settle(
        self, creator: Keypair, verdicts: list[Verdict], close_task_id: int | None = None
    ) -> dict[int, int]:
        """Record a round's verdicts and pay the accepted ones as one unit (one transaction,
        one batch on chain), closing ``close_task_id`` in the same unit when given; returns
        what each submission was paid by this call (0 for rejections and repeats)."""

    def close_task(self, creator: Keypair, task_id: int) -> int:
        """End the task early and refund what was not paid; returns the refund."""

    def balance(self, address: str) -> int: ...

    def current_block(self) -> int: ...


# --- optional capabilities --------------------------------------------------------------------


@runtime_checkable
class ReportsReputation(Protocol):
    """A worker's reputation as the marketplace's rules judge it for a task asking
    ``min_reputation`` (protocol.rules.reputation): both backends, from their records."""

    def reputation(self, address: str) -> Reputation: ...


@runtime_checkable
class DevFaucet(Protocol):
    """A development marketplace that can mint tokens, so demos and tests fund dev accounts
    (the embedded ledger; a local chopsticks chain through its dev RPC)."""

    def fund(self, address: str, amount: int) -> None:
        """Add ``amount`` to the account's balance."""


@runtime_checkable
class HasGenesis(Protocol):
    """A marketplace that is a chain, known by the hash of its genesis block."""

    def genesis_hash(self) -> str:
        """The chain's block 0 hash, 0x-prefixed hex."""


@runtime_checkable
class ChargesFees(Protocol):
    """Every write costs its signer a transaction fee (a chain), so contributors need tokens
    too, not only the creator whose rewards are paid from its balance."""

    charges_fees: Literal[True]


@runtime_checkable
class AuditsChain(Protocol):
    """A marketplace whose payments can be checked against the chain's own events, not the
    marketplace's index of them."""

    def audit(self, start_block: int, end_block: int | None = None) -> ChainAudit:
        """Transfers, fees and extrinsic counts between two blocks (the head by default)."""

    def check_payments(self, start_block: int, end_block: int | None = None) -> PaymentCheck:
        """The creators' transfers no verdict explains, verdict payments the chain does not
        show, and each task's books, between two blocks."""


@dataclass(frozen=True)
class CreatorStanding:
    """What a contributor can check about a creator before working for it (no escrow)."""

    address: str
    free_balance: int
    outstanding: int  # rewards promised by unfinished tasks and not yet paid
    paid_results: int  # accepted results, each paid in the verdict's own extrinsic
    rejected_results: int

    @property
    def covered(self) -> bool:
        return rules.covers(self.free_balance, self.outstanding)

    def require_covered(self) -> None:
        """Refuse to work for a creator whose balance does not cover what it promised."""
        if not self.covered:
            raise CreatorCannotPay(
                f"creator {self.address} holds {self.free_balance} but owes "
                f"{self.outstanding} in unpaid rewards of its open tasks: rewards are not "
                "escrowed on chain, so this task may never pay"
            )


@runtime_checkable
class ReportsCreatorStanding(Protocol):
    """A marketplace without escrow that can tell whether a creator covers its promises."""

    def creator_standing(self, creator: str) -> CreatorStanding: ...
