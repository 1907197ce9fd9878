"""The creator's steps as Prefect tasks (core logic in decentralml.creator)."""

from __future__ import annotations

from prefect import task

from decentralml import creator as core
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
