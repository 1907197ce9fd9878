"""Flower's side of bench_flower.py: the same federated job under Flower's own simulation.

Runs with Flower's venv (``.cache/flower-venv``, made by bench_flower.py), never with the
project's: Flower and Prefect pin incompatible packages. Imports nothing from decentralml:

    .cache/flower-venv/bin/python bench/flower_baseline.py DATA_DIR --rounds 4 --out OUT.json

``DATA_DIR`` holds what bench_flower.py exported from the project: ``shard_<i>.npz`` (each
contributor's examples, preprocessed as decentralml's contributors train on them),
``test.npz`` (the test split the creator reports on) and ``init.npz`` (the project's
``mnist_mlp`` weights, in ``model.weights`` order: the model built here must have their
shapes, and starts from them) and ``job.json`` (learning rate, batch size, epochs).

The job is decentralml's demo: every client trains each round (FedAvg, fraction 1.0), one
local epoch of Adam restarted each round, batch 32, and the server evaluates the new global
model on the test split after each round (centralised evaluation). Flower's legacy
``flwr.simulation.start_simulation`` runs the clients as Ray actors, one CPU each.

Timing is server-side: a FedAvg subclass stamps the end of each round's evaluation (time.time,
comparable across processes); clients report their fit's start and end. Writes ONE JSON
object to ``--out``: per round its end and its fits' (start, end), in seconds since this
script started (imports included), and the global model's test accuracy.
"""

from __future__ import annotations

import time

STARTED = time.time()  # before the heavy imports: they are part of the run

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import flwr  # noqa: E402
import numpy as np  # noqa: E402
from flwr.common import Context, ndarrays_to_parameters  # noqa: E402
from flwr.server.strategy import FedAvg  # noqa: E402


def build_model(learning_rate: float):
    """decentralml's ``mnist_mlp`` (decentralml/ml/workloads/mnist_mlp.py), layer for layer."""
    import tensorflow as tf

    model = tf.keras.models.Sequential(
        [
            tf.keras.Input(shape=(28, 28)),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(128, activation="relu"),
            tf.keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
    )
    return model


def restart_optimizer(model) -> None:
    """Adam as a fresh one: moments and iteration count zeroed. Keras 3 keeps the learning
    rate among ``optimizer.variables`` too; zeroing it would stop all training."""
    for variable in model.optimizer.variables:
        if "learning_rate" not in variable.path:
            variable.assign(np.zeros(variable.shape, variable.dtype))


_ACTOR_MODEL: list = []  # one compiled model per Ray actor process, reused by its clients


class ShardClient(flwr.client.NumPyClient):
    """One contributor: its shard, one local fit from the global weights per round."""

    def __init__(self, index: int, data_dir: Path, job: dict) -> None:
        self.index, self.data_dir, self.job = index, data_dir, job

    def model(self):
        if not _ACTOR_MODEL:
            _ACTOR_MODEL.append(build_model(self.job["learning_rate"]))
        return _ACTOR_MODEL[0]

    def fit(self, parameters, config):
        import keras

        began = time.time()
        with np.load(self.data_dir / f"shard_{self.index}.npz") as shard:
            x, y = shard["x"], shard["y"]
        model = self.model()
        model.set_weights(parameters)
        restart_optimizer(model)
        keras.utils.set_random_seed(self.index + 1000 * int(config["round"]))
        model.fit(
            x, y, epochs=self.job["epochs"], batch_size=self.job["batch_size"], verbose=0,
            shuffle=True,
        )  # fmt: skip
        return model.get_weights(), len(y), {"began": began, "ended": time.time()}


class TimedFedAvg(FedAvg):
    """FedAvg with server-side timestamps: when each round's fits came back and when its
    centralised evaluation ended (the round's end)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rounds: dict[int, dict] = {}

    def aggregate_fit(self, server_round, results, failures):
        record = self.rounds.setdefault(server_round, {"round": server_round})
        record["failures"] = len(failures)
        record["fits"] = [  # seconds since this script started
            (round(r.metrics["began"] - STARTED, 3), round(r.metrics["ended"] - STARTED, 3))
            for _, r in results
        ]
        return super().aggregate_fit(server_round, results, failures)

    def evaluate(self, server_round, parameters):
        outcome = super().evaluate(server_round, parameters)
        record = self.rounds.setdefault(server_round, {"round": server_round})
        record["end_s"] = round(time.time() - STARTED, 2)
        if outcome is not None:
            record["loss"] = round(float(outcome[0]), 4)
            record["accuracy"] = round(float(outcome[1]["accuracy"]), 4)
        return outcome


def centralised_evaluation(data_dir: Path, learning_rate: float):
    """The server's evaluation of each global model on the test split."""
    with np.load(data_dir / "test.npz") as test:
        x, y = test["x"], test["y"]
    model = build_model(learning_rate)

    def evaluate(server_round, parameters, config):
        model.set_weights(parameters)
        loss, accuracy = model.evaluate(x, y, batch_size=1024, verbose=0)
        return float(loss), {"accuracy": float(accuracy)}

    return evaluate


def initial_weights(data_dir: Path, learning_rate: float) -> list[np.ndarray]:
    """The project's initial weights, checked against this script's model: same shapes in
    the same order, or the two systems would not train the same model."""
    with np.load(data_dir / "init.npz") as init:
        weights = [init[f"arr_{i}"] for i in range(len(init.files))]
    ours = [w.shape for w in build_model(learning_rate).get_weights()]
    if ours != [w.shape for w in weights]:
        raise SystemExit(f"model mismatch: Flower's {ours} vs the project's exported weights")
    return weights


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    data_dir = args.data_dir.resolve()
    job = json.loads((data_dir / "job.json").read_text())
    clients = int(job["contributors"])

    def client_fn(context: Context):
        index = int(context.node_config["partition-id"])
        return ShardClient(index, data_dir, job).to_client()

    strategy = TimedFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,  # centralised evaluation only
        min_fit_clients=clients,
        min_available_clients=clients,
        evaluate_fn=centralised_evaluation(data_dir, job["learning_rate"]),
        on_fit_config_fn=lambda server_round: {"round": server_round},
        initial_parameters=ndarrays_to_parameters(initial_weights(data_dir, job["learning_rate"])),
    )
    flwr.simulation.start_simulation(
        client_fn=client_fn,
        num_clients=clients,
        config=flwr.server.ServerConfig(num_rounds=args.rounds),
        strategy=strategy,
        client_resources={"num_cpus": 1, "num_gpus": 0.0},
    )
    rounds = [strategy.rounds[r] for r in sorted(strategy.rounds)]
    args.out.write_text(json.dumps({"flwr": flwr.__version__, "rounds": rounds}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
