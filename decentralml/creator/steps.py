"""The model creator's steps, plain Python: publish a round, collect, screen, federate, settle.

Their order is written once, in decentralml.creator.round; Prefect wraps each in a task
(tasks/creator.py). Keeping them here means they run and test without an orchestrator.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from substrateinterface import Keypair

from decentralml.creator.progress import SlotProgress, slot_progress
from decentralml.io.fetcher import PullPolicy
from decentralml.io.packaging import build_package, project_wheel
from decentralml.io.storage import ArtifactStore, StoredArtifact
from decentralml.io.weights import decode, encode, read_metadata
from decentralml.marketplace.base import Marketplace, ReportsReputation
from decentralml.ml import workloads
from decentralml.ml.data.federated import shared_slice_examples
from decentralml.ml.data.shared_slice import SLICE_FILE, encode_slice
from decentralml.ml.task_settings import TaskSettings
from decentralml.protocol import rules
from decentralml.protocol.accounts import same_account
from decentralml.protocol.errors import ConfigError, PendingResults, StorageError
from decentralml.protocol.records import (
    Reputation,
    ResultSubmissionStatus,
    Submission,
    Task,
    TaskSpec,
    Verdict,
)
from decentralml.runtime.backends import PROJECT_ROOT
from decentralml.runtime.config import RunConfig, StorageConfig
from decentralml.runtime.crashpoints import crashpoint
from decentralml.runtime.polling import Backoff
from decentralml.strategies import (
    Contribution,
    NothingToAggregate,
    Strategy,
    Tensors,
    get_strategy,
)
from decentralml.validation import Deferred, Judge, Policy, screening_rules, task_judge
from decentralml.validation.base import Candidate, Evaluator, RoundView
from decentralml.validation.manual import Summary, summarize
from decentralml.validation.value import ValuePricing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Creator:
    """Everything a creator's step needs; cheap to pass around."""

    config: RunConfig
    market: Marketplace
    store: ArtifactStore
    keypair: Keypair
    run: str
    assets_dir: Path


@dataclass
class RoundReview:
    """The round's verdicts, the results left without one (``deferred``: the creator's
    storage could not be read; they stay PendingValidation) and the federated weights.

    ``holdout`` and ``counted``, by submission id, for every result that passed integrity:
    its weights' metrics on the creator's held-out split (evaluated once, whatever the policy
    asked) and the examples it was allowed to count in averaging (none for a copy)."""

    verdicts: list[Verdict] = field(default_factory=list)
    deferred: list[Deferred] = field(default_factory=list)
    new_global: Tensors | None = None
    holdout: dict[int, Mapping[str, object]] = field(default_factory=dict)
    counted: dict[int, int] = field(default_factory=dict)

    @property
    def accepted(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.accept]

    @property
    def rejected(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.accept]


def task_settings(
    config: RunConfig,
    max_examples: int | None = None,
    round_settings: Mapping[str, object] | None = None,
) -> TaskSettings:
    """What contributors must know to train: travels inside the package as task.json. The
    workload adds its model (a name, or an architecture description) and its data's source,
    spec and preprocessing (decentralml.ml.workloads); ``round`` is what the round's strategy
    asks of them (``Strategy.configure_round``). Checked here with the contributors' own
    bounds: settings every contributor would refuse are a ConfigError before publishing."""
    workload = workloads.get(config.workload_name)
    data = config.data
    raw = {
        **workloads.model_settings(config.workload_name, config.training.learning_rate),
        "metric": workload.primary_metric,
        "epochs": config.training.epochs,
        "batch_size": config.training.batch_size,
        "learning_rate": config.training.learning_rate,
        "optimizer": config.training.optimizer,
        "round": dict(round_settings or {}),
        "data": {
            **workloads.data_settings(workload, data.holdout_examples, data.seed, data.cache_dir),
            "partition": config.data.partition,
            "num_partitions": config.contributors,
            "classes_per_contributor": config.data.classes_per_contributor,
            "alpha": config.data.alpha,
            "seed": config.data.seed,
            "holdout_examples": config.data.holdout_examples,
            "max_examples": rules.examples_limit(config.task.max_examples, max_examples),
            "shared_slice": (
                {"file": SLICE_FILE, "examples": data.shared_slice} if data.shared_slice else None
            ),
        },
    }
    return TaskSettings.parse(raw, error=ConfigError)


