"""decentralml.runtime.config: the YAML run description, its validation and its refusals.

Every refusal is a ConfigError whose message names the dotted field path, so a user can find
the line to fix; secrets are refused wherever they appear.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from decentralml.protocol.errors import ConfigError
from decentralml.protocol.records import ValidationStrategy
from decentralml.runtime.config import RunConfig, load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent
MNIST_YAML = ROOT / "configs" / "mnist.yaml"


def _mnist() -> dict:
    return yaml.safe_load(MNIST_YAML.read_text())


def _with(dotted: str, value: object) -> dict:
    data = _mnist()
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return data


def _error(data: object, source: str = "<dict>") -> str:
    with pytest.raises(ConfigError) as error:
        parse_config(data, source)
    return str(error.value)


def _problems(message: str, source: str = "<dict>") -> list[str]:
    """The ``field: why`` lines of a refusal: one problem is one line, several a list."""
    heading = f"invalid configuration in {source}:"
    lines = message.splitlines()
    if len(lines) == 1:
        assert lines[0].startswith(heading + " "), message
        return [lines[0].removeprefix(heading + " ")]
    assert lines[0] == heading, message
    return [line.removeprefix("  ") for line in lines[1:]]


# --- the shipped config --------------------------------------------------------------------


def test_mnist_yaml_loads_with_the_documented_values() -> None:
    config = load_config(MNIST_YAML)
    assert isinstance(config, RunConfig)
    assert config.model_dump(mode="json") == {
        "name": "mnist",
        "workload": None,
        "model": {"name": "mnist_mlp"},
        "training": {
            "epochs": 2,
            "batch_size": 32,
            "learning_rate": 0.003,
            "optimizer": "adam",
            "initial_epochs": 0,
        },
        "task": {
            "question": "Train the MNIST digit classifier on your shard of the data",
            "pays_amount": 1_000_000,
            "max_assignments": 5,
            "expiry_blocks": 200,
            "validation_strategy": "CustomAccept",
            "validators": [
                {"name": "update_norm", "max_ratio": 3.0},
                {"name": "holdout_gate", "tolerance": 0.08, "class_tolerance": 0.05},
            ],
            "custom_validator": None,
            "min_accuracy": 0.5,
            "manual_decisions": None,
            "manual_timeout_seconds": 3600,
            "manual_default": "reject",
            "copy_threshold": 0.05,
            "max_examples": None,
            "examples_cap_multiple": 2.0,
            "min_accepted_results": 1,
            "payment_rule": "per_result",
            "value_floor_share": 0.0,
            "min_reputation": 0,
            "value_budget": None,
            "newcomer_share_cap": 1.0,
        },
        "data": {
            "source": "mnist",
            "partition": "iid",
            "classes_per_contributor": 2,
            "alpha": 0.5,
            "seed": 42,
            "holdout_examples": 5000,
            "shared_slice": 0,
            "cache_dir": None,
        },
        "marketplace": {
            "backend": "embedded",
            "path": ".decentralml/marketplace.sqlite",
            "block_time_seconds": 6.0,
            "review_grace_blocks": 600,
            "url": "ws://127.0.0.1:9950",
            "index_path": ".decentralml/chain-index.sqlite",
            "start_block": 0,
            "creator_key_env": "DECENTRALML_CREATOR_URI",
            "contributor_key_env": "DECENTRALML_CONTRIBUTOR_URI",
            "dev_accounts": True,
            "dev_genesis_hash": None,
            "dev_funds": 10_000_000_000,
        },
        "storage": {
            "url": "file://.decentralml/storage",
            "endpoint_url": None,
            "max_result_bytes": 50_000_000,
            "retry_attempts": 6,
            "retry_delays": [0.5, 1.0, 2.0, 4.0, 8.0],
            "accept_uploads": True,
            "pull_schemes": ["https"],
            "pull_trusted_hosts": [],
            "pull_timeout_seconds": 60.0,
        },
        "contributor": {
            "min_reward_per_result": 1,
            "max_asset_bytes": 32 * 2**20,
            "max_global_bytes": 64 * 2**20,
            "models": [],
            "creators": [],
            "max_concurrent_tasks": 1,
            "idle_timeout_seconds": None,
            "results_url": None,
            "results_endpoint_url": None,
            "results_link_seconds": 604_800,
        },
        "strategy": {
            "name": "fedavg",
            "clip_norm_multiple": None,
            "noise_multiple": None,
            "backdoor_filter": None,
            "sybil_filter": None,
        },
        "rounds": 3,
        "contributors": 5,
        "round_timeout_seconds": 900.0,
        "suspend_after_seconds": 60.0,
        "poll_seconds": 0.5,
        "attack": {"kind": None, "attackers": 0, "scale": 10.0, "noise_std": 0.5},
        "simulation": {
            "runner": "dask",
            "address": None,
            "n_workers": 2,
            "threads_per_worker": None,
            "processes": False,
        },
    }
    assert config.task.validation_strategy is ValidationStrategy.CustomAccept


def test_substrate_contributors_skip_tasks_that_pay_less_than_their_fees() -> None:
    """~24.4 million planck of fees per task for a contributor (docs/benchmarks.md)."""
    config = load_config(MNIST_YAML.parent / "mnist-substrate.yaml")
    assert config.contributor.min_reward_per_result == 10**9 > 24_400_000
    per_result = config.task.pays_amount // config.task.max_assignments
    assert per_result >= config.contributor.min_reward_per_result  # the demo's own tasks pass


def test_config_is_frozen() -> None:
    config = load_config(MNIST_YAML)
    with pytest.raises(Exception, match="frozen"):
        config.rounds = 10  # type: ignore[misc]
    with pytest.raises(Exception, match="frozen"):
        config.task.pays_amount = 1  # type: ignore[misc]


def test_an_empty_file_is_refused_but_no_config_is_all_defaults(tmp_path: Path) -> None:
    """An empty file is a mistake (it published a task with every default); asking for the
    defaults is explicit: no config (a contributor without the creator's file) or ``{}``."""
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n")
    with pytest.raises(ConfigError, match="is empty"):
        load_config(path)
    path.write_text("{}\n")
    assert load_config(path) == RunConfig()
    assert parse_config(None) == RunConfig()


# --- bad values name their field path ------------------------------------------------------


@pytest.mark.parametrize(
    ("dotted", "value", "expected"),
    [
        ("training.epochs", -1, "training.epochs: Input should be greater than 0"),
        ("training.epochs", 0, "training.epochs: Input should be greater than 0"),
        ("training.batch_size", "many", "training.batch_size: Input should be a valid integer"),
        ("training.learning_rate", 1.5, "training.learning_rate: Input should be less than 1"),
        (
            "data.partition",
            "zipf",
            "data.partition: Input should be 'iid', 'shards', 'shards-disjoint' or 'dirichlet'",
        ),
        ("data.alpha", 0, "data.alpha: Input should be greater than 0"),
        (
            "data.holdout_examples",
            30_000,
            "data.holdout_examples: Input should be less than or equal to 20000",
        ),
        (
            "task.question",
            "   ",
            "task.question: must not be empty: contributors read it to decide",
        ),
        (
            "task.custom_validator",
            "my_validators.check",
            "task.custom_validator: 'my_validators.check' is not 'package.module:function'",
        ),
        (
            "task.custom_validator",
            "my validators:check",
            "task.custom_validator: 'my validators:check' is not 'package.module:function'",
        ),
        (
            "task.validation_strategy",
            "AcceptAll",
            "task.validation_strategy: Input should be 'AutoAccept', 'ManualAccept' or "
            "'CustomAccept'",
        ),
        ("task.min_accuracy", 1.2, "task.min_accuracy: Input should be less than or equal to 1"),
        (
            "marketplace.backend",
            "ethereum",
            "marketplace.backend: Input should be 'embedded' or 'substrate'",
        ),
        (
            "marketplace.creator_key_env",
            "//Alice",
            "marketplace.creator_key_env: '//Alice' is not an environment variable "
            "name (keys never go here)",
        ),
        (
            "contributor.min_reward_per_result",
            -1,
            "contributor.min_reward_per_result: Input should be greater than or equal to 0",
        ),
        ("contributor.max_asset_bytes", 0, "contributor.max_asset_bytes: Input should be greater"),
        (
            "strategy",
            "fedsgd",
            "strategy: Input tag 'fedsgd' found using 'name' does not match any of the expected "
            "tags: 'fedavg', 'average', 'median', 'trimmed_mean', 'krum', 'multi_krum', "
            "'fedavgm', 'fedadam', 'fedyogi', 'fedadagrad', 'fedprox'",
        ),
        ("training.optimizer", "rmsprop", "training.optimizer: Input should be 'adam' or 'sgd'"),
        (
            "simulation.runner",
            "ray",
            "simulation.runner: Input should be 'dask', 'threads' or 'processes'",
        ),
        ("rounds", 0, "rounds: Input should be greater than 0"),
        ("rounds", 2.5, "rounds: Input should be a valid integer, got a number with a fractional"),
        ("bogus", 1, "bogus: Extra inputs are not permitted"),
        ("task.bogus", 1, "task.bogus: Extra inputs are not permitted"),
        ("storage.bucket", "x", "storage.bucket: Extra inputs are not permitted"),
    ],
)
def test_bad_value_names_its_field_path(dotted: str, value: object, expected: str) -> None:
    message = _error(_with(dotted, value), "configs/mine.yaml")
    problems = _problems(message, "configs/mine.yaml")
    assert any(line.startswith(expected) for line in problems), message


def test_the_simulation_runner_may_be_processes() -> None:
    """One process per simulated contributor (flows/simulation.py): an option, not the
    default (docs/benchmarks.md, "Contributors in processes of their own")."""
    config = parse_config(_with("simulation.runner", "processes"), "configs/mine.yaml")
    assert config.simulation.runner == "processes"
    assert load_config(MNIST_YAML).simulation.runner == "dask"


def test_every_bad_field_is_listed() -> None:
    data = _with("training.epochs", -1)
    data["data"]["partition"] = "zipf"
    data["rounds"] = 0
    lines = _error(data).splitlines()
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "training.epochs",
        "data.partition",
        "rounds",
    ]


