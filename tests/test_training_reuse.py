"""A compiled model reused across contributions trains exactly as a fresh one would
(decentralml.ml.training: the model pool and ``restart``), on real MNIST with real Keras."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from decentralml.strategies.fedprox import ProximalStep

pytestmark = pytest.mark.slow

SEED = 11


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    from decentralml.ml.data import load_mnist, normalize

    (x, y), _ = load_mnist()
    return normalize(x[:1500]), y[:1500]


@pytest.fixture(scope="module")
def starts() -> tuple[dict, dict]:
    """Two different global weights: a round's, then the next round's."""
    import keras

    from decentralml.ml.models import build_model, model_tensors

    keras.utils.set_random_seed(1)
    first = model_tensors(build_model("mnist_mlp"))
    keras.utils.set_random_seed(2)
    return first, model_tensors(build_model("mnist_mlp"))


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch):
    """An empty pool for this test, so models from other tests do not count."""
    from decentralml.ml import training

    fresh = training._ModelPool()
    monkeypatch.setattr(training, "_models", fresh)
    return fresh


def _fresh_fit(start: dict, x: np.ndarray, y: np.ndarray, **options: object) -> dict:
    """What a contribution trained before models were reused: build, compile, load, fit."""
    import keras

    from decentralml.ml.models import model_tensors
    from decentralml.ml.training import local_model

    keras.utils.set_random_seed(SEED)
    model = local_model(
        "mnist_mlp",
        start,
        learning_rate=float(options["learning_rate"]),
        optimizer=str(options.get("optimizer", "adam")),
        steps=options.get("steps", ()),
    )
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, shuffle=True)
    return model_tensors(model)


def _assert_close(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=2e-5, err_msg=name)


def _idle(pool) -> list:
    return [model for models in pool._idle.values() for model in models]


@pytest.mark.parametrize(
    "options",
    [
        {"learning_rate": 0.001},
        {"learning_rate": 0.05, "optimizer": "sgd"},
        {"learning_rate": 0.001, "steps": (ProximalStep(0.5),)},
    ],
    ids=["adam", "sgd", "fedprox"],
)
def test_a_reused_model_trains_as_a_fresh_one(pool, data, starts, options: dict) -> None:
    from decentralml.ml.training import train_contribution

    x, y = data
    first, second = starts
    # A first contribution leaves moments, a step count, anchors and weights behind ...
    train_contribution("mnist_mlp", first, x[::-1], y[::-1], epochs=1, batch_size=32,
                       seed=99, **options)  # fmt: skip
    used = _idle(pool)
    assert len(used) == 1
    # ... none of which may reach the next contribution on the same model.
    reused = train_contribution(
        "mnist_mlp", second, x, y, epochs=1, batch_size=32, seed=SEED, **options
    )
    assert _idle(pool) == used  # the same model object: no new build, no new trace
    _assert_close(reused.tensors, _fresh_fit(second, x, y, **options))
    assert reused.num_examples == len(y)


def test_what_the_trace_depends_on_keys_the_pool(pool, data, starts) -> None:
    from decentralml.ml.training import train_contribution

    x, y = data[0][:200], data[1][:200]
    for options in (
        {"learning_rate": 0.001},
        {"learning_rate": 0.002},
        {"learning_rate": 0.001, "optimizer": "sgd"},
        {"learning_rate": 0.001, "steps": (ProximalStep(0.1),)},
        {"learning_rate": 0.001, "steps": (ProximalStep(0.2),)},
        {"learning_rate": 0.001},
    ):
        train_contribution("mnist_mlp", starts[0], x, y, epochs=1, batch_size=32, **options)
    assert len(pool._idle) == 5 and len(_idle(pool)) == 5


def test_concurrent_fits_never_share_a_model(pool, data, starts) -> None:
    from decentralml.ml import training

    x, y = data[0][:300], data[1][:300]
    inside: set[int] = set()
    overlap = threading.Barrier(3, timeout=60)
    lent: list[int] = []
    real_restart = training.restart

    def restart_then_meet(model, start, *rest, **options) -> None:  # all three at once
        real_restart(model, start, *rest, **options)
        lent.append(id(model))
        overlap.wait()

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "restart", restart_then_meet)
        threads = [
            threading.Thread(
                target=training.train_contribution,
                args=("mnist_mlp", starts[0], x, y),
                kwargs={"epochs": 1, "batch_size": 32, "learning_rate": 0.001},
            )
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    inside.update(lent)
    assert len(inside) == 3 and len(_idle(pool)) == 3


def test_a_carried_optimizer_state_continues_adam_where_it_stopped(data, starts) -> None:
    """``restart`` with an ``optimizer_state`` (a contributor carrying Adam's moments and step
    count to its next round, bench_learning's "carried" rows) trains as one model fitting on
    without a restart; restarted instead, the same fit ends elsewhere."""
    import keras

    from decentralml.ml.models import model_tensors
    from decentralml.ml.training import ReusableTrainer, local_model, optimizer_state

    x, y = data
    first, second = starts
    keras.utils.set_random_seed(SEED)
    continuing = local_model("mnist_mlp", first, learning_rate=0.001)
    continuing.fit(x, y, epochs=1, batch_size=32, verbose=0, shuffle=True)
    keras.utils.set_random_seed(SEED + 1)
    continuing.set_weights([second[name] for name in model_tensors(continuing)])
    continuing.fit(x, y, epochs=1, batch_size=32, verbose=0, shuffle=True)

    trainer = ReusableTrainer("mnist_mlp", 0.001)
    trainer.fit(first, x, y, seed=SEED)
    kept = optimizer_state(trainer.model)
    assert any(np.abs(value).max() > 0 for value in kept)  # moments and a step count
    carried = trainer.fit(second, x, y, seed=SEED + 1, optimizer_state=kept)
    _assert_close(carried, model_tensors(continuing))
    restarted = trainer.fit(second, x, y, seed=SEED + 1)
    assert max(np.abs(restarted[n] - carried[n]).max() for n in carried) > 1e-3
