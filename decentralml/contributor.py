"""The contributor's steps, plain Python: find a task, check it, fetch, take a slot, train,
then encode the result, commit to it, upload it, submit it.

Anyone can publish a task, so a contributor trusts nothing in one until it checked it, and
checks what it can before it pays anything (on a chain, taking a slot costs a fee): first the
task record itself (reward, digests, the creator's standing), then the downloads (bounded in
size, verified against the record's digests, unpacked within limits), the training settings
and the global weights. Only then does it take a slot. It sends back weights only, and commits
to them (decentralml.commitment) on the marketplace BEFORE uploading the bytes, so nobody can
read its weights and claim them first.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
from substrateinterface import Keypair

from decentralml import workloads
from decentralml.accounts import same_account
from decentralml.commitment import result_commitment
from decentralml.config import ContributorConfig
from decentralml.data.federated import contributor_shard
from decentralml.domain import Task, TaskResult, TaskType
from decentralml.errors import AlreadyCommitted, TaskRefused
from decentralml.marketplace.base import Marketplace
from decentralml.models import available_models, build_model, model_tensors
from decentralml.packaging import unpack_package
from decentralml.storage import ArtifactStore, StoredArtifact
from decentralml.strategies.fedprox import MAX_PROXIMAL_MU
from decentralml.training import OPTIMIZERS, TrainingOutcome
from decentralml.weights import check_against, decode, encode, layout_of

if TYPE_CHECKING:
    from decentralml.attacks import Attack
    from decentralml.marketplace.substrate import CreatorStanding

MAX_EPOCHS = 100
MAX_BATCH_SIZE = 65_536
PARTITIONS = ("iid", "shards", "shards-disjoint", "dirichlet")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class Contributor:
    """A contributor's live parts: marketplace, storage, key and data shard.

    A slotted plain class on purpose: orchestrators that record call parameters (Prefect
    stores flow parameters it can serialize) cannot serialize it, so the key never lands in
    a run record; the repr shows the address only."""

    __slots__ = (
        "attack",
        "cache_dir",
        "keypair",
        "local_data",
        "market",
        "shard_index",
        "store",
        "terms",
    )

    def __init__(
        self,
        market: Marketplace,
        store: ArtifactStore,
        keypair: Keypair,
        shard_index: int,
        cache_dir: str | None = None,
        terms: ContributorConfig | None = None,
        attack: Attack | None = None,
        local_data: str | None = None,
    ) -> None:
        self.market, self.store, self.keypair = market, store, keypair
        self.shard_index, self.cache_dir = shard_index, cache_dir
        self.terms = terms or ContributorConfig()  # what it asks of a task before paying
        self.attack = attack  # demos and benchmarks only: a simulated attacker's behaviour
        self.local_data = local_data  # its own data file; None: the creator-provided shard

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


@runtime_checkable
class ReportsCreatorStanding(Protocol):
    """A marketplace without escrow that can tell whether a creator covers its promises."""

    def creator_standing(self, creator: str) -> CreatorStanding: ...


def unwanted(task: Task, terms: ContributorConfig) -> str | None:
    """Why the contributor's own filters pass over ``task`` (reward, model, creator), or None.

    Read from the task record alone, so a filtered task costs no download. Unlike the trust
    checks in check_offer, a filtered task is no sign of a bad creator, only not this
    contributor's business."""
    spec = task.spec
    if spec.reward_per_result < terms.min_reward_per_result:
        return (
            f"pays {spec.reward_per_result} per result, below min_reward_per_result "
            f"{terms.min_reward_per_result}"
        )
    if terms.models and spec.model not in terms.models:
        trains = f"trains {spec.model!r}" if spec.model else "records no model"
        return f"{trains}, not one of contributor.models {terms.models}"
    if terms.creators and not any(same_account(task.creator, c) for c in terms.creators):
        return f"its creator {task.creator} is not in contributor.creators"
    return None


def check_offer(market: Marketplace, task: Task, terms: ContributorConfig) -> None:
    """The cheap checks on the task record, before anything is downloaded or paid."""
    spec = task.spec
    if spec.task_type is not TaskType.ModelContributor:
        raise TaskRefused(f"task {task.task_id} is a {spec.task_type} task, not ModelContributor")
    reason = unwanted(task, terms)
    if reason:
        raise TaskRefused(f"task {task.task_id} {reason}")
    for name in ("assets_sha256", "global_weights_sha256"):
        if not _SHA256.fullmatch(getattr(spec, name)):
            raise TaskRefused(f"task {task.task_id} records no valid {name}: nothing to verify")
    if isinstance(market, ReportsCreatorStanding):
        market.creator_standing(task.creator).require_covered()


def assign(market: Marketplace, worker: Keypair, task_id: int) -> int:
    """Take a slot, or return the one already held (a retried step must not take two)."""
    existing = holds_slot(market, worker, task_id)
    return existing if existing is not None else market.assign_task(worker, task_id)


