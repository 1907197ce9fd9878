"""The creator's steps as Prefect tasks (core logic in decentralml.creator and
decentralml.session)."""

from __future__ import annotations

from prefect import task

from decentralml import creator as core
from decentralml import session
from decentralml.domain import Task
from decentralml.marketplace.base import Marketplace
from tasks.policy import IO_TASK, LOCAL_TASK

upload_global = task(name="upload-global-weights", **IO_TASK)(core.upload_global)
upload_assets = task(name="upload-contributor-assets", **IO_TASK)(core.upload_assets)
create_round_task = task(name="create-task", **IO_TASK)(core.create_round_task)
wait_for_results = task(name="wait-for-results", **LOCAL_TASK)(core.wait_for_results)
review = task(name="validate-and-federate", **LOCAL_TASK)(core.review)
settle_and_close = task(name="settle-and-close", **IO_TASK)(core.settle_and_close)
checkpoint = task(name="checkpoint-global", **IO_TASK)(core.checkpoint)
pending_results = task(name="list-pending-results", **IO_TASK)(core.pending_results)
find_progress = task(name="find-progress", **IO_TASK)(core.find_progress)
settle_overdue = task(name="pay-overdue-results", **IO_TASK)(core.settle_overdue)


@task(name="read-task", **IO_TASK)
def read_task(market: Marketplace, task_id: int) -> Task:
    """The task's record as the marketplace has it now (its status, its slots)."""
    return market.get_task(task_id)


# The session's steps: opening it (marketplace, data splits, the compiled model), reading a
# resumed training's weights back from storage, and adopting a round's new global weights,
# which scores them on the test split (CPU: not retried).
open_session = task(name="open-creator-session", **LOCAL_TASK)(session.open_session)
resume = task(name="resume-training", **IO_TASK)(session.CreatorSession.resume)
evaluate_global = task(name="evaluate-global-weights", **LOCAL_TASK)(
    session.CreatorSession.set_global
)
