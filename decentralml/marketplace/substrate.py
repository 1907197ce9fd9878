"""The marketplace on a Substrate chain without a custom pallet.

Writes are extrinsics (docs/chain-protocol.md): every action is a ``System.remark_with_event``
record (decentralml.chain.codec), a payment is a ``Balances.transfer_keep_alive`` in the SAME
``Utility.batch_all`` as the accept verdict it pays, and a round's settlement (all verdicts and
payments) is ONE batch_all: recorded and paid together, or not at all. Reads come from a local
index (decentralml.marketplace.indexer) that replays finalized blocks through the Ledger rules,
so every party derives the same state from the chain alone.

Trust model. The reward is announced, not escrowed: no pallet can lock it, so
``create_task`` checks that the creator could pay it, and the "refund" at close or expiry is
bookkeeping. What the chain does guarantee: a result is Accepted only if the payment was made
in the same extrinsic (the indexer ignores an unpaid accept), only the creator's verdicts and
only the assignee's results count (and only after its commitment to them), slots are first
come first served in chain order, commitments are numbered in chain order, and the history of
every creator's verdicts and payments is public.

Each write reads the index first and refuses (for free) what the rules would refuse (the same
``rules`` functions the Ledger applies, so the messages are the embedded marketplace's), and
what was already done: a resubmitted assignment, commitment, result or verdict never becomes a
second record, and a creator restarted mid-round re-running ``settle`` pays nothing twice.
After a write the client waits for finality, syncs the index and reads its own record's
outcome back (the id it created, or the rule that refused it, e.g. TaskFull when another
contributor won the race). A write whose outcome is unknown (lost connection, inclusion
deadline, dropped from the pool) is read back from the chain and the pool before anything is
sent again, and a restarted writer waits for its own pending extrinsic instead of sending a
duplicate (docs/chain-protocol.md, "Crashes and unknown outcomes").
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from pathlib import Path
from typing import Literal

from substrateinterface import Keypair

from decentralml.chain import codec
from decentralml.chain.audit import ChainAudit, audit
from decentralml.chain.client import (
    INCLUSION_TIMEOUT,
    ChainClient,
    ChainOutcomeUnknown,
    Receipt,
    Transfer,
    public_key_hex,
)
from decentralml.marketplace.base import CreatorStanding
from decentralml.marketplace.books import PaymentCheck, check_payments
from decentralml.marketplace.indexer import ChainIndexer, RecordOutcome
from decentralml.marketplace.ledger import Ledger
from decentralml.protocol import rules
from decentralml.protocol.accounts import same_account
from decentralml.protocol.errors import (
    ChainError,
    InsufficientBalance,
    InvalidTaskSpec,
)
from decentralml.protocol.records import (
    Reputation,
    ResultSubmissionStatus,
    Submission,
    Task,
    TaskResult,
    TaskSpec,
    Verdict,
)

Planned = tuple[codec.Record, Transfer | None]
"""One record to write and the payment that must go with it (accept verdicts)."""


class SubstrateMarketplace:
    """The Marketplace Protocol on a Substrate chain; ``index_path`` is this party's cache.

    Every party of one marketplace must use the same chain and ``start_block``: ids are
    positions among the records replayed from there.

    ``inclusion_timeout`` (default ``INCLUSION_TIMEOUT``, 60 s): how long a write waits for
    its extrinsic to enter a block before raising ChainOutcomeUnknown. ``finality_timeout``
    (120 s): how long it then waits for that block to be finalized."""

    charges_fees: Literal[True] = True
    """Capability ChargesFees: every write is an extrinsic its signer pays for."""

    def __init__(
        self,
        chain: str | ChainClient,
        index_path: str | Path,
        start_block: int = 0,
        *,
        finality_timeout: float = 120.0,
        inclusion_timeout: float = INCLUSION_TIMEOUT,
    ) -> None:
        self.client = chain if isinstance(chain, ChainClient) else ChainClient(chain)
        self.indexer = ChainIndexer(self.client, index_path, start_block)
        self.finality_timeout = finality_timeout
        self.inclusion_timeout = inclusion_timeout
        self._settlement_capacity: int | None = None

    @property
    def ledger(self) -> Ledger:
        return self.indexer.ledger

    def sync(self) -> int:
        """Bring the index up to the finalized head; returns the last indexed block."""
        return self.indexer.sync()

    # --- reads -------------------------------------------------------------------------

    def current_block(self) -> int:
        return self.client.finalized_head_number()

    def genesis_hash(self) -> str:
        return self.client.genesis_hash()

    def get_task(self, task_id: int) -> Task:
        return self.ledger.get_task(task_id, block=self._synced())

    def list_tasks(self, open_only: bool = True) -> list[Task]:
        return self.ledger.list_tasks(open_only, block=self._synced())

    def get_submission(self, submission_id: int) -> Submission:
        self.sync()
        return self.ledger.get_submission(submission_id)

    def list_task_results(self, task_id: int) -> list[Submission]:
        self.sync()
        return self.ledger.list_task_results(task_id)

    def reputation(self, address: str) -> Reputation:
        self.sync()
        return self.ledger.reputation(address)

    def balance(self, address: str) -> int:
        """The chain's free balance: the chain, not the index, holds the money."""
        return self.client.free_balance(address)

    def fund(self, address: str, amount: int) -> None:
        """Dev faucet, as on the embedded marketplace: add ``amount`` to the account. Works on
        the local chopsticks chain only (raises ChainError elsewhere)."""
        self.client.dev_fund(address, amount)

    def creator_standing(self, creator: str) -> CreatorStanding:
        """The creator's free balance against its unpaid promises, and its verdict history."""
        last = self.sync()
        tasks = [
            t
            for t in self.ledger.list_tasks(open_only=False, block=max(last, 0))
            if same_account(t.creator, creator)
        ]
        outstanding = rules.owed(tasks, creator)
        statuses = [s.status for t in tasks for s in self.ledger.list_task_results(t.task_id)]
        return CreatorStanding(
            address=creator,
            free_balance=self.client.free_balance(creator),
            outstanding=outstanding,
            paid_results=statuses.count(ResultSubmissionStatus.Accepted),
            rejected_results=statuses.count(ResultSubmissionStatus.Rejected),
        )

    def audit(self, start_block: int, end_block: int | None = None) -> ChainAudit:
        """Transfers, fees and extrinsic counts from the chain's own events (not the index)."""
        end = self.client.finalized_head_number() if end_block is None else end_block
        return audit(self.client, start_block, end)

    def check_payments(self, start_block: int, end_block: int | None = None) -> PaymentCheck:
        """Every creator transfer between the blocks that no accept verdict explains, every
        verdict payment the chain does not show, and each task's books
        (decentralml.marketplace.books)."""
        end = min(self.sync(), end_block) if end_block is not None else self.sync()
        evidence = audit(self.client, start_block, end)
        return check_payments(evidence, self.ledger, self.indexer.all_outcomes(), start_block, end)

    def _synced(self) -> int | None:
        last = self.sync()
        return last if last >= 0 else None

    # --- writes ------------------------------------------------------------------------

    def create_task(self, creator: Keypair, spec: TaskSpec) -> int:
        """Announce a task; returns its id. An unfinished task of this creator with the very
        same spec (round, digests, ...) is taken to be this one resubmitted: its id is
        returned and nothing is written."""
        last = self.sync()
        tasks = self.ledger.list_tasks(open_only=False)
        again = rules.resubmitted_task(tasks, creator.ss58_address, spec)
        if again is not None:
            return again.task_id
        _check_spec(spec, last + 1)
        self._check_settleable(creator, spec)
        free = self.client.free_balance(creator.ss58_address)
        owed = rules.owed(tasks, creator.ss58_address) + rules.promise(spec)
        if not rules.covers(free, owed):
            raise InsufficientBalance(
                f"{creator.ss58_address} holds {free} but promises {owed} with this task and "
                "its open ones: rewards are paid from the creator's account at acceptance; "
                "fund it first"
            )
        (outcome,) = self._write(creator, [(codec.TaskCreated(spec), None)])
        outcome.raise_if_refused()
        return _entity(outcome)

    def settlement_capacity(self, creator: Keypair) -> int:
        """The most results one round's settlement can accept on this chain: a round is
        settled by ONE extrinsic (each verdict's remark and payment, and the Close, in one
        batch_all), which the pool refuses above the runtime's weight and length limits
        (bench/bench_chain_round.py: 895 accepts on the dev chain, 896 refused). Priced with
        reasons of the longest text a record carries, so any reviewer's reasons fit."""
        if self._settlement_capacity is None:
            one, two = (
                self.client.weight_and_length(creator, self._settlement_calls(creator, n))
                for n in (1, 2)
            )
            per = (two[0] - one[0], two[1] - one[1])
            fixed = (one[0] - per[0], one[1] - per[1])
            max_weight, max_length, max_calls = self.client.extrinsic_limits()
            self._settlement_capacity = min(
                (max_weight - fixed[0]) // max(per[0], 1),
                (max_length - fixed[1]) // max(per[1], 1),
                (max_calls - 1) // 2,
            )
        return self._settlement_capacity

    def _settlement_calls(self, creator: Keypair, accepts: int) -> list[object]:
        reason = "x" * codec.MAX_TEXT_CHARS
        calls: list[object] = []
        for sid in range(accepts):
            record = codec.VerdictRecord(rules.MAX_ID - sid, True, reason)
            calls.append(self.client.remark_call(codec.encode(record)))
            calls.append(self.client.transfer_call(creator.ss58_address, 10**30))
        calls.append(self.client.remark_call(codec.encode(codec.Close(rules.MAX_ID))))
        return calls

    def _check_settleable(self, creator: Keypair, spec: TaskSpec) -> None:
        """Refuse, before any fee, a task with more slots than one settlement can pay."""
        capacity = self.settlement_capacity(creator)
        if spec.max_assignments > capacity:
            raise InvalidTaskSpec(
                f"max_assignments {spec.max_assignments} is more results than one settlement "
                f"can pay on this chain (at most {capacity}: a round is settled by one "
                "extrinsic, limited by the runtime's extrinsic weight); use fewer slots"
            )

    def assign_task(self, worker: Keypair, task_id: int) -> int:
        """Take a slot; returns the submission id. The race for the last slots is decided by
        chain order: a loser's record lands but is refused, and TaskFull is raised."""
        last = self.sync()
        task = self.ledger.get_task(task_id, block=max(last, 0))
        held = rules.held_submission(self.ledger.list_task_results(task_id), worker.ss58_address)
        standing = self.ledger.reputation(worker.ss58_address) if task.spec.min_reputation else None
        rules.enforce(rules.can_assign(task, held, worker.ss58_address, last + 1, standing))
        self.creator_standing(task.creator).require_covered()
        (outcome,) = self._write(worker, [(codec.Assign(task_id), None)])
        outcome.raise_if_refused()
        return _entity(outcome)

    def commit_result(self, worker: Keypair, submission_id: int, commitment: str) -> None:
        """Record the assignee's commitment to its result before uploading it. Committing the
        same commitment again is a no-op; another one is refused (AlreadyCommitted). The
        chain order of commit records is the commit order (``Submission.commit_order``)."""
        rules.enforce(rules.check_commitment(commitment))
        submission, task, next_block = self._preflight(submission_id)
        decision = rules.can_commit(task, submission, worker.ss58_address, commitment, next_block)
        if not rules.enforce(decision):
            return  # already on chain: a resubmission
        (outcome,) = self._write(worker, [(codec.Commit(submission_id, commitment), None)])
        outcome.raise_if_refused()

    def send_task_result(self, worker: Keypair, submission_id: int, result: TaskResult) -> None:
        """Record the assignee's result (the reveal): it must match the submission's
        commitment (commit_result first). Sending the same result again is a no-op."""
        submission, task, next_block = self._preflight(submission_id)
        decision = rules.can_send_result(task, submission, worker.ss58_address, result, next_block)
        if not rules.enforce(decision):
            return  # already on chain: a resubmission
        (outcome,) = self._write(worker, [(codec.Result(submission_id, result), None)])
        outcome.raise_if_refused()

    def accept(self, creator: Keypair, submission_id: int) -> int:
        return self.settle(creator, [Verdict(submission_id, True, "")])[submission_id]

    def reject(self, creator: Keypair, submission_id: int, reason: str) -> None:
        self.settle(creator, [Verdict(submission_id, False, reason)])

    def settle(
        self, creator: Keypair, verdicts: list[Verdict], close_task_id: int | None = None
    ) -> dict[int, int]:
        """Record a round's verdicts and pay the accepted results in ONE batch_all (with the
        task's Close record when ``close_task_id`` is given); returns what this call paid per
        submission. Verdicts already on chain are skipped (0), so a creator re-running settle
        after a crash pays nothing twice. All verdicts are checked before anything is
        written: one refused verdict and nothing is sent."""
        self.sync()
        paid: dict[int, int] = {}
        plan: list[Planned] = []
        decided: dict[int, bool] = {}
        planned_pay: dict[int, int] = {}  # per task: what this settlement already pays
        for verdict in rules.distinct_verdicts(verdicts):
            sid = verdict.submission_id
            decided[sid] = verdict.accept
            planned = self._plan_verdict(creator, verdict, planned_pay)
            paid[sid] = 0
            if planned is not None:
                plan.append(planned)
        if close_task_id is not None and self._needs_close(creator, close_task_id, decided):
            plan.append((codec.Close(close_task_id), None))
        if not plan:
            return paid
        for outcome in self._write(creator, plan):
            outcome.raise_if_refused()
            if outcome.kind != "Close":
                paid[_entity(outcome)] = outcome.amount
        return paid

    def _needs_close(self, creator: Keypair, task_id: int, decided: dict[int, bool]) -> bool:
        """Whether a Close record belongs in this settlement; refuses (before any fee) a
        close that would leave results without a verdict."""
        task = self.ledger.get_task(task_id)
        submissions = self.ledger.list_task_results(task_id)
        return rules.enforce(rules.can_close(task, submissions, creator.ss58_address, decided))

    def _plan_verdict(
        self, creator: Keypair, verdict: Verdict, planned_pay: dict[int, int]
    ) -> Planned | None:
        """The record (and payment: rules.accept_amount, counting what this settlement
        already pays the task) for a verdict, None if the chain already has it."""
        submission = self.ledger.get_submission(verdict.submission_id)
        task = self.ledger.get_task(submission.task_id)
        decision = rules.can_judge(task, submission, creator.ss58_address, verdict.accept)
        if not rules.enforce(decision):
            return None  # already decided the same way: nothing to write or pay
        record = codec.VerdictRecord(
            submission.submission_id, verdict.accept, verdict.reason, verdict.amount, verdict.value
        )
        if not verdict.accept:
            return record, None
        so_far = replace(task, paid=task.paid + planned_pay.get(task.task_id, 0))
        amount = rules.enforce_amount(rules.accept_amount(so_far, verdict))
        planned_pay[task.task_id] = planned_pay.get(task.task_id, 0) + amount
        return record, Transfer(public_key_hex(submission.worker), amount)

    def close_task(self, creator: Keypair, task_id: int) -> int:
        """End the task now; returns the (bookkept) refund, 0 if it had already ended."""
        last = self.sync()
        task = self.ledger.get_task(task_id, block=max(last, 0))
        submissions = self.ledger.list_task_results(task_id)
        if not rules.enforce(rules.can_close(task, submissions, creator.ss58_address)):
            return 0
        (outcome,) = self._write(creator, [(codec.Close(task_id), None)])
        outcome.raise_if_refused()
        return outcome.amount

    def _preflight(self, submission_id: int) -> tuple[Submission, Task, int]:
        """A submission and its task from a freshly synced index, and the first block a new
        record could land in: what the rules need to judge a contributor's write."""
        last = self.sync()
        submission = self.ledger.get_submission(submission_id)
        return submission, self.ledger.get_task(submission.task_id, block=max(last, 0)), last + 1

    # --- the write path ------------------------------------------------------------------

    def _write(self, signer: Keypair, plan: list[Planned]) -> list[RecordOutcome]:
        """Submit the plan as one extrinsic, then read back each record's outcome.

        Never sends the same records twice. Before submitting it looks for them in the pool
        (an extrinsic of this signer still pending, e.g. sent by this writer before a crash:
        it waits for THAT one) and on chain since the plan's index. After an unknown outcome
        it reads the chain and the pool back, and resubmits once, only when the records are
        in neither, reusing the lost attempt's nonce while it is unused, so that at most one
        of the two can ever land; a used nonce is looked for in the blocks up to the best
        head (once finalized and indexed) before the records count as not sent. Otherwise
        the ChainOutcomeUnknown propagates: it is retried by tasks/policy.py, and the retry
        plans again from the chain."""
        payloads = [codec.encode(record) for record, _ in plan]
        calls = []
        for payload, (_, payment) in zip(payloads, plan, strict=True):
            calls.append(self.client.remark_call(payload))
            if payment is not None:
                calls.append(self.client.transfer_call(payment.dest, payment.amount))
        planned_at = self.indexer.last_indexed_block()  # the callers sync, then plan
        found = self._reconcile(signer, payloads, planned_at, wait_pending=True)
        if found is not None:
            return found
        try:
            receipt = self.client.submit(signer, calls, inclusion_timeout=self.inclusion_timeout)
        except ChainOutcomeUnknown as unknown:
            nonce = unknown.nonce
            if nonce is not None and nonce < self.client.account_nonce(signer.ss58_address):
                # An extrinsic with that nonce is in a block up to the best head, perhaps
                # the lost attempt itself: the index must hold that block before it can say.
                self._wait_finalized(self.client.best_head_number())
                nonce = None  # if not ours, another of ours used it: take the pool's next
            found = self._reconcile(signer, payloads, planned_at, wait_pending=False)
            if found is not None:
                return found
            receipt = self.client.submit(
                signer, calls, nonce=nonce, inclusion_timeout=self.inclusion_timeout
            )
        return self._read_back(receipt, payloads)

    def _reconcile(
        self, signer: Keypair, payloads: list[bytes], after_block: int, *, wait_pending: bool
    ) -> list[RecordOutcome] | None:
        """The outcomes of these records if ``signer`` already sent them: on chain after
        ``after_block``, or (``wait_pending``) pending in the pool, waited for until the
        inclusion deadline. None when they are in neither: sending them is safe. Raises
        ChainOutcomeUnknown when they are pending and not waited for, or when an extrinsic
        carrying only some of them landed (the operation must be planned again)."""
        mine = set(payloads)
        pending = [p for p in self.client.pending_extrinsics(signer) if mine & set(p.remarks)]
        self.sync()  # after reading the pool: what left it for a block is in the index now
        found = self.indexer.find_outcomes(signer.ss58_address, payloads, after_block)
        if found:
            return _same_write(found, payloads)
        if not pending:
            return None
        earlier = pending[0]
        if not wait_pending:
            raise ChainOutcomeUnknown(
                f"extrinsic {earlier.extrinsic_hash} of {signer.ss58_address} carrying these "
                "records is still pending: it may land later; retry to read its outcome",
                extrinsic_hash=earlier.extrinsic_hash,
                nonce=earlier.nonce,
                pending=True,
            )
        receipt = self.client.wait_for_inclusion(
            earlier.extrinsic_hash,
            signer.ss58_address,
            earlier.nonce,
            after_block=after_block,
            timeout=self.inclusion_timeout,
        )
        return _same_write(self._read_back(receipt, list(earlier.remarks)), payloads)

    def _read_back(self, receipt: Receipt, payloads: list[bytes]) -> list[RecordOutcome]:
        """The index's outcomes of the records of an included extrinsic, once finalized."""
        self._wait_finalized(receipt.block_number)
        self.sync()
        outcomes = self.indexer.outcomes(receipt.block_number, receipt.extrinsic_index)
        if len(outcomes) != len(payloads):
            raise ChainError(
                f"extrinsic {receipt.block_number}-{receipt.extrinsic_index} holds "
                f"{len(outcomes)} marketplace records, {len(payloads)} were sent; is the index "
                "start_block after this block?"
            )
        return outcomes

    def _wait_finalized(self, block_number: int) -> None:
        deadline = time.monotonic() + self.finality_timeout
        while self.client.finalized_head_number() < block_number:
            if time.monotonic() > deadline:
                raise ChainOutcomeUnknown(
                    f"block {block_number} not finalized after {self.finality_timeout:.0f}s; "
                    "the record is included and will count once finalized: retry to read it"
                )
            time.sleep(0.5)


def _check_spec(spec: TaskSpec, next_block: int) -> None:
    """Refuse an invalid spec before a fee is spent: by the rules the indexer will apply (the
    embedded marketplace's own messages), then one the record format cannot carry."""
    rules.enforce(rules.validate_spec(spec, next_block))
    try:
        codec.encode(codec.TaskCreated(spec))
    except codec.CodecError as exc:
        raise InvalidTaskSpec(str(exc)) from None


def _same_write(found: list[RecordOutcome], payloads: list[bytes]) -> list[RecordOutcome]:
    """``found`` if that extrinsic carried exactly these records; an overlap means the plan
    was made before part of it landed, so it must be made again."""
    digests = [hashlib.sha256(payload).hexdigest() for payload in payloads]
    if [outcome.payload_sha256 for outcome in found] == digests:
        return found
    first = found[0]
    raise ChainOutcomeUnknown(
        f"extrinsic {first.block_number}-{first.extrinsic_index} of {first.signer} carries "
        "some of these records but not exactly them; retry the operation, it plans again "
        "from the chain"
    )


def _entity(outcome: RecordOutcome) -> int:
    if outcome.entity_id is None:
        raise ChainError(f"the {outcome.kind} record has no id in the index")
    return outcome.entity_id
