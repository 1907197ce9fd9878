"""The contributor's procedure, written once (seed steps 3, 4, 5):

check the task record (reward, digests, the creator's standing) → download and verify the
assets and global weights (bounded) → check the settings, weights and what the round's
strategy ships → take a slot (the first step that costs a fee) → load the data → prepare the
strategy's local steps → train as the task says → encode the weights → commit to them →
upload → send the result (the reveal) → let the local steps keep their state.

Every caller runs this order: the Prefect flow (each step a task; in a simulation only the
marketplace and storage steps), the packaged ``model_contributor.py``, the seed API and the
simulations. They differ only in the ``ContributorSteps`` they pass: the plain functions, the
same functions as Prefect tasks, or a simulated attacker's wrapper around ``train``
(decentralml.simulation.attacks). Nothing a stranger
publishes is trusted before the checks; nothing is paid before them either.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from decentralml.contributor import steps as core
from decentralml.contributor.steps import Contributor, TaskInputs, task_store
from decentralml.io.storage import sha256_hex
from decentralml.ml.training import TrainingOutcome
from decentralml.protocol.records import Task, TaskResult


@dataclass(frozen=True)
class ContributionReceipt:
    """What one contribution sent: the task, the submission, and the training's claim."""

    task_id: int
    submission_id: int
    num_examples: int
    metrics: dict


@dataclass(frozen=True)
class ContributorSteps:
    """The procedure's steps, by name. Orchestrators replace them with wrapped versions of
    the same functions (tasks.contributor.STEPS); the order stays ``contribute_once``'s."""

    check_offer: Callable[..., Any] = core.check_offer
    fetch_inputs: Callable[..., Any] = core.fetch_inputs
    check_inputs: Callable[..., Any] = core.check_inputs
    assign: Callable[..., Any] = core.assign
    load_data: Callable[..., Any] = core.training_data
    prepare_local: Callable[..., Any] = core.prepare_local
    train: Callable[..., Any] = core.train
    encode_result: Callable[..., Any] = core.encode_result
    commit: Callable[..., Any] = core.commit
    upload_result: Callable[..., Any] = core.upload_result
    submit: Callable[..., Any] = core.submit
    finish_local: Callable[..., Any] = core.finish_local


PLAIN_STEPS = ContributorSteps()


def checked_inputs(
    contributor: Contributor, task: Task, workdir: Path, steps: ContributorSteps = PLAIN_STEPS
) -> TaskInputs:
    """Everything checked before a slot is paid for: the record, then the downloads
    (verified, unpacked into ``workdir``), the settings, the weights and what the round's
    strategy ships."""
    store = task_store(contributor.store, task)  # the endpoint the record names
    steps.check_offer(contributor.market, task, contributor.terms, contributor.keypair.ss58_address)
    inputs = steps.fetch_inputs(store, task, workdir, contributor.terms)
    steps.check_inputs(inputs, contributor.shard_index, contributor.local_data)
    return inputs


def send_result(
    contributor: Contributor,
    task: Task,
    submission_id: int,
    outcome: TrainingOutcome,
    steps: ContributorSteps = PLAIN_STEPS,
) -> TaskResult:
    """Commit to the encoded result, then upload it, then reveal it: nobody can read the
    weights before the commitment binds them to this contributor."""
    market, worker = contributor.market, contributor.keypair
    data = steps.encode_result(task, outcome)
    steps.commit(market, worker, submission_id, sha256_hex(data))
    destination = core.result_destination(contributor, task)
    artifact = steps.upload_result(destination, task, submission_id, data)
    return steps.submit(market, worker, task, submission_id, artifact, outcome)


def contribute_once(
    contributor: Contributor,
    task: Task,
    steps: ContributorSteps = PLAIN_STEPS,
    stop: threading.Event | None = None,
) -> ContributionReceipt | None:
    """One task, start to finish. Returns None, having paid nothing, when ``stop`` is set
    before a slot is taken; once a slot is taken the contribution is finished."""
    with tempfile.TemporaryDirectory(prefix=f"dml-task-{task.task_id}-") as workdir:
        inputs = checked_inputs(contributor, task, Path(workdir), steps)
    if stop is not None and stop.is_set():
        return None
    worker = contributor.keypair
    submission_id = steps.assign(contributor.market, worker, task.task_id)  # now pay
    x, y = steps.load_data(
        inputs.settings.data,
        contributor.shard_index,
        contributor.cache_dir,
        contributor.local_data,
        inputs.shared_slice,  # checked in check_inputs; None when the task ships none
    )
    local = steps.prepare_local(inputs, worker, task.creator)
    seed = (contributor.shard_index or 0) + 1000 * task.task_id
    outcome = steps.train(task, inputs, x, y, local, seed)
    send_result(contributor, task, submission_id, outcome, steps)
    steps.finish_local(local, outcome)
    return ContributionReceipt(task.task_id, submission_id, outcome.num_examples, outcome.metrics)
