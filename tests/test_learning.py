"""Learning quality: the reusable contributor trainer the simulations and bench/bench_learning.py
use, and the bench itself (its 2-round smoke run on real MNIST)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "bench_learning.py"


def _bench(*args: str, timeout: float = 600, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, str(BENCH), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("optimizer", "mu"), [("sgd", 0.5), ("adam", 0.0)], ids=["sgd-fedprox", "adam"]
)
def test_a_reused_trainer_fits_like_a_fresh_contribution(optimizer: str, mu: float) -> None:
    """Two successive fits on one compiled model give the weights ``train_contribution`` gives
    on a fresh model: the optimizer is the task's, restarted, and FedProx's proximal term is
    re-anchored at each fit's starting weights (a stale anchor would pull towards the first)."""
    import keras

    from decentralml.ml.models import build_model, model_tensors
    from decentralml.ml.training import ReusableTrainer, train_contribution
    from decentralml.strategies.base import update_norm

    rng = np.random.default_rng(0)
    x = rng.random((256, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 256).astype(np.uint8)
    keras.utils.set_random_seed(1)
    first = model_tensors(build_model("mnist_mlp"))
    second = {name: t + 0.05 for name, t in first.items()}
    # One batch per epoch: the shuffle's order cannot matter, the optimizer's state does.
    options = {"epochs": 3, "batch_size": 256, "learning_rate": 0.05, "optimizer": optimizer}

    from decentralml.strategies.fedprox import ProximalStep

    steps = (ProximalStep(mu),) if mu else ()
    trainer = ReusableTrainer("mnist_mlp", 0.05, optimizer=optimizer, steps=steps)
    assert isinstance(trainer.model.optimizer, keras.optimizers.get(optimizer).__class__)
    for start in (first, second):
        reused = trainer.fit(start, x, y, epochs=3, batch_size=256, seed=7)
        fresh = train_contribution("mnist_mlp", start, x, y, **options, steps=steps, seed=7)
        assert update_norm(reused, start) > 0.01
        for name, tensor in fresh.tensors.items():
            np.testing.assert_allclose(reused[name], tensor, atol=1e-5, err_msg=name)


def test_the_bench_names_a_bad_selection_in_one_line() -> None:
    done = _bench("--only", "no-such-configuration", timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: --only 'no-such-configuration' matches no configuration (see --list)"
    ]


@pytest.mark.slow
def test_the_learning_bench_quick_run_learns(tmp_path: Path) -> None:
    """``--quick``: 2 rounds of IID FedAvg with 10 contributors on real MNIST and 1 centralised
    epoch; its last line is the JSON of figures, the PNG is written, and round 2 beats round 1."""
    done = _bench("--quick", "--images", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    (run,) = figures["configurations"]
    assert run["name"] == "iid/fedavg-adam-1e-3" and run["rounds"] == 2
    first, second = run["accuracy"]
    assert 0.5 < first < second, run["accuracy"]
    assert figures["centralised"]["accuracy"][0] > 0.9
    assert "| iid/fedavg-adam-1e-3 | 0.975 | not reached |" in done.stdout
    assert (tmp_path / "learning-iid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_replot_joins_finished_and_cut_short_runs(tmp_path: Path) -> None:
    """A sweep split over processes is tabled and drawn as one: a finished run's JSON line,
    and a run stopped by the clock read from its per-round lines."""
    finished = {
        "bench": "learning",
        "centralised": {
            "name": "centralised/adam-1e-3",
            "target": 0.975,
            "accuracy": [0.96, 0.97, 0.976],
            "seconds": 30.0,
        },
        "configurations": [
            {
                "name": "iid/fedavg-adam-3e-3",
                "target": 0.975,
                "accuracy": [0.93, 0.98],
                "seconds": 9,
            }
        ],
    }
    (tmp_path / "a.out").write_text("| table |\n" + json.dumps(finished) + "\n")
    (tmp_path / "b.err").write_text(
        "centralised epoch 1: 0.9\n"
        "shards/fedavg-sgd-0.1 round 1: 0.5000 (20 s)\n"
        "shards/fedavg-sgd-0.1 round 2: 0.7000 (41 s)\n"
    )
    done = _bench("--replot", "a.out", "b.err", "--images", ".", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert "| iid/fedavg-adam-3e-3 | 0.975 | 2 | 0.9800 | 0.9800 | 2 | 9 s |" in lines
    assert "| shards/fedavg-sgd-0.1 | 0.950 | not reached | 0.7000 | 0.7000 | 2 | 41 s |" in lines
    figures = json.loads(lines[-1])
    assert figures["centralised"]["rounds_to_target"] == 3
    assert [c["name"] for c in figures["configurations"]] == [
        "iid/fedavg-adam-3e-3",
        "shards/fedavg-sgd-0.1",
    ]
    for partition in ("iid", "shards"):
        assert (tmp_path / f"learning-{partition}.png").read_bytes()[:4] == b"\x89PNG"