def task_store(store: ArtifactStore, task: Task) -> ArtifactStore:
    """The contributor's store, reaching the task's s3:// URLs at the endpoint its record
    names: a contributor needs no copy of the creator's config, only its own credentials
    (environment). A record without an endpoint (AWS, local files, or written before records
    carried one) leaves the contributor's own ``storage.endpoint_url`` in effect."""
    endpoint = task.spec.storage_endpoint
    return store.at_endpoint(endpoint) if endpoint else store


def fetch_inputs(
    store: ArtifactStore, task: Task, workdir: Path, terms: ContributorConfig | None = None
) -> TaskInputs:
    """Download (size-bounded), verify and unpack (bounded) the package and the global
    weights named by the task."""
    terms = terms or ContributorConfig()
    spec = task.spec
    package = store.get(spec.assets_path, spec.assets_sha256, max_bytes=terms.max_asset_bytes)
    settings = unpack_package(package, workdir, max_package_bytes=terms.max_asset_bytes)
    global_bytes = store.get(
        spec.global_weights_path, spec.global_weights_sha256, max_bytes=terms.max_global_bytes
    )
    return TaskInputs(settings, decode(global_bytes, terms.max_global_bytes), workdir)


def check_inputs(inputs: TaskInputs, shard_index: int, local_data: str | None = None) -> None:
    """The task's training settings are ones this contributor can follow, the global weights
    fit the model they name, and the contributor's own data (if it brings some) fits the
    task's data spec: a task failing here would fail after paying for a slot. A model sent as
    an architecture description is rebuilt without running creator code (refused otherwise)."""
    settings = inputs.settings
    if "architecture" in settings:
        workloads.register_architecture(settings)
    problems = _settings_problems(settings, shard_index, local_data is not None)
    if problems:
        raise TaskRefused(f"task settings refused: {'; '.join(problems)}")
    model = build_model(str(settings["model"]), float(settings["learning_rate"]))
    check_against(inputs.global_tensors, layout_of(model_tensors(model)))
    if local_data is not None:
        training_data(settings["data"], shard_index, None, local_data)


def training_data(
    data: dict, shard_index: int, cache_dir: str | None, local_data: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """What the contributor trains on: its own file, checked against the task's data spec
    (DataError, one line) and preprocessed as the task says; else the creator-provided shard
    of a built-in dataset (simulations)."""
    if local_data is not None:
        return workloads.local_split(local_data, data)
    return contributor_shard(data, shard_index, cache_dir)


def _settings_problems(settings: dict, shard_index: int, own_data: bool = False) -> list[str]:
    problems = []
    if settings.get("model") not in available_models():
        problems.append(f"unknown model {settings.get('model')!r} (known: {available_models()})")
    if not _int_between(settings.get("epochs"), 1, MAX_EPOCHS):
        problems.append(f"epochs {settings.get('epochs')!r} is not 1..{MAX_EPOCHS}")
    if not _int_between(settings.get("batch_size"), 1, MAX_BATCH_SIZE):
        problems.append(f"batch_size {settings.get('batch_size')!r} is not 1..{MAX_BATCH_SIZE}")
    rate = settings.get("learning_rate")
    if not (isinstance(rate, int | float) and not isinstance(rate, bool) and 0 < rate < 1):
        problems.append(f"learning_rate {rate!r} is not in (0, 1)")
    if settings.get("optimizer", "adam") not in OPTIMIZERS:
        problems.append(f"optimizer {settings.get('optimizer')!r} is not one of {list(OPTIMIZERS)}")
    problems += _round_problems(settings.get("round", {}))
    data = settings.get("data")
    if not isinstance(data, dict):
        return [*problems, "data settings are missing"]
    if data.get("partition") not in PARTITIONS:
        problems.append(f"data partition {data.get('partition')!r}")
    if own_data:
        return problems  # its own file: the task's shards and their source do not matter
    if data.get("source", "mnist") not in workloads.builtin_datasets():
        problems.append(
            f"data source {data.get('source')!r} is not a built-in dataset: contribute with "
            "your own data (--data PATH)"
        )
    if not _int_between(data.get("num_partitions"), shard_index + 1, 10_000):
        problems.append(f"num_partitions {data.get('num_partitions')!r} has no shard {shard_index}")
    return problems


def _round_problems(round_settings: object) -> list[str]:
    """What the round's strategy asks of the training (``configure_round``): only what this
    contributor knows how to follow, FedProx's proximal_mu in [0, 10]."""
    if not isinstance(round_settings, dict):
        return [f"round settings {round_settings!r} are not a mapping"]
    unknown = sorted(set(round_settings) - {"proximal_mu"})
    problems = [f"round settings {unknown} are not known to this contributor"] if unknown else []
    mu = round_settings.get("proximal_mu", 0.0)
    if not (
        isinstance(mu, int | float) and not isinstance(mu, bool) and 0 <= mu <= MAX_PROXIMAL_MU
    ):
        problems.append(f"proximal_mu {mu!r} is not in [0, {MAX_PROXIMAL_MU:g}]")
    return problems


def _int_between(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


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
