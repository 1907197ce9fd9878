"""Strategies with a lifecycle: FedAvgM, FedAdam, FedYogi, FedAdagrad and FedProx against
numbers computed by hand from their papers' update rules for two rounds (state carried from
round 1 into round 2), their state through safetensors and the creator's checkpoints, and what
FedProx and the local optimizer settings tell a contributor.

Every case uses one tensor w = [1, 2] (float64) and two rounds:
  round 1: contributions [2, 2] (1 example) and [4, 0] (3 examples): the example-weighted mean
           is [3.5, 0.5], so Δ1 = mean - g0 = [2.5, -1.5];
  round 2: one contribution g1 + [1, 0]: Δ2 = [1, 0].
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from decentralml.contributor import TaskInputs, check_inputs
from decentralml.creator import Creator, checkpoint, strategy_state, task_settings
from decentralml.io.packaging import build_package, unpack_package
from decentralml.io.weights import decode, encode
from decentralml.ml.task_settings import TaskSettings
from decentralml.ml.training import training_options
from decentralml.protocol.errors import ConfigError, TaskRefused
from decentralml.runtime.backends import DEFAULT_ASSETS, open_store
from decentralml.runtime.config import RunConfig, parse_config
from decentralml.strategies import (
    Contribution,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    NormClipped,
    NothingToAggregate,
    get_strategy,
)
from decentralml.strategies.fedprox import ProximalStep

G0 = {"w": np.array([1.0, 2.0])}
ROUND_1 = [
    Contribution({"w": np.array([2.0, 2.0])}, 1),
    Contribution({"w": np.array([4.0, 0.0])}, 3),
]
DELTA_2 = np.array([1.0, 0.0])


def _two_rounds(strategy) -> tuple[np.ndarray, np.ndarray]:
    g1 = strategy.aggregate(1, G0, ROUND_1)
    g2 = strategy.aggregate(2, g1, [Contribution({"w": g1["w"] + DELTA_2}, 5)])
    return g1["w"], g2["w"]


def _adaptive(eta: float, m: list[float], v: list[float], tau: float) -> np.ndarray:
    """η·m / (√v + τ) per coordinate, written out."""
    return np.array([eta * mi / (math.sqrt(vi) + tau) for mi, vi in zip(m, v, strict=True)])


# --- FedAvgM: v ← βv + d, g ← g - ηv, d = g - mean ------------------------------------------


def test_fedavgm_by_hand() -> None:
    g1, g2 = _two_rounds(FedAvgM(server_learning_rate=0.5, server_momentum=0.9))
    # v1 = d1 = [-2.5, 1.5]; g1 = [1, 2] - 0.5 v1
    np.testing.assert_allclose(g1, [2.25, 1.25], rtol=1e-12)
    # d2 = [-1, 0]; v2 = 0.9 [-2.5, 1.5] + [-1, 0] = [-3.25, 1.35]; g2 = g1 - 0.5 v2
    np.testing.assert_allclose(g2, [2.25 + 1.625, 1.25 - 0.675], rtol=1e-12)


def test_fedavgm_without_momentum_is_fedavg() -> None:
    g1, g2 = _two_rounds(FedAvgM(server_learning_rate=1.0, server_momentum=0.0))
    f1, f2 = _two_rounds(FedAvg())
    np.testing.assert_allclose(g1, f1, rtol=1e-12)
    np.testing.assert_allclose(g2, f2, rtol=1e-12)


# --- FedOpt (Reddi et al. 2021, Algorithm 2), η = 0.1, β1 = 0.9, β2 = 0.99, τ = 0.5 ---------
# m1 = 0.1 Δ1 = [0.25, -0.15]; m2 = 0.9 m1 + 0.1 Δ2 = [0.325, -0.135]; v starts at τ² = 0.25.

M1, M2 = [0.25, -0.15], [0.325, -0.135]


def test_fedadam_by_hand() -> None:
    g1, g2 = _two_rounds(FedAdam(eta=0.1, beta_1=0.9, beta_2=0.99, tau=0.5))
    v1 = [0.99 * 0.25 + 0.01 * 6.25, 0.99 * 0.25 + 0.01 * 2.25]  # [0.31, 0.27]
    np.testing.assert_allclose(g1, G0["w"] + _adaptive(0.1, M1, v1, 0.5), rtol=1e-12)
    v2 = [0.99 * v1[0] + 0.01 * 1.0, 0.99 * v1[1]]
    np.testing.assert_allclose(g2, g1 + _adaptive(0.1, M2, v2, 0.5), rtol=1e-12)


def test_fedyogi_by_hand() -> None:
    g1, g2 = _two_rounds(FedYogi(eta=0.1, beta_1=0.9, beta_2=0.99, tau=0.5))
    # v1 = v0 - 0.01 Δ1² sign(v0 - Δ1²): both signs are -1, so v grows by 0.01 Δ1²
    v1 = [0.25 + 0.0625, 0.25 + 0.0225]
    np.testing.assert_allclose(g1, G0["w"] + _adaptive(0.1, M1, v1, 0.5), rtol=1e-12)
    # Δ2² = [1, 0]: sign(v1 - Δ2²) = [-1, +1]; the second coordinate's Δ² is 0
    v2 = [v1[0] + 0.01, v1[1]]
    np.testing.assert_allclose(g2, g1 + _adaptive(0.1, M2, v2, 0.5), rtol=1e-12)


def test_fedadagrad_by_hand() -> None:
    g1, g2 = _two_rounds(FedAdagrad(eta=0.1, beta_1=0.9, tau=0.5))
    v1 = [0.25 + 6.25, 0.25 + 2.25]
    np.testing.assert_allclose(g1, G0["w"] + _adaptive(0.1, M1, v1, 0.5), rtol=1e-12)
    v2 = [v1[0] + 1.0, v1[1]]
    np.testing.assert_allclose(g2, g1 + _adaptive(0.1, M2, v2, 0.5), rtol=1e-12)


def test_fedadam_state_after_round_1() -> None:
    strategy = FedAdam(eta=0.1, beta_1=0.9, beta_2=0.99, tau=0.5)
    strategy.aggregate(1, G0, ROUND_1)
    state = strategy.state()
    assert sorted(state) == ["m/w", "v/w"]
    np.testing.assert_allclose(state["m/w"], M1, rtol=1e-12)
    np.testing.assert_allclose(state["v/w"], [0.31, 0.27], rtol=1e-12)


# --- every server optimizer: state, rounds, checkpoints ----------------------------------------

SERVER_OPTIMIZERS = [
    lambda: FedAvgM(0.5, 0.9),
    lambda: FedAdam(0.1, 0.9, 0.99, 0.5),
    lambda: FedYogi(0.1, 0.9, 0.99, 0.5),
    lambda: FedAdagrad(0.1, 0.9, 0.5),
]
IDS = ["fedavgm", "fedadam", "fedyogi", "fedadagrad"]


@pytest.mark.parametrize("make", SERVER_OPTIMIZERS, ids=IDS)
def test_state_through_safetensors_continues_the_same_training(make) -> None:
    """Round 2 from a fresh object loaded with round 1's state (encoded as the creator's
    checkpoint is) equals round 2 of the object that ran round 1."""
    uninterrupted = make()
    g1, g2 = _two_rounds(uninterrupted)
    first = make()
    first.aggregate(1, G0, ROUND_1)
    stored = decode(encode(first.state(), {"round": 1}))
    resumed = make()
    resumed.load_state(stored, 1)
    again = resumed.aggregate(2, {"w": g1}, [Contribution({"w": g1 + DELTA_2}, 5)])
    assert again["w"].tobytes() == g2.tobytes()
    fresh = make()  # without the state, round 2 is a different step: the state matters
    assert not np.allclose(
        fresh.aggregate(2, {"w": g1}, [Contribution({"w": g1 + DELTA_2}, 5)])["w"], g2
    )


@pytest.mark.parametrize("make", SERVER_OPTIMIZERS, ids=IDS)
def test_aggregating_a_round_again_does_not_apply_it_twice(make) -> None:
    """A late result re-opens the review: the round is aggregated again from its start state."""
    strategy = make()
    once = strategy.aggregate(1, G0, ROUND_1)
    state = strategy.state()
    twice = strategy.aggregate(1, G0, ROUND_1)
    assert once["w"].tobytes() == twice["w"].tobytes()
    assert all(state[k].tobytes() == v.tobytes() for k, v in strategy.state().items())


@pytest.mark.parametrize("make", SERVER_OPTIMIZERS, ids=IDS)
def test_an_empty_round_keeps_the_state(make) -> None:
    strategy = make()
    strategy.aggregate(1, G0, ROUND_1)
    before = strategy.state()
    with pytest.raises(NothingToAggregate):
        strategy.aggregate(2, G0, [])
    assert before.keys() == strategy.state().keys()


@pytest.mark.parametrize("make", SERVER_OPTIMIZERS, ids=IDS)
def test_subsets_valued_in_a_round_that_then_aggregates_nothing_leave_no_state(make) -> None:
    """Regression (found by the FoolsGold work): value pricing aggregates subsets of a round's
    results through the strategy; when the round then accepted nothing, the checkpoint kept
    the last subset's moments instead of the state the round started from."""
    strategy = make()
    strategy.aggregate(1, G0, ROUND_1)
    start = strategy.state()
    strategy.aggregate(2, G0, ROUND_1[:1])  # a subset, valued
    with pytest.raises(NothingToAggregate):
        strategy.aggregate(2, G0, [])  # the round's own aggregation: nothing accepted
    assert {k: v.tobytes() for k, v in strategy.state().items()} == {
        k: v.tobytes() for k, v in start.items()
    }


