"""The contributor's steps, plain Python: find a task, check it, fetch, take a slot, train,
then encode the result, commit to it, upload it, submit it. Their order is written once, in
decentralml.contributor.procedure.

Anyone can publish a task, so a contributor trusts nothing in one until it checked it, and
checks what it can before it pays anything (on a chain, taking a slot costs a fee): first the
task record itself (reward, digests, the creator's standing), then the downloads (bounded in
size, verified against the record's digests, unpacked within limits), the training settings
and the global weights. Only then does it take a slot. It sends back weights only, and commits
to them (decentralml.protocol.commitment) on the marketplace BEFORE uploading the bytes, so
nobody can read its weights and claim them first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
from substrateinterface import Keypair

from decentralml.io.packaging import unpack_package
from decentralml.io.storage import ArtifactStore, StoredArtifact
from decentralml.io.weights import Layout, check_against, decode, encode, layout_of
from decentralml.marketplace.base import Marketplace, ReportsCreatorStanding, ReportsReputation
from decentralml.ml import workloads
from decentralml.ml.data.federated import Split, contributor_shard
from decentralml.ml.data.shared_slice import read_slice, with_slice
from decentralml.ml.models import available_models, build_model, model_tensors
from decentralml.ml.task_settings import DataSettings, TaskSettings
from decentralml.ml.training import TrainingOutcome, train_contribution, training_options
from decentralml.protocol import layout, rules
from decentralml.protocol.accounts import same_account
from decentralml.protocol.commitment import result_commitment
from decentralml.protocol.errors import AlreadyAssigned, TaskRefused
from decentralml.protocol.records import Task, TaskResult, TaskType
from decentralml.runtime.config import ContributorConfig
from decentralml.strategies import LocalContext, LocalStep

_SHA256 = re.compile(r"[0-9a-f]{64}")
DATA_FILE_PATTERNS = ("*.npz", "*.safetensors")
"""The package's top-level data files: the shared slice, the strategy's round tensors."""


class Contributor:
    """A contributor's live parts: marketplace, storage, key, data shard (or its own data
    file, ``local_data``), where built-in datasets are cached, and its ``terms``: the filters
    and limits it applies to a task before paying for a slot.

        A slotted plain class on purpose: orchestrators that record call parameters (Prefect
        stores flow parameters it can serialize) cannot serialize it, so the key never lands in
        a run record; the repr shows the address only."""

    __slots__ = (
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
        shard_index: int | None,
        cache_dir: str | None = None,
        terms: ContributorConfig | None = None,
        local_data: str | None = None,
    ) -> None:
        self.market, self.store, self.keypair = market, store, keypair
        self.shard_index, self.cache_dir = shard_index, cache_dir
        self.terms = terms or ContributorConfig()  # what it asks of a task before paying
        self.local_data = local_data  # its own data file; None: the creator-provided shard

    def __repr__(self) -> str:
        return f"Contributor({self.keypair.ss58_address}, shard {self.shard_index})"


@dataclass(frozen=True)
class TaskInputs:
    """A task's downloads: task.json's object as unpacked, the global weights, the folder,
    and the package's data files (top-level ``.npz`` and ``.safetensors``, read while the
    folder exists; their size is bounded by the package's limits)."""

    raw_settings: dict
    global_tensors: dict
    package_dir: Path
    data_files: Mapping[str, bytes] = field(default_factory=dict)

    @cached_property
    def settings(self) -> TaskSettings:
        """The settings parsed on first use (check_inputs: TaskRefused, one line, before a
        slot is taken). Not at download: the seed's assign_task downloads without checking."""
        return TaskSettings.parse(self.raw_settings)

    @cached_property
    def shared_slice(self) -> Split | None:
        """The shared slice task.json announces, checked and preprocessed (TaskRefused, one
        line); None when the task ships none."""
        announced = self.settings.data.shared_slice
        if announced is None:
            return None
        if announced.file not in self.data_files:
            raise TaskRefused(f"task's shared slice refused: the package has no {announced.file}")
        return read_slice(self.data_files[announced.file], self.settings.data)


def held_submission(market: Marketplace, worker: Keypair, task_id: int) -> int | None:
    """The worker's submission id on this task, if it already has one (makes retries safe)."""
    held = rules.held_submission(market.list_task_results(task_id), worker.ss58_address)
    return None if held is None else held.submission_id


def find_open_task(market: Marketplace, worker: Keypair, done: set[int]) -> Task | None:
    """The oldest open task this worker has not worked on yet."""
    for task in sorted(market.list_tasks(open_only=True), key=lambda t: t.task_id):
        if task.task_id not in done and held_submission(market, worker, task.task_id) is None:
            return task
    return None