def training_strategy(config: RunConfig) -> Strategy:
    """The configured strategy for one training, told the local training its tasks ask for
    (SCAFFOLD derives contributors' control variates from the local step size)."""
    strategy = get_strategy(config.strategy)
    training = config.training
    strategy.use_local_training(training.epochs, training.batch_size, training.learning_rate)
    return strategy


def round_files(strategy: Strategy, round_tensors: Mapping[str, np.ndarray]) -> dict[str, bytes]:
    """The package's file of the round's strategy tensors, under the name the strategy gives
    it (``Strategy.round_file``); none when it ships none."""
    if not round_tensors:
        return {}
    name = strategy.round_file()
    if name is None:
        raise ConfigError(f"strategy {strategy.name} ships round tensors but names no file")
    return {name: encode(dict(round_tensors))}


def shared_slice_files(config: RunConfig) -> dict[str, bytes]:
    """The package's data files: the shared slice of the held-out split when the config asks
    for one (``data.shared_slice``), else none."""
    data = config.data
    if not data.shared_slice:
        return {}
    source = workloads.get(config.workload_name).dataset.name
    x, y = shared_slice_examples(
        data.holdout_examples, data.shared_slice, data.seed, data.cache_dir, source
    )
    return {SLICE_FILE: encode_slice(x, y)}


def task_model(config: RunConfig) -> str:
    """The model name the task record shows (contributors filter on it): a built-in
    workload's name, or a creator's own model's content address."""
    return str(
        workloads.model_settings(config.workload_name, config.training.learning_rate)["model"]
    )


def upload_global(creator: Creator, round_number: int, tensors: Tensors) -> StoredArtifact:
    url = creator.store.round_url(creator.run, round_number, "global.safetensors")
    return creator.store.put(url, encode(tensors, {"round": round_number}))


def contributor_wheels() -> tuple[Path, ...]:
    """The wheel of this project the package carries (start_task.sh installs it), cached in
    the project's .cache/wheels. A wheel that cannot be built (no pip here) is a warning, not
    a failed round: start_task.sh then says to set DECENTRALML_PYTHON."""
    try:
        wheel = project_wheel(PROJECT_ROOT, PROJECT_ROOT / ".cache" / "wheels")
    except StorageError as error:
        log.warning("the contributor package ships without a decentralml wheel: %s", error)
        return ()
    return (wheel,) if wheel else ()


def upload_assets(
    creator: Creator,
    round_number: int,
    max_examples: int | None = None,
    round_settings: Mapping[str, object] | None = None,
    strategy_files: Mapping[str, bytes] | None = None,
) -> StoredArtifact:
    """The round's contributor package: the assets, task.json, the shared slice (if any) and
    the strategy's round files (``round_files``; if any)."""
    settings = task_settings(creator.config, max_examples, round_settings)
    package = build_package(
        creator.assets_dir,
        settings.dump(),
        wheels=contributor_wheels(),
        data_files={
            **shared_slice_files(creator.config),
            **(strategy_files or {}),
        },
    )
    return creator.store.put(
        creator.store.round_url(creator.run, round_number, "assets.tar.gz"), package
    )


