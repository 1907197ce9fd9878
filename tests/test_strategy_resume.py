"""Stateful strategies end to end: ``decentralml demo --strategy fedadam``, and a FedAdam
training killed between rounds and resumed, which ends with the same global weights as the
same training run without interruption: the strategy's moments (m, v) are checkpointed beside
the global weights and loaded on resume.

Two contributors, two rounds, one epoch, fixed seeds, in two separate worlds (marketplace and
storage each) so that both trainings get the same task ids, hence the same contributor seeds.
The creator runs its real flow in this process; the crash is DECENTRALML_CRASH_AT's
``interrupt`` mode (KeyboardInterrupt, as Ctrl-C) right after round 1 is settled, and the
resumed creator is a new session (a new strategy object, nothing carried in memory). The two
contributors train one after the other in a thread, so their results do not depend on how
threads interleave.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from decentralml.contributor import Contributor, find_open_task
from decentralml.io.weights import decode
from decentralml.runtime.backends import contributor_keypair, open_marketplace, open_store
from tests.helpers import write_config

pytestmark = [pytest.mark.slow]

ROUNDS, CONTRIBUTORS = 2, 2


def _config(tmp_path: Path):
    tmp_path.mkdir()
    _, config = write_config(
        tmp_path,
        rounds=ROUNDS,
        contributors=20,  # 20 partitions of the data: small shards, quick epochs
        strategy={"name": "fedadam", "eta": 0.01, "tau": 1e-3},
        **{
            "task.max_assignments": CONTRIBUTORS,
            "task.validation_strategy": "AutoAccept",
            "data.holdout_examples": 1000,
        },
    )
    return config


def _contributors(config, stop: threading.Event) -> threading.Thread:
    """Both contributors work on each new task, one after the other, until ``stop``."""
    from flows.contributor import contribute

    market, store = open_marketplace(config.marketplace), open_store(config.storage)
    agents = [
        Contributor(market, store, contributor_keypair(config.marketplace, i), i)
        for i in range(CONTRIBUTORS)
    ]

    def work() -> None:
        done: set[int] = set()
        while not stop.is_set():
            task = find_open_task(market, agents[0].keypair, done)
            if task is None:
                stop.wait(0.2)
                continue
            done.add(task.task_id)
            for agent in agents:
                contribute(agent, task)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def _train(config, start: dict[str, np.ndarray], crash_at: str | None, monkeypatch) -> None:
    from decentralml.creator.session import open_session
    from flows.creator import run_training

    session = open_session(config, run="adam")
    session.set_global(start)
    if crash_at:
        monkeypatch.setenv("DECENTRALML_CRASH_AT", crash_at)
        monkeypatch.setenv("DECENTRALML_CRASH_MODE", "interrupt")
    try:
        run_training(config, session)
    finally:
        monkeypatch.delenv("DECENTRALML_CRASH_AT", raising=False)


def _final(config) -> dict[str, np.ndarray]:
    store = open_store(config.storage)
    return decode(store.get(store.checkpoint_url("adam", ROUNDS)))


def test_a_killed_fedadam_training_resumes_with_its_moments(
    tmp_path, prefect_harness, monkeypatch
) -> None:
    import keras

    from decentralml.creator.session import open_session
    from decentralml.ml.models import build_model, model_tensors
    from flows.creator import run_training

    keras.utils.set_random_seed(7)
    start = model_tensors(build_model("mnist_mlp"))
    straight, interrupted = _config(tmp_path / "straight"), _config(tmp_path / "interrupted")
    stop = threading.Event()
    workers = [_contributors(straight, stop), _contributors(interrupted, stop)]
    try:
        _train(straight, start, None, monkeypatch)
        with pytest.raises(KeyboardInterrupt):
            _train(interrupted, start, "settled", monkeypatch)  # after round 1 is paid
        store = open_store(interrupted.storage)
        assert store.exists(store.strategy_checkpoint_url("adam", 1))
        assert not store.exists(store.checkpoint_url("adam", 2))
        resumed = open_session(interrupted, run="adam")  # a new strategy object, zero state
        reports = run_training(interrupted, resumed)
        assert [r.round_number for r in reports] == [2]
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=120)

    # Measured: identical to the bit; without loading the moments the resumed training ends
    # up to 6.7e-3 away (83 % of the weights differ by more than 1e-6).
    expected, got = _final(straight), _final(interrupted)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-6, err_msg=name)
    moments = decode(store.get(store.strategy_checkpoint_url("adam", 1)))
    assert sorted(moments) == sorted(f"{b}/{name}" for b in ("m", "v") for name in start)
    assert any(np.abs(m).max() > 1e-4 for k, m in moments.items() if k.startswith("m/"))


def test_the_demo_runs_with_fedadam(tmp_path) -> None:
    """``decentralml demo --strategy fedadam``: two rounds end to end, state carried between
    them (measured: test accuracy 0.67 after round 1 and 0.91 after round 2, 55-80 s)."""
    import json

    from tests.test_cli import run_cli

    path, _ = write_config(tmp_path, **{"task.pays_amount": 1000, "simulation.runner": "threads"})
    summary_path = tmp_path / "summary.json"
    done = run_cli(
        "demo", "--config", str(path), "--strategy", "fedadam", "--rounds", "2",
        "--contributors", "2", "--summary-json", str(summary_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rounds = json.loads(summary_path.read_text())["rounds"]
    assert [len(r["accepted"]) for r in rounds] == [2, 2]
    assert rounds[1]["accuracy"] > max(rounds[0]["accuracy"], 0.8), rounds
    run = next((tmp_path / "storage" / "runs").iterdir())
    assert (run / "checkpoints" / "round-2.strategy.safetensors").is_file()
