"""The marketplace's rulebook: pure functions over domain records, one home for every rule.

Two callers apply these rules and must never disagree: the SQLite ``Ledger`` (the embedded
marketplace, and the chain indexer replaying records) and the Substrate backend's pre-flight
checks, which refuse for free what the indexer would refuse after the fee was spent.

Each ``can_*`` function returns what should happen, without raising or touching storage:
``None`` (go ahead and record it), ``ALREADY_DONE`` (the very same action was already recorded:
a retried step, nothing to write) or the refusal, a ``MarketplaceError`` to raise. ``enforce``
turns that into control flow. The caller looks the records up (an unknown id is the caller's
refusal) and supplies the block at which the action would take effect.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

from decentralml.accounts import same_account
from decentralml.commitment import is_commitment, result_commitment
from decentralml.domain import (
    ResultSubmissionStatus,
    Submission,
    Task,
    TaskResult,
    TaskSpec,
    TaskStatus,
    TaskType,
    ValidationStrategy,
)
from decentralml.errors import (
    AlreadyAssigned,
    AlreadyCommitted,
    InvalidResult,
    InvalidTaskSpec,
    MarketplaceError,
    NoResultYet,
    NotAssignee,
    NotCommitted,
    NotCreator,
    PendingResults,
    ResultAlreadySent,
    TaskFull,
    TaskNotOpen,
    VerdictAlreadyGiven,
)

MAX_AMOUNT = 2**128 - 1
"""The pallet's Balance type is u128; larger amounts could never exist on chain."""

MAX_ID = 2**63 - 1
"""Ids on chain are u64; larger than SQLite's integers, they can only name nothing."""

UNFINISHED = (TaskStatus.Created, TaskStatus.InProgress)


class AlreadyDone:
    """The action was already recorded exactly so: a retried step, nothing to write."""

    def __repr__(self) -> str:
        return "ALREADY_DONE"


ALREADY_DONE: Final = AlreadyDone()

Decision = MarketplaceError | AlreadyDone | None
"""None: record it; ALREADY_DONE: nothing to do; a MarketplaceError: refused."""


def enforce(decision: Decision) -> bool:
    """Raise a refusal; True when there is something to record, False for a repeat."""
    if isinstance(decision, MarketplaceError):
        raise decision
    return decision is None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_endpoint(value: str) -> bool:
    """An http(s) URL naming a host and no user or password: a task record is public."""
    parsed = urlsplit(value)
    return parsed.scheme in ("http", "https") and bool(parsed.hostname) and "@" not in parsed.netloc


# --- tasks ----------------------------------------------------------------------------------


def validate_spec(spec: TaskSpec, block: int) -> InvalidTaskSpec | None:
    """The pallet's checks on create_task, plus the one it forgot (a payment per slot >= 1)."""
    if not _is_int(spec.pays_amount) or not 0 < spec.pays_amount <= MAX_AMOUNT:
        return InvalidTaskSpec(f"pays_amount must be a positive integer, got {spec.pays_amount!r}")
    if not _is_int(spec.max_assignments) or spec.max_assignments <= 0:
        return InvalidTaskSpec(f"max_assignments must be >= 1, got {spec.max_assignments!r}")
    if spec.pays_amount < spec.max_assignments:
        return InvalidTaskSpec(
            f"pays_amount {spec.pays_amount} < max_assignments {spec.max_assignments}: each "
            "accepted result would be paid 0; raise pays_amount or lower max_assignments"
        )
    if not _is_int(spec.expiration_block) or spec.expiration_block <= block:
        return InvalidTaskSpec(
            f"expiration_block {spec.expiration_block!r} is not after the current block {block}"
        )
    if not spec.question.strip():
        return InvalidTaskSpec("question is empty; describe what contributors should do")
    if not _is_int(spec.epochs) or spec.epochs < 0:
        return InvalidTaskSpec(f"epochs must be >= 0 (0: not recorded), got {spec.epochs!r}")
    if spec.storage_endpoint and not _is_endpoint(spec.storage_endpoint):
        return InvalidTaskSpec(
            f"storage_endpoint {spec.storage_endpoint!r} is not an http(s) URL without "
            "credentials; each party reads its storage credentials from its own environment"
        )
    try:
        ValidationStrategy(spec.validation_strategy)
        TaskType(spec.task_type)
    except ValueError as exc:
        return InvalidTaskSpec(f"{exc}; use a name from decentralml.domain")
    return None


def task_open(task: Task, block: int) -> TaskNotOpen | None:
    """Assignments, commitments and results count only on an unfinished task before expiry."""
    if task.status not in UNFINISHED:
        return TaskNotOpen(f"task {task.task_id} is {task.status.value}; pick an open task")
    if block >= task.spec.expiration_block:
        return TaskNotOpen(
            f"task {task.task_id} expired at block {task.spec.expiration_block} "
            f"(now {block}); pick an open task"
        )
    return None