def create_round_task(
    creator: Creator, round_number: int, assets: StoredArtifact, global_weights: StoredArtifact
) -> int:
    """Publish the round: the record names what contributors fetch (with digests), what they
    train (model, epochs, for their filters) and the storage endpoint those URLs resolve
    against, so a contributor needs no copy of this creator's config."""
    task = creator.config.task
    spec = TaskSpec(
        question=task.question,
        pays_amount=task.pays_amount,
        max_assignments=task.max_assignments,
        expiration_block=creator.market.current_block() + task.expiry_blocks,
        validation_strategy=task.validation_strategy,
        assets_path=assets.url,
        assets_sha256=assets.sha256,
        global_weights_path=global_weights.url,
        global_weights_sha256=global_weights.sha256,
        round_number=round_number,
        model=task_model(creator.config),
        epochs=creator.config.training.epochs,
        storage_endpoint=creator.config.storage.endpoint_url or "",
        payment_rule=task.payment_rule,
        min_reputation=task.min_reputation,
    )
    return creator.market.create_task(creator.keypair, spec)


results_complete = rules.results_complete


@dataclass(frozen=True)
class WaitStatus:
    """Where a round stands while the creator waits: what a progress display shows."""

    task_id: int
    slots: int
    assigned: int
    results: int
    seconds_left: float
    blocks_left: int
    slot_view: tuple[SlotProgress, ...] = ()
    """Each slot: free, or who took it and what it sent (decentralml.creator.progress)."""

    @property
    def fraction(self) -> float:
        """Results in over slots, in [0, 1]."""
        return min(1.0, self.results / self.slots) if self.slots else 1.0


def wait_status(
    task: Task, submissions: list[Submission], block: int, seconds_left: float
) -> WaitStatus:
    in_hand = [s for s in submissions if s.status is not ResultSubmissionStatus.Assigned]
    return WaitStatus(
        task.task_id,
        task.spec.max_assignments,
        len(submissions),
        len(in_hand),
        max(0.0, seconds_left),
        max(0, task.spec.expiration_block - block),
        slot_progress(task, submissions),
    )