def filter_reason(task: Task, terms: ContributorConfig) -> str | None:
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


def check_offer(
    market: Marketplace, task: Task, terms: ContributorConfig, worker: str | None = None
) -> None:
    """The cheap checks on the task record, before anything is downloaded or paid; with
    ``worker``, also that the task would take it (the reputation it asks)."""
    spec = task.spec
    if spec.task_type is not TaskType.ModelContributor:
        raise TaskRefused(f"task {task.task_id} is a {spec.task_type} task, not ModelContributor")
    reason = filter_reason(task, terms)
    if reason:
        raise TaskRefused(f"task {task.task_id} {reason}")
    for name in ("assets_sha256", "global_weights_sha256"):
        if not _SHA256.fullmatch(getattr(spec, name)):
            raise TaskRefused(f"task {task.task_id} records no valid {name}: nothing to verify")
    if isinstance(market, ReportsCreatorStanding):
        market.creator_standing(task.creator).require_covered()
    if worker and spec.min_reputation and isinstance(market, ReportsReputation):
        refusal = rules.reputation_refusal(task, market.reputation(worker), "this account")
        if refusal is not None:  # the marketplace's own rule, read before any fee
            raise TaskRefused(str(refusal))


def assign(market: Marketplace, worker: Keypair, task_id: int) -> int:
    """Take a slot, or return the one already held (a retried step must not take two). A
    refusal because the worker holds a slot is that answer too: an earlier attempt whose
    outcome was unknown landed after this one looked."""
    existing = held_submission(market, worker, task_id)
    if existing is not None:
        return existing
    try:
        return market.assign_task(worker, task_id)
    except AlreadyAssigned:
        existing = held_submission(market, worker, task_id)
        if existing is None:
            raise
        return existing


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
    data_files = {
        path.name: path.read_bytes()
        for pattern in DATA_FILE_PATTERNS
        for path in sorted(workdir.glob(pattern))
    }
    return TaskInputs(settings, decode(global_bytes, terms.max_global_bytes), workdir, data_files)


def check_inputs(
    inputs: TaskInputs, shard_index: int | None, local_data: str | None = None
) -> None:
    """The task's training settings (parsed and bounded by TaskSettings) are ones this
    contributor can follow here: a model it can build, data it can get. The global weights
    fit that model, and the contributor's own data (if it brings some) fits the task's data
    spec: a task failing here would fail after paying for a slot. A model sent as an
    architecture description is rebuilt without running creator code (refused otherwise)."""
    settings = inputs.settings
    if settings.architecture is not None:
        workloads.register_architecture(settings)
    # No shard and no data file yet: the caller brings its own data and checks it when it
    # trains (the seed API's assign_task).
    own_data = local_data is not None or shard_index is None
    problems = _settings_problems(settings, shard_index or 0, own_data)
    if problems:
        raise TaskRefused(f"task settings refused: {'; '.join(problems)}")
    check_against(inputs.global_tensors, model_layout(settings.model))
    shared = inputs.shared_slice  # a bad slice is refused here, before a slot is paid
    for step in settings.local_steps():  # likewise what the round's strategy ships
        step.check(local_context(inputs, worker="", creator=""))
    if local_data is not None:
        training_data(settings.data, shard_index or 0, None, local_data, shared)


@lru_cache(maxsize=16)
def model_layout(name: str) -> Layout:
    """The tensors' names, shapes and dtypes of model ``name``, which the global weights must
    match: built once per process. A Keras build and compile took ~0.5 s of every simulated
    contribution, in the same process as every other agent (docs/benchmarks.md, issue 20);
    a name is a built-in model's or the content address of an architecture, so the layout
    it names never changes."""
    return layout_of(model_tensors(build_model(name)))


def training_data(
    data: DataSettings,
    shard_index: int,
    cache_dir: str | None,
    local_data: str | None = None,
    shared_slice: Split | None = None,
) -> Split:
    """What the contributor trains on: its own file, checked against the task's data spec
    (DataError, one line) and preprocessed as the task says; else the creator-provided shard
    of a built-in dataset (simulations). Then the task's ``shared_slice``
    (``TaskInputs.shared_slice``), if it ships one."""
    if local_data is not None:
        own = workloads.local_split(local_data, data)
    else:
        own = contributor_shard(data, shard_index, cache_dir)
    return with_slice(own, shared_slice)


def local_context(inputs: TaskInputs, worker: str, creator: str) -> LocalContext:
    """What the round strategy's contributor-side steps may read of this task."""
    settings = inputs.settings
    return LocalContext(
        round=settings.round,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        global_tensors=inputs.global_tensors,
        data_files=inputs.data_files,
        worker=worker,
        creator=creator,
    )


