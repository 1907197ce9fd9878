"""The model contributor's procedure (seed steps 3, 4, 5):

list tasks → check the task record (reward, digests, creator) → download and verify the assets
and global weights (bounded) → check the settings and weights → assign (the first step that
costs a fee) → load the data shard → train with the creator's epochs and batch size → encode
the weights → commit to them → upload → send the result (the reveal).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger

from decentralml.checks import CONTRIBUTE, check_config
from decentralml.config import RunConfig, load_config
from decentralml.contributor import Contributor, check_offer, find_open_task, task_store
from decentralml.domain import Task
from decentralml.errors import TaskFull, TaskNotOpen
from decentralml.marketplace.base import Marketplace
from decentralml.runtime import contributor_keypair, open_marketplace, open_store
from decentralml.storage import sha256_hex
from tasks import contributor as steps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Contribution:
    task_id: int
    submission_id: int
    num_examples: int
    metrics: dict


@flow(
    name="contributor",
    flow_run_name="contributor-{contributor.shard_index}-task-{task.task_id}",
    validate_parameters=False,
)
def contribute(contributor: Contributor, task: Task) -> Contribution:
    market, worker = contributor.market, contributor.keypair
    store = task_store(contributor.store, task)  # the endpoint the record names
    steps.check_offer(market, task, contributor.terms)
    with tempfile.TemporaryDirectory(prefix=f"dml-task-{task.task_id}-") as workdir:
        inputs = steps.fetch_inputs(store, task, Path(workdir), contributor.terms)
    steps.check_inputs(inputs, contributor.shard_index)
    submission_id = steps.assign(market, worker, task.task_id)  # trusted this far: now pay
    settings = inputs.settings
    x, y = steps.load_shard(settings["data"], contributor.shard_index, contributor.cache_dir)
    attacker = contributor.attack  # demos only: a simulated attacker (decentralml.attacks)
    outcome = steps.train(
        settings["model"],
        inputs.global_tensors,
        x,
        attacker.labels(y) if attacker else y,
        epochs=settings["epochs"],
        batch_size=settings["batch_size"],
        learning_rate=settings["learning_rate"],
        seed=contributor.shard_index + 1000 * task.task_id,
    )
    if attacker:
        outcome = steps.attack(contributor, task, inputs.global_tensors, outcome)
    data = steps.encode_result(task, outcome)
    steps.commit(market, worker, submission_id, sha256_hex(data))
    artifact = steps.upload_result(store, task, submission_id, data)
    steps.submit(market, worker, task, submission_id, artifact, outcome)
    get_run_logger().info(
        "task %d: submission %d sent (%d examples, %s)",
        task.task_id, submission_id, outcome.num_examples, outcome.metrics,
    )  # fmt: skip
    return Contribution(task.task_id, submission_id, outcome.num_examples, outcome.metrics)


def run_agent(
    contributor: Contributor,
    poll_seconds: float,
    first_task_id: int = 0,
    stop: threading.Event | None = None,
    max_tasks: int | None = None,
) -> list[Contribution]:
    """Watch the marketplace and contribute to each new task (id >= first_task_id).

    Stops after ``max_tasks`` tasks were seen (None: never) or when ``stop`` is set. A task
    whose slots went to faster contributors is skipped silently; any other failure of one task
    (a stranger's bad task, a refused check, a bug) is logged as one line and the task is
    skipped for good: tasks are published by anyone, so none may stop the agent.
    """
    stop = stop or threading.Event()
    seen: set[int] = set(range(first_task_id))
    contributions: list[Contribution] = []
    while (max_tasks is None or len(seen) - first_task_id < max_tasks) and not stop.is_set():
        task = find_open_task(contributor.market, contributor.keypair, seen)
        if task is None:
            stop.wait(poll_seconds)
            continue
        seen.add(task.task_id)  # remembered: a skipped task is not tried again
        try:
            # The cheap checks first, here too: a spam task costs no flow run, no download.
            check_offer(contributor.market, task, contributor.terms)
            contributions.append(contribute(contributor, task))
        except (TaskFull, TaskNotOpen):
            continue  # the slots went to faster contributors, or the task ended
        except Exception as error:  # not KeyboardInterrupt/SystemExit: those stop the agent
            log.warning("skipping task %d: %s", task.task_id, _one_line(error))
    return contributions


def _one_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else '(no message)'}"


def open_contributor(
    config: RunConfig, shard_index: int, market: Marketplace | None = None
) -> Contributor:
    """A contributor from config: key from the environment (dev key by shard in dev mode)."""
    return Contributor(
        market or open_marketplace(config.marketplace),
        open_store(config.storage),
        contributor_keypair(config.marketplace, _dev_index(config, shard_index)),
        shard_index,
        config.data.cache_dir,
        config.contributor,
    )


@flow(name="contributor-agent", flow_run_name="agent-{shard_index}")
def agent(
    config_path: str = "configs/mnist.yaml", shard_index: int = 0, max_tasks: int | None = None
) -> int:
    """Deployment entry point: a contributor's long-running agent (see prefect.yaml). It works
    on every open task with a free slot, oldest first, including tasks published before it
    started. Its key comes from the environment variable the config names."""
    config = check_config(load_config(config_path), CONTRIBUTE, source=config_path)
    contributor = open_contributor(config, shard_index)
    return len(run_agent(contributor, config.poll_seconds, 0, None, max_tasks))


def _dev_index(config: RunConfig, shard_index: int) -> int | None:
    """The key from the environment when set; else (dev mode) the shard's dev account."""
    return None if os.environ.get(config.marketplace.contributor_key_env) else shard_index