def test_reward_smaller_than_the_slots_is_refused() -> None:
    data = _with("task.pays_amount", 4)  # max_assignments is 5
    message = _error(data)
    assert message == (  # the marketplace's own rule and words (rules.unpaid_slots)
        "invalid configuration in <dict>: task: pays_amount 4 < max_assignments 5: each "
        "accepted result would be paid 0; raise pays_amount or lower max_assignments"
    )
    parse_config(_with("task.pays_amount", 5))  # one unit each is fine


def test_a_round_cannot_require_more_accepted_results_than_it_has_slots() -> None:
    assert parse_config({}).task.min_accepted_results == 1
    assert _error(_with("task.min_accepted_results", 6)) == (
        "invalid configuration in <dict>: task: min_accepted_results 6 is more "
        "than max_assignments 5: every round would fail"
    )
    assert parse_config(_with("task.min_accepted_results", 0)).task.min_accepted_results == 0


@pytest.mark.parametrize(
    "url",
    ["s3://AKIAEXAMPLE:wJalrXUtnFEMI@bucket/runs", "https://user:pass@storage.example/x"],
)
def test_storage_url_with_inline_credentials_is_refused(url: str) -> None:
    message = _error(_with("storage.url", url))
    assert _problems(message) == [
        "storage.url: must not embed credentials; set them in the environment instead"
    ]
    assert url not in message  # the secret is not echoed back into logs


