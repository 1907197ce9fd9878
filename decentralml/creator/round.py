"""The creator's round, written once: publish → collect → review (screen, judge, federate
with the training's strategy) → evaluate → checkpoint → settle, including the late-result
loop; and the start of a training (pay what is overdue, read progress back, resume).

Every caller runs this order: the Prefect flows (each step a task: tasks.creator.STEPS), the
scheduled next-round flow, and the benchmarks (the plain steps). The write-ahead order is
the engine's, not the callers': the new weights and the strategy's state are checkpointed
before anyone is paid for them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from decentralml.creator import steps as core
from decentralml.creator.report import RoundReport
from decentralml.creator.steps import Progress, RoundReview, shortfall
from decentralml.ml import workloads
from decentralml.protocol.errors import PendingResults
from decentralml.protocol.records import Submission, Task
from decentralml.runtime.crashpoints import crashpoint
from decentralml.validation import AutoAccept, Policy

log = logging.getLogger(__name__)


def _evaluate_global(session: Any, tensors: Any) -> dict:
    return session.set_global(tensors)


def _resume(session: Any, progress: Progress) -> None:
    session.resume(progress)


REPORT_FILE = "report.json"


def keep_report(creator: Any, report: RoundReport) -> None:
    """Store the round's report beside its files, so a later run of the same training (a
    resumed one, the next chained round) can chart every round (``kept_reports``)."""
    url = creator.store.round_url(creator.run, report.round_number, REPORT_FILE)
    creator.store.put(url, report.to_json())


def kept_reports(creator: Any, rounds: int) -> list[RoundReport]:
    """The reports kept for rounds 1..``rounds`` of the training, in order; a round without
    one (run before reports were kept) is left out."""
    reports = []
    for round_number in range(1, rounds + 1):
        url = creator.store.round_url(creator.run, round_number, REPORT_FILE)
        if creator.store.exists(url):
            reports.append(RoundReport.from_json(creator.store.get(url)))
    return reports


@dataclass(frozen=True)
class CreatorSteps:
    """The round's steps, by name; orchestrators pass wrapped versions of the same functions
    (tasks.creator.STEPS), the order stays the engine's."""

    upload_global: Callable[..., Any] = core.upload_global
    upload_assets: Callable[..., Any] = core.upload_assets
    create_round_task: Callable[..., Any] = core.create_round_task
    read_task: Callable[..., Any] = core.read_task
    pending_results: Callable[..., Any] = core.pending_results
    review: Callable[..., Any] = core.review
    evaluate_global: Callable[..., Any] = _evaluate_global
    checkpoint: Callable[..., Any] = core.checkpoint
    settle_and_close: Callable[..., Any] = core.settle_and_close
    settle_overdue: Callable[..., Any] = core.settle_overdue
    find_progress: Callable[..., Any] = core.find_progress
    resume: Callable[..., Any] = _resume
    keep_report: Callable[..., Any] = keep_report
    kept_reports: Callable[..., Any] = kept_reports


PLAIN_STEPS = CreatorSteps()


def publish_round(session: Any, round_number: int, steps: CreatorSteps = PLAIN_STEPS) -> int:
    """Upload the round's global weights and package (with what the strategy tells
    contributors this round) and create its task; returns the task id."""
    creator = session.creator
    global_weights = steps.upload_global(creator, round_number, session.global_tensors)
    round_settings = session.strategy.configure_round(round_number)  # e.g. FedProx's mu
    round_tensors = session.strategy.round_tensors(round_number, session.global_tensors)
    files = core.round_files(session.strategy, round_tensors)  # e.g. SCAFFOLD's c
    assets = steps.upload_assets(creator, round_number, session.max_examples, round_settings, files)
    crashpoint("publishing")  # files stored, no task yet: a rerun publishes the round afresh
    return steps.create_round_task(creator, round_number, assets, global_weights)


def start_training(session: Any, steps: CreatorSteps = PLAIN_STEPS) -> Progress:
    """Pay what nobody judged in time, read the training's progress back from the
    marketplace and storage, and resume the session from it. A round the marketplace settled
    by itself while the creator was away is adopted, never published and paid again."""
    steps.settle_overdue(session.creator)
    progress = steps.find_progress(session.creator)
    steps.resume(session, progress)
    if progress.settled_without_us is not None:
        adopt_settled_round(session, progress.settled_without_us, steps)
        progress = steps.find_progress(session.creator)
        steps.resume(session, progress)
    return progress


