"""Task settings as one typed model (decentralml.ml.task_settings): what the creator writes into
the package is what the contributor reads back, and a hostile or broken task.json is refused
with one line naming each wrong field, before any slot is paid."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from decentralml.creator import task_settings
from decentralml.io.packaging import build_package, unpack_package
from decentralml.ml.task_settings import TaskSettings
from decentralml.ml.workloads import DataSpec
from decentralml.protocol.errors import ConfigError, TaskRefused
from decentralml.runtime.backends import DEFAULT_ASSETS
from decentralml.runtime.config import parse_config
from decentralml.strategies import get_strategy

FEDPROX = parse_config(
    {
        "strategy": {"name": "fedprox", "proximal_mu": 0.25},
        "training": {"optimizer": "sgd", "learning_rate": 0.05, "epochs": 3},
        "contributors": 7,
    }
)


def _sent() -> TaskSettings:
    """What a FedProx creator publishes for round 1."""
    return task_settings(FEDPROX, round_settings=get_strategy(FEDPROX.strategy).configure_round(1))


def _raw() -> dict:
    return _sent().dump()


def test_the_creators_settings_reach_the_contributor_unchanged(tmp_path: Path) -> None:
    sent = _sent()
    package = build_package(DEFAULT_ASSETS, sent.dump())
    received = TaskSettings.parse(unpack_package(package, tmp_path / "package"))
    assert received == sent
    assert (received.optimizer, received.learning_rate, received.epochs) == ("sgd", 0.05, 3)
    assert received.round.proximal_mu == 0.25
    assert received.data.num_partitions == 7
    assert received.data.spec == DataSpec((28, 28), "uint8", tuple(range(10)))


def test_an_older_package_is_still_readable_and_unknown_keys_are_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A package from before workloads and strategies: no optimizer, round, metric, data
    source, spec or preprocessing; plus keys this version does not know."""
    raw = _raw()
    for key in ("optimizer", "round", "metric"):
        del raw[key]
    for key in ("source", "spec", "preprocessing", "max_examples"):
        raw["data"].pop(key, None)
    raw["legacy_hint"] = "x"
    raw["data"]["shuffle"] = True
    with caplog.at_level(logging.INFO, logger="decentralml.ml.task_settings"):
        settings = TaskSettings.parse(raw)
    assert (settings.optimizer, settings.round.proximal_mu, settings.metric) == (
        "adam",
        0,
        "accuracy",
    )
    assert (settings.data.source, settings.data.spec, settings.data.preprocessing) == (
        "mnist",
        None,
        None,
    )
    assert "['legacy_hint', 'data.shuffle']" in caplog.text


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"epochs": 10**6}, "epochs 1000000 is not 1..100"),
        ({"epochs": "3"}, "epochs '3' is not 1..100"),
        ({"batch_size": True}, "batch_size True is not 1..65536"),
        ({"learning_rate": 1}, "learning_rate 1 is not in (0, 1)"),
        ({"optimizer": "rmsprop"}, "optimizer 'rmsprop' is not one of ['adam', 'sgd']"),
        ({"model": 3}, "model 3 is not a model name"),
        ({"round": {"proximal_mu": 11}}, "round.proximal_mu 11 is not in [0, 10]"),
        ({"round": {"clip": 1}}, "round settings ['clip'] are not known to this contributor"),
        ({"round": [1]}, "round settings [1] are not a mapping"),
        ({"data": None}, "data settings None are not a mapping"),
        ({"data": {"partition": "zipf"}}, "data.partition 'zipf' is not one of ['iid', 'shards',"),
        ({"data": {"num_partitions": 0}}, "data.num_partitions 0 is not 1..10000"),
        ({"data": {"alpha": -1}}, "data.alpha -1 is not a positive number"),
        (
            {"data": {"spec": {"dtype": "x"}}},
            "data spec input_shape None is not a list of positive",
        ),
        ({"data": {"max_examples": 0}}, "data.max_examples 0 is not a positive int"),
    ],
)
def test_a_bad_setting_is_refused_in_one_line_naming_it(change: dict, problem: str) -> None:
    raw = _raw()
    for key, value in change.items():
        if key == "data" and isinstance(value, dict):
            raw["data"].update(value)
        else:
            raw[key] = value
    with pytest.raises(TaskRefused) as refused:
        TaskSettings.parse(raw)
    message = str(refused.value)
    assert message.startswith("task settings refused: ") and problem in message
    assert len(message.splitlines()) == 1


def test_missing_data_settings_and_every_problem_are_named_at_once() -> None:
    raw = {k: v for k, v in _raw().items() if k != "data"}
    raw["epochs"] = 0
    with pytest.raises(TaskRefused) as refused:
        TaskSettings.parse(raw)
    assert str(refused.value) == (
        "task settings refused: epochs 0 is not 1..100; data settings are missing"
    )


def test_the_creator_is_told_before_publishing_what_every_contributor_would_refuse() -> None:
    config = parse_config({"training": {"epochs": 101}})
    with pytest.raises(ConfigError, match=r"^task settings refused: epochs 101 is not 1\.\.100$"):
        task_settings(config)


def test_settings_are_read_only() -> None:
    settings = _sent()
    with pytest.raises(ValueError, match="frozen"):
        settings.epochs = 50  # type: ignore[misc]
