"""SCAFFOLD (Karimireddy et al. 2020, option II; decentralml/strategies/scaffold.py) on both
sides: the server's control variate, the contributor's corrected local steps and its own c_i
kept between rounds, the package that carries c, and the checks a contributor makes on it.

The server derives each Δc_i from the submitted weights, so these tests hold the server's
arithmetic against the paper's own update written out independently, and a real demo against
the paper's invariant: with every contributor answering, c is the mean of the c_i.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from substrateinterface import Keypair

from decentralml.contributor import TaskInputs, check_inputs, prepare_local
from decentralml.io.local_state import ControlVariates
from decentralml.io.weights import decode, encode, layout_of
from decentralml.ml.task_settings import RoundSettings, TaskSettings
from decentralml.protocol.errors import TaskRefused
from decentralml.runtime.config import parse_config
from decentralml.strategies import Contribution
from decentralml.strategies.scaffold import (
    CONTROL_VARIATE_FILE,
    DriftStep,
    Scaffold,
    contributor_control_variate,
    local_steps,
)
from tests.helpers import small_config

ROOT = Path(__file__).resolve().parent.parent
EPOCHS, BATCH, LR = 2, 16, 0.05
LINEAGE = "ab" * 16


def _tensors(rng: np.random.Generator, scale: float = 1.0) -> dict[str, np.ndarray]:
    return {
        "000.kernel": (scale * rng.standard_normal((4, 3))).astype(np.float32),
        "001.bias": (scale * rng.standard_normal(3)).astype(np.float32),
    }


def _scaffold() -> Scaffold:
    strategy = Scaffold()
    strategy.use_local_training(EPOCHS, BATCH, LR)
    return strategy


# --- the server ---------------------------------------------------------------------------------


def test_the_server_moves_c_by_the_mean_of_the_contributors_delta_c() -> None:
    """Written out as the paper's Algorithm 1: Δc_i = c_i⁺ - c_i = -c + (x - y_i)/(K_i·η),
    c ← c + mean Δc_i, from a non-zero c; x ← the example-weighted mean of the y_i."""
    rng = np.random.default_rng(0)
    x, c = _tensors(rng), _tensors(rng, 0.1)
    results = [(_tensors(rng), n) for n in (40, 100, 7)]
    strategy = _scaffold()
    strategy.load_state({**{f"c/{k}": v for k, v in c.items()}, **_lineage(strategy)}, 1)

    new_global = strategy.aggregate(2, x, [Contribution(y, n) for y, n in results])

    total = sum(n for _, n in results)
    for name in x:
        delta_c = [
            -c[name] + (x[name] - y[name]) / (local_steps(n, EPOCHS, BATCH) * LR)
            for y, n in results
        ]
        expected_c = c[name] + np.mean(delta_c, axis=0)
        np.testing.assert_allclose(strategy.state()[f"c/{name}"], expected_c, rtol=1e-5)
        expected_x = sum(n * y[name] for y, n in results) / total
        np.testing.assert_allclose(new_global[name], expected_x, rtol=1e-5, atol=1e-6)


def test_reviewing_a_round_again_starts_from_the_c_the_round_began_with() -> None:
    rng = np.random.default_rng(1)
    x = _tensors(rng)
    first = [Contribution(_tensors(rng), 50), Contribution(_tensors(rng), 60)]
    late = Contribution(_tensors(rng), 70)
    strategy = _scaffold()
    strategy.aggregate(1, x, first)
    c_round_1 = strategy.state()
    second = [Contribution(_tensors(rng), 50)]
    strategy.aggregate(2, x, second)
    shipped = strategy.round_tensors(2, x)  # what round 2's package carried
    strategy.aggregate(2, x, [*second, late])  # a late result re-opens round 2's review

    again = _scaffold()
    again.load_state(c_round_1, 1)
    again.aggregate(2, x, [*second, late])
    for key, value in again.state().items():
        np.testing.assert_array_equal(strategy.state()[key], value, err_msg=key)
    for name in x:
        np.testing.assert_array_equal(shipped[name], c_round_1[f"c/{name}"], err_msg=name)


def test_the_state_carries_c_and_the_lineage_across_a_resume() -> None:
    rng = np.random.default_rng(2)
    x = _tensors(rng)
    strategy = _scaffold()
    assert all(not v.any() for v in strategy.round_tensors(1, x).values())  # c starts at 0
    strategy.aggregate(1, x, [Contribution(_tensors(rng), 30)])
    resumed = _scaffold()
    resumed.load_state(decode(encode(strategy.state())), 1)  # as checkpointed
    assert resumed.configure_round(2) == strategy.configure_round(2)
    for name, value in strategy.round_tensors(2, x).items():
        np.testing.assert_array_equal(resumed.round_tensors(2, x)[name], value)
    assert Scaffold().configure_round(1) != strategy.configure_round(1)  # a new training
    with pytest.raises(ValueError, match="another strategy"):
        _scaffold().load_state({"m/000.kernel": x["000.kernel"]}, 1)


def test_scaffold_without_the_local_training_is_refused() -> None:
    with pytest.raises(ValueError, match="use_local_training"):
        Scaffold().aggregate(1, {"a": np.zeros(2)}, [Contribution({"a": np.ones(2)}, 3)])


def test_the_creator_strategy_knows_the_local_training() -> None:
    from decentralml.creator import training_strategy

    config = parse_config(
        {"strategy": "scaffold", "training": {"optimizer": "sgd", "learning_rate": 0.05}}
    )
    strategy = training_strategy(config)
    assert isinstance(strategy, Scaffold)
    assert strategy._local == (config.training.epochs, config.training.batch_size, 0.05)


def test_scaffold_with_adam_is_refused_in_one_line(tmp_path) -> None:
    from decentralml.protocol.errors import ConfigError

    with pytest.raises(ConfigError, match=r"training\.optimizer: sgd"):
        parse_config({"strategy": "scaffold"})
    done = subprocess.run(
        [sys.executable, "-m", "decentralml_cli", "demo", "--strategy", "scaffold"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") <= 1 and "Traceback" not in done.stderr
    assert "scaffold corrects plain SGD steps" in done.stderr


def _lineage(strategy: Scaffold) -> dict[str, np.ndarray]:
    return {"lineage": strategy.state()["lineage"]}


# --- the contributor ----------------------------------------------------------------------------


def test_the_contributor_update_is_option_two() -> None:
    rng = np.random.default_rng(3)
    own, server, start, trained = (_tensors(rng) for _ in range(4))
    got = contributor_control_variate(own, server, start, trained, 12, 0.1)
    for name in own:
        expected = own[name] - server[name] + (start[name] - trained[name]) / (12 * 0.1)
        np.testing.assert_allclose(got[name], expected, rtol=1e-6)


def test_a_corrected_sgd_step_moves_by_the_correction() -> None:
    """One local step on one batch: y = x - η·(g + c - c_i), so the corrected fit ends
    exactly η·(c - c_i) from the uncorrected one on every trainable variable."""
    from decentralml.ml.models import build_model, model_tensors
    from decentralml.ml.training import train_contribution

    rng = np.random.default_rng(4)
    x = model_tensors(build_model("mnist_mlp"))
    images = rng.random((32, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, 32)
    correction = {n: (0.5 * rng.standard_normal(t.shape)).astype(np.float32) for n, t in x.items()}
    options = dict(epochs=1, batch_size=32, learning_rate=0.1, optimizer="sgd", seed=5)
    plain = train_contribution("mnist_mlp", x, images, labels, **options)
    drift = [DriftStep(correction=correction)]
    corrected = train_contribution("mnist_mlp", x, images, labels, steps=drift, **options)
    again = train_contribution("mnist_mlp", x, images, labels, **options)  # the pooled model
    for name in x:
        np.testing.assert_allclose(
            plain.tensors[name] - corrected.tensors[name],
            0.1 * correction[name],
            rtol=1e-3,
            atol=1e-5,
            err_msg=name,
        )
        np.testing.assert_array_equal(again.tensors[name], plain.tensors[name], err_msg=name)


def test_the_contributors_c_i_is_kept_per_creator_and_training(tmp_path) -> None:
    rng = np.random.default_rng(6)
    tensors = _tensors(rng)
    layout = layout_of(tensors)
    worker, creator = Keypair.create_from_uri("//Bob"), Keypair.create_from_uri("//Alice")
    store = ControlVariates(worker.ss58_address, creator.ss58_address, "ab" * 16, tmp_path)
    assert all(not v.any() for v in store.load(layout).values())  # none yet: c_i = 0
    store.save(tensors)
    for name, value in store.load(layout).items():
        np.testing.assert_array_equal(value, tensors[name])
    other_training = ControlVariates(worker.ss58_address, creator.ss58_address, "cd" * 16, tmp_path)
    other_creator = ControlVariates(worker.ss58_address, worker.ss58_address, "ab" * 16, tmp_path)
    assert len({store.path, other_training.path, other_creator.path}) == 3
    reshaped = layout_of({"000.kernel": np.zeros((5, 3), np.float32)})
    assert not store.load(reshaped)["000.kernel"].any()  # another model: start from zero
    store.path.write_bytes(b"garbage")
    assert all(not v.any() for v in store.load(layout).values())


def _inputs(
    global_tensors: dict, control: bytes | None, lineage: str = "ab" * 16, name=CONTROL_VARIATE_FILE
) -> TaskInputs:
    from decentralml.creator import task_settings

    round_settings = {"control_variate": {"file": CONTROL_VARIATE_FILE, "lineage": lineage}}
    config = parse_config({"strategy": "scaffold", "training": {"optimizer": "sgd"}})
    raw = task_settings(config, round_settings=round_settings).dump()
    files = {} if control is None else {name: control}
    return TaskInputs(raw, global_tensors, Path("."), files)


@pytest.fixture(scope="module")
def seed_weights() -> dict[str, np.ndarray]:
    from decentralml.ml.models import build_model, model_tensors

    return model_tensors(build_model("mnist_mlp"))


def test_a_sound_control_variate_gives_the_correction(seed_weights, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DECENTRALML_STATE_DIR", str(tmp_path))
    server = {n: np.full(t.shape, 0.25, t.dtype) for n, t in seed_weights.items()}
    inputs = _inputs(seed_weights, encode(server))
    check_inputs(inputs, 0)
    local = prepare_local(
        inputs, Keypair.create_from_uri("//Bob"), Keypair.create_from_uri("//Alice").ss58_address
    )
    [drift] = local.steps
    assert isinstance(drift, DriftStep)
    assert all(np.all(drift.correction[n] == 0.25) for n in seed_weights)  # c_i = 0 at first


@pytest.mark.parametrize(
    "damage, why",
    [
        ("missing", "the package has no control_variate.safetensors"),
        ("shape", "has shape"),
        ("nan", "NaN or infinite"),
        ("extra", "extra ['999.extra']"),
        ("garbage", "control variate refused"),
    ],
)
def test_a_bad_control_variate_is_refused_before_a_slot(seed_weights, damage, why) -> None:
    server = {n: np.zeros(t.shape, t.dtype) for n, t in seed_weights.items()}
    first = next(iter(server))
    if damage == "shape":
        server[first] = np.zeros((3, 3), np.float32)
    elif damage == "nan":
        server[first] = np.full(server[first].shape, np.nan, np.float32)
    elif damage == "extra":
        server["999.extra"] = np.zeros(2, np.float32)
    control = {"missing": None, "garbage": b"\x00" * 64}.get(damage, encode(server))
    with pytest.raises(TaskRefused, match="control variate refused") as refused:
        check_inputs(_inputs(seed_weights, control), 0)
    message = str(refused.value)
    assert why in message and "\n" not in message


@pytest.mark.parametrize(
    "round_settings, why",
    [
        ({"control_variate": {"file": "../c.safetensors", "lineage": "ab" * 16}}, "file"),
        ({"control_variate": {"file": "c.safetensors", "lineage": "not-hex"}}, "lineage"),
        (
            {
                "control_variate": {"file": "c.safetensors", "lineage": "ab" * 16},
                "proximal_mu": 0.1,
            },
            "not supported",
        ),
    ],
)
def test_bad_round_settings_are_refused(seed_weights, round_settings, why) -> None:
    from decentralml.creator import task_settings
    from decentralml.runtime.config import RunConfig

    raw = {**task_settings(RunConfig()).dump(), "round": round_settings}
    with pytest.raises(TaskRefused, match=why):
        TaskSettings.parse(raw)
    assert RoundSettings().control_variate is None


# --- end to end ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_scaffold_demo_keeps_c_the_mean_of_the_contributors_c_i(tmp_path) -> None:
    """``decentralml demo --strategy scaffold``: two rounds on 2-class shards. Round 2's
    package carries the c checkpointed after round 1, and after round 2 the server's c is the
    mean of the c_i the contributors keep on their side (the paper's invariant with every
    contributor answering): the two sides computed them independently."""
    state_dir = tmp_path / "contributor-state"
    data = small_config(tmp_path, **{"task.pays_amount": 1000, "simulation.runner": "threads"})
    config_path = tmp_path / "config.yaml"
    config_path.write_text(json.dumps(data))
    summary = tmp_path / "summary.json"
    done = subprocess.run(
        [
            sys.executable, "-m", "decentralml_cli", "demo", "--config", str(config_path),
            "--strategy", "scaffold", "--optimizer", "sgd", "--learning-rate", "0.05",
            "--rounds", "2", "--contributors", "3", "--partition", "shards",
            "--summary-json", str(summary),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**os.environ, "DECENTRALML_STATE_DIR": str(state_dir), "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rounds = json.loads(summary.read_text())["rounds"]
    assert [len(r["accepted"]) for r in rounds] == [3, 3]
    assert rounds[1]["accuracy"] > rounds[0]["accuracy"], rounds

    run = next((tmp_path / "storage" / "runs").iterdir())
    after_1 = decode((run / "checkpoints" / "round-1.strategy.safetensors").read_bytes())
    after_2 = decode((run / "checkpoints" / "round-2.strategy.safetensors").read_bytes())
    with tarfile.open(fileobj=io.BytesIO((run / "round-2" / "assets.tar.gz").read_bytes())) as tar:
        member = tar.extractfile(CONTROL_VARIATE_FILE)
        assert member is not None
        shipped = decode(member.read())
    names = sorted(shipped)
    for name in names:
        np.testing.assert_array_equal(shipped[name], after_1[f"c/{name}"], err_msg=name)
    kept = [decode(p.read_bytes()) for p in sorted((state_dir / "scaffold").iterdir())]
    assert len(kept) == 3
    for name in names:
        mean_c_i = np.mean([c_i[name] for c_i in kept], axis=0)
        scale = float(np.abs(after_2[f"c/{name}"]).max())
        assert scale > 0, name
        np.testing.assert_allclose(mean_c_i, after_2[f"c/{name}"], rtol=0, atol=1e-4 * scale)
