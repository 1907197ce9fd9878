"""Round overhead: how much of a demo's wall time is not the contributors' training.

Run from the project root (2–4 min on 2 cores):

    .venv/bin/python bench/bench_round_overhead.py --json .decentralml/bench-overhead.json

Runs ``decentralml demo`` in this process (10 contributors, 1 local epoch, 2 rounds, the seed
model, embedded marketplace, file storage, Prefect's ephemeral server) with every Keras
``Model.fit`` timed, then, as the baseline of the same run, the same 20 fits (each
contributor's shard, same epochs, batch size and seeds) back to back on ONE reused compiled
model (``training.ReusableTrainer``). Reports:

* ``wall_s``: from this script's start (imports included) to the demo's end;
* ``fit_union_s``: wall time during which at least one ``fit`` ran (contributors train in
  threads, so their fits overlap; ``fit_sum_s`` adds them up);
* ``overhead_ratio`` = (wall − fit union) / fit union: everything but training, per second
  of training (issue 10's target: ≤ 0.10);
* ``overhead_vs_baseline`` = (wall − baseline) / baseline, the baseline being the 20 fits on
  one reused model;
* ``tag_leases`` / ``tag_lease_wait_s``: the tag-concurrency leases task runs asked Prefect
  for before starting, and the seconds their threads waited for them, summed (issue 20);
* ``steady_rounds``: rounds 2.. alone, without the start-up (``steady_rounds``): each round's
  span and its own ``overhead_ratio`` (span − its fits' union) / its fits' union, and their
  median (``--rounds 4`` or more for a median of several).

``--components`` (alone: ``--no-demo``) also times the three costs inside the core that a
round pays per contribution, through the same public calls on any version of the code:
``load_mnist()`` (median of 3 calls), ``train_contribution`` on one shard (median of 3) and
one marketplace read (``list_tasks``, mean of 200 calls from one thread), with the same fit on
a freshly built and compiled model as the same run's reference.

Ends with ONE JSON line.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # before the heavy imports: they are part of the overhead

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class FitClock:
    """Every ``keras.Model.fit`` call's (start, end), from any thread: a timing wrapper on
    the class, so the demo's own code runs unchanged."""

    def __init__(self) -> None:
        self.intervals: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def install(self) -> None:
        import keras

        original = keras.Model.fit
        clock = self

        def timed_fit(model, *args, **kwargs):
            start = time.perf_counter()
            try:
                return original(model, *args, **kwargs)
            finally:
                with clock._lock:
                    clock.intervals.append((start, time.perf_counter()))

        keras.Model.fit = timed_fit

    def summed(self) -> float:
        return sum(end - start for start, end in self.intervals)

    def union(self) -> float:
        """Seconds covered by at least one fit."""
        return union_of(self.intervals)

    def rounds(self, per_round: int) -> list[list[tuple[float, float]]]:
        """The fits by round: a round's fits all start after the previous round's task was
        settled and the next one published, so in start order they come ``per_round`` at a
        time."""
        ordered = sorted(self.intervals)
        return [ordered[i : i + per_round] for i in range(0, len(ordered), per_round)]


