"""The creator's steps as Prefect tasks (core logic in decentralml.creator)."""

from __future__ import annotations

from prefect import task

from decentralml import creator as core
from decentralml.marketplace.base import Marketplace
from tasks.policy import IO_TASK, LOCAL_TASK

upload_global = task(name="upload-global-weights", **IO_TASK)(core.upload_global)
upload_assets = task(name="upload-contributor-assets", **IO_TASK)(core.upload_assets)
create_round_task = task(name="create-task", **IO_TASK)(core.create_round_task)
wait_for_results = task(name="wait-for-results", **LOCAL_TASK)(core.wait_for_results)
review = task(name="validate-and-federate", **LOCAL_TASK)(core.review)
settle = task(name="settle-verdicts", **IO_TASK)(core.settle)
checkpoint = task(name="checkpoint-global", **IO_TASK)(core.checkpoint)


@task(name="close-task", **IO_TASK)
def close_task(market: Marketplace, keypair, task_id: int) -> int:
    """Refund what the round did not pay (unfilled or rejected slots)."""
    return market.close_task(keypair, task_id)