@pytest.mark.parametrize("url", ["s3://bucket/prefix", "file:///tmp/x", "memory://root"])
def test_storage_url_without_credentials_is_fine(url: str) -> None:
    assert parse_config(_with("storage.url", url)).storage.url == url


def test_storage_retry_budget_reaches_the_store() -> None:
    from decentralml.io.storage import Retries
    from decentralml.runtime.backends import open_store

    data = _with("storage.retry_attempts", 7)
    data["storage"]["retry_delays"] = [1, 4]
    assert open_store(parse_config(data).storage).retries == Retries(7, (1.0, 4.0))


@pytest.mark.parametrize(
    ("dotted", "value"), [("storage.retry_attempts", 0), ("storage.retry_delays", [1, -1])]
)
def test_storage_retry_budget_is_checked(dotted: str, value: object) -> None:
    assert f"<dict>: {dotted}" in _error(_with(dotted, value))


@pytest.mark.parametrize(
    ("dotted", "url"),
    [
        ("storage.endpoint_url", "http://AKIAEXAMPLE:wJalrXUtnFEMI@minio:9000"),
        ("marketplace.url", "wss://user:password@node.example:443"),
    ],
)
def test_other_urls_with_inline_credentials_are_refused(dotted: str, url: str) -> None:
    assert _problems(_error(_with(dotted, url)))[0].startswith(
        f"{dotted}: must not embed credentials"
    )


