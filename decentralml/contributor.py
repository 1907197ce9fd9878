"""The contributor's steps, plain Python: find a task, take a slot, fetch, train, then
encode the result, commit to it, upload it, submit it.

The contributor verifies everything it downloads against the digests on the task record, and
sends back weights only, with the digest of the global model it started from. It commits to
its result (decentralml.commitment) on the marketplace BEFORE uploading the bytes, so nobody
can read its weights and claim them first.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path

from substrateinterface import Keypair

from decentralml.accounts import same_account
from decentralml.commitment import result_commitment
from decentralml.domain import Task, TaskResult
from decentralml.errors import AlreadyCommitted
from decentralml.marketplace.base import Marketplace
from decentralml.packaging import unpack_package
from decentralml.storage import ArtifactStore, StoredArtifact
from decentralml.training import TrainingOutcome
from decentralml.weights import decode, encode


class Contributor:
    """A contributor's live parts: marketplace, storage, key and data shard.

    A slotted plain class on purpose: orchestrators that record call parameters (Prefect
    stores flow parameters it can serialize) cannot serialize it, so the key never lands in
    a run record; the repr shows the address only."""

    __slots__ = ("cache_dir", "keypair", "market", "shard_index", "store")

    def __init__(
        self,
        market: Marketplace,
        store: ArtifactStore,
        keypair: Keypair,
        shard_index: int,
        cache_dir: str | None = None,
    ) -> None:
        self.market, self.store, self.keypair = market, store, keypair
        self.shard_index, self.cache_dir = shard_index, cache_dir

    def __repr__(self) -> str:
        return f"Contributor({self.keypair.ss58_address}, shard {self.shard_index})"


@dataclass(frozen=True)
class TaskInputs:
    settings: dict
    global_tensors: dict
    package_dir: Path


def holds_slot(market: Marketplace, worker: Keypair, task_id: int) -> int | None:
    """The worker's submission id on this task, if it already has one (makes retries safe)."""
    for submission in market.list_task_results(task_id):
        if same_account(submission.worker, worker.ss58_address):
            return submission.submission_id
    return None


def find_open_task(market: Marketplace, worker: Keypair, done: set[int]) -> Task | None:
    """The oldest open task this worker has not worked on yet."""
    for task in sorted(market.list_tasks(open_only=True), key=lambda t: t.task_id):
        if task.task_id not in done and holds_slot(market, worker, task.task_id) is None:
            return task
    return None


def assign(market: Marketplace, worker: Keypair, task_id: int) -> int:
    """Take a slot, or return the one already held (a retried step must not take two)."""
    existing = holds_slot(market, worker, task_id)
    return existing if existing is not None else market.assign_task(worker, task_id)


def fetch_inputs(store: ArtifactStore, task: Task, workdir: Path) -> TaskInputs:
    """Download and verify the package and the global weights named by the task."""
    package = store.get(task.spec.assets_path, task.spec.assets_sha256)
    settings = unpack_package(package, workdir)
    global_bytes = store.get(task.spec.global_weights_path, task.spec.global_weights_sha256)
    return TaskInputs(settings, decode(global_bytes), workdir)


def result_url(task: Task, submission_id: int) -> str:
    """Results sit next to the round's global weights, named by submission."""
    round_dir = posixpath.dirname(task.spec.global_weights_path)
    return posixpath.join(round_dir, "results", f"submission-{submission_id}.safetensors")


def encode_result(task: Task, outcome: TrainingOutcome) -> bytes:
    """The result file: safetensors weights with the example count and the base digest."""
    metadata = {"num_examples": outcome.num_examples, "base": task.spec.global_weights_sha256}
    return encode(outcome.tensors, metadata)


def commit(market: Marketplace, worker: Keypair, submission_id: int, sha256: str) -> str:
    """Commit to the result with digest ``sha256`` before uploading it; returns the
    commitment. A retried step is safe: if the submission already carries this commitment
    nothing is written; if it carries another one (a different result was committed), this
    raises AlreadyCommitted, since only the committed result can be sent."""
    commitment = result_commitment(worker.ss58_address, sha256)
    current = market.get_submission(submission_id).commitment
    if current == commitment:
        return commitment
    if current:
        raise AlreadyCommitted(
            f"submission {submission_id} is already committed to another result "
            f"({current}); only that result can be sent for it"
        )
    market.commit_result(worker, submission_id, commitment)
    return commitment


def upload_result(
    store: ArtifactStore, task: Task, submission_id: int, data: bytes
) -> StoredArtifact:
    """Upload the committed result bytes next to the round's global weights."""
    return store.put(result_url(task, submission_id), data)


def submit(
    market: Marketplace,
    worker: Keypair,
    task: Task,
    submission_id: int,
    artifact: StoredArtifact,
    outcome: TrainingOutcome,
) -> TaskResult:
    result = TaskResult(
        result_path=artifact.url,
        sha256=artifact.sha256,
        num_examples=outcome.num_examples,
        metrics=outcome.metrics,
        base_fingerprint=task.spec.global_weights_sha256,
    )
    current = market.get_submission(submission_id)
    if current.result is None:
        market.send_task_result(worker, submission_id, result)
    return result
