"""One round per flow run: the creator's training driven by a schedule or a trigger.

A run reads the training's progress back from the marketplace and storage
(``decentralml.creator.find_progress``), then publishes and runs the next round, or finishes
the open one. When that round settled and more remain, it emits ``decentralml.round.settled``
(resource ``decentralml.run.<run>``, the run's parameters in the payload); the deployment's
trigger in prefect.yaml answers it with the next run. A finished training emits nothing, so
the chain stops; a round that leaves its task open (deferred results) emits nothing either,
and the next scheduled run (or a manual one) finishes it.
"""

from __future__ import annotations

from dataclasses import asdict

from prefect import State, flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.events import emit_event
from prefect.states import Failed

from decentralml.creator.round import start_training
from flows.creator import (
    RoundReport,
    close_tasks_of_aborted_run,
    creator_tags,
    load_run_config,
    outcome,
    publish,
    run_round,
)
from tasks import creator as steps
from tasks import reporting
from tasks.policy import untagged_tasks

ROUND_SETTLED = "decentralml.round.settled"


@flow(
    name="creator-next-round",
    flow_run_name="next-round-of-{config_path}",
    on_cancellation=[close_tasks_of_aborted_run],
    on_crashed=[close_tasks_of_aborted_run],
)
def next_round_from_config(
    config_path: str = "configs/mnist.yaml",
    rounds: int | None = None,
    epochs: int | None = None,
    contributors: int | None = None,
    strategy: str | None = None,
    run_name: str | None = None,
) -> dict | State | None:
    """Deployment entry point (prefect.yaml ``creator-next-round``): the training's next round,
    None once every round is done. Parameters as for ``flows.creator.train_from_config``. An
    underfilled round ends the run Failed with the round's message, its report kept as the
    result (Prefect cannot raise a report as the run's error: it failed with a TypeError)."""
    parameters = {
        "config_path": config_path,
        "rounds": rounds,
        "epochs": epochs,
        "contributors": contributors,
        "strategy": strategy,
        "run_name": run_name,
    }
    config = load_run_config(**parameters)
    with untagged_tasks():
        session = steps.open_session(config)
        progress = start_training(session, steps.STEPS)  # overdue results paid, read back
    if progress.done_rounds >= config.rounds:
        get_run_logger().info("training %s is complete: %d rounds", config.name, config.rounds)
        return None
    round_number = progress.done_rounds + 1
    name_this_run(f"{session.creator.run}-next-round-{round_number}")
    with creator_tags(config.name):
        open_task = progress.open_task
        task_id = open_task.task_id if open_task else publish(session, round_number)
        state = run_round(session, round_number, task_id, return_state=True)
    report = outcome(state)  # a raised error re-raises here
    with untagged_tasks():  # the training's chart and summary, every round so far
        earlier = steps.STEPS.kept_reports(session.creator, progress.done_rounds)
        reporting.publish_training(session.creator.run, [*earlier, report])
    if round_number < config.rounds and not report.task_open:
        announce_settled(config.name, report, parameters)
    if state.is_failed():
        return Failed(message=state.message, data=asdict(report))
    return asdict(report)


def name_this_run(name: str) -> None:
    """Rename the running flow run once its round is known: every chained run starts as
    ``next-round-of-<config>`` (Prefect names a run from its parameters, before it runs)."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    with get_client(sync_client=True) as client:
        client.update_flow_run(context.flow_run.id, name=name)


def announce_settled(run: str, report: RoundReport, parameters: dict) -> None:
    """The event the next round's trigger waits for; it carries the parameters to run with."""
    emit_event(
        event=ROUND_SETTLED,
        resource={"prefect.resource.id": f"decentralml.run.{run}", "prefect.resource.name": run},
        payload={
            "round": report.round_number,
            "task_id": report.task_id,
            "metric_name": report.metric_name,
            "metric": report.metric,
            "parameters": parameters,
        },
    )
    get_run_logger().info("round %d of %s settled; next round announced", report.round_number, run)