def wait_for_results(
    market: Marketplace,
    task_id: int,
    timeout_s: float,
    poll_s: float,
    on_poll: Callable[[WaitStatus], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Submission]:
    """Poll until every slot has a result, the task expires, or ``timeout_s`` passes, backing
    off from 0.2 s to 4 × ``poll_s`` while no slot is taken and no result comes in
    (decentralml.runtime.polling).

    ``on_poll`` sees the round's status after every poll (the flow shows it as progress).
    ``clock`` and ``sleep`` are where the waiting happens, so a test can drive time itself."""
    deadline = clock() + timeout_s
    backoff = Backoff.for_poll_seconds(poll_s)
    while True:
        submissions = market.list_task_results(task_id)
        task, block = market.get_task(task_id), market.current_block()
        status = wait_status(task, submissions, block, deadline - clock())
        if on_poll is not None:
            on_poll(status)
        if rules.results_complete(task, submissions, block):
            break
        if backoff.observe((status.assigned, status.results)):  # a line per change
            log.info(
                "task %s: %d/%d slots taken, %d results in; waiting up to %.0f s more",
                task_id, status.assigned, status.slots, status.results, status.seconds_left,
            )  # fmt: skip
        if clock() >= deadline:
            log.warning("task %s: deadline reached with %d submissions", task_id, len(submissions))
            break
        sleep(min(backoff.next_delay(), max(0.0, deadline - clock())))
    return [s for s in submissions if s.status is ResultSubmissionStatus.PendingValidation]


def results_in(market: Marketplace, task_id: int) -> bool:
    """Whether the round has nothing left to wait for: every slot's result is in or the task
    expired (``wait_for_results`` would return at once). A deployment's round suspends for its
    results only when it does not (flows/waker.py)."""
    task, block = market.get_task(task_id), market.current_block()
    return rules.results_complete(task, market.list_task_results(task_id), block)


def rule_aggregator(
    strategy: Strategy, round_number: int, global_tensors: Mapping[str, np.ndarray]
) -> Callable[[Sequence[Candidate]], Tensors]:
    """The round's rule over some candidates, as the held-out gate judges it. A strategy's
    aggregate restarts from the round's starting state on every call for the same round, so
    trying subsets moves nothing."""

    def aggregate(candidates: Sequence[Candidate]) -> Tensors:
        contributions = [
            Contribution(c.tensors, max(c.weight, 1), c.submission.worker) for c in candidates
        ]
        return strategy.aggregate(round_number, global_tensors, contributions)

    return aggregate


def pull_policy(storage: StorageConfig) -> PullPolicy | None:
    """What the creator's config allows a pull of a hosted result to reach (None: none)."""
    if not storage.pull_schemes:
        return None
    return PullPolicy(
        schemes=tuple(storage.pull_schemes),
        private_hosts=tuple(storage.pull_trusted_hosts),
        timeout_seconds=storage.pull_timeout_seconds,
        retries=storage.retries(),
    )


def value_pricing(
    config: RunConfig, task: Task, standing: Mapping[str, Reputation] | None = None
) -> ValuePricing | None:
    """How a task whose record says it pays by value prices its accepted results (None: the
    fixed share). Seeded by the task id: anyone holding the held-out split recomputes it.
    ``standing``: the workers' reputations (``worker_standing``; missing: fresh accounts)."""
    if task.spec.payment_rule != rules.BY_VALUE:
        return None
    return ValuePricing(
        task.spec.reward_per_result,
        floor_share=config.task.value_floor_share,
        budget=config.task.value_budget,
        seed=task.task_id,
        newcomer_share_cap=config.task.newcomer_share_cap,
        standing=standing or {},
    )


def worker_standing(
    creator: Creator, task: Task, submissions: Sequence[Submission]
) -> dict[str, Reputation]:
    """The reputation of each worker of ``submissions``, read from the marketplace's records
    when the task pays by value with a newcomer cap (the only use; none otherwise)."""
    if (
        task.spec.payment_rule != rules.BY_VALUE
        or creator.config.task.newcomer_share_cap is None
        or not isinstance(creator.market, ReportsReputation)
    ):
        return {}
    workers = {s.worker for s in submissions}
    return {worker: creator.market.reputation(worker) for worker in sorted(workers)}


def make_judge(
    creator: Creator,
    task: Task,
    global_tensors: Mapping[str, np.ndarray],
    policy: Policy,
    evaluate_holdout: Evaluator,
    max_examples: int | None = None,
    strategy: Strategy | None = None,
    submissions: Sequence[Submission] = (),
) -> Judge:
    """The round's judge: the creator's own storage, the model's layout and size bound, the
    task's screening rules, then ``policy``, whose round-level checks judge ``strategy``'s
    aggregate (None: a fresh one from the config). ``submissions``: what it will judge, whose
    workers' reputations a value round's newcomer cap reads."""
    strategy = strategy or training_strategy(creator.config)
    return task_judge(
        creator.store,
        task,
        global_tensors,
        policy,
        evaluate=evaluate_holdout,
        max_result_bytes=creator.config.storage.max_result_bytes,
        rules=screening_rules(creator.config.task, max_examples),
        params={
            "min_accuracy": creator.config.task.min_accuracy,
            "metric": workloads.get(creator.config.workload_name).primary_metric,
        },
        aggregate=rule_aggregator(strategy, task.spec.round_number, global_tensors),
        pull_policy=pull_policy(creator.config.storage),
        accept_uploads=creator.config.storage.accept_uploads,
        pricing=value_pricing(creator.config, task, worker_standing(creator, task, submissions)),
    )


def review(
    creator: Creator,
    task: Task,
    submissions: list[Submission],
    global_tensors: Mapping[str, np.ndarray],
    policy: Policy,
    evaluate_holdout: Evaluator,
    max_examples: int | None = None,
    strategy: Strategy | None = None,
) -> RoundReview:
    """Screen, check originality, decide every result, and federate the accepted ones with
    ``strategy`` (the training's, which keeps its state across rounds; None: a fresh one from
    the config, for a stateless rule) as the task's round.

    Round-level checks (copies, update norms, the held-out gate, robust rules) compare results
    with each other, so the round's screened weights are held together: n models of memory."""
    outcome = RoundReview()
    strategy = strategy or training_strategy(creator.config)
    judge = make_judge(
        creator, task, global_tensors, policy, evaluate_holdout, max_examples, strategy, submissions
    )
    decisions = judge.review(submissions)
    outcome.verdicts = [d.verdict for d in decisions if d.verdict is not None]
    outcome.deferred = [d.deferred for d in decisions if d.deferred is not None]
    outcome.holdout = {d.submission_id: d.holdout for d in decisions if d.holdout is not None}
    outcome.counted = {d.submission_id: d.counted for d in decisions if d.counted is not None}
    for deferred in outcome.deferred:
        log.warning(
            "task %s: submission %d gets no verdict this round: %s",
            task.task_id, deferred.submission_id, deferred.reason,
        )  # fmt: skip
    accepted = [
        Contribution(
            decision.candidate.tensors,
            decision.candidate.weight,
            decision.candidate.submission.worker,  # the account, for per-account rules
        )
        for decision in decisions
        if decision.accepted and decision.candidate is not None
    ]
    try:
        outcome.new_global = strategy.aggregate(task.spec.round_number, global_tensors, accepted)
    except NothingToAggregate:
        log.warning("task %s: no result accepted; the global model stays as it was", task.task_id)
    return outcome


@dataclass
class ReviewSheet:
    """What a manual reviewer is asked about: the ``pending`` submissions that passed
    screening (with their held-out metrics), beside those screening already ``refused`` and
    those ``deferred`` (unreadable for now). Nothing is decided or recorded."""

    pending: list[Summary] = field(default_factory=list)
    refused: list[Verdict] = field(default_factory=list)
    deferred: list[Deferred] = field(default_factory=list)


class _Collect:
    """A policy that only takes note of the candidates screening let through."""

    name = "review only"
    shows_values = True  # the review sheet is what a reviewer decides from

    def __init__(self) -> None:
        self.summaries: list[Summary] = []

    def decide_round(self, candidates: Sequence[Candidate], view: RoundView) -> list[Verdict]:
        self.summaries = [summarize(candidate) for candidate in candidates]
        return [Verdict(c.submission_id, False, "not decided") for c in candidates]


def review_sheet(
    creator: Creator,
    task: Task,
    submissions: list[Submission],
    global_tensors: Mapping[str, np.ndarray],
    evaluate_holdout: Evaluator,
    max_examples: int | None = None,
) -> ReviewSheet:
    """Screen the task's pending results as the round would (integrity, originality) and
    summarize the ones left for a manual decision, without deciding anything."""
    collect = _Collect()
    judge = make_judge(creator, task, global_tensors, collect, evaluate_holdout, max_examples)
    decisions = judge.review(submissions)
    pending = {s.submission_id for s in collect.summaries}
    return ReviewSheet(
        pending=collect.summaries,
        refused=[
            d.verdict for d in decisions if d.verdict is not None and d.submission_id not in pending
        ],
        deferred=[d.deferred for d in decisions if d.deferred is not None],
    )


def settle_and_close(
    market: Marketplace,
    keypair: Keypair,
    task_id: int,
    verdicts: list[Verdict],
    deferred: list[Deferred] | None = None,
) -> tuple[dict[int, int], int]:
    """Record every verdict, pay the accepted results (once: a repeat pays nothing more)
    and close the task, refunding what was not paid — one unit, so one extrinsic on chain.
    Returns what each judged result was paid and the task's refund, both as the marketplace
    recorded them: ``settle`` returns what this call paid, and a settlement retried after
    an unknown outcome (its first attempt landed) pays 0, which a report must not show.

    With ``deferred`` results the task is NOT closed (a close refuses results still awaiting
    a verdict): the decided ones are settled, the task stays open with its escrow, and the
    refund is 0 until the creator judges the rest and closes it."""
    close = None if deferred else task_id
    market.settle(keypair, verdicts, close_task_id=close)
    return paid_as_recorded(market, task_id, verdicts), market.get_task(task_id).refunded


def paid_as_recorded(market: Marketplace, task_id: int, verdicts: list[Verdict]) -> dict[int, int]:
    """What the marketplace records as paid to each judged result (0 for a rejected one)."""
    recorded = {s.submission_id: s.paid for s in market.list_task_results(task_id)}
    return {v.submission_id: recorded.get(v.submission_id, 0) for v in verdicts}


def shortfall(accepted: int, rejected: int, deferred: int, minimum: int) -> str | None:
    """Why a round with ``accepted`` results falls short of the ``minimum`` it needs to count
    as done (None when it does not): the settled round then ends flagged, not green."""
    if accepted >= minimum:
        return None
    rest = f"{rejected} rejected, {deferred} deferred"
    if accepted == 0:
        return f"no result accepted: {rest}"
    results = "result" if accepted == 1 else "results"
    return f"{accepted} {results} accepted, fewer than the {minimum} required: {rest}"


def checkpoint(
    creator: Creator, round_number: int, tensors: Tensors, strategy_state: Tensors | None = None
) -> StoredArtifact:
    """Store the global weights after the round, and first the strategy's state (if it keeps
    any) beside them: a checkpoint found on resume always has its strategy state."""
    if strategy_state:
        url = creator.store.strategy_checkpoint_url(creator.run, round_number)
        metadata = {"round": round_number, "strategy": creator.config.strategy.name}
        creator.store.put(url, encode(strategy_state, metadata))
        crashpoint("checkpointing")  # half a checkpoint: the state without its weights
    url = creator.store.checkpoint_url(creator.run, round_number)
    return creator.store.put(url, encode(tensors, {"round": round_number}))


def strategy_state(creator: Creator, round_number: int) -> dict[str, np.ndarray]:
    """The strategy state checkpointed after ``round_number`` (empty if it kept none). A
    state written by another strategy is refused: its buffers mean something else."""
    url = creator.store.strategy_checkpoint_url(creator.run, round_number)
    if not round_number or not creator.store.exists(url):
        return {}
    data = creator.store.get(url)
    written_by = read_metadata(data).get("strategy")
    configured = creator.config.strategy.name
    if written_by != configured:
        raise ConfigError(
            f"run {creator.run!r} was checkpointed with strategy {written_by!r}, but the config "
            f"says {configured!r}: resume it with {written_by!r}, or start a new run (--run)"
        )
    return decode(data)


def read_task(market: Marketplace, task_id: int) -> Task:
    """The task's record as the marketplace has it now (its status, its slots)."""
    return market.get_task(task_id)


def pending_results(market: Marketplace, task_id: int) -> list[Submission]:
    """Every result of the task still awaiting a verdict (late arrivals included)."""
    pending = ResultSubmissionStatus.PendingValidation
    return [s for s in market.list_task_results(task_id) if s.status is pending]


# --- resuming a training: everything that matters is on the marketplace and in storage -------


FINISHED = rules.FINISHED


@dataclass(frozen=True)
class Progress:
    """How far a training (one ``run``) got, read back from the marketplace and storage.

    ``done_rounds``: rounds whose new weights are checkpointed AND whose task is finished
    (settled and closed, or ended at expiry). ``open_task``: the task of the next round, if it
    was published and is still open: resuming finishes it instead of publishing (and escrowing)
    the round again. ``strategy_state``: the strategy's state after ``done_rounds``."""

    done_rounds: int
    checkpoint: dict[str, np.ndarray] | None
    open_task: Task | None
    strategy_state: dict[str, np.ndarray] = field(default_factory=dict)
    settled_without_us: Task | None = None
    """The next round's task when it finished, paying results, with no checkpoint of ours:
    the marketplace paid its unjudged results while the creator was away (review grace).
    Those results were bought; resuming aggregates them (``paid_results``) rather than
    publishing, and paying for, the round again."""


def tasks_of_run(creator: Creator) -> dict[int, Task]:
    """The latest task this creator published for each round of its run."""
    prefix = creator.store.run_url(creator.run) + "/"
    latest: dict[int, Task] = {}
    for task in creator.market.list_tasks(open_only=False):
        mine = same_account(task.creator, creator.keypair.ss58_address)
        if mine and task.spec.global_weights_path.startswith(prefix):
            latest[task.spec.round_number] = task
    return latest


def find_progress(creator: Creator) -> Progress:
    """Read back a training's state; see ``Progress``. Checkpoints are written before anyone
    is paid (write-ahead), so a finished task without its checkpoint means the round ended
    without a settlement of ours: run again if it paid nothing (expired), adopted if the
    marketplace paid its results (``Progress.settled_without_us``). A round whose task stays
    open only for deferred results, but whose successor was published, is done."""
    tasks = tasks_of_run(creator)
    done = 0
    while (task := tasks.get(done + 1)) is not None:
        moved_on = task.status in FINISHED or (done + 2) in tasks  # deferred results keep it open
        if not moved_on or not creator.store.exists(
            creator.store.checkpoint_url(creator.run, done + 1)
        ):
            break
        done += 1
    checkpoint = None
    if done:
        url = creator.store.checkpoint_url(creator.run, done)
        checkpoint = decode(creator.store.get(url))
    following = tasks.get(done + 1)
    open_task = following if following is not None and following.status not in FINISHED else None
    paid_away = following is not None and following.status in FINISHED and following.paid > 0
    return Progress(
        done,
        checkpoint,
        open_task,
        strategy_state(creator, done),
        settled_without_us=following if paid_away else None,
    )


def paid_results(market: Marketplace, task_id: int) -> list[Submission]:
    """The task's results the marketplace accepted and paid."""
    accepted = ResultSubmissionStatus.Accepted
    return [s for s in market.list_task_results(task_id) if s.status is accepted]


def published_global(creator: Creator, task: Task) -> dict[str, np.ndarray]:
    """The global weights a task was published with, verified against its record."""
    return decode(creator.store.get(task.spec.global_weights_path, task.spec.global_weights_sha256))


def settle_overdue(creator: Creator) -> dict[int, int]:
    """Pay every result of this creator's tasks still unjudged ``review_grace_blocks`` after
    its task expired, and close those tasks: the promise the embedded ledger keeps by itself,
    kept here for a chain, where only the creator can pay. Returns the payments."""
    market, grace = creator.market, creator.config.marketplace.review_grace_blocks
    block = market.current_block()
    payments: dict[int, int] = {}
    for task in market.list_tasks(open_only=False):
        mine = same_account(task.creator, creator.keypair.ss58_address)
        if not mine or not rules.overdue(task, block, grace):
            continue
        verdicts = rules.auto_accepted(task, market.list_task_results(task.task_id), block, grace)
        market.settle(creator.keypair, verdicts, close_task_id=task.task_id)
        payments.update(paid_as_recorded(market, task.task_id, verdicts))
    return payments


def close_open_tasks(creator: Creator) -> dict[int, str]:
    """Close this run's unfinished tasks, refunding unused slots: what a cancelled or crashed
    training does. A task with results awaiting a verdict stays open for them (a rerun judges
    them; past the review grace they are paid). Returns what happened to each task."""
    outcomes: dict[int, str] = {}
    for task in tasks_of_run(creator).values():
        if task.status in FINISHED:
            continue
        try:
            refund = creator.market.close_task(creator.keypair, task.task_id)
            outcomes[task.task_id] = f"closed, {refund} refunded"
        except PendingResults as pending:
            outcomes[task.task_id] = f"left open: {pending}"
    return outcomes