@pytest.mark.parametrize("make", SERVER_OPTIMIZERS, ids=IDS)
def test_a_server_optimizer_keeps_dtypes_and_needs_the_global_weights(make) -> None:
    g = {"w": np.array([1.0, 2.0], np.float32)}
    out = make().aggregate(1, g, [Contribution({"w": np.array([2.0, 1.0], np.float32)}, 1)])
    assert out["w"].dtype == np.float32
    with pytest.raises(ValueError, match="needs the round's global weights; missing"):
        make().aggregate(1, {}, ROUND_1)


def test_a_state_from_another_strategy_is_refused() -> None:
    adam = FedAdam()
    adam.aggregate(1, G0, ROUND_1)
    with pytest.raises(ValueError, match="written by another strategy"):
        FedAvgM().load_state(adam.state(), 1)
    with pytest.raises(ValueError, match="written by another strategy"):
        FedAvg().load_state(adam.state(), 1)
    FedAvg().load_state({}, 1)  # a stateless rule takes an empty state


def test_norm_clipping_passes_rounds_and_state_through() -> None:
    clipped = get_strategy(
        parse_config({"strategy": {"name": "fedadam", "clip_norm_multiple": 1e9}}).strategy
    )
    assert isinstance(clipped, NormClipped)
    plain = FedAdam()
    assert (
        clipped.aggregate(1, G0, ROUND_1)["w"].tobytes()
        == plain.aggregate(1, G0, ROUND_1)["w"].tobytes()
    )
    assert clipped.state().keys() == plain.state().keys() == {"m/w", "v/w"}


