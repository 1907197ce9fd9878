"""Configuration: pydantic models loaded from YAML.

One file describes a whole federated training (model, training, task, data, marketplace,
storage, rounds). Switching from one machine to a shared deployment is a change of this file
(marketplace backend, storage URL), never of code. Secrets are not configuration: keys and
storage credentials come from the environment, so a config file can be committed safely.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from decentralml.io.packaging import MAX_PACKAGE_BYTES
from decentralml.io.storage import RETRY_DELAYS_SECONDS, Retries
from decentralml.ml.task_settings import OPTIMIZERS
from decentralml.protocol import rules
from decentralml.protocol.accounts import canonical_address
from decentralml.protocol.errors import ConfigError
from decentralml.protocol.records import ValidationStrategy
from decentralml.runtime.resources import config_path
from decentralml.strategies import registry as strategy_registry
from decentralml.strategies.fedavg import FedAvgParams
from decentralml.validation.validators import registry as validator_registry

_SECRET_KEYS = re.compile(r"(secret|password|passphrase|mnemonic|private|token)", re.IGNORECASE)
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_INLINE_CREDENTIALS = re.compile(r"^\w+://[^/]*:[^/]*@")


def _refuse_inline_credentials(value: str | None) -> str | None:
    if value is not None and _INLINE_CREDENTIALS.match(value):
        raise ValueError("must not embed credentials; set them in the environment instead")
    return value


PositiveInt = Annotated[int, Field(gt=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Section):
    """``model.name``: the earlier spelling of ``workload`` (decentralml/ml/workloads/)."""

    name: str = "mnist_mlp"


LocalOptimizer = Literal[OPTIMIZERS]  # type: ignore[valid-type]
"""The optimizers a contributor trains with (decentralml.ml.task_settings.OPTIMIZERS: adam, sgd)."""


class TrainingConfig(_Section):
    """The creator's instructions to contributors (and its own optional warm-up training)."""

    epochs: PositiveInt = 2
    batch_size: PositiveInt = 32
    learning_rate: Annotated[float, Field(gt=0, lt=1)] = 0.003  # docs/benchmarks.md, issue 20
    optimizer: LocalOptimizer = "adam"
    initial_epochs: Annotated[int, Field(ge=0)] = 0


ValidatorConfig = Annotated[
    Union[tuple(cls.Params for cls in validator_registry.values())],  # type: ignore[valid-type]  # noqa: UP007
    Field(discriminator="name"),
]
"""A ``task.validators`` entry: the union of the validators' own parameter models
(decentralml.validation.validators.registry), discriminated by name."""
DEFAULT_VALIDATORS: tuple[str, ...] = ("update_norm", "holdout_gate")