def can_assign(task: Task, held: Submission | None, worker: str, block: int) -> Decision:
    """One slot per worker, first come first served. ``held``: the worker's submission on
    this task, if any (a second assignment is refused, not repeated: it would be a new slot)."""
    refusal = task_open(task, block)
    if refusal is not None:
        return refusal
    if held is not None:
        return AlreadyAssigned(
            f"{worker} already holds submission {held.submission_id} of task {task.task_id}"
        )
    if task.assigned >= task.spec.max_assignments:
        return TaskFull(
            f"all {task.spec.max_assignments} slots of task {task.task_id} are taken; "
            "pick another task"
        )
    return None


# --- a contributor's commitment and result ---------------------------------------------------


def _awaiting_result(submission: Submission, worker: str) -> MarketplaceError | None:
    """The preconditions shared by a commitment and a result: the assignee, no result yet."""
    if not same_account(submission.worker, worker):
        return NotAssignee(f"submission {submission.submission_id} is assigned to someone else")
    if submission.status is not ResultSubmissionStatus.Assigned:
        return ResultAlreadySent(f"submission {submission.submission_id} already has a result")
    return None


def check_commitment(commitment: str) -> InvalidResult | None:
    """The commitment's form, checkable before any record is read."""
    if is_commitment(commitment):
        return None
    return InvalidResult(
        f"commitment must be 64 lowercase hex characters, got {commitment!r}; "
        "compute it with decentralml.commitment.result_commitment"
    )


def can_commit(
    task: Task, submission: Submission, worker: str, commitment: str, block: int
) -> Decision:
    """Once, by the assignee, before its result and before expiry; the same commitment again
    is a retried step, another one is refused (a commitment cannot be changed)."""
    refusal = check_commitment(commitment) or _awaiting_result(submission, worker)
    if refusal is not None:
        return refusal
    if submission.commitment:
        if submission.commitment == commitment:
            return ALREADY_DONE
        return AlreadyCommitted(
            f"submission {submission.submission_id} is already committed to another result "
            f"({submission.commitment}); a commitment cannot be changed"
        )
    return task_open(task, block)


def check_result(result: TaskResult) -> InvalidResult | None:
    """A result's numbers must be storable and meaningful; anyone can post one on chain."""
    if not _is_int(result.num_examples) or not 0 < result.num_examples <= MAX_ID:
        return InvalidResult(
            f"num_examples must be a positive integer up to {MAX_ID}, got {result.num_examples!r}"
        )
    bad = [name for name, value in result.metrics.items() if not math.isfinite(value)]
    if bad:
        return InvalidResult(f"metrics {bad} are not finite numbers")
    return None


def can_send_result(
    task: Task, submission: Submission, worker: str, result: TaskResult, block: int
) -> Decision:
    """The reveal: by the assignee, once, before expiry, matching its commitment. The very
    same result again is a retried step; any other is refused."""
    refusal = check_result(result)
    if refusal is not None:
        return refusal
    if submission.result == result and same_account(submission.worker, worker):
        return ALREADY_DONE
    refusal = _awaiting_result(submission, worker)
    if refusal is not None:
        return refusal
    if not submission.commitment:
        return NotCommitted(
            f"submission {submission.submission_id} has no commitment; call commit_result with "
            "result_commitment(worker, sha256) first, then upload, then send the result"
        )
    if result_commitment(worker, result.sha256) != submission.commitment:
        return InvalidResult("result does not match the submission's commitment")
    return task_open(task, block)


# --- the creator's verdicts and close --------------------------------------------------------


def can_judge(task: Task, submission: Submission, creator: str, accept: bool) -> Decision:
    """Only the creator judges, only a result, and once: the same verdict again is a retried
    step (it pays nothing twice), the opposite one is refused."""
    if not same_account(task.creator, creator):
        return NotCreator(f"only the creator of task {task.task_id} may do this")
    status = submission.status
    if status is ResultSubmissionStatus.Assigned:
        return NoResultYet(f"submission {submission.submission_id} has no result yet; wait for it")
    if status in (ResultSubmissionStatus.Accepted, ResultSubmissionStatus.Rejected):
        if (status is ResultSubmissionStatus.Accepted) == accept:
            return ALREADY_DONE
        return VerdictAlreadyGiven(
            f"submission {submission.submission_id} was already {status.value.lower()}"
        )
    return None


def can_close(
    task: Task, submissions: Iterable[Submission], creator: str, decided: Iterable[int] = ()
) -> Decision:
    """The creator ends its task once no result awaits a verdict (``decided``: submissions
    judged in the same settlement); closing a finished task is a repeat."""
    if not same_account(task.creator, creator):
        return NotCreator(f"only the creator of task {task.task_id} may do this")
    if task.status not in UNFINISHED:
        return ALREADY_DONE
    judged = set(decided)
    pending = [
        s.submission_id
        for s in submissions
        if s.status is ResultSubmissionStatus.PendingValidation and s.submission_id not in judged
    ]
    if pending:
        return PendingResults(
            f"task {task.task_id} has results awaiting a verdict: submissions {pending}; "
            "accept or reject them, then close"
        )
    return None