# --- the creator's checkpoints ------------------------------------------------------------------


def _creator(tmp_path: Path, strategy: str) -> Creator:
    config = parse_config(
        {"name": "ckpt", "strategy": strategy, "storage": {"url": (tmp_path / "s").as_uri()}}
    )
    return Creator(config, None, open_store(config.storage), None, "ckpt", DEFAULT_ASSETS)  # type: ignore[arg-type]


def test_the_strategy_state_is_checkpointed_beside_the_weights(tmp_path: Path) -> None:
    creator = _creator(tmp_path, "fedadam")
    strategy = FedAdam()
    new_global = strategy.aggregate(1, G0, ROUND_1)
    checkpoint(creator, 1, new_global, strategy.state())
    store = creator.store
    assert store.strategy_checkpoint_url("ckpt", 1).endswith(
        "checkpoints/round-1.strategy.safetensors"
    )
    assert store.exists(store.checkpoint_url("ckpt", 1))
    loaded = strategy_state(creator, 1)
    assert {k: v.tobytes() for k, v in loaded.items()} == {
        k: v.tobytes() for k, v in strategy.state().items()
    }
    assert strategy_state(creator, 0) == {} and strategy_state(creator, 2) == {}


def test_a_stateless_strategy_writes_no_state_file(tmp_path: Path) -> None:
    creator = _creator(tmp_path, "fedavg")
    checkpoint(creator, 1, G0, FedAvg().state())
    assert not creator.store.exists(creator.store.strategy_checkpoint_url("ckpt", 1))
    assert creator.store.exists(creator.store.checkpoint_url("ckpt", 1))


