"""Against Flower: a round of decentralml's demo and of Flower's simulation on the same job.

Run from the project root (≈10 min on 2 cores; the first run also makes Flower's venv):

    nice -n 5 .venv/bin/python bench/bench_flower.py --json .decentralml/bench-flower.json

The job (issue 20): 10 contributors, IID MNIST, the seed model ``mnist_mlp``, Adam at the
shipped config's learning rate restarted each round, batch 32, 1 local epoch, FedAvg, the
global model evaluated on the test split after each round. Both systems train on the same
data: this script exports, through the project's own calls, each contributor's shard
(``contributor_shard``) and the test split to .npz files, with the project's initial weights
of ``mnist_mlp`` (Flower's script builds the same layers and checks their shapes).

Flower 1.42 runs in its own venv, ``.cache/flower-venv`` (made here when missing; it cannot
share the project's: Prefect pins), by ``bench/flower_baseline.py`` (legacy
``start_simulation``, Ray, 1 CPU per client). decentralml runs ``flows.demo.run_demo`` (the
engine of ``decentralml demo``: embedded marketplace, file storage, Prefect's ephemeral server,
the contributors on the config's runner) in a child process of the project's venv, once with
the shipped validation (CustomAccept) and once with AutoAccept, for each runner of
``--runner`` and ``--also-runner`` (e.g. ``--runner dask --also-runner processes``). In one
window, in the order Flower, each validation with each runner in turn, Flower: Flower brackets
ours so load drift shows. With the ``processes`` runner the fits run in the agents' processes,
out of the child's fit clock: its ``fit_union_s`` and ``steady_overhead_s`` are empty.

Each system reports, from its own process: each round's end (seconds since the process
started, imports included; decentralml's creator settles a round after its evaluation, Flower's
server stamps the end of its centralised evaluation), accuracy and the union of the round's
fits. ``first_round_s`` is round 1's end (start-up included); a steady round is the time
between two rounds' ends (rounds 2..), ``steady_overhead_s`` its span less its fits' union;
``whole_run_s`` is the command's wall time, launch to exit. Ratios are ours / Flower's,
Flower's figures being the median over both of its runs (steady: of all its steady rounds),
keyed by validation and runner (``steady_ratio_custom_dask``). Targets: steady ≤ 1.5×
(CustomAccept), ≤ 1.2× (AutoAccept); whole run ≤ 1.3×.

Ends with ONE JSON line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# This folder's overhead bench: the demo's shape and output; importing it sets the
# environment and puts the project root on sys.path.
from bench_round_overhead import ROOT, FitClock, demo_arguments, demo_config, emit, union_of

FLOWER_VENV = ROOT / ".cache" / "flower-venv"
FLOWER_PACKAGES = ["flwr[simulation]==1.42.0", "tensorflow-cpu==2.21.0", "numpy"]
VALIDATIONS = ("CustomAccept", "AutoAccept")
TARGETS = {"CustomAccept": 1.5, "AutoAccept": 1.2, "whole_run": 1.3}


def flower_python() -> Path:
    """Flower's interpreter, its venv made on first use (python3.11, as the project's)."""
    python = FLOWER_VENV / "bin" / "python"
    if not (FLOWER_VENV / ".installed").exists():
        print(f"making Flower's venv in {FLOWER_VENV} (once)", file=sys.stderr, flush=True)
        subprocess.run(["python3.11", "-m", "venv", str(FLOWER_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *FLOWER_PACKAGES],
                       check=True)  # fmt: skip
        (FLOWER_VENV / ".installed").touch()
    return python


def export_job(config_path: Path, data_dir: Path) -> None:
    """The demo's data and model as Flower reads them: each contributor's shard and the test
    split exactly as decentralml's contributors and creator use them, the project's initial
    ``mnist_mlp`` weights, and the training settings of the config."""
    import numpy as np

    from decentralml.creator import task_settings
    from decentralml.ml.data.federated import contributor_shard, test_split
    from decentralml.ml.models import build_model, model_tensors
    from decentralml.runtime.config import load_config

    config = load_config(config_path)
    settings = task_settings(config)
    cache = config.data.cache_dir
    for index in range(config.contributors):
        x, y = contributor_shard(settings.data, index, cache)
        np.savez(data_dir / f"shard_{index}.npz", x=x, y=y)
    x, y = test_split(cache, settings.data.source, settings.data.preprocessing)
    np.savez(data_dir / "test.npz", x=x, y=y)
    initial = model_tensors(build_model(settings.model, config.training.learning_rate))
    np.savez(data_dir / "init.npz", *initial.values())  # model.weights order, as Keras lists
    job = {
        "contributors": config.contributors,
        "learning_rate": config.training.learning_rate,
        "batch_size": config.training.batch_size,
        "epochs": config.training.epochs,
        "model": settings.model,
    }
    (data_dir / "job.json").write_text(json.dumps(job))


def run_flower(python: Path, data_dir: Path, rounds: int, out: Path) -> dict:
    """One Flower simulation in its venv; its rounds and the command's wall time."""
    began = time.perf_counter()
    command = [str(python), str(ROOT / "bench" / "flower_baseline.py"), str(data_dir),
               "--rounds", str(rounds), "--out", str(out)]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if finished.returncode != 0:
        sys.stderr.write(finished.stdout[-4000:] + finished.stderr[-4000:])
        raise SystemExit(f"Flower's simulation exited {finished.returncode}")
    rounds_run = [r for r in json.loads(out.read_text())["rounds"] if r["round"] >= 1]
    for record in rounds_run:  # round 0 is the initial model's evaluation
        if record.get("failures"):
            raise SystemExit(f"Flower's round {record['round']}: {record['failures']} fits failed")
        record["fit_union_s"] = round(union_of([tuple(fit) for fit in record["fits"]]), 2)
    return summarize("flower", rounds_run, wall)


