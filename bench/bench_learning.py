"""Learning-quality benchmark: rounds to a target test accuracy, per partition and strategy,
against centralised training of the same model in the same run (issue 10, target 4).

Run from the project root:

    .venv/bin/python bench/bench_learning.py                  # the whole sweep (long)
    .venv/bin/python bench/bench_learning.py --only iid/      # configurations whose name has iid/
    .venv/bin/python bench/bench_learning.py --quick          # 2-round smoke run

What is measured is how well the platform's own training code learns, not how fast a round is
orchestrated: every contributor's local fit is decentralml.ml.training's (``ReusableTrainer``,
the same optimizer, restart, FedProx proximal term and SCAFFOLD correction as
``train_contribution``, on one compiled model per configuration), the aggregation is the
strategy's ``aggregate`` from decentralml/strategies/ with its ``configure_round`` settings
and ``round_tensors`` (SCAFFOLD's c; each contributor's c_i is updated by the contributor's
own ``contributor_control_variate`` and kept in memory here, on disk in the platform), and
the shards are
decentralml.ml.data.federated's ``contributor_shard`` under the task's data settings (the creator
keeps ``holdout_examples`` out of the pool). Prefect, the marketplace, storage and the
results' screening are left out: they neither change the weights of an honest round nor are
what this bench measures, and they would cost minutes per round.

The setup follows McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data" (FedAvg), and differs from it: the seed model (Flatten · Dense(128) ·
Dense(10)) rather than the 2NN or CNN, 10 contributors all taking part each round (C = 1.0),
E = 1 local epoch, B = 32, 55 000 training examples (5 000 kept by the creator), and the
shards cut inside each class (decentralml/ml/data/partition.py). One seed per configuration.

"shared slice" is Zhao et al. 2018, "Federated Learning with Non-IID Data": every contributor
also trains on the same 500 (or 2 000) examples of the creator's held-out split, the slice a
task with ``data.shared_slice: 500`` ships in its package. It goes through the platform's code: the
creator's ``shared_slice_files`` writes the package's file, the contributor's ``read_slice``
checks and preprocesses it and ``with_slice`` adds it to each shard.

"carried" rows keep each contributor's optimizer state (Adam's moments and step count) from
its previous round (``training.optimizer_state``) instead of restarting it.

The baseline is the seed model trained centrally (Adam 1e-3, batch 32, the seed's settings)
on the same 55 000 examples for ``--central-epochs`` epochs, evaluated after each epoch.

Output: a Markdown table (rounds to target, final and best accuracy), one PNG of accuracy per
round per partition (``--images``, default docs/images/learning-<partition>.png), then ONE
JSON line with every figure. ``--replot OUT...`` draws and tables the saved outputs of runs
split over several processes as one, without training.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

    from decentralml.runtime.config import RunConfig

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CONTRIBUTORS = 10
SEED = 42
EPOCHS, BATCH_SIZE = 1, 32  # each contributor's local training: E = 1, B = 32
SLICES = (500, 2000)
"""Sizes of the shared slice (examples of the creator's held-out split every contributor gets)
in the shared-slice runs."""
ROUNDS = {"iid": 10, "shards": 30, "shards-disjoint": 50}
TARGETS = {"iid": 0.975, "shards": 0.95, "shards-disjoint": 0.95}


@dataclass(frozen=True)
class Setup:
    """One configuration: partition, local optimizer and learning rate, server strategy."""

    partition: str
    label: str
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    strategy: str = "fedavg"
    strategy_args: dict[str, float] = field(default_factory=dict)
    shared_slice: int = 0
    """Examples in the task's shared slice; 0: none."""
    carry_optimizer: bool = False
    """Each contributor starts its local fit from its own optimizer state (Adam's moments and
    step count) left by its previous round, instead of a restarted optimizer."""
    model: str = "mnist_mlp"
    target: float | None = None
    """Accuracy to reach; None: the partition's (TARGETS)."""

    @property
    def name(self) -> str:
        return f"{self.partition}/{self.label}"

    @property
    def goal(self) -> float:
        return self.target if self.target is not None else TARGETS[self.partition]


def _non_iid(partition: str) -> list[Setup]:
    return [
        Setup(partition, "fedavg-adam-1e-3"),  # today's default: Adam restarted each round
        Setup(partition, "fedavg-adam-3e-4", learning_rate=3e-4),
        Setup(partition, "fedavg-adam-1e-3-carried", carry_optimizer=True),
        *(Setup(partition, f"fedavg-sgd-{lr:g}", "sgd", lr) for lr in (0.03, 0.1, 0.3)),
        Setup(partition, "fedprox-0.1-sgd-0.1", "sgd", 0.1, "fedprox", {"proximal_mu": 0.1}),
        Setup(partition, "fedprox-0.01-sgd-0.1", "sgd", 0.1, "fedprox", {"proximal_mu": 0.01}),
        Setup(partition, "fedavgm-sgd-0.1", "sgd", 0.1, "fedavgm"),
        Setup(partition, "fedadam-0.01-sgd-0.1", "sgd", 0.1, "fedadam", {"eta": 0.01}),
        Setup(partition, "fedyogi-0.01-sgd-0.1", "sgd", 0.1, "fedyogi", {"eta": 0.01}),
        *(
            Setup(partition, f"scaffold-sgd-{lr:g}", "sgd", lr, "scaffold")
            for lr in (0.03, 0.1, 0.3)
        ),
        # SCAFFOLD with a server step η_g > 1 (Karimireddy et al. 2020, eq. 5): the averaged
        # drift-corrected move is taken further than the contributors' mean.
        *(
            Setup(
                partition,
                f"scaffold-sgd-0.1-server-{eta:g}",
                "sgd",
                0.1,
                "scaffold",
                {"server_learning_rate": eta},
            )
            for eta in (1.5, 2.0)
        ),
        *(
            Setup(partition, f"shared-slice-{n}-sgd-0.1", "sgd", 0.1, shared_slice=n)
            for n in SLICES
        ),
    ]


CNN_TARGET = 0.99
"""The CNN workload's IID target (McMahan et al. 2017 report 99 % for their CNN)."""

SETUPS: list[Setup] = [
    Setup("iid", "fedavg-adam-1e-3"),
    Setup("iid", "fedavg-adam-3e-3", learning_rate=3e-3),
    Setup("iid", "fedavg-sgd-0.1", "sgd", 0.1),
    Setup("iid", "fedavg-adam-1e-3-carried", carry_optimizer=True),
    Setup("iid", "cnn-fedavg-adam-1e-3", model="mnist_cnn", target=CNN_TARGET),
    Setup("iid", "cnn-fedavg-adam-3e-3", learning_rate=3e-3, model="mnist_cnn", target=CNN_TARGET),
    *_non_iid("shards"),
    *_non_iid("shards-disjoint"),
]


@dataclass
class Curve:
    """Test accuracy after each round (or epoch, for the baseline)."""

    name: str
    target: float
    accuracy: list[float]
    seconds: float

    def rounds_to_target(self) -> int | None:
        return next((i for i, a in enumerate(self.accuracy, 1) if a >= self.target), None)

    @classmethod
    def from_summary(cls, figures: dict) -> Curve:
        return cls(figures["name"], figures["target"], figures["accuracy"], figures["seconds"])

    def summary(self) -> dict[str, object]:
        return {
            "name": self.name,
            "rounds": len(self.accuracy),
            "target": self.target,
            "rounds_to_target": self.rounds_to_target(),
            "final": round(self.accuracy[-1], 4),
            "best": round(max(self.accuracy), 4),
            "accuracy": [round(a, 4) for a in self.accuracy],
            "seconds": round(self.seconds, 1),
        }


class Lab:
    """The data of the run, loaded once: each partition's shards, the creator's held-out
    split, the test split, and one model to score weights on."""

    def __init__(self) -> None:
        from decentralml.creator import task_settings
        from decentralml.ml.data.federated import creator_holdout, test_split
        from decentralml.ml.models import build_model

        self._data = {p: task_settings(_config(p)).data for p in ROUNDS}
        iid = self._data["iid"]
        self.holdout = creator_holdout(iid.holdout_examples, iid.seed)  # what validators see
        self.test = test_split()
        self.scorer = build_model("mnist_mlp")  # the seed model's, also bench_attacked_learning's
        self._scorers: dict[str, keras.Model] = {"mnist_mlp": self.scorer}
        self._build = build_model
        self._shards: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}

    def shards(self, partition: str) -> list[tuple[np.ndarray, np.ndarray]]:
        from decentralml.ml.data.federated import contributor_shard

        if partition not in self._shards:
            data = self._data[partition]
            self._shards[partition] = [contributor_shard(data, i) for i in range(CONTRIBUTORS)]
        return self._shards[partition]

    def with_slice(self, shards: Sequence[tuple[np.ndarray, np.ndarray]], examples: int) -> list:
        """Each contributor's shard plus the task's shared slice of ``examples``, as the
        creator packages it and the contributor reads and adds it."""
        from decentralml.creator import shared_slice_files, task_settings
        from decentralml.ml.data.shared_slice import read_slice, with_slice

        config = _config("iid", examples)
        data = task_settings(config).data
        assert data.shared_slice is not None
        shared = read_slice(shared_slice_files(config)[data.shared_slice.file], data)
        return [with_slice(shard, shared) for shard in shards]

    def accuracy(self, tensors: dict[str, np.ndarray], model: str = "mnist_mlp") -> float:
        from decentralml.ml.models import evaluate, set_model_tensors

        if model not in self._scorers:
            self._scorers[model] = self._build(model)
        scorer = self._scorers[model]
        set_model_tensors(scorer, dict(tensors))
        return float(evaluate(scorer, *self.test)["accuracy"])