def test_resuming_with_another_strategy_is_refused_in_one_line(tmp_path: Path) -> None:
    strategy = FedAdam()
    checkpoint(
        _creator(tmp_path, "fedadam"), 1, strategy.aggregate(1, G0, ROUND_1), strategy.state()
    )
    with pytest.raises(ConfigError) as refused:
        strategy_state(_creator(tmp_path, "fedyogi"), 1)
    assert str(refused.value) == (
        "run 'ckpt' was checkpointed with strategy 'fedadam', but the config says 'fedyogi': "
        "resume it with 'fedadam', or start a new run (--run)"
    )


# --- FedProx and the local optimizer: what a contributor is told and checks -------------------


def test_fedprox_aggregates_as_fedavg_and_tells_contributors_mu() -> None:
    fedprox = FedProx(proximal_mu=0.5)
    assert fedprox.configure_round(1) == fedprox.configure_round(7) == {"proximal_mu": 0.5}
    assert FedAdam().configure_round(1) == FedAvg().configure_round(1) == {}
    assert (
        fedprox.aggregate(1, G0, ROUND_1)["w"].tobytes()
        == FedAvg().aggregate(1, G0, ROUND_1)["w"].tobytes()
    )
    with pytest.raises(ValueError, match=r"proximal_mu must be in \[0, 10.0\]"):
        FedProx(proximal_mu=10.5)


def test_mu_and_the_optimizer_travel_in_the_task_package(tmp_path: Path) -> None:
    config = parse_config(
        {
            "strategy": {"name": "fedprox", "proximal_mu": 0.25},
            "training": {"optimizer": "sgd", "learning_rate": 0.05},
        }
    )
    round_settings = get_strategy(config.strategy).configure_round(1)
    package = build_package(
        DEFAULT_ASSETS, task_settings(config, round_settings=round_settings).dump()
    )
    settings = TaskSettings.parse(unpack_package(package, tmp_path / "unpacked"))
    options = training_options(settings)
    assert (options["optimizer"], options["learning_rate"]) == ("sgd", 0.05)
    [step] = settings.local_steps()  # FedProx's own contributor side, from its own module
    assert isinstance(step, ProximalStep) and step.mu == 0.25
    assert (options["epochs"], options["batch_size"]) == (
        config.training.epochs,
        config.training.batch_size,
    )