class TaskConfig(_Section):
    """What a round's task asks and how its results are judged.

    CustomAccept (the default) runs ``validators`` in order, then ``custom_validator`` if set;
    with neither given it runs update_norm and holdout_gate, which refuse poisoned updates
    without refusing honest non-IID work. AutoAccept pays whatever passes screening
    (docs/security.md says what that risks). ManualAccept reads ``manual_decisions`` if set,
    else the round's flow run pauses for the Prefect UI form; without an answer after
    ``manual_timeout_seconds``, and for a submission the answer does not mention, the
    ``manual_default`` applies."""

    question: str = "Train the MNIST digit classifier on your shard of the data"
    pays_amount: PositiveInt = 1_000_000
    max_assignments: PositiveInt = 5
    expiry_blocks: PositiveInt = 200
    validation_strategy: ValidationStrategy = ValidationStrategy.CustomAccept
    validators: list[ValidatorConfig] | None = None
    custom_validator: str | None = None
    min_accuracy: Annotated[float, Field(ge=0, le=1)] = 0.5
    manual_decisions: str | None = None
    manual_timeout_seconds: PositiveInt = 3600
    manual_default: Literal["reject", "accept"] = "reject"
    copy_threshold: Annotated[float, Field(ge=0, lt=1)] = 0.05
    max_examples: PositiveInt | None = None
    examples_cap_multiple: Annotated[float, Field(ge=1)] = 2.0
    min_accepted_results: Annotated[int, Field(ge=0)] = 1
    """A round settling with fewer accepted results ends Failed (after it is settled and
    checkpointed); 0 never flags a round."""
    payment_rule: Literal["per_result", "value"] = "per_result"
    """``per_result``: each accepted result is paid ``pays_amount // max_assignments`` (the
    seed's rule). ``value``: accepted results are valued (GTG-Shapley on the held-out split,
    decentralml.validation.value); one whose value is below 0 beyond the estimate's noise
    (2 standard errors) is rejected with its value, the others share the fixed shares of
    those paid in proportion to their value above 0. Recorded on the task."""
    value_floor_share: Annotated[float, Field(ge=0, le=1)] = 0.0
    """``value``: the part of a fixed share every paid result gets before the split."""
    min_reputation: Annotated[int, Field(ge=0, le=rules.MAX_MIN_REPUTATION)] = 0
    """0: anyone may take a slot. n: only workers whose marketplace record (results accepted
    by other creators, less results refused) is at least n; recorded on the task and enforced
    by the marketplace at assignment (protocol.rules.can_assign)."""
    value_budget: Annotated[int, Field(ge=1, le=100_000)] | None = None
    """``value``: the most held-out evaluations one round's valuation may use (None: 30 per
    result valued, at least one whole cycle of GTG-Shapley's guided permutations)."""
    newcomer_share_cap: Annotated[float, Field(gt=0)] | None = 1.0
    """``value``: the most a newcomer's training (its accounts below
    ``rules.ESTABLISHED_REPUTATION``, by the marketplace's records) earns in a round, in fixed
    shares; the rest stays in escrow and the close refunds it. 1.0: a stranger is never paid
    more by value than ``per_result`` would pay it, so fresh accounts gain nothing from a
    value round that the fixed share would not give them; only standing earns more. None: no
    cap. The creator's setting, not recorded on the task (like the floor and the budget)."""

    @field_validator("question")
    @classmethod
    def _question_not_blank(cls, value: str) -> str:
        if rules.is_blank(value):  # the marketplace's own test of a blank question
            raise ValueError("must not be empty: contributors read it to decide")
        return value

    @field_validator("custom_validator")
    @classmethod
    def _module_function(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[\w.]+:[\w]+", value):
            raise ValueError(f"{value!r} is not 'package.module:function'")
        return value

    @field_validator("validators", mode="before")
    @classmethod
    def _names_as_entries(cls, value: object) -> object:
        """``[update_norm, {name: holdout_gate, tolerance: 0.02}]``: a bare name is an entry."""
        if isinstance(value, list):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def _reward_covers_slots(self) -> TaskConfig:
        unpaid = rules.unpaid_slots(self.pays_amount, self.max_assignments)
        if unpaid:
            raise ValueError(unpaid)
        if self.min_accepted_results > self.max_assignments:
            raise ValueError(
                f"min_accepted_results {self.min_accepted_results} is more than max_assignments "
                f"{self.max_assignments}: every round would fail"
            )
        return self

    def custom_validators(self) -> list[ValidatorConfig]:
        """The validators CustomAccept runs before ``custom_validator``."""
        if self.validators is not None:
            return list(self.validators)
        if self.custom_validator:
            return []
        return [validator_registry[name].Params() for name in DEFAULT_VALIDATORS]


class DataConfig(_Section):
    """How the workload's dataset is split. ``source`` null means the workload's own dataset;
    a name must be that dataset (kept so older configs saying ``source: mnist`` stay valid)."""

    source: str | None = None
    partition: Literal["iid", "shards", "shards-disjoint", "dirichlet"] = "iid"
    classes_per_contributor: PositiveInt = 2
    alpha: Annotated[float, Field(gt=0)] = 0.5
    seed: int = 42
    holdout_examples: Annotated[int, Field(ge=0, le=20_000)] = 5_000
    shared_slice: Annotated[int, Field(ge=0, le=20_000)] = 0
    """Examples of the held-out split shipped with the task to every contributor, which trains
    on them beside its shard (Zhao et al. 2018); the creator validates on the rest. 0: none."""
    cache_dir: str | None = None

    @model_validator(mode="after")
    def _slice_inside_holdout(self) -> DataConfig:
        if self.shared_slice and self.shared_slice >= self.holdout_examples:
            raise ValueError(
                f"shared_slice {self.shared_slice} must be smaller than holdout_examples "
                f"{self.holdout_examples}: the creator validates on what the slice leaves"
            )
        return self


class MarketplaceConfig(_Section):
    backend: Literal["embedded", "substrate"] = "embedded"
    path: str = ".decentralml/marketplace.sqlite"
    block_time_seconds: Annotated[float, Field(gt=0)] = 6.0
    review_grace_blocks: PositiveInt = 600
    """Blocks after a task's expiry for its creator to judge its results; a result still
    unjudged then is accepted and paid (embedded: by the ledger itself; chain: by the
    creator's next run, which settles overdue results first — docs/security.md)."""
    url: str = "ws://127.0.0.1:9950"
    index_path: str = ".decentralml/chain-index.sqlite"
    start_block: Annotated[int, Field(ge=0)] = 0
    creator_key_env: str = "DECENTRALML_CREATOR_URI"
    contributor_key_env: str = "DECENTRALML_CONTRIBUTOR_URI"
    dev_accounts: bool = True
    """Whether a missing key may fall back to a public dev account (//Alice creates, //Bob,
    //Charlie, ... contribute): only ever on a dev marketplace (runtime.backends.dev_problem)."""
    dev_genesis_hash: Annotated[str, Field(pattern=r"^0x[0-9a-f]{64}$")] | None = None
    """The genesis hash of the chain this config calls a dev chain (the project's chopsticks
    chain: 0x4545...45). On any other chain dev accounts are never used: a missing key is an
    error naming its variable."""
    dev_funds: Annotated[int, Field(ge=0)] = 10_000_000_000

    @field_validator("url")
    @classmethod
    def _no_inline_credentials(cls, value: str) -> str:
        return _refuse_inline_credentials(value)

    @field_validator("creator_key_env", "contributor_key_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not _ENV_NAME.match(value):
            raise ValueError(f"{value!r} is not an environment variable name (keys never go here)")
        return value


class StorageConfig(_Section):
    """Where artifacts live (see decentralml.io.storage) and how long a party keeps trying when
    the storage is unavailable.

    endpoint_url: the S3 endpoint for s3:// URLs when it is not AWS (SeaweedFS, MinIO). The
        creator writes it on each task record, so contributors need no copy of it; credentials
        never go here (AWS_* variables or AWS_PROFILE, docs/storage.md).
    retry_attempts: tries of every read and write in all (default 6; 1: no retry).
    retry_delays: seconds to wait after the 1st, 2nd, ... failure; the last one repeats
        (default [0.5, 1, 2, 4, 8]). Their sum bounds the outage a round rides out: a result the
        creator still cannot read after them gets no verdict this round (it is not rejected).
        Raise them for storage that may restart mid-round (docs/security.md, "Faults").
    accept_uploads: whether results uploaded into this storage (the task's ``results/``
        folder) are read. Whoever can write there can overwrite or delete anyone's result, so
        keep it only where every writer is trusted (one machine, a team); a creator that hands
        strangers no credentials sets it false and takes hosted results only.
    pull_schemes: the link schemes a contributor-hosted result is pulled over (default
        https; http only on a network the creator trusts). Empty: hosted results are refused.
    pull_trusted_hosts: hosts pulled from although they resolve to loopback, private or
        link-local addresses (refused otherwise: decentralml.io.fetcher).
    pull_timeout_seconds: the most one pull may take in all.
    """

    url: str = "file://.decentralml/storage"
    endpoint_url: str | None = None
    max_result_bytes: PositiveInt = 50_000_000
    retry_attempts: PositiveInt = Retries().attempts
    retry_delays: list[Annotated[float, Field(ge=0, le=600)]] = Field(
        default_factory=lambda: list(RETRY_DELAYS_SECONDS)
    )
    accept_uploads: bool = True
    pull_schemes: list[Literal["https", "http"]] = Field(default_factory=lambda: ["https"])
    pull_trusted_hosts: list[str] = Field(default_factory=list)
    pull_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0

    @field_validator("url", "endpoint_url")
    @classmethod
    def _no_inline_credentials(cls, value: str | None) -> str | None:
        return _refuse_inline_credentials(value)

    def retries(self) -> Retries:
        """The storage's retry policy: every read, write and pull of this party's storage is
        tried this often, and by nothing else (tasks/policy.py does not retry it again)."""
        return Retries(self.retry_attempts, tuple(self.retry_delays))


class ContributorConfig(_Section):
    """What a contributor asks of a stranger's task before it pays anything for it (on a chain,
    the assign extrinsic's fee). See README, "What a contributor checks before it pays".

    min_reward_per_result: a task paying less per accepted result is skipped unread. Default 1:
        only tasks that pay nothing are refused, which suits the embedded marketplace (no fees).
        On a chain set it above the fees of the contributor's own extrinsics (assign + result:
        ~24.4 million planck on the dev chain, docs/benchmarks.md), so spam tasks at 1 planck
        cost their author, not the contributors.
    max_asset_bytes: the most a contributor package may be, compressed (default 32 MiB; the
        unpacked limits are decentralml.io.packaging's).
    max_global_bytes: the most a task's global weights file may be (default 64 MiB).
    models: the models (task record's ``model``) this contributor trains; empty: any. A task
        that records no model is skipped when the list is set.
    creators: the creators (SS58 addresses) whose tasks it takes; empty: anyone's.
    max_concurrent_tasks: tasks worked on at once (default 1), each in its own thread.
    idle_timeout_seconds: the agent ends (Completed) after this long with no task to work on;
        None (default): it waits for tasks forever.
    results_url: where this contributor hosts its results (an s3:// prefix in its own
        storage, written with its own credentials at ``storage.endpoint_url``); each result's
        record then carries a time-limited link to it, from which the creator pulls it. None
        (default): results are uploaded into the task's folder of the creator's storage, which
        needs the creator's write credentials. Also $DECENTRALML_RESULTS_URL.
    results_endpoint_url: the S3 endpoint of that storage when it is not AWS (default:
        ``storage.endpoint_url``). Also $DECENTRALML_RESULTS_ENDPOINT_URL.
    results_link_seconds: how long that link stays valid (default 7 days, S3's longest).
    """

    min_reward_per_result: Annotated[int, Field(ge=0)] = 1
    max_asset_bytes: PositiveInt = MAX_PACKAGE_BYTES
    max_global_bytes: PositiveInt = 64 * 2**20
    models: list[str] = Field(default_factory=list)
    creators: list[str] = Field(default_factory=list)
    max_concurrent_tasks: PositiveInt = 1
    idle_timeout_seconds: Annotated[float, Field(gt=0)] | None = None
    results_url: str | None = None
    results_endpoint_url: str | None = None
    results_link_seconds: Annotated[int, Field(gt=0, le=604_800)] = 604_800

    @field_validator("results_endpoint_url")
    @classmethod
    def _no_inline_endpoint_credentials(cls, value: str | None) -> str | None:
        return _refuse_inline_credentials(value)

    @field_validator("results_url")
    @classmethod
    def _own_bucket(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("s3://"):
            raise ValueError(
                f"must be an s3:// prefix in this contributor's own storage, got {value!r}"
            )
        return _refuse_inline_credentials(value)

    @field_validator("creators")
    @classmethod
    def _ss58_addresses(cls, value: list[str]) -> list[str]:
        """Stored in one spelling (prefix 42): a chain reports prefix-2 addresses."""
        return [canonical_address(address) for address in value]


StrategyName = Literal[tuple(strategy_registry)]  # type: ignore[valid-type]
"""The strategies' config names, from decentralml.strategies.registry."""

StrategyConfig = Annotated[
    Union[tuple(cls.Params for cls in strategy_registry.values())],  # type: ignore[valid-type]  # noqa: UP007
    Field(discriminator="name"),
]
"""The ``strategy`` section: ``name`` picks the strategy (decentralml/strategies/), the other
keys are that strategy's parameters, each with its default (documented on its class); a key
it does not take is refused. ``clip_norm_multiple``, which every strategy takes, clips every
update to that multiple of the round's median update norm before the strategy runs. A plain
string (``strategy: fedavg``) means ``{name: fedavg}``, and so does a section without a name."""


AttackKind = Literal[
    "sign_flip",
    "scaled",
    "gaussian_noise",
    "label_flip",
    "free_rider",
    "inflated_examples",
    "backdoor",
    "sybil",
]


class AttackConfig(_Section):
    """Simulated attackers for ``decentralml demo`` (decentralml.simulation.attacks): the last
    ``attackers`` of the demo's contributors send ``kind`` instead of honest work."""

    kind: AttackKind | None = None
    attackers: Annotated[int, Field(ge=0)] = 0
    scale: Annotated[float, Field(gt=0)] = 10.0
    noise_std: Annotated[float, Field(gt=0)] = 0.5

    @model_validator(mode="after")
    def _kind_and_count_together(self) -> AttackConfig:
        if (self.kind is None) != (self.attackers == 0):
            raise ValueError("set both attack.kind and attack.attackers (>= 1), or neither")
        return self


_DASK_ADDRESS = re.compile(r"^(?:(?:tcp|tls|ws|wss)://)?[\w.\-\[\]:]+:\d{1,5}$")


class SimulationConfig(_Section):
    """How ``decentralml demo`` runs its simulated contributors (docs/simulation.md).

    runner: ``dask`` submits each contributor's agent as a Prefect task to a Dask cluster
        (prefect-dask's DaskTaskRunner); ``threads`` runs them on Prefect's thread pool;
        ``processes`` runs each in a process of its own (Prefect's ProcessPoolTaskRunner), so
        no agent's Python competes for this process's GIL (each loads TensorFlow itself).
        address, n_workers, threads_per_worker and processes apply to ``dask`` only.
    address: a running Dask scheduler (``tcp://host:8786``); null starts a LocalCluster for
        the demo and stops it afterwards.
    n_workers, threads_per_worker, processes: the LocalCluster's shape. Every agent holds one
        worker thread for the whole demo, so threads_per_worker null means enough threads for
        all contributors. processes false keeps the workers in this process: they then share
        its Prefect (ephemeral) server, TensorFlow and MNIST cache; worker processes would
        each need the Prefect API (set PREFECT_API_URL) and load TensorFlow themselves.
    """

    runner: Literal["dask", "threads", "processes"] = "dask"
    address: str | None = None
    n_workers: PositiveInt = 2
    threads_per_worker: PositiveInt | None = None
    processes: bool = False

    @field_validator("address")
    @classmethod
    def _scheduler_address(cls, value: str | None) -> str | None:
        if value is not None and not _DASK_ADDRESS.match(value):
            raise ValueError(f"{value!r} is not a Dask scheduler address like tcp://host:8786")
        return value


class RunConfig(_Section):
    """A whole federated training: what the creator publishes and how the demo simulates it."""

    name: str = "mnist"
    workload: str | None = None
    """A built-in workload (``decentralml workloads``) or ``package.module:attribute``; null:
    ``model.name`` (its older spelling)."""
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    task: TaskConfig = TaskConfig()
    data: DataConfig = DataConfig()
    marketplace: MarketplaceConfig = MarketplaceConfig()
    storage: StorageConfig = StorageConfig()
    contributor: ContributorConfig = ContributorConfig()
    strategy: StrategyConfig = FedAvgParams()
    rounds: PositiveInt = 3
    contributors: PositiveInt = 5
    round_timeout_seconds: Annotated[float, Field(gt=0)] = 900.0
    suspend_after_seconds: Annotated[float, Field(ge=0)] = 60.0
    """How long a deployment's round waits for results in its own process before it suspends
    and leaves the rest of the wait to the waker (flows/waker.py): a round whose results come
    quickly never pays the resumed run's start-up; a long wait frees the worker and the
    session's memory. 0: suspend at once."""
    poll_seconds: Annotated[float, Field(gt=0)] = 0.5
    attack: AttackConfig = AttackConfig()
    simulation: SimulationConfig = SimulationConfig()

    @model_validator(mode="after")
    def _strategy_fits_the_local_training(self) -> RunConfig:
        """A rule with a contributor side may need a kind of local training (SCAFFOLD:
        plain SGD); the rule says so itself (``StrategyParams.local_training_problem``)."""
        problem = self.strategy.local_training_problem(self.training.optimizer)
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _attackers_are_contributors(self) -> RunConfig:
        if self.attack.attackers > self.contributors:
            raise ValueError(
                f"attack.attackers {self.attack.attackers} is more than the "
                f"{self.contributors} contributors"
            )
        return self

    @property
    def workload_name(self) -> str:
        """The workload this training runs: ``workload`` when set (it wins over the shipped
        configs' ``model.name``), else ``model.name``."""
        return self.workload or self.model.name

    @model_validator(mode="before")
    @classmethod
    def _refuse_secrets(cls, data: object) -> object:
        _check_no_secrets(data, "")
        return data

    @field_validator("strategy", mode="before")
    @classmethod
    def _strategy_by_name(cls, value: object) -> object:
        """The earlier form ``strategy: fedavg`` is ``strategy: {name: fedavg}``; a section
        without a name is fedavg's."""
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, dict) and "name" not in value:
            return {"name": "fedavg", **value}
        return value


def _check_no_secrets(node: object, path: str) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            child = f"{path}.{key}" if path else str(key)
            if _SECRET_KEYS.search(str(key)):
                raise ValueError(f"{child}: secrets do not belong in config; use the environment")
            _check_no_secrets(value, child)


def format_problems(source: str, problems: list[tuple[str, str]]) -> str:
    """One line per problem, each naming its field path: a single problem is the whole
    message (``invalid configuration in X: rounds: ...``); several follow a heading."""
    if len(problems) == 1:
        where, why = problems[0]
        return f"invalid configuration in {source}: {where}: {why}"
    lines = [f"invalid configuration in {source}:"]
    lines += [f"  {where}: {why}" for where, why in problems]
    return "\n".join(lines)


def _format_errors(error: ValidationError, source: str) -> str:
    problems = [
        (".".join(str(part) for part in item["loc"]) or "(top level)", _reason(item))
        for item in error.errors()
    ]
    return format_problems(source, problems)


def _reason(item: ErrorDetails) -> str:
    """pydantic's message, without the "Value error, " it puts before a validator's own."""
    if item["type"] == "value_error" and "error" in item.get("ctx", {}):
        return str(item["ctx"]["error"])
    return item["msg"]


def parse_config(data: object, source: str = "<dict>") -> RunConfig:
    """Validate a mapping; errors list each field path and why it is wrong."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"invalid configuration in {source}: expected a mapping at the top level")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_errors(error, source)) from None


def load_config(path: str | Path, overrides: dict | None = None) -> RunConfig:
    """Read a YAML file, apply dotted ``overrides`` (e.g. {"rounds": 1}), validate.
    ``configs/NAME`` missing from the cwd is the config the package ships under that name."""
    source = config_path(path)
    try:
        data = yaml.safe_load(source.read_text())
    except FileNotFoundError:
        raise ConfigError(f"configuration file {source} does not exist") from None
    except OSError as error:
        raise ConfigError(f"configuration file {source} cannot be read: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"configuration file {source} is not valid YAML: {error}") from None
    if data is None:  # an empty file (or only comments) is a mistake, not "all defaults"
        raise ConfigError(
            f"configuration file {source} is empty; start from configs/mnist.yaml "
            "(an empty file would publish a task with every default)"
        )
    if not isinstance(data, dict):
        return parse_config(data, str(source))  # refused there, before overrides
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value)
    return parse_config(data, str(source))


def _set_dotted(data: dict, dotted: str, value: object) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for depth, part in enumerate(parents, start=1):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            where = ".".join(parents[:depth])
            raise ConfigError(f"override {dotted}: {where} is a value, not a section")
    node[leaf] = value


MARKETPLACE_ENV = "DECENTRALML_MARKETPLACE_URL"
"""Where a contributor configured by environment only finds the marketplace."""

RESULTS_ENV = {
    "contributor.results_url": "DECENTRALML_RESULTS_URL",
    "contributor.results_endpoint_url": "DECENTRALML_RESULTS_ENDPOINT_URL",
}
"""Where a contributor configured by environment hosts its results, by config field."""

FILTER_ENV = {
    "contributor.models": "DECENTRALML_MODELS",
    "contributor.creators": "DECENTRALML_CREATORS",
    "contributor.min_reward_per_result": "DECENTRALML_MIN_REWARD_PER_RESULT",
}
"""A contributor's filters from the environment, by config field (lists comma-separated);
they win over a config file's, and ``decentralml contribute --models`` ... over them."""


def _from_environment() -> dict[str, object]:
    """The contributor settings the environment sets, as dotted overrides."""
    found: dict[str, object] = {}
    for dotted, variable in (RESULTS_ENV | FILTER_ENV).items():
        value = os.environ.get(variable, "").strip()
        if value:
            is_list = dotted in ("contributor.models", "contributor.creators")
            found[dotted] = comma_list(value) if is_list else value
    return found


def comma_list(value: str) -> list[str]:
    """``"a, b,c"`` as ``["a", "b", "c"]``: a list on a command line or in a variable."""
    return [item.strip() for item in value.split(",") if item.strip()]


def marketplace_location(marketplace: MarketplaceConfig) -> str:
    """Where a marketplace is, for a person: a chain's URL or the absolute path of the
    embedded marketplace's file."""
    if marketplace.backend == "substrate":
        return marketplace.url
    return str(Path(marketplace.path).expanduser().resolve())


def marketplace_at(location: str) -> dict[str, str]:
    """Overrides pointing a config at a marketplace: a ``ws://``/``wss://`` URL is a Substrate
    chain, anything else the embedded marketplace's SQLite file at that path."""
    if re.match(r"^wss?://", location):
        return {"marketplace.backend": "substrate", "marketplace.url": location}
    return {"marketplace.backend": "embedded", "marketplace.path": location}


def _refuse_missing_folder(location: str) -> None:
    """A marketplace a contributor is pointed at is one its creator runs: a file in a folder
    that does not exist is a mistyped path (it would become an empty marketplace, watched
    forever), refused before anything is created. A config file's own path is not checked:
    an agent started before its creator, in the same folder, waits for the marketplace."""
    if re.match(r"^wss?://", location):
        return
    folder = Path(location).expanduser().parent
    if not folder.is_dir():
        raise ConfigError(
            f"marketplace {location}: folder {folder} does not exist, so no marketplace is "
            f"there; name the marketplace file its creator runs (--marketplace PATH or "
            f"${MARKETPLACE_ENV})"
        )


def load_contributor_config(
    path: str | Path | None, marketplace: str | None = None, overrides: dict | None = None
) -> RunConfig:
    """A contributor's config. A contributor on another machine has no creator's config file:
    with ``path`` None (or "") it starts from the defaults. The marketplace comes from
    ``marketplace`` or else $DECENTRALML_MARKETPLACE_URL when either is set; the key is read
    from the environment later (marketplace.contributor_key_env) and the storage endpoint
    from each task's record. Results hosting and filters may come from the environment too
    (RESULTS_ENV, FILTER_ENV); ``overrides`` (the command line's) win over them."""
    location = marketplace or os.environ.get(MARKETPLACE_ENV, "")
    if location:
        _refuse_missing_folder(location)
    merged = {**(marketplace_at(location) if location else {}), **(overrides or {})}
    for dotted, value in _from_environment().items():
        merged.setdefault(dotted, value)
    if path:
        return load_config(path, merged)
    data: dict = {}
    for dotted, value in merged.items():
        _set_dotted(data, dotted, value)
    return parse_config(data, "no config file")


def run_overrides(
    rounds: int | None = None,
    epochs: int | None = None,
    contributors: int | None = None,
    strategy: str | None = None,
    run_name: str | None = None,
) -> dict[str, object]:
    """Run-level settings as dotted ``load_config`` overrides (like ``flwr run --run-config``):
    a deployment takes them as parameters so one config serves many runs. ``contributors``
    sets a round's slots and the data partitions together, as ``decentralml demo`` does;
    a new ``run_name`` is a new training (progress is found by run name)."""
    found: dict[str, object] = {
        "rounds": rounds,
        "training.epochs": epochs,
        "contributors": contributors,
        "task.max_assignments": contributors,
        "strategy": strategy,
        "name": run_name,
    }
    return {dotted: value for dotted, value in found.items() if value is not None}
