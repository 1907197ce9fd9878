"""Suspending a deployment's training run while nobody needs its process (one mechanism).

Two waits use it: ManualAccept's wait for the reviewer (flows/manual_review.py) and the round's
wait for results (flows/waker.py). Only a deployment's run can be suspended: its worker starts it
again when it is resumed, from the top, and the training's own resume (flows/creator.py) reads
the open round back from the marketplace and storage. A suspension is a pause key on the
training's (root) run: the server refuses a key that already fired, which is how a rerun knows
that it was resumed. Nobody holds a clock while the run is suspended, so each suspension leaves
a Prefect automation (``timeout_resumer``) that reschedules the run if nobody resumes it in time.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from prefect import get_run_logger
from prefect._flow_run_suspension import mark_flow_run_suspension_requested
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State, StateType
from prefect.context import FlowRunContext
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.runtime import flow_run as current_flow_run
from prefect.states import Cancelled, Suspended
from prefect.utilities.engine import propose_state_sync

EXPIRY_GRACE = 120  # seconds the server waits past a suspension's timeout before failing it


class RunSuspended(Exception):
    """Raised once the training's run is suspended: nothing after the wait may run. Prefect
    then ends the process at the next orchestration step, leaving the run Suspended."""


def deployment_root() -> UUID | None:
    """The flow run to suspend: the root of the current run (the round is a subflow of the
    training), if a deployment started it; else None (a local run waits in its process).
    Prefect can only suspend a deployment's run: its worker starts it again on Resume."""
    root = UUID(current_flow_run.root_flow_run_id)
    with get_client(sync_client=True) as client:
        return root if client.read_flow_run(root).deployment_id else None


def suspended(key: str, timeout: float) -> State:
    """The Suspended state of a wait of at most ``timeout`` seconds under pause key ``key``."""
    return Suspended(timeout_seconds=round(timeout) + EXPIRY_GRACE, pause_key=key)


def propose_suspension(root: UUID, proposed: State, timeout: float, woken: str) -> State:
    """Propose ``proposed`` (``suspended``) for ``root``, with a ``timeout_resumer`` that
    reschedules it with the message ``woken`` if nobody resumes it within ``timeout`` seconds.
    Returns the server's state: Paused (suspended now; call ``leave_suspended``) or Running
    (the key fired on an earlier attempt: the run was resumed, its resumers are gone)."""
    with get_client(sync_client=True) as client:
        client.delete_resource_owned_automations(owner(root))  # spent ones would count too
        client.create_automation(timeout_resumer(root, timeout, woken))  # before the event
        state = propose_state_sync(client=client, state=proposed, flow_run_id=root)
        if state.is_running():
            client.delete_resource_owned_automations(owner(root))
    if not (state.is_running() or state.is_paused()):
        raise RuntimeError(f"the run could not be suspended: {state}")
    return state


def forget_resumers(root: UUID) -> None:
    """Delete the resumers ``root``'s suspensions left: once it runs again they are spent, and a
    left one would start counting at the run's next suspension."""
    with get_client(sync_client=True) as client:
        client.delete_resource_owned_automations(owner(root))


def owner(root: UUID) -> str:
    """The resource that owns ``root``'s resumers (and that its state events are about)."""
    return f"prefect.flow-run.{root}"


def leave_suspended(root: UUID, state: State, why: str) -> None:
    """Raise ``RunSuspended``: the engine exits at its next step, keeping ``state``; the
    attempt's subflows are ended first (the resumed root runs them again)."""
    mark_flow_run_suspension_requested(root, state)
    close_abandoned_subflows(root)
    get_run_logger().warning("%s: run suspended, its process exits", why)
    raise RunSuspended(why)


def timeout_resumer(root: UUID, timeout: float, woken: str) -> AutomationCore:
    """Prefect's own wake-up at a wait's timeout: a proactive trigger that fires when the run,
    once Suspended, is not resumed (``Resuming``) within ``timeout`` seconds, and reschedules
    it with the message ``woken``. Owned by the run, so ``forget_resumers`` finds it."""
    run = owner(root)
    return AutomationCore(
        name=f"suspension-timeout-{root}",
        owner_resource=run,
        trigger=EventTrigger(
            posture=Posture.Proactive,
            after={"prefect.flow-run.Suspended"},
            expect={"prefect.flow-run.Resuming"},
            match={"prefect.resource.id": run},
            for_each={"prefect.resource.id"},
            threshold=1,
            within=timedelta(seconds=max(round(timeout), 10)),  # Prefect's least (proactive)
        ),
        actions=[ChangeFlowRunState(state=StateType.SCHEDULED, name="Resuming", message=woken)],
    )


def close_abandoned_subflows(root: UUID) -> None:
    """End the subflow runs between this one and the suspended ``root`` (the round's, the
    training's): their process exits without a last state, and their attempt will not go on
    (the resumed root runs them again). Left alone they would show Running for ever."""
    context = FlowRunContext.get()
    run_id = context.flow_run.id if context and context.flow_run else root
    message = "ended by the training's suspension; its resume runs it again"
    with get_client(sync_client=True) as client:
        while run_id != root:
            run = client.read_flow_run(run_id)
            client.set_flow_run_state(run_id, Cancelled(message=message), force=True)
            run_id = client.read_task_run(run.parent_task_run_id).flow_run_id