def _config(partition: str, shared_slice: int = 0) -> RunConfig:
    """The run's config for ``partition``: the defaults (5 000 held-out examples, seed 42)."""
    from decentralml.runtime.config import parse_config

    data = {"partition": partition, "shared_slice": shared_slice}
    return parse_config({"contributors": CONTRIBUTORS, "data": data})


def initial_tensors(model: str = "mnist_mlp") -> dict[str, np.ndarray]:
    """The model's starting weights, the same for every configuration of that model."""
    import keras

    from decentralml.ml.models import build_model, model_tensors

    keras.utils.set_random_seed(SEED)
    return model_tensors(build_model(model))


def federated(lab: Lab, setup: Setup, rounds: int, log: Callable[[str], None] = print) -> Curve:
    """``rounds`` rounds of ``setup`` with every contributor taking part; test accuracy after
    each aggregation."""
    from decentralml.ml.task_settings import RoundSettings
    from decentralml.ml.training import ReusableTrainer, optimizer_state
    from decentralml.strategies import Contribution, registry
    from decentralml.strategies.scaffold import DriftStep, contributor_control_variate, local_steps

    shards = lab.shards(setup.partition)
    if setup.shared_slice:
        shards = lab.with_slice(shards, setup.shared_slice)
    strategy = registry[setup.strategy](**setup.strategy_args)
    strategy.use_local_training(EPOCHS, BATCH_SIZE, setup.learning_rate)
    # The strategy's own contributor side, as a contributor builds it from the package.
    step = type(strategy).local_step(RoundSettings.model_validate(strategy.configure_round(1)))
    scaffold = isinstance(step, DriftStep)  # its correction is per contributor, kept here
    trainer = ReusableTrainer(
        setup.model,
        setup.learning_rate,
        optimizer=setup.optimizer,
        steps=(step,) if step is not None else (),
    )
    global_tensors = initial_tensors(setup.model)
    own = [{n: np.zeros_like(t) for n, t in global_tensors.items()} for _ in shards]  # c_i
    kept: list[list[np.ndarray] | None] = [None] * len(shards)  # carried optimizer states
    accuracy: list[float] = []
    start = time.perf_counter()
    for r in range(1, rounds + 1):
        server = strategy.round_tensors(r, global_tensors)  # SCAFFOLD's c; empty otherwise
        contributions = []
        for i, (x, y) in enumerate(shards):
            correction = {n: server[n] - own[i][n] for n in server} if scaffold else None
            fit_steps = (DriftStep(correction=correction),) if scaffold else None
            trained = trainer.fit(
                global_tensors,
                x,
                y,
                epochs=EPOCHS,
                batch_size=BATCH_SIZE,
                seed=1000 * r + i,
                steps=fit_steps,
                optimizer_state=kept[i],
            )
            if setup.carry_optimizer:
                kept[i] = optimizer_state(trainer.model)
            if scaffold:  # the contributor's c_i update, as decentralml.contributor does it
                steps = local_steps(len(y), EPOCHS, BATCH_SIZE)
                own[i] = contributor_control_variate(
                    own[i], server, global_tensors, trained, steps, setup.learning_rate
                )
            contributions.append(Contribution(trained, len(y)))
        global_tensors = strategy.aggregate(r, global_tensors, contributions)
        accuracy.append(lab.accuracy(global_tensors, setup.model))
        log(f"{setup.name} round {r}: {accuracy[-1]:.4f} ({time.perf_counter() - start:.0f} s)")
    return Curve(setup.name, setup.goal, accuracy, time.perf_counter() - start)


