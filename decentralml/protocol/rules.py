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
import re
from collections.abc import Iterable
from typing import Final

from decentralml.protocol.accounts import same_account
from decentralml.protocol.commitment import is_commitment, result_commitment
from decentralml.protocol.errors import (
    AlreadyAssigned,
    AlreadyCommitted,
    InvalidAmount,
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
    TooLittleReputation,
    VerdictAlreadyGiven,
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

MAX_AMOUNT = 2**128 - 1
"""The pallet's Balance type is u128; larger amounts could never exist on chain."""

MAX_ID = 2**63 - 1
"""Ids on chain are u64; larger than SQLite's integers, they can only name nothing."""

MAX_MIN_REPUTATION = 2**32 - 1
"""The largest ``TaskSpec.min_reputation`` a record carries (a u32 in the chain format)."""

UNFINISHED = (TaskStatus.Created, TaskStatus.InProgress)
FINISHED = (TaskStatus.Completed, TaskStatus.Withdrawn)

AUTO_ACCEPTED = "not judged within {grace} blocks after the task expired: accepted and paid"
"""The reason recorded for a result paid because its creator did not judge it in time."""


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


def enforce_amount(amount: int | InvalidAmount) -> int:
    """``accept_amount``'s answer as an amount to pay, or its refusal raised."""
    if isinstance(amount, InvalidAmount):
        raise amount
    return amount


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


WHITE_SPACE = "".join(
    [
        "\t\n\v\f\r \x85\xa0\u1680",
        *map(chr, range(0x2000, 0x200B)),
        "\u2028\u2029\u202f\u205f\u3000",
    ]
)
"""Unicode's White_Space property (25 code points): what a blank text consists of. Named
here, not left to ``str.strip()``, whose set differs from other languages' (JavaScript's
``trim`` adds U+FEFF and leaves U+0085; Python's adds U+001C..U+001F), so that every reader of
the chain agrees on which question is blank (docs/chain-protocol.md)."""


def is_blank(text: str) -> bool:
    """Empty, or only White_Space characters."""
    return not text.strip(WHITE_SPACE)


_ENDPOINT = re.compile(r"(?i:https?)://([^/?#]*)(?:[/?#].*)?", re.DOTALL)
"""scheme ``://`` authority, then anything from the first ``/``, ``?`` or ``#``."""


def _is_endpoint(value: str) -> bool:
    """An http(s) URL naming a host and no user or password: a task record is public.

    Spelled out rather than left to ``urllib.parse.urlsplit``, which strips and removes
    characters, and raises on a malformed ``[`` host (a record anyone can write must never
    raise): the authority is not empty, has no ``@``, no space or control character, and does
    not start with ``:`` (a port without a host)."""
    match = _ENDPOINT.fullmatch(value)
    if match is None:
        return False
    authority = match.group(1)
    return (
        bool(authority)
        and not authority.startswith(":")
        and "@" not in authority
        and not any(ord(char) <= 0x20 or 0x7F <= ord(char) <= 0x9F for char in authority)
    )


# --- tasks ----------------------------------------------------------------------------------


PER_RESULT, BY_VALUE = "per_result", "value"
PAYMENT_RULES = (PER_RESULT, BY_VALUE)
"""How a task pays its accepted results (TaskSpec.payment_rule)."""


def unpaid_slots(pays_amount: int, max_assignments: int) -> str | None:
    """Why a task would pay its accepted results nothing (a reward below one per slot), or
    None: the config refuses it before publishing, the marketplace when it is created."""
    if pays_amount < max_assignments:
        return (
            f"pays_amount {pays_amount} < max_assignments {max_assignments}: each accepted "
            "result would be paid 0; raise pays_amount or lower max_assignments"
        )
    return None


def validate_spec(spec: TaskSpec, block: int) -> InvalidTaskSpec | None:
    """The pallet's checks on create_task, plus the one it forgot (a payment per slot >= 1)."""
    if not _is_int(spec.pays_amount) or not 0 < spec.pays_amount <= MAX_AMOUNT:
        return InvalidTaskSpec(f"pays_amount must be a positive integer, got {spec.pays_amount!r}")
    if not _is_int(spec.max_assignments) or spec.max_assignments <= 0:
        return InvalidTaskSpec(f"max_assignments must be >= 1, got {spec.max_assignments!r}")
    unpaid = unpaid_slots(spec.pays_amount, spec.max_assignments)
    if unpaid:
        return InvalidTaskSpec(unpaid)
    if not _is_int(spec.expiration_block) or spec.expiration_block <= block:
        return InvalidTaskSpec(
            f"expiration_block {spec.expiration_block!r} is not after the current block {block}"
        )
    if is_blank(spec.question):
        return InvalidTaskSpec("question is empty; describe what contributors should do")
    if not _is_int(spec.epochs) or spec.epochs < 0:
        return InvalidTaskSpec(f"epochs must be >= 0 (0: not recorded), got {spec.epochs!r}")
    if spec.storage_endpoint and not _is_endpoint(spec.storage_endpoint):
        return InvalidTaskSpec(
            f"storage_endpoint {spec.storage_endpoint!r} is not an http(s) URL without "
            "credentials; each party reads its storage credentials from its own environment"
        )
    if not _is_int(spec.min_reputation) or not 0 <= spec.min_reputation <= MAX_MIN_REPUTATION:
        return InvalidTaskSpec(
            f"min_reputation must be an integer from 0 (anyone) to {MAX_MIN_REPUTATION}, "
            f"got {spec.min_reputation!r}"
        )
    if spec.payment_rule not in PAYMENT_RULES:
        return InvalidTaskSpec(
            f"payment_rule {spec.payment_rule!r} is not one of {', '.join(PAYMENT_RULES)}"
        )
    try:
        ValidationStrategy(spec.validation_strategy)
        TaskType(spec.task_type)
    except ValueError as exc:
        return InvalidTaskSpec(f"{exc}; use a name from decentralml.protocol.records")
    return None


def unfinished(task: Task) -> bool:
    """Neither completed nor withdrawn: its escrow (or promise) still stands."""
    return task.status in UNFINISHED


def expired(task: Task, block: int) -> bool:
    """A task takes no assignment, commitment or result from its expiration block on."""
    return block >= task.spec.expiration_block


def has_free_slot(task: Task) -> bool:
    return task.assigned < task.spec.max_assignments


def listed_open(task: Task, block: int | None = None) -> bool:
    """What ``list_tasks(open_only=True)`` shows: unfinished, with a free slot and, when the
    block is known, not expired."""
    return unfinished(task) and has_free_slot(task) and (block is None or not expired(task, block))


def results_complete(task: Task, submissions: Iterable[Submission], block: int) -> bool:
    """No more results can come: every slot holds one, or the task expired or finished."""
    sent = [s for s in submissions if s.status is not ResultSubmissionStatus.Assigned]
    return len(sent) >= task.spec.max_assignments or expired(task, block) or not unfinished(task)


def overdue(task: Task, block: int, grace: int | None) -> bool:
    """The creator missed the review: ``grace`` blocks past expiry the unfinished task's
    pending results are accepted and paid (None: this marketplace has no such promise)."""
    return grace is not None and unfinished(task) and block >= task.spec.expiration_block + grace


def auto_accepted(
    task: Task, submissions: Iterable[Submission], block: int, grace: int | None
) -> list[Verdict]:
    """The verdicts an overdue task's pending results get (none for a task not overdue):
    both backends and the creator's own catch-up pay exactly these."""
    if not overdue(task, block, grace):
        return []
    reason = AUTO_ACCEPTED.format(grace=grace)
    pending = ResultSubmissionStatus.PendingValidation
    return [Verdict(s.submission_id, True, reason) for s in submissions if s.status is pending]


def promise(spec: TaskSpec) -> int:
    """The most a task can ever pay: one reward per slot (the remainder of an uneven
    ``pays_amount`` can never be paid and is refunded at close); all of ``pays_amount`` for a
    task paying by value."""
    if spec.payment_rule == BY_VALUE:
        return spec.pays_amount
    return spec.reward_per_result * spec.max_assignments


def accept_amount(task: Task, verdict: Verdict) -> int | InvalidAmount:
    """What accepting ``verdict``'s submission pays, ``task.paid`` being what the task paid
    so far: both backends and the indexer pay and check exactly this.

    ``per_result``: the fixed share ``pays_amount // max_assignments``, and no other amount.
    ``value``: the amount the verdict names (0 allowed), as long as the task's payments stay
    within ``pays_amount``; a verdict naming none (an automatic accept at expiry + grace)
    gets the fixed share, or what is left of the reward if that is less."""
    fixed = task.spec.reward_per_result
    if task.spec.payment_rule != BY_VALUE:
        if verdict.amount is not None and verdict.amount != fixed:
            return InvalidAmount(
                f"task {task.task_id} pays {fixed} per accepted result ({PER_RESULT}), "
                f"not {verdict.amount!r}"
            )
        return fixed
    left = task.spec.pays_amount - task.paid
    if verdict.amount is None:
        return max(0, min(fixed, left))
    if not _is_int(verdict.amount) or verdict.amount < 0:
        return InvalidAmount(f"an accept pays a non-negative integer, not {verdict.amount!r}")
    if verdict.amount > left:
        return InvalidAmount(
            f"task {task.task_id}'s payments would add up to more than its reward: "
            f"{verdict.amount} asked, {left} left of {task.spec.pays_amount}"
        )
    return verdict.amount


def outstanding(task: Task) -> int:
    """What the task can still pay: its promise less what it paid; 0 once finished."""
    return promise(task.spec) - task.paid if unfinished(task) else 0


def owed(tasks: Iterable[Task], creator: str) -> int:
    """Everything ``creator``'s unfinished tasks can still pay."""
    return sum(outstanding(t) for t in tasks if same_account(t.creator, creator))


def covers(free_balance: int, owed_amount: int) -> bool:
    """A creator without escrow can pay when its free balance covers every promise."""
    return free_balance >= owed_amount


def resubmitted_task(tasks: Iterable[Task], creator: str, spec: TaskSpec) -> Task | None:
    """An unfinished task of ``creator`` with the very same spec: a create retried after an
    unknown outcome, so it is this one and nothing is written again."""
    for task in tasks:
        if same_account(task.creator, creator) and task.spec == spec and unfinished(task):
            return task
    return None


def reputation_refusal(
    task: Task, standing: Reputation | None, worker: str
) -> TooLittleReputation | None:
    """Whether ``task``'s ``min_reputation`` keeps out a worker of this ``standing`` (its
    results accepted by other creators, less its results refused; None: a fresh account)."""
    needed, score = task.spec.min_reputation, (standing or Reputation()).score
    if needed > 0 and score < needed:
        return TooLittleReputation(
            f"task {task.task_id} asks a reputation of at least {needed}; {worker} has {score}"
        )
    return None


ESTABLISHED_REPUTATION: Final = 1
"""The reputation score (``Reputation.score``) from which an account has standing: at least
one result accepted by another creator, net of its refusals. Below it an account is a
newcomer (a fresh account, a Sybil, a poisoner back under a new name), whose pay in a
``value`` round a task may cap (the creator's ``task.newcomer_share_cap``)."""


def newcomer(standing: Reputation | None) -> bool:
    """Whether an account of this ``standing`` (None: a fresh account) has no standing yet."""
    return (standing or Reputation()).score < ESTABLISHED_REPUTATION


def reputation(verdicts: Iterable[tuple[Submission, str]], worker: str) -> Reputation:
    """``worker``'s reputation from its judged submissions, each with its task's creator.
    A result a worker's own account accepted counts for nothing: self-dealing buys no
    standing (a second account of its own still can: docs/security.md)."""
    accepted = refused = earned = 0
    creators: set[str] = set()
    for submission, creator in verdicts:
        if not same_account(submission.worker, worker):
            continue
        if submission.status == ResultSubmissionStatus.Rejected:
            refused += 1
        elif submission.status == ResultSubmissionStatus.Accepted and not same_account(
            creator, worker
        ):
            accepted += 1
            earned += submission.paid
            creators.add(creator)
    return Reputation(accepted, refused, earned, len(creators))


def held_submission(submissions: Iterable[Submission], worker: str) -> Submission | None:
    """The worker's submission on a task, if it holds a slot there (one per worker)."""
    return next((s for s in submissions if same_account(s.worker, worker)), None)


def distinct_verdicts(verdicts: Iterable[Verdict]) -> list[Verdict]:
    """One verdict per submission, in order: a repeat of the same verdict is dropped, two
    opposite ones in one settlement are refused (VerdictAlreadyGiven)."""
    decided: dict[int, Verdict] = {}
    for verdict in verdicts:
        earlier = decided.setdefault(verdict.submission_id, verdict)
        if earlier.accept != verdict.accept:
            raise VerdictAlreadyGiven(
                f"submission {verdict.submission_id} has two opposite verdicts"
            )
    return list(decided.values())


def examples_limit(task_limit: int | None, shard_limit: int | None) -> int | None:
    """The most examples any result of a task may claim: the task's own ``max_examples``
    wins over what the creator knows of its shards."""
    return task_limit or shard_limit


def task_open(task: Task, block: int) -> TaskNotOpen | None:
    """Assignments, commitments and results count only on an unfinished task before expiry."""
    if not unfinished(task):
        return TaskNotOpen(f"task {task.task_id} is {task.status.value}; pick an open task")
    if expired(task, block):
        return TaskNotOpen(
            f"task {task.task_id} expired at block {task.spec.expiration_block} "
            f"(now {block}); pick an open task"
        )
    return None


def can_assign(
    task: Task,
    held: Submission | None,
    worker: str,
    block: int,
    standing: Reputation | None = None,
) -> Decision:
    """One slot per worker, first come first served, to a worker with the reputation the task
    asks. ``held``: the worker's submission on this task, if any (a second assignment is
    refused, not repeated: it would be a new slot); ``standing``: the worker's reputation
    (``reputation``), needed only when the task asks one."""
    refusal = task_open(task, block)
    if refusal is not None:
        return refusal
    if held is not None:
        return AlreadyAssigned(
            f"{worker} already holds submission {held.submission_id} of task {task.task_id}"
        )
    refusal = reputation_refusal(task, standing, worker)
    if refusal is not None:
        return refusal
    if not has_free_slot(task):
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
        "compute it with decentralml.protocol.commitment.result_commitment"
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
    if not unfinished(task):
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