@pytest.mark.parametrize(
    "dotted",
    [
        "secret",
        "client_secret",
        "task.mnemonic",
        "marketplace.creator_private_key",
        "marketplace.Mnemonic",
        "storage.aws_secret_access_key",
        "storage.options.token",
        "data.cache.Password",
        "storage.passphrase",
    ],
)
def test_a_secret_anywhere_is_refused_by_its_path(dotted: str) -> None:
    value = "bottom drive obey lake curtain smoke"
    message = _error(_with(dotted, value))
    assert _problems(message) == [
        f"(top level): {dotted}: secrets do not belong in config; use the environment"
    ]
    assert value not in message  # the secret is not echoed back into logs


def test_key_env_names_are_not_secrets() -> None:
    config = parse_config(_with("marketplace.creator_key_env", "MY_CREATOR_URI"))
    assert config.marketplace.creator_key_env == "MY_CREATOR_URI"


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert _error([1, 2], "x.yaml") == (
        "invalid configuration in x.yaml: expected a mapping at the top level"
    )
    path = tmp_path / "list.yaml"
    path.write_text("- rounds: 1\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_config(path)


# --- files ---------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == f"configuration file {path} does not exist"


@pytest.mark.parametrize("text", ["rounds: [1\n", "task:\n  question: 'open\n", "a: b: c\n"])
def test_bad_yaml(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"configuration file {path} is not valid YAML: "):
        load_config(path)


def test_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("rounds: -3\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == (
        f"invalid configuration in {path}: rounds: Input should be greater than 0"
    )


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=str(tmp_path)):
        load_config(tmp_path)


# --- overrides -----------------------------------------------------------------------------


def test_overrides_apply_dotted_paths() -> None:
    config = load_config(MNIST_YAML, {"rounds": 1, "data.partition": "shards"})
    assert config.rounds == 1
    assert config.data.partition == "shards"
    # Everything else is still the file's.
    assert config.data.seed == 42
    assert config.task.max_assignments == 5
    assert load_config(MNIST_YAML).rounds == 3  # the file itself is untouched


def test_overrides_create_missing_sections(tmp_path: Path) -> None:
    path = tmp_path / "minimal.yaml"
    path.write_text("name: tiny\n")
    config = load_config(path, {"training.epochs": 7, "storage.url": "memory://x"})
    assert (config.name, config.training.epochs, config.storage.url) == ("tiny", 7, "memory://x")


def test_overrides_are_validated_like_the_file() -> None:
    with pytest.raises(ConfigError) as error:
        load_config(MNIST_YAML, {"data.partition": "zipf", "task.api_token": "t0k"})
    assert "task.api_token: secrets do not belong in config" in str(error.value)
    with pytest.raises(ConfigError, match=r": data\.partition: Input should be"):
        load_config(MNIST_YAML, {"data.partition": "zipf"})


def test_override_below_a_scalar_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="rounds"):
        load_config(MNIST_YAML, {"rounds.x": 1})


# --- validation strategy defaults ----------------------------------------------------------


def test_a_new_config_defaults_to_custom_accept_with_the_poison_refusing_validators() -> None:
    task = parse_config({}).task
    assert task.validation_strategy is ValidationStrategy.CustomAccept
    assert [v.name for v in task.custom_validators()] == ["update_norm", "holdout_gate"]
    assert task.custom_validator is None


def test_custom_accept_with_only_a_function_runs_only_that_function() -> None:
    data = _with("task.validation_strategy", "CustomAccept")
    data["task"].pop("validators")
    data["task"]["custom_validator"] = "tests.custom_validators:enough_examples"
    task = parse_config(data).task
    assert task.custom_validator == "tests.custom_validators:enough_examples"
    assert task.custom_validators() == []


def test_validators_accept_bare_names_and_parameters() -> None:
    data = _with("task.validators", ["min_accuracy", {"name": "holdout_gate", "tolerance": 0.02}])
    validators = parse_config(data).task.custom_validators()
    assert [(v.name, getattr(v, "tolerance", None)) for v in validators] == [
        ("min_accuracy", None),
        ("holdout_gate", 0.02),
    ]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "nosuch"}, "task.validators.0: Input tag 'nosuch' found using 'name'"),
        ({"name": "update_norm", "max_ratio": 0.5}, "task.validators.0.update_norm.max_ratio"),
        ({"name": "holdout_gate", "cutoff": 1}, "task.validators.0.holdout_gate.cutoff"),
    ],
)
def test_bad_validator_entries_name_the_field(entry: dict, message: str) -> None:
    assert message in _error(_with("task.validators", [entry]))


