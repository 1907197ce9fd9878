"""The model creator's procedure (seed steps 1, 2, 6, 7, 8), one round per marketplace task.

publish:  save the global weights, package the contributor assets (with what the strategy
          tells contributors this round), create the task
round:    wait for results (a deployment's run suspends meanwhile and a light waker waits:
          flows/waker.py) → screen + validate + federate with the training's strategy → set
          the new weights and evaluate them (every test metric; the workload's primary one
          is reported) → checkpoint them and the strategy's state (before anyone is paid
          for them) → settle and close in one unit
          (accept pays, reject records why, the rest is refunded); a result that lands before
          the settlement is judged in it. ManualAccept without a decisions file pauses the
          run for the reviewer's form in the Prefect UI, or suspends it when a deployment
          started it (no process waits; flows/manual_review.py). A result the
          creator's storage could not deliver (after retries) is deferred, not rejected: the
          decided ones are settled and the task stays open until it is judged. The round's
          submissions table and summary become keyed artifacts; fewer accepted results than
          `task.min_accepted_results` end the settled round Failed.
train:    publish and run `rounds` rounds, each task carrying the latest global weights, and
          chart the primary metric and the loss per round; a rerun of the same run (config
          name or --run) reads its progress back from the marketplace and storage and
          finishes the open round instead of publishing it again
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger, tags
from prefect.runtime import flow_run as current_flow_run
from prefect.states import Failed, State

from decentralml.creator import close_open_tasks
from decentralml.creator.report import RoundReport, submission_rows, underfilled_rounds
from decentralml.creator.round import publish_round, report_round, settle_round, start_training
from decentralml.creator.session import CreatorSession, open_creator
from decentralml.runtime.checks import CREATE, check_config
from decentralml.runtime.config import RunConfig, load_config, run_overrides
from decentralml.runtime.crashpoints import crashpoint
from decentralml.validation import make_policy
from flows.manual_review import FormReview
from flows.waker import run_tags, wait_or_suspend
from tasks import creator as steps
from tasks import reporting
from tasks.policy import untagged_tasks


def creator_tags(run: str) -> AbstractContextManager:
    """Tags of every creator flow run of ``run``: filter the UI by run or by role. Each
    creator flow runs its steps under ``untagged_tasks``: its task runs carry no tags, so none
    waits for a tag-concurrency lease (tasks.policy)."""
    return tags(*run_tags(run))


def outcome(state: State) -> Any:
    """What a finished run returned, also when it ended Failed on purpose (an underfilled
    round still carries its report); a run that failed by raising re-raises here."""
    value = state.result(raise_on_failure=False)
    if isinstance(value, BaseException):
        raise value
    return value


@flow(
    name="creator-publish",
    flow_run_name="{session.creator.run}-publish-round-{round_number}",
    validate_parameters=False,
)
def publish(session: CreatorSession, round_number: int) -> int:
    with untagged_tasks():
        task_id = publish_round(session, round_number, steps.STEPS)
    get_run_logger().info("round %d published as task %d", round_number, task_id)
    return task_id


@flow(
    name="creator-round",
    flow_run_name="{session.creator.run}-round-{round_number}-task-{task_id}",
    validate_parameters=False,
)
def run_round(
    session: CreatorSession, round_number: int, task_id: int, decider=None
) -> RoundReport | State:
    """One round, settled. A round with fewer accepted results than
    ``task.min_accepted_results`` is still settled, checkpointed and reported, then ends in a
    Failed state that names why and carries its report (see ``outcome``)."""
    creator, config, run = session.creator, session.creator.config, session.creator.run
    with untagged_tasks():
        wait_or_suspend(creator, round_number, task_id)  # a deployment's run suspends
        policy = make_policy(config.task, decider, FormReview.for_task(config.task))  # ManualAccept
        settled = settle_round(session, round_number, task_id, policy, steps.STEPS)
        report = report_round(session, round_number, task_id, settled, steps.STEPS)
        rows = submission_rows(
            settled.submissions, settled.review, settled.payments, report.metric_name
        )
        reporting.publish_round(run, report, rows)
    get_run_logger().info("round %d: %s", round_number, asdict(report))
    if report.task_open:
        get_run_logger().warning(
            "round %d: task %d stays open: submissions %s could not be read from storage and "
            "have no verdict yet; judge them when the storage is back, then close the task",
            round_number, task_id, sorted(report.deferred),
        )  # fmt: skip
    if report.shortfall:
        get_run_logger().warning("round %d: %s", round_number, report.shortfall)
        return Failed(message=f"round {round_number}: {report.shortfall}", data=report)
    return report


def _train_run_name() -> str:
    parameters = current_flow_run.parameters
    session = parameters.get("session")
    return f"{session.creator.run if session else parameters['config'].name}-train"


@flow(name="creator-train", flow_run_name=_train_run_name, validate_parameters=False)
def train(
    config: RunConfig,
    session: CreatorSession | None = None,
    decider=None,
    on_round: Callable[[RoundReport], None] | None = None,
) -> list[RoundReport] | State:
    """Every remaining round of the run. An underfilled round does not stop the training;
    the run then ends Failed naming those rounds, with all the reports (see ``outcome``)."""
    with untagged_tasks():
        session = session or steps.open_session(config)
        progress = start_training(session, steps.STEPS)  # overdue results paid, read back
        earlier = steps.STEPS.kept_reports(session.creator, progress.done_rounds)
    run = session.creator.run
    reports: list[RoundReport] = []
    for round_number in range(progress.done_rounds + 1, config.rounds + 1):
        resumable = progress.open_task if round_number == progress.done_rounds + 1 else None
        with creator_tags(run):  # the round's flow runs
            task_id = resumable.task_id if resumable else publish(session, round_number)
            crashpoint("published")
            state = run_round(session, round_number, task_id, decider, return_state=True)
        reports.append(outcome(state))
        with untagged_tasks():
            reporting.publish_training(run, earlier + reports)  # a resumed run: every round
        if on_round:
            on_round(reports[-1])
    underfilled = underfilled_rounds(reports)
    if underfilled:
        why = "; ".join(f"round {r.round_number}: {r.shortfall}" for r in reports if r.shortfall)
        rounds = ", ".join(map(str, underfilled))
        return Failed(message=f"underfilled rounds {rounds} ({why})", data=reports)
    return reports


def run_training(
    config: RunConfig,
    session: CreatorSession | None = None,
    decider=None,
    on_round: Callable[[RoundReport], None] | None = None,
) -> list[RoundReport]:
    """``train`` tagged with its run and role, returning the reports even when the training
    ended Failed for underfilled rounds (``underfilled_rounds`` tells which)."""
    run = session.creator.run if session else config.name
    with creator_tags(run):
        return outcome(train(config, session, decider, on_round, return_state=True))


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
) -> list[dict] | State:
    """Deployment entry point (see prefect.yaml): every round of the configured training.
    ``config_path`` is read on the worker (relative to its working directory); the other
    parameters override the config for this run (``decentralml.runtime.config.run_overrides``). The
    creator's key comes from the environment variable the config names. An underfilled round
    ends the run Failed with the training's message, its reports kept as the result."""
    config = load_run_config(config_path, rounds, epochs, contributors, strategy, run_name)
    with creator_tags(config.name):
        state = train(config, return_state=True)
    reports = [asdict(report) for report in outcome(state)]  # a raised error re-raises here
    if state.is_failed():  # Prefect cannot raise a list of reports as the run's error
        return Failed(message=state.message, data=reports)
    return reports


def load_run_config(
    config_path: str = "configs/mnist.yaml",
    rounds: int | None = None,
    epochs: int | None = None,
    contributors: int | None = None,
    strategy: str | None = None,
    run_name: str | None = None,
) -> RunConfig:
    """A deployment's config: the file as the worker sees it, the run's parameters on top
    (``decentralml.runtime.config.run_overrides``), checked before anything is published."""
    overrides = run_overrides(rounds, epochs, contributors, strategy, run_name)
    config = load_config(config_path, overrides)
    return check_config(config, CREATE, source=config_path)