def centralised(lab: Lab, epochs: int, log: Callable[[str], None] = print) -> Curve:
    """The seed model trained on the union of the shards (Adam 1e-3, batch 32), evaluated after
    each epoch: what federation is compared with."""
    import keras

    from decentralml.ml.models import build_model, model_tensors, set_model_tensors

    x = np.concatenate([s[0] for s in lab.shards("iid")])
    y = np.concatenate([s[1] for s in lab.shards("iid")])
    keras.utils.set_random_seed(SEED)
    model = build_model("mnist_mlp")
    set_model_tensors(model, initial_tensors())
    accuracy: list[float] = []
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.fit(x, y, epochs=1, batch_size=32, verbose=0, shuffle=True)
        accuracy.append(lab.accuracy(model_tensors(model)))
        log(f"centralised epoch {epoch}: {accuracy[-1]:.4f}")
    return Curve("centralised/adam-1e-3", TARGETS["iid"], accuracy, time.perf_counter() - start)


def table(curves: Sequence[Curve]) -> str:
    rows = [
        "| configuration | target | rounds to target | final | best | rounds run | time |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in curves:
        reached = c.rounds_to_target()
        rows.append(
            f"| {c.name} | {c.target:.3f} | {reached if reached else 'not reached'} | "
            f"{c.accuracy[-1]:.4f} | {max(c.accuracy):.4f} | {len(c.accuracy)} | "
            f"{c.seconds:.0f} s |"
        )
    return "\n".join(rows)


def plot(curves: Sequence[Curve], baseline: Curve | None, folder: Path) -> list[str]:
    """One PNG per partition: accuracy per round of each configuration, the target, and the
    centralised curve per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for partition in dict.fromkeys(c.name.split("/")[0] for c in curves):
        fig, ax = plt.subplots(figsize=(8, 5))
        for c in (c for c in curves if c.name.startswith(partition + "/")):
            ax.plot(range(1, len(c.accuracy) + 1), c.accuracy, marker=".", label=c.name)
        if baseline is not None:
            ax.plot(
                range(1, len(baseline.accuracy) + 1),
                baseline.accuracy,
                "k--",
                label=f"{baseline.name} (per epoch)",
            )
        ax.axhline(TARGETS[partition], color="grey", linewidth=0.8)
        ax.set(
            xlabel="round (1 local epoch, B = 32, 10 contributors)",
            ylabel="test accuracy",
            title=f"MNIST, seed MLP, partition {partition}",
            ylim=(max(0.0, min(min(c.accuracy) for c in curves) - 0.02), 1.0),
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        path = folder / f"learning-{partition}.png"
        fig.savefig(path, dpi=90, bbox_inches="tight")
        plt.close(fig)
        written.append(str(path))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of iid/fedavg-adam-1e-3")
    parser.add_argument(
        "--only", default="", help="comma-separated substrings of names to run, in that order"
    )
    parser.add_argument("--rounds", type=int, help="rounds for every configuration")
    parser.add_argument("--central-epochs", type=int, default=10)
    parser.add_argument("--images", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--list", action="store_true", help="print the configuration names")
    parser.add_argument(
        "--replot",
        type=Path,
        nargs="+",
        metavar="OUTPUT",
        help="no training: table and PNGs from the saved stdout of earlier runs",
    )
    args = parser.parse_args(argv)

    wanted = [s for s in args.only.split(",") if s]
    # In the order asked for: a sweep cut short by the clock has run what came first.
    chosen: dict[str, Setup] = {}
    for setup in [s for w in wanted for s in SETUPS if w in s.name] if wanted else SETUPS:
        chosen.setdefault(setup.name, setup)
    setups = list(chosen.values())
    if args.quick:
        setups, args.rounds, args.central_epochs = SETUPS[:1], 2, 1
    if args.list:
        print("\n".join(s.name for s in SETUPS))
        return 0
    if not setups:
        print(f"error: --only {args.only!r} matches no configuration (see --list)", file=sys.stderr)
        return 2
    if (args.rounds is not None and args.rounds < 1) or args.central_epochs < 0:
        print("error: --rounds must be >= 1 and --central-epochs >= 0", file=sys.stderr)
        return 2

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.replot:
        baseline, curves = replot(args.replot)
    else:
        lab = Lab()
        baseline = centralised(lab, args.central_epochs, log) if args.central_epochs else None
        curves = []
        for setup in setups:  # each curve logged when done: a cut-short sweep keeps what it ran
            curves.append(federated(lab, setup, args.rounds or ROUNDS[setup.partition], log))
            log(json.dumps(curves[-1].summary()))
    report(baseline, curves, args.images)
    return 0


ROUND_LINE = re.compile(
    r"^(?P<name>\S+/\S+) round (?P<round>\d+): (?P<acc>[0-9.]+) \((?P<s>\d+) s\)$"
)


def replot(outputs: Sequence[Path]) -> tuple[Curve | None, list[Curve]]:
    """The curves of earlier runs from their saved output (stdout and stderr): a sweep split
    over several processes is drawn and tabled as one. A finished curve comes from its JSON
    summary; one cut short by the clock from its per-round lines. The first centralised curve
    is the baseline."""
    baseline: Curve | None = None
    found: dict[str, Curve] = {}
    partial: dict[str, Curve] = {}
    for line in (line for output in outputs for line in output.read_text().splitlines()):
        if line.startswith("{"):
            figures = json.loads(line)
            runs = figures.get("configurations", [figures])
            if baseline is None and figures.get("centralised"):
                baseline = Curve.from_summary(figures["centralised"])
            found.update((c["name"], Curve.from_summary(c)) for c in runs)
        elif match := ROUND_LINE.match(line):
            name = match["name"]
            goals = {s.name: s.goal for s in SETUPS}
            goal = goals.get(name, TARGETS[name.split("/")[0]])
            curve = partial.setdefault(name, Curve(name, goal, [], 0.0))
            curve.accuracy.append(float(match["acc"]))
            curve.seconds = float(match["s"])
    curves = {**partial, **found}  # a finished summary wins over the same run's round lines
    order = {s.name: i for i, s in enumerate(SETUPS)}
    return baseline, sorted(curves.values(), key=lambda c: order.get(c.name, len(order)))


def report(baseline: Curve | None, curves: Sequence[Curve], images: Path) -> None:
    """The table, the PNGs, and the one JSON line of figures."""
    print(table([*([baseline] if baseline else []), *curves]))
    written = plot(curves, baseline, images)
    print(
        json.dumps(
            {
                "bench": "learning",
                "contributors": CONTRIBUTORS,
                "epochs": 1,
                "batch_size": 32,
                "cpus": os.cpu_count(),
                "centralised": baseline.summary() if baseline else None,
                "configurations": [c.summary() for c in curves],
                "images": written,
            }
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())