def test_a_package_without_round_settings_trains_as_before() -> None:
    raw = task_settings(RunConfig()).dump()
    settings = {k: v for k, v in raw.items() if k not in ("optimizer", "round")}
    parsed = TaskSettings.parse(settings)
    assert training_options(parsed)["optimizer"] == "adam"
    assert parsed.local_steps() == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"round": {"proximal_mu": 11}}, "proximal_mu 11 is not in [0, 10]"),
        ({"round": {"proximal_mu": True}}, "proximal_mu True is not in [0, 10]"),
        ({"round": {"proximal_mu": -0.1}}, "proximal_mu -0.1 is not in [0, 10]"),
        ({"round": {"proximal_mu": "1"}}, "proximal_mu '1' is not in [0, 10]"),
        ({"round": {"clip": 1}}, "round settings ['clip'] are not known to this contributor"),
        ({"round": [1]}, "round settings [1] are not a mapping"),
        ({"optimizer": "rmsprop"}, "optimizer 'rmsprop' is not one of ['adam', 'sgd']"),
    ],
)
def test_a_contributor_refuses_round_settings_it_cannot_follow(change: dict, problem: str) -> None:
    settings = {**task_settings(RunConfig()).dump(), **change}
    with pytest.raises(TaskRefused) as refused:
        check_inputs(TaskInputs(settings, dict(G0), Path(".")), 0)
    assert problem in str(refused.value) and len(str(refused.value).splitlines()) == 1


# --- FedProx in a real local training --------------------------------------------------------


def _contributor_training(
    tmp_path: Path, strategy: dict, global_tensors: dict, x: np.ndarray, y: np.ndarray
) -> tuple[float, float]:
    """A task packaged for ``strategy``'s round 1, unpacked and checked as a contributor does,
    then trained as its settings say; returns the update norm ‖w - g‖ and the μ it trained with."""
    from decentralml.ml.training import train_contribution
    from decentralml.strategies.base import update_norm

    config = parse_config({"strategy": strategy, "contributors": 30, "training": {"epochs": 1}})
    round_settings = get_strategy(config.strategy).configure_round(1)
    package = build_package(
        DEFAULT_ASSETS, task_settings(config, round_settings=round_settings).dump()
    )
    raw = unpack_package(package, tmp_path / strategy["name"])
    inputs = TaskInputs(raw, global_tensors, tmp_path)
    check_inputs(inputs, 0)
    options = training_options(inputs.settings)
    steps = inputs.settings.local_steps()
    outcome = train_contribution("mnist_mlp", global_tensors, x, y, **options, steps=steps, seed=3)
    mu = steps[0].mu if steps else 0.0
    return update_norm(outcome.tensors, global_tensors), mu


@pytest.mark.slow
def test_a_fedprox_contributor_receives_mu_and_its_update_is_shorter(tmp_path: Path) -> None:
    """Li et al.'s proximal term pulls the local model towards the global one: with μ = 1 the
    same contributor, data and seed move the weights less than plain FedAvg training
    (measured: ‖u‖ 0.88 vs 3.98 on 1834 MNIST examples, one epoch of Adam)."""
    import keras

    from decentralml.ml.data.federated import contributor_shard
    from decentralml.ml.models import build_model, model_tensors

    keras.utils.set_random_seed(1)
    g = model_tensors(build_model("mnist_mlp"))
    x, y = contributor_shard(task_settings(parse_config({"contributors": 30})).data, 0)
    plain, no_mu = _contributor_training(tmp_path, {"name": "fedavg"}, g, x, y)
    proximal, mu = _contributor_training(tmp_path, {"name": "fedprox", "proximal_mu": 1.0}, g, x, y)
    assert (no_mu, mu) == (0.0, 1.0)
    assert 0 < proximal < 0.5 * plain, (proximal, plain)


@pytest.mark.slow
def test_the_local_optimizer_comes_from_the_task() -> None:
    import keras

    from decentralml.ml.models import build_model, model_tensors
    from decentralml.ml.training import local_model

    g = model_tensors(build_model("mnist_mlp"))
    sgd = local_model("mnist_mlp", g, learning_rate=0.05, optimizer="sgd")
    assert isinstance(sgd.optimizer, keras.optimizers.SGD)
    assert float(sgd.optimizer.learning_rate) == pytest.approx(0.05)
    assert isinstance(
        local_model("mnist_mlp", g, learning_rate=0.01).optimizer, keras.optimizers.Adam
    )
    with pytest.raises(ValueError, match=r"optimizer 'rmsprop' is not one of \['adam', 'sgd'\]"):
        local_model("mnist_mlp", g, learning_rate=0.01, optimizer="rmsprop")
