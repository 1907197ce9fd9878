"""The model creator's procedure (seed steps 1, 2, 6, 7, 8), one round per marketplace task.

publish:  save the global weights, package the contributor assets, create the task
round:    wait for results → screen + validate + federate → set and evaluate the new weights
          → checkpoint them (before anyone is paid for them) → settle and close in one unit
          (accept pays, reject records why, the rest is refunded); a result that lands before
          the settlement is judged in it. A result the creator's storage could not deliver
          (after retries) is deferred, not rejected: the decided ones are settled and the task
          stays open until it is judged.
train:    publish and run `rounds` rounds, each task carrying the latest global weights; a
          rerun of the same run (config name or --run) reads its progress back from the
          marketplace and storage and finishes the open round instead of publishing it again
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from decentralml.checks import CREATE, check_config
from decentralml.config import RunConfig, load_config, run_overrides
from decentralml.crashpoints import crashpoint
from decentralml.creator import RoundReview, close_open_tasks
from decentralml.errors import PendingResults
from decentralml.session import CreatorSession, open_creator, open_session
from decentralml.validation import make_policy
from tasks import creator as steps


@dataclass
class RoundReport:
    round_number: int
    task_id: int
    accuracy: float
    loss: float
    accepted: list[int] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)
    deferred: dict[int, str] = field(default_factory=dict)
    payments: dict[int, int] = field(default_factory=dict)
    refund: int = 0
    task_open: bool = False
    """True while deferred results keep the task open (not closed, nothing refunded)."""


@flow(
    name="creator-publish", flow_run_name="publish-round-{round_number}", validate_parameters=False
)
def publish(session: CreatorSession, round_number: int) -> int:
    creator = session.creator
    global_weights = steps.upload_global(creator, round_number, session.global_tensors)
    assets = steps.upload_assets(creator, round_number, session.max_examples)
    task_id = steps.create_round_task(creator, round_number, assets, global_weights)
    get_run_logger().info("round %d published as task %d", round_number, task_id)
    return task_id


@flow(
    name="creator-round",
    flow_run_name="round-{round_number}-task-{task_id}",
    validate_parameters=False,
)
def run_round(
    session: CreatorSession, round_number: int, task_id: int, decider=None
) -> RoundReport:
    creator, config = session.creator, session.creator.config
    steps.wait_for_results(
        creator.market, task_id, config.round_timeout_seconds, config.poll_seconds
    )
    policy = make_policy(config.task, decider)
    round_start = dict(session.global_tensors)
    while True:  # once, unless a late result lands before the settlement: then judge it too
        task = creator.market.get_task(task_id)
        review = steps.review(
            creator,
            task,
            steps.pending_results(creator.market, task_id),
            round_start,
            policy,
            session.evaluate_tensors,
            session.max_examples,
        )
        crashpoint("reviewed")
        kept = review.new_global if review.new_global is not None else round_start
        metrics = session.set_global(kept)
        steps.checkpoint(creator, round_number, session.global_tensors)  # before paying for it
        crashpoint("checkpointed")
        try:
            payments, refund = steps.settle_and_close(
                creator.market, creator.keypair, task_id, review.verdicts, review.deferred
            )
            break
        except PendingResults as late:
            get_run_logger().info("task %d: a late result arrived (%s); judging it", task_id, late)
    crashpoint("settled")
    publish_round_table(round_number, task_id, metrics, review, payments)
    report = RoundReport(
        round_number,
        task_id,
        metrics["accuracy"],
        metrics["loss"],
        accepted=[v.submission_id for v in review.accepted],
        rejected={v.submission_id: v.reason for v in review.rejected},
        deferred={d.submission_id: d.reason for d in review.deferred},
        payments=payments,
        refund=refund,
        task_open=bool(review.deferred),
    )
    get_run_logger().info("round %d: %s", round_number, asdict(report))
    if report.task_open:
        get_run_logger().warning(
            "round %d: task %d stays open: submissions %s could not be read from storage and "
            "have no verdict yet; judge them when the storage is back, then close the task",
            round_number, task_id, sorted(report.deferred),
        )  # fmt: skip
    return report


def publish_round_table(
    round_number: int, task_id: int, metrics: dict, review: RoundReview, payments: dict[int, int]
) -> None:
    """The round's verdicts (and deferred results) as a table artifact: the creator reads
    them in the Prefect UI."""
    rows = [
        {
            "submission": v.submission_id,
            "verdict": "accepted" if v.accept else "rejected",
            "reason": v.reason,
            "paid": payments.get(v.submission_id, 0),
        }
        for v in review.verdicts
    ]
    rows += [
        {"submission": d.submission_id, "verdict": "deferred", "reason": d.reason, "paid": 0}
        for d in review.deferred
    ]
    create_table_artifact(
        table=rows or [{"submission": "-", "verdict": "no results", "reason": "", "paid": 0}],
        description=(
            f"Round {round_number} (task {task_id}): test accuracy {metrics['accuracy']:.4f}, "
            f"loss {metrics['loss']:.4f}"
            + ("; the task stays open: deferred results await a verdict" if review.deferred else "")
        ),
    )


@flow(name="creator-train", flow_run_name="train-{config.name}", validate_parameters=False)
def train(
    config: RunConfig,
    session: CreatorSession | None = None,
    decider=None,
    on_round: Callable[[RoundReport], None] | None = None,
) -> list[RoundReport]:
    session = session or open_session(config)
    steps.settle_overdue(session.creator)  # results nobody judged in time are paid first
    progress = steps.find_progress(session.creator)
    session.resume(progress)
    reports = []
    for round_number in range(progress.done_rounds + 1, config.rounds + 1):
        resumable = progress.open_task if round_number == progress.done_rounds + 1 else None
        task_id = resumable.task_id if resumable else publish(session, round_number)
        crashpoint("published")
        reports.append(run_round(session, round_number, task_id, decider))
        if on_round:
            on_round(reports[-1])
    return reports


def close_tasks_of_aborted_run(flow, flow_run, state) -> None:
    """State hook: a cancelled or crashed training closes its open task, refunding the unused
    slots; results already sent stay for a verdict (a rerun judges them, and past the review
    grace they are paid). Rerunning the same config resumes the training from storage."""
    config = load_run_config(**flow_run.parameters)
    for task_id, outcome in close_open_tasks(open_creator(config)).items():
        get_run_logger().warning("training %s stopped: task %d %s", config.name, task_id, outcome)


@flow(
    name="creator-train-from-config",
    flow_run_name="train-from-{config_path}",
    on_cancellation=[close_tasks_of_aborted_run],
    on_crashed=[close_tasks_of_aborted_run],
)
def train_from_config(
    config_path: str = "configs/mnist.yaml",
    rounds: int | None = None,
    epochs: int | None = None,
    contributors: int | None = None,
    strategy: str | None = None,
    run_name: str | None = None,
) -> list[dict]:
    """Deployment entry point (see prefect.yaml): every round of the configured training.
    ``config_path`` is read on the worker (relative to its working directory); the other
    parameters override the config for this run (``decentralml.config.run_overrides``). The
    creator's key comes from the environment variable the config names."""
    config = load_run_config(config_path, rounds, epochs, contributors, strategy, run_name)
    return [asdict(report) for report in train(config)]


def load_run_config(
    config_path: str = "configs/mnist.yaml",
    rounds: int | None = None,
    epochs: int | None = None,
    contributors: int | None = None,
    strategy: str | None = None,
    run_name: str | None = None,
) -> RunConfig:
    """A deployment's config: the file as the worker sees it, the run's parameters on top
    (``decentralml.config.run_overrides``), checked before anything is published."""
    overrides = run_overrides(rounds, epochs, contributors, strategy, run_name)
    config = load_config(config_path, overrides)
    return check_config(config, CREATE, source=config_path)