class LeaseClock:
    """Every tag-concurrency lease a task run asks Prefect for before it starts (the task
    engine does for any task run with tags, limit or not): how many, and the seconds the
    asking threads spent, summed. A counting wrapper on the module function the engine calls,
    so the code under test runs unchanged (issue 20)."""

    def __init__(self) -> None:
        self.calls, self.seconds = 0, 0.0
        self._lock = threading.Lock()

    def install(self) -> None:
        import prefect.concurrency._sync as engine_concurrency

        original = engine_concurrency.acquire_concurrency_slots_with_lease
        clock = self

        def timed_acquire(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                with clock._lock:
                    clock.calls += 1
                    clock.seconds += time.perf_counter() - start

        engine_concurrency.acquire_concurrency_slots_with_lease = timed_acquire


def union_of(intervals: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one of ``intervals``."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def steady_rounds(rounds: list[list[tuple[float, float]]]) -> list[dict[str, float]]:
    """Rounds 2.. in steady state, without the start-up (imports, Prefect's server, the first
    publication): a round is the time from the previous round's last fit ending to its own
    last fit ending. In it: the creator's review, evaluation, checkpoint, payment and report
    of the previous round, the publication of this one, every contributor's pick-up,
    download, checks, slot, training, commitment, upload and submission. Its overhead is
    that span less the span its fits cover."""
    found = []
    for number, (previous, current) in enumerate(itertools.pairwise(rounds), 2):
        span = max(end for _, end in current) - max(end for _, end in previous)
        training = union_of(current)
        found.append(
            {
                "round": number,
                "span_s": round(span, 2),
                "fit_union_s": round(training, 2),
                "overhead_ratio": round((span - training) / training, 3),
            }
        )
    return found


def demo_config(workdir: Path, contributors: int, rounds: int, epochs: int, runner: str) -> Path:
    """configs/mnist.yaml with its state in ``workdir`` and the bench's shape."""
    import yaml

    data = yaml.safe_load((ROOT / "configs" / "mnist.yaml").read_text())
    data["marketplace"]["path"] = str(workdir / "marketplace.sqlite")
    data["storage"]["url"] = (workdir / "storage").as_uri()
    data["training"]["epochs"] = epochs
    data["rounds"], data["contributors"] = rounds, contributors
    data["task"]["max_assignments"] = contributors
    data["simulation"]["runner"] = runner
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run_demo(config_path: Path, summary_path: Path) -> dict:
    from decentralml_cli import main

    code = main(["demo", "--config", str(config_path), "--summary-json", str(summary_path)])
    if code != 0:
        raise SystemExit(f"decentralml demo exited {code}")
    return json.loads(summary_path.read_text())


def baseline_fits(config_path: Path) -> tuple[float, int]:
    """The demo's fits (every round, every contributor, same seeds) on one reused model:
    (seconds of fitting, number of fits)."""
    from decentralml.creator import task_settings
    from decentralml.ml.data.federated import contributor_shard
    from decentralml.ml.models import build_model, model_tensors
    from decentralml.ml.training import ReusableTrainer
    from decentralml.runtime.config import load_config

    config = load_config(config_path)
    settings = task_settings(config)
    trainer = ReusableTrainer(settings.model, config.training.learning_rate)
    start = model_tensors(build_model(settings.model, config.training.learning_rate))
    shards = [
        contributor_shard(settings.data, i, config.data.cache_dir)
        for i in range(config.contributors)
    ]
    seconds, fits = 0.0, 0
    for task_id in range(config.rounds):
        for index, (x, y) in enumerate(shards):
            began = time.perf_counter()
            trainer.fit(
                start,
                x,
                y,
                epochs=config.training.epochs,
                batch_size=config.training.batch_size,
                seed=index + 1000 * task_id,
            )
            seconds += time.perf_counter() - began
            fits += 1
    return seconds, fits


def _median_seconds(call, times: int) -> float:
    took = []
    for index in range(times):
        began = time.perf_counter()
        call(index)
        took.append(time.perf_counter() - began)
    return sorted(took)[len(took) // 2]


def components(config_path: Path, workdir: Path) -> dict[str, float]:
    """Per-contribution costs inside the core, through public calls only; the fit on a
    freshly built and compiled model is this run's reference for ``train_contribution``."""
    import keras

    from decentralml.creator import task_settings
    from decentralml.marketplace.embedded import EmbeddedMarketplace
    from decentralml.ml.data import load_mnist
    from decentralml.ml.data.federated import contributor_shard
    from decentralml.ml.models import build_model, model_tensors
    from decentralml.ml.training import local_model, train_contribution
    from decentralml.runtime.config import load_config

    config = load_config(config_path)
    settings = task_settings(config)
    x, y = contributor_shard(settings.data, 0, config.data.cache_dir)
    start = model_tensors(build_model(settings.model, config.training.learning_rate))

    def fit(index: int) -> None:
        train_contribution(settings.model, start, x, y, epochs=1, batch_size=32,
                           learning_rate=config.training.learning_rate, seed=index)  # fmt: skip

    def fresh_fit(index: int) -> None:  # what every contribution paid before models were reused
        keras.utils.set_random_seed(index)
        model = local_model(settings.model, start,
                            learning_rate=config.training.learning_rate)  # fmt: skip
        model.fit(x, y, epochs=1, batch_size=32, verbose=0, shuffle=True)

    market = EmbeddedMarketplace(workdir / "components.sqlite")
    began = time.perf_counter()
    for _ in range(200):
        market.list_tasks(open_only=False)
    return {
        "market_call_ms": round((time.perf_counter() - began) / 200 * 1000, 3),
        "load_mnist_s": round(_median_seconds(lambda _: load_mnist(config.data.cache_dir), 3), 3),
        "train_contribution_s": round(_median_seconds(fit, 3), 2),
        "fresh_model_fit_s": round(_median_seconds(fresh_fit, 3), 2),
    }


def demo_and_baseline(config_path: Path, workdir: Path) -> dict[str, object]:
    """The demo with its fits timed, then the baseline: the same fits on one reused model."""
    import yaml

    clock, leases = FitClock(), LeaseClock()
    clock.install()
    leases.install()
    summary = run_demo(config_path, workdir / "summary.json")
    wall = time.perf_counter() - STARTED
    fits, fit_sum, fit_union = len(clock.intervals), clock.summed(), clock.union()
    config = yaml.safe_load(config_path.read_text())
    steady = steady_rounds(clock.rounds(int(config["contributors"])))  # before the baseline's fits
    baseline, baseline_count = baseline_fits(config_path)
    ratios = sorted(r["overhead_ratio"] for r in steady)
    return {
        "steady_rounds": steady,
        "steady_overhead_ratio_median": ratios[len(ratios) // 2] if ratios else None,
        "wall_s": round(wall, 2),
        "demo_wall_s": summary.get("wall_seconds"),
        "fits": fits,
        "fit_sum_s": round(fit_sum, 2),
        "fit_union_s": round(fit_union, 2),
        "overhead_s": round(wall - fit_union, 2),
        "overhead_ratio": round((wall - fit_union) / fit_union, 3),
        "baseline_fits": baseline_count,
        "baseline_fit_s": round(baseline, 2),
        "overhead_vs_baseline": round((wall - baseline) / baseline, 3),
        "final_accuracy": summary.get("final_accuracy"),
        "tag_leases": leases.calls,
        "tag_lease_wait_s": round(leases.seconds, 2),
    }


def demo_arguments(description: str, rounds: int) -> argparse.ArgumentParser:
    """The demo's shape and the output options, shared by the benches that run the demo."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--contributors", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--runner", choices=["dask", "threads", "processes"], default="dask")
    parser.add_argument("--label", default="", help="a name for this run in the JSON line")
    parser.add_argument("--json", type=Path, help="also write the JSON line to this file")
    return parser


def emit(result: dict[str, object], json_path: Path | None) -> None:
    """The bench's ONE JSON line, on stdout and, when asked, in ``json_path``."""
    line = json.dumps(result)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(line + "\n")
    print(line)


def main() -> int:
    parser = demo_arguments(__doc__.splitlines()[0], rounds=2)
    parser.add_argument("--components", action="store_true", help="also time the core's parts")
    parser.add_argument("--no-demo", action="store_true", help="only the parts (--components)")
    args = parser.parse_args()

    result: dict[str, object] = {
        "bench": "round_overhead",
        "label": args.label,
        "contributors": args.contributors,
        "rounds": args.rounds,
        "epochs": args.epochs,
        "runner": args.runner,
    }
    with tempfile.TemporaryDirectory(prefix="decentralml-bench-overhead-") as tmp:
        workdir = Path(tmp)
        config_path = demo_config(workdir, args.contributors, args.rounds, args.epochs, args.runner)
        if not args.no_demo:
            result.update(demo_and_baseline(config_path, workdir))
        if args.components or args.no_demo:
            result.update(components(config_path, workdir))
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