@dataclass(frozen=True)
class LocalTraining:
    """The round strategy's contributor-side steps for one task, prepared (local state read),
    and the context they were prepared with."""

    context: LocalContext
    steps: tuple[LocalStep, ...] = ()


def prepare_local(inputs: TaskInputs, worker: Keypair, creator: str) -> LocalTraining:
    """The steps the round's strategy asks for (FedProx's term, SCAFFOLD's correction with
    this contributor's c_i), ready to train with."""
    context = local_context(inputs, worker.ss58_address, creator)
    steps = tuple(inputs.settings.local_steps())
    for step in steps:
        step.prepare(context)
    return LocalTraining(context, steps)


def train(
    task: Task, inputs: TaskInputs, x: np.ndarray, y: np.ndarray, local: LocalTraining, seed: int
) -> TrainingOutcome:
    """Train as the task says: its model, optimizer, rate, epochs and batch size, from its
    global weights, with the round strategy's steps."""
    settings = inputs.settings
    options = training_options(settings)
    return train_contribution(
        settings.model, inputs.global_tensors, x, y, **options, steps=local.steps, seed=seed
    )


def finish_local(local: LocalTraining, outcome: TrainingOutcome) -> None:
    """After the result was sent: the steps keep what the next round needs (SCAFFOLD's c_i)."""
    for step in local.steps:
        step.finish(local.context, outcome.tensors, outcome.num_examples)


def _settings_problems(settings: TaskSettings, shard_index: int, own_data: bool) -> list[str]:
    """What TaskSettings cannot know: the models this contributor can build, the datasets it
    can load and its own shard."""
    problems = []
    if settings.model not in available_models():
        problems.append(f"unknown model {settings.model!r} (known: {available_models()})")
    if own_data:
        return problems  # its own file: the task's shards and their source do not matter
    data = settings.data
    if data.source not in workloads.builtin_datasets():
        problems.append(
            f"data source {data.source!r} is not a built-in dataset: contribute with "
            "your own data (--data PATH)"
        )
    if data.num_partitions <= shard_index:
        problems.append(f"num_partitions {data.num_partitions!r} has no shard {shard_index}")
    return problems


def result_url(task: Task, submission_id: int) -> str:
    """Where the task's layout puts this submission's result (decentralml.protocol.layout)."""
    return layout.result_url(task.spec.global_weights_path, submission_id)


def encode_result(task: Task, outcome: TrainingOutcome) -> bytes:
    """The result file: safetensors weights with the example count and the base digest."""
    metadata = {"num_examples": outcome.num_examples, "base": task.spec.global_weights_sha256}
    return encode(outcome.tensors, metadata)


def commit(market: Marketplace, worker: Keypair, submission_id: int, sha256: str) -> str:
    """Commit to the result with digest ``sha256`` before uploading it; returns the
    commitment. A retried step is safe: the marketplace writes nothing for the same
    commitment again and refuses another one (rules.can_commit: AlreadyCommitted)."""
    commitment = result_commitment(worker.ss58_address, sha256)
    market.commit_result(worker, submission_id, commitment)
    return commitment


@dataclass(frozen=True)
class HostedResults:
    """A contributor's own place for its results (``contributor.results_url``): written with
    its own credentials only, so no other party can replace or delete what it committed; the
    creator gets a time-limited link to each result and pulls it from there."""

    store: ArtifactStore
    link_seconds: int


def result_destination(contributor: Contributor, task: Task) -> ArtifactStore | HostedResults:
    """Where ``contributor`` puts its result of ``task``: its own place when it hosts its
    results, else the task's results folder in the creator's storage (at the endpoint the
    record names), which takes the creator's write credentials."""
    terms = contributor.terms
    if terms.results_url is None:
        return task_store(contributor.store, task)
    store = contributor.store
    endpoint = terms.results_endpoint_url or store.endpoint_url
    own = ArtifactStore(terms.results_url, endpoint, store.retries)
    return HostedResults(own, terms.results_link_seconds)


def upload_result(
    destination: ArtifactStore | HostedResults, task: Task, submission_id: int, data: bytes
) -> StoredArtifact:
    """Put the committed result bytes where the contributor sends them: next to the round's
    global weights, or in its own place (the artifact's URL is then the link it commits)."""
    if isinstance(destination, HostedResults):
        own = destination.store
        url = own.url_for(*layout.hosted_result_parts(task.task_id, submission_id))
        stored = own.put(url, data)
        return StoredArtifact(own.link(url, destination.link_seconds), stored.sha256, stored.size)
    return destination.put(result_url(task, submission_id), data)


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
    market.send_task_result(worker, submission_id, result)  # the same result again: a no-op
    return result