def run_ours(config_path: Path, validation: str, out: Path) -> dict:
    """One decentralml demo in a child process of this venv (``--child``)."""
    began = time.perf_counter()
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(config_path),
               "--child-out", str(out)]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if finished.returncode != 0:
        sys.stderr.write(finished.stdout[-4000:] + finished.stderr[-4000:])
        raise SystemExit(f"decentralml's demo ({validation}) exited {finished.returncode}")
    return summarize(validation, json.loads(out.read_text())["rounds"], wall)


def summarize(system: str, rounds: list[dict], wall: float) -> dict:
    """First round, steady rounds (between two rounds' ends) and the command's wall time."""
    ends = [r["end_s"] for r in rounds]
    steady = [round(b - a, 2) for a, b in itertools.pairwise(ends)]
    fits = [r.get("fit_union_s") for r in rounds]
    overhead = [round(s - f, 2) for s, f in zip(steady, fits[1:], strict=True) if f is not None]
    return {
        "system": system,
        "first_round_s": ends[0],
        "steady_rounds_s": steady,
        "steady_median_s": round(statistics.median(steady), 2) if steady else None,
        "to_last_round_s": ends[-1],
        "whole_run_s": round(wall, 2),
        "fit_union_s": fits,
        "steady_overhead_s": overhead,  # a steady round's span less its fits' union
        "accuracy": [r.get("accuracy") for r in rounds],
    }


def child(config_path: Path, out: Path) -> int:
    """decentralml's side, in its own process: the demo with each settled round stamped."""
    from bench_round_overhead import STARTED

    from decentralml.runtime.config import load_config
    from flows.demo import run_demo

    clock = FitClock()
    clock.install()
    ends: list[dict] = []

    def on_round(report) -> None:
        ends.append(
            {
                "round": report.round_number,
                "end_s": round(time.perf_counter() - STARTED, 2),
                "accuracy": round(report.metrics.get("accuracy", float("nan")), 4),
            }
        )

    config = load_config(config_path)
    run_demo(config, on_round=on_round)
    for record, fits in zip(ends, clock.rounds(config.contributors), strict=False):
        record["fit_union_s"] = round(union_of(fits), 2)
    out.write_text(json.dumps({"rounds": ends}) + "\n")
    return 0


def ratios(flower: list[dict], ours: dict[tuple[str, str], dict]) -> dict[str, object]:
    """Ours / Flower's, Flower's figures the median over its runs, with the targets."""
    steady = statistics.median(s for run in flower for s in run["steady_rounds_s"])
    whole = statistics.median(run["whole_run_s"] for run in flower)
    found: dict[str, object] = {"flower_steady_median_s": round(steady, 2),
                                "flower_whole_run_s": round(whole, 2)}  # fmt: skip
    for (validation, runner), run in ours.items():
        key = validation.lower().removesuffix("accept")
        found[f"steady_ratio_{key}_{runner}"] = round(run["steady_median_s"] / steady, 2)
        found[f"whole_run_ratio_{key}_{runner}"] = round(run["whole_run_s"] / whole, 2)
        found[f"steady_target_{key}"] = TARGETS[validation]
    found["whole_run_target"] = TARGETS["whole_run"]
    return found


def main() -> int:
    parser = demo_arguments(__doc__.splitlines()[0], rounds=4)
    parser.add_argument(
        "--also-runner",
        action="append",
        default=[],
        choices=["dask", "threads", "processes"],
        help="also measure decentralml on this runner, in the same window",
    )
    parser.add_argument(
        "--validation",
        action="append",
        choices=VALIDATIONS,
        help="measure only this validation (repeatable; default: both)",
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.child_out)

    python = flower_python()
    load_before = os.getloadavg()
    runners = list(dict.fromkeys([args.runner, *args.also_runner]))
    shape = ("label", "contributors", "rounds", "epochs")
    result: dict[str, object] = {"bench": "flower", **{key: getattr(args, key) for key in shape},
                                 "runners": runners}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="decentralml-bench-flower-") as tmp:
        workdir = Path(tmp)
        (data_dir := workdir / "data").mkdir()
        configs = {}
        for case in itertools.product(args.validation or VALIDATIONS, runners):
            (run_dir := workdir / "-".join(case)).mkdir()
            validation, runner = case
            path = demo_config(run_dir, args.contributors, args.rounds, args.epochs, runner)
            set_validation(path, validation)
            configs[case] = path
        export_job(next(iter(configs.values())), data_dir)
        runs = [run_flower(python, data_dir, args.rounds, workdir / "flower-1.json")]
        ours = {case: run_ours(path, "/".join(case), workdir / f"{'-'.join(case)}.json")
                for case, path in configs.items()}  # fmt: skip
        runs.append(run_flower(python, data_dir, args.rounds, workdir / "flower-2.json"))
        result["learning_rate"] = json.loads((data_dir / "job.json").read_text())["learning_rate"]
    result.update(
        {
            "load_average_before": [round(x, 2) for x in load_before],  # 1, 5, 15 min
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "flower": runs,
            "decentralml": list(ours.values()),
            **ratios(runs, ours),
        }
    )
    emit(result, args.json)
    return 0


def set_validation(config_path: Path, validation: str) -> None:
    """The demo's config with ``task.validation_strategy`` set."""
    import yaml

    data = yaml.safe_load(config_path.read_text())
    data["task"]["validation_strategy"] = validation
    config_path.write_text(yaml.safe_dump(data))


if __name__ == "__main__":
    sys.exit(main())
