"""The round's wait for results from a deployment: the run suspends, a light waker waits.

A local run waits in its process, as the core's ``wait_for_results`` always did. A deployment's
run waits there too for ``suspend_after_seconds`` (quick results cost no suspension); beyond
that it would hold its worker process and the creator's session (TensorFlow, the compiled model,
the held-out split: ~710 MB, bench/bench_idle_round.py) for up to ``round_timeout_seconds``
while nothing happens. So, when results are still missing, ``wait_or_suspend`` suspends the
training's run (flows/suspension.py, the mechanism ManualAccept's review uses) under the pause
key ``results-task-<id>`` and starts the waker: the ``creator-wait-for-results`` deployment
(prefect.yaml), a flow that imports no TensorFlow, opens only the marketplace and storage, runs
the same ``wait_for_results`` (same timeout and poll) and then resumes the suspended run.

The resumed run starts again from the top: the training's own resume (flows/creator.py) reads
the open round back from the marketplace and storage (nothing is published, trained or paid
twice), and its round finds the key fired, so it does not wait again and settles what came
in. If the waker dies, Prefect's own automation (``timeout_resumer``) reschedules the run
``WAKE_MARGIN`` seconds after ``round_timeout_seconds``. Without a waker deployment the run
logs one warning and waits in its process.
"""

from __future__ import annotations

from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.exceptions import NotPausedError, ObjectNotFound
from prefect.flow_runs import resume_flow_run

from decentralml.creator import Creator
from decentralml.runtime.config import parse_config
from flows.suspension import (
    deployment_root,
    forget_resumers,
    leave_suspended,
    propose_suspension,
    suspended,
)
from tasks import creator as steps
from tasks import reporting
from tasks.policy import untagged_tasks

WAKER = "creator-wait-for-results/creator-wait-for-results"
"""The waker's deployment (flow name / deployment name in prefect.yaml)."""
WAKE_MARGIN = 120  # seconds past round_timeout_seconds before Prefect wakes a run on its own
NOT_WOKEN = "no waker resumed the round by its timeout"


def run_tags(run: str) -> list[str]:
    """Tags of every creator flow run of ``run`` (the waker's too): filter the UI by run or
    by role."""
    return ["decentralml", f"run:{run}", "role:creator"]


def wait_or_suspend(creator: Creator, round_number: int, task_id: int) -> None:
    """The round's wait for results: in this process, or (a deployment's run, results still
    missing) by the waker while the training's run is suspended (``RunSuspended``)."""
    config = creator.config
    timeout = config.round_timeout_seconds
    root = deployment_root()
    if root is not None:
        timeout = suspend_for_results(root, creator, round_number, task_id)
    steps.wait_for_results(
        creator.market,
        task_id,
        timeout,
        config.poll_seconds,
        reporting.WaitProgress(creator.run, round_number),
    )


def suspend_for_results(root: UUID, creator: Creator, round_number: int, task_id: int) -> float:
    """How long this run still waits in its process: 0 once the waker (or Prefect's timeout)
    resumed it, the whole round timeout without a waker deployment or with every result in
    within ``suspend_after_seconds``; otherwise suspend ``root`` and start the waker (raises
    ``RunSuspended``)."""
    config = creator.config
    timeout = config.round_timeout_seconds
    grace = min(config.suspend_after_seconds, timeout)
    if grace:  # quick results: no suspension (returns at once when they are all in)
        steps.wait_for_results(
            creator.market, task_id, grace, config.poll_seconds,
            reporting.WaitProgress(creator.run, round_number),
        )  # fmt: skip
    if steps.results_in(creator.market, task_id):
        forget_resumers(root)  # nothing to wait for; a spent resumer must not linger
        return timeout
    if not waker_deployed():
        get_run_logger().warning(
            "no %s deployment: round %d waits for its results in this process (prefect.yaml)",
            WAKER, round_number,
        )  # fmt: skip
        return timeout
    key, most = f"results-task-{task_id}", timeout + WAKE_MARGIN
    state = propose_suspension(root, suspended(key, most), most, NOT_WOKEN)
    if state.is_running():  # the key fired: the waker's wait is over
        return 0
    start_waker(root, creator, round_number, task_id, key)
    leave_suspended(root, state, f"round {round_number} waits for results ({key})")
    return 0  # not reached: leave_suspended raises


def waker_deployed() -> bool:
    """Whether the Prefect server has the waker's deployment (prefect.yaml deploys it)."""
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(WAKER)
        except ObjectNotFound:
            return False
    return True


def start_waker(root: UUID, creator: Creator, round_number: int, task_id: int, key: str) -> None:
    """A run of the waker's deployment, not a subflow: the attempt's subflows are cancelled
    when the run suspends, and Prefect would cancel a subflow's child runs with them. A
    failure is logged: the run stays suspended and Prefect's timeout wakes it."""
    parameters = {
        "config": creator.config.model_dump(mode="json"),
        "run": creator.run,
        "round_number": round_number,
        "task_id": task_id,
        "suspended_run": str(root),
    }
    try:
        run_deployment(
            WAKER, parameters=parameters, timeout=0, as_subflow=False,
            tags=run_tags(creator.run), idempotency_key=f"waker-{root}-{key}",
        )  # fmt: skip
    except Exception as error:
        get_run_logger().error(
            "the waker could not start (%s: %s); Prefect wakes the round at its timeout",
            type(error).__name__, error,
        )  # fmt: skip


@flow(
    name="creator-wait-for-results",
    flow_run_name="{run}-round-{round_number}-wait-for-results",
    validate_parameters=False,
)
def wait_and_resume(
    config: dict, run: str, round_number: int, task_id: int, suspended_run: str
) -> None:
    """Deployment entry point (prefect.yaml): the round's wait for results with only the
    marketplace and the storage open, then resume the training's run that suspended for it."""
    settings = parse_config(config, f"the config of run {run}")
    with untagged_tasks():
        creator = steps.open_creator(settings, run)
        steps.wait_for_results(
            creator.market,
            task_id,
            settings.round_timeout_seconds,
            settings.poll_seconds,
            reporting.WaitProgress(run, round_number),
        )
    resume_round(UUID(suspended_run))


def resume_round(run_id: UUID) -> None:
    """Resume the suspended training run; one already running again (Prefect's timeout woke
    it, or someone resumed or cancelled it) or deleted needs nothing."""
    try:
        resume_flow_run(run_id)
    except (NotPausedError, ObjectNotFound) as gone:
        get_run_logger().info("run %s is no longer suspended (%s): nothing to resume", run_id,
                              type(gone).__name__)  # fmt: skip