@pytest.mark.parametrize("strategy", ["AutoAccept", "ManualAccept"])
def test_other_policies_leave_the_validator_unset(strategy: str) -> None:
    assert parse_config(_with("task.validation_strategy", strategy)).task.custom_validator is None


# --- aggregation strategy ------------------------------------------------------------------


def _with_strategy(strategy: object) -> dict:
    data = _mnist()
    data["strategy"] = strategy
    return data


@pytest.mark.parametrize(
    "name", ["fedavg", "average", "median", "trimmed_mean", "krum", "fedadam", "fedprox"]
)
def test_the_plain_strategy_name_still_works(name: str) -> None:
    """Config files written before strategies had parameters say ``strategy: fedavg``."""
    strategy = parse_config(_with_strategy(name)).strategy
    assert strategy == parse_config(_with_strategy({"name": name})).strategy
    assert strategy.name == name and strategy.clip_norm_multiple is None


def test_a_strategy_section_with_parameters() -> None:
    strategy = parse_config(
        _with_strategy(
            {"name": "multi_krum", "byzantine": 2, "select": 4, "clip_norm_multiple": 3.0}
        )
    ).strategy
    assert (strategy.name, strategy.byzantine, strategy.select) == ("multi_krum", 2, 4)
    assert strategy.clip_norm_multiple == 3.0
    assert parse_config(_with_strategy({})).strategy.name == "fedavg"  # a section without a name


def test_every_new_strategy_takes_its_documented_defaults() -> None:
    """The defaults on each strategy's docstring (decentralml/strategies/)."""
    defaults = {
        "fedavgm": {"server_learning_rate": 1.0, "server_momentum": 0.9},
        "fedadam": {"eta": 0.01, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3},
        "fedyogi": {"eta": 0.01, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3},
        "fedadagrad": {"eta": 0.1, "beta_1": 0.9, "tau": 1e-3},
        "fedprox": {"proximal_mu": 0.01},
    }
    for name, expected in defaults.items():
        section = parse_config(_with_strategy(name)).strategy
        assert section.arguments() == expected, name
    fedadam = parse_config(_with_strategy({"name": "fedadam", "eta": 0.02, "tau": 1e-9}))
    assert (fedadam.strategy.eta, fedadam.strategy.tau, fedadam.strategy.beta_2) == (
        0.02,
        1e-9,
        0.99,
    )


def test_an_override_replaces_the_plain_strategy_name(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("strategy: fedavg\n")
    assert load_config(path, {"strategy": "median"}).strategy.name == "median"
    assert load_config(path, {"strategy": {"name": "krum"}}).strategy.name == "krum"


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (
            {"name": "FedAvg"},
            "strategy: Input tag 'FedAvg' found using 'name' does not match any of the expected "
            "tags: 'fedavg',",
        ),
        (
            {"name": "trimmed_mean", "trim_ratio": 0.5},
            "strategy.trimmed_mean.trim_ratio: Input should be less",
        ),
        ({"trim_ratio": 0.1}, "strategy.fedavg.trim_ratio: Extra inputs are not permitted"),
        ({"name": "krum", "byzantine": -1}, "strategy.krum.byzantine: Input should be greater"),
        ({"name": "krum", "select": 0}, "strategy.krum.select: Input should be greater than or"),
        (
            {"clip_norm_multiple": 0},
            "strategy.fedavg.clip_norm_multiple: Input should be greater than 0",
        ),
        ({"name": "median", "trim": 0.1}, "strategy.median.trim: Extra inputs are not permitted"),
        ({"name": "fedadam", "eta": 0}, "strategy.fedadam.eta: Input should be greater than 0"),
        (
            {"name": "fedadam", "beta_2": 1.0},
            "strategy.fedadam.beta_2: Input should be less than 1",
        ),
        ({"name": "fedadagrad", "beta_2": 0.9}, "strategy.fedadagrad.beta_2: Extra inputs are not"),
        ({"name": "fedprox", "mu": 0.1}, "strategy.fedprox.mu: Extra inputs are not permitted"),
        (
            {"name": "fedprox", "proximal_mu": 11},
            "strategy.fedprox.proximal_mu: Input should be less than or equal to 10",
        ),
        (3, "strategy: Input should be a valid dictionary or object to extract fields from"),
    ],
)
def test_bad_strategy_values_name_their_field(strategy: object, expected: str) -> None:
    message = _error(_with_strategy(strategy), "configs/mine.yaml")
    problems = _problems(message, "configs/mine.yaml")
    assert any(line.startswith(expected) for line in problems), message
