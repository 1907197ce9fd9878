"""The model creator's procedure (seed steps 1, 2, 6, 7, 8), one round per marketplace task.

publish:  save the global weights, package the contributor assets, create the task
round:    wait for results → screen + validate + federate → set and evaluate the new weights
          → settle and close in one unit (accept pays, reject records why, the rest is
          refunded) → checkpoint
train:    publish and run `rounds` rounds, each task carrying the latest global weights
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from decentralml.checks import CREATE, check_config
from decentralml.config import RunConfig, load_config
from decentralml.session import CreatorSession, open_session
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
    payments: dict[int, int] = field(default_factory=dict)
    refund: int = 0


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
    submissions = steps.wait_for_results(
        creator.market, task_id, config.round_timeout_seconds, config.poll_seconds
    )
    task = creator.market.get_task(task_id)
    policy = make_policy(config.task, decider)
    review = steps.review(
        creator,
        task,
        submissions,
        session.global_tensors,
        policy,
        session.evaluate_tensors,
        session.max_examples,
    )
    kept = review.new_global if review.new_global is not None else session.global_tensors
    metrics = session.set_global(kept)
    payments, refund = steps.settle_and_close(
        creator.market, creator.keypair, task_id, review.verdicts
    )
    publish_round_table(round_number, task_id, metrics, review.verdicts, payments)
    steps.checkpoint(creator, round_number, session.global_tensors)
    report = RoundReport(
        round_number,
        task_id,
        metrics["accuracy"],
        metrics["loss"],
        accepted=[v.submission_id for v in review.accepted],
        rejected={v.submission_id: v.reason for v in review.rejected},
        payments=payments,
        refund=refund,
    )
    get_run_logger().info("round %d: %s", round_number, asdict(report))
    return report


def publish_round_table(
    round_number: int, task_id: int, metrics: dict, verdicts: list, payments: dict[int, int]
) -> None:
    """The round's verdicts as a table artifact: the creator reads them in the Prefect UI."""
    rows = [
        {
            "submission": v.submission_id,
            "verdict": "accepted" if v.accept else "rejected",
            "reason": v.reason,
            "paid": payments.get(v.submission_id, 0),
        }
        for v in verdicts
    ]
    create_table_artifact(
        table=rows or [{"submission": "-", "verdict": "no results", "reason": "", "paid": 0}],
        description=(
            f"Round {round_number} (task {task_id}): test accuracy {metrics['accuracy']:.4f}, "
            f"loss {metrics['loss']:.4f}"
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
    reports = []
    for round_number in range(1, config.rounds + 1):
        task_id = publish(session, round_number)
        reports.append(run_round(session, round_number, task_id, decider))
        if on_round:
            on_round(reports[-1])
    return reports


@flow(name="creator-train-from-config", flow_run_name="train-from-{config_path}")
def train_from_config(config_path: str = "configs/mnist.yaml") -> list[dict]:
    """Deployment entry point (see prefect.yaml): every round of the configured training.
    The creator's key comes from the environment variable the config names."""
    config = check_config(load_config(config_path), CREATE, source=config_path)
    return [asdict(report) for report in train(config)]