def adopt_settled_round(session: Any, task: Task, steps: CreatorSteps = PLAIN_STEPS) -> None:
    """A round whose results the marketplace paid without a verdict of ours: they were bought,
    so they are screened as any result is (integrity, originality: a bad file still counts
    for nothing) and federated, and the new weights and strategy state are checkpointed as
    the round's. Nothing is settled: the verdicts are already on the marketplace."""
    creator = session.creator
    round_number = task.spec.round_number
    round_start = core.published_global(creator, task)
    paid = core.paid_results(creator.market, task.task_id)
    review = steps.review(
        creator,
        task,
        paid,
        round_start,
        AutoAccept(),  # already accepted and paid; screening still decides what counts
        session.evaluate_tensors,
        session.max_examples,
        session.strategy,
    )
    kept = review.new_global if review.new_global is not None else round_start
    steps.evaluate_global(session, kept)
    steps.checkpoint(creator, round_number, session.global_tensors, session.strategy.state())
    log.warning(
        "round %d (task %d) was settled by the marketplace while the creator was away: its "
        "%d paid results were aggregated, not bought again",
        round_number, task.task_id, len(review.accepted),
    )  # fmt: skip


@dataclass
class SettledRound:
    """A settled round: the review, the new weights' test metrics, what was paid and
    refunded, and the submissions it judged (for the round's table)."""

    review: RoundReview
    metrics: dict
    payments: dict[int, int]
    refund: int
    submissions: list[Submission] = field(default_factory=list)


def settle_round(
    session: Any,
    round_number: int,
    task_id: int,
    policy: Policy,
    steps: CreatorSteps = PLAIN_STEPS,
) -> SettledRound:
    """Judge the task's results, federate the accepted ones, adopt and score the new weights,
    checkpoint them (before paying), then settle and close. A result that lands before the
    settlement makes the marketplace refuse the close: the round is judged again with it,
    from the same starting weights and strategy state."""
    creator = session.creator
    round_start = dict(session.global_tensors)
    while True:
        task = steps.read_task(creator.market, task_id)
        submissions = steps.pending_results(creator.market, task_id)
        review = steps.review(
            creator,
            task,
            submissions,
            round_start,
            policy,
            session.evaluate_tensors,
            session.max_examples,
            session.strategy,
        )
        crashpoint("reviewed")
        kept = review.new_global if review.new_global is not None else round_start
        metrics = steps.evaluate_global(session, kept)
        state = session.strategy.state()  # the optimizer state goes beside the weights
        steps.checkpoint(creator, round_number, session.global_tensors, state)  # before paying
        crashpoint("checkpointed")
        try:
            payments, refund = steps.settle_and_close(
                creator.market, creator.keypair, task_id, review.verdicts, review.deferred
            )
        except PendingResults as late:
            log.info("task %d: a late result arrived (%s); judging it", task_id, late)
            continue
        crashpoint("settled")
        return SettledRound(review, metrics, payments, refund, submissions)


def report_round(
    session: Any,
    round_number: int,
    task_id: int,
    done: SettledRound,
    steps: CreatorSteps = PLAIN_STEPS,
) -> RoundReport:
    """The round's report (``round_report``), kept in storage for later runs' charts."""
    report = round_report(session, round_number, task_id, done)
    steps.keep_report(session.creator, report)
    return report


def round_report(session: Any, round_number: int, task_id: int, done: SettledRound) -> RoundReport:
    """The round's report: its primary metric, verdicts, payments, whether the task stays
    open (deferred results) and why it falls short of ``task.min_accepted_results``."""
    config, review = session.creator.config, done.review
    return RoundReport.scored(
        round_number,
        task_id,
        workloads.get(config.workload_name).primary_metric,
        done.metrics,
        accepted=[v.submission_id for v in review.accepted],
        rejected={v.submission_id: v.reason for v in review.rejected},
        deferred={d.submission_id: d.reason for d in review.deferred},
        payments=done.payments,
        refund=done.refund,
        task_open=bool(review.deferred),
        shortfall=shortfall(
            len(review.accepted),
            len(review.rejected),
            len(review.deferred),
            config.task.min_accepted_results,
        ),
    )
