"""The model contributor's procedure (seed steps 3, 4, 5):

list tasks → assign one → download and verify the assets and global weights → load the data
shard → train with the creator's epochs and batch size → save weights → upload → send result.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger
from substrateinterface import Keypair

from decentralml.config import RunConfig
from decentralml.domain import Task
from decentralml.marketplace.base import Marketplace
from decentralml.storage import ArtifactStore
from tasks import contributor as steps


@dataclass(frozen=True)
class Contribution:
    task_id: int
    submission_id: int
    num_examples: int
    metrics: dict


@flow(
    name="contributor",
    flow_run_name="contributor-{shard_index}-task-{task.task_id}",
    validate_parameters=False,
)
def contribute(
    market: Marketplace,
    store: ArtifactStore,
    worker: Keypair,
    task: Task,
    shard_index: int,
    config: RunConfig | None = None,
) -> Contribution:
    submission_id = steps.assign(market, worker, task.task_id)
    with tempfile.TemporaryDirectory(prefix=f"dml-task-{task.task_id}-") as workdir:
        inputs = steps.fetch_inputs(store, task, Path(workdir))
    settings = inputs.settings
    cache = config.data.cache_dir if config else None
    x, y = steps.load_shard(settings["data"], shard_index, cache)
    outcome = steps.train(
        settings["model"],
        inputs.global_tensors,
        x,
        y,
        epochs=settings["epochs"],
        batch_size=settings["batch_size"],
        learning_rate=settings["learning_rate"],
        seed=shard_index + 1000 * task.task_id,
    )
    artifact = steps.upload_result(store, task, submission_id, outcome)
    steps.submit(market, worker, task, submission_id, artifact, outcome)
    get_run_logger().info(
        "task %d: submission %d sent (%d examples, %s)",
        task.task_id,
        submission_id,
        outcome.num_examples,
        outcome.metrics,
    )
    return Contribution(task.task_id, submission_id, outcome.num_examples, outcome.metrics)
