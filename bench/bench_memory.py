"""Memory per round: does a long training's resident memory stay flat? (issue 20)

Run from the project root (≈3 min for 6 rounds on 2 cores):

    PREFECT_HOME=$(mktemp -d) .venv/bin/python bench/bench_memory.py --rounds 6

(``--trace``: also what Python allocations grew, by where they were made; slower.)

Runs ``decentralml demo``'s engine in this process (``flows.demo.run_demo``: 10 contributors,
1 local epoch, IID, the seed model, embedded marketplace, file storage, Prefect's ephemeral
server; the contributors are threads of this process) and, after each round is settled, collects
garbage and reads this process's resident memory (``VmRSS``), the Keras models still alive,
the threads and the round's primary metric (accuracy). Reports each round's figures and
``mb_per_round``: the growth from the end of round 1 (start-up, imports and first compilations
behind) to the end of the last round, per round (issue 20's target: ≤ 20 MB per round over 10
rounds).

Ends with ONE JSON line.
"""

from __future__ import annotations

import gc
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

# This folder's overhead bench: the same demo shape; importing it sets the environment and
# puts the project root on sys.path.
from bench_round_overhead import demo_arguments, demo_config, emit


def rss_mb() -> float:
    """This process's resident memory, MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def keras_models_alive() -> int:
    import keras

    return sum(isinstance(o, keras.Model) for o in gc.get_objects())


class RoundMemory:
    """The process's memory after each settled round (the demo's ``on_round`` callback)."""

    def __init__(self, trace: bool = False) -> None:
        self.rounds: list[dict[str, float]] = []
        self.trace, self.first_snapshot = trace, None
        self.growth: list[str] = []

    def __call__(self, report) -> None:
        gc.collect()
        if self.trace:
            self._compare()
        self.rounds.append(
            {
                "round": report.round_number,
                "metric": round(report.metric, 4),  # the workload's primary one (accuracy)
                "rss_mb": round(rss_mb(), 1),
                "keras_models": keras_models_alive(),
                "threads": threading.active_count(),
                "t_s": round(time.perf_counter(), 1),
            }
        )
        print(json.dumps(self.rounds[-1]), file=sys.stderr, flush=True)

    def _compare(self) -> None:
        """With ``--trace``: the Python allocations (NumPy's included) grown most since the
        end of round 1, by where they were made."""
        import tracemalloc

        if self.first_snapshot is None:  # traced from here: tracing the imports takes minutes
            tracemalloc.start(6)
            self.first_snapshot = tracemalloc.take_snapshot()
            return
        stats = tracemalloc.take_snapshot().compare_to(self.first_snapshot, "traceback")
        self.growth = [
            f"{stat.size_diff / 2**20:+.1f} MB {stat.count_diff:+d} blocks: "
            + " <- ".join(f"{f.filename.split('site-packages/')[-1]}:{f.lineno}"
                          for f in list(stat.traceback)[:6])
            for stat in stats[:12]
        ]  # fmt: skip
        print("\n".join(self.growth), file=sys.stderr, flush=True)


def main() -> int:
    parser = demo_arguments(__doc__.splitlines()[0], rounds=6)
    parser.add_argument("--trace", action="store_true", help="tracemalloc: what grows (slow)")
    args = parser.parse_args()

    from decentralml.runtime.config import load_config
    from flows.demo import run_demo

    memory = RoundMemory(args.trace)
    with tempfile.TemporaryDirectory(prefix="decentralml-bench-memory-") as tmp:
        config_path = demo_config(
            Path(tmp), args.contributors, args.rounds, args.epochs, args.runner
        )
        summary = run_demo(load_config(config_path), on_round=memory)
    first, last = memory.rounds[0], memory.rounds[-1]
    per_round = (last["rss_mb"] - first["rss_mb"]) / max(1, len(memory.rounds) - 1)
    result = {
        "bench": "memory",
        "label": args.label,
        "contributors": args.contributors,
        "rounds": args.rounds,
        "epochs": args.epochs,
        "runner": args.runner,
        "per_round": memory.rounds,
        "mb_per_round": round(per_round, 1),
        "final_accuracy": summary.get("final_accuracy"),
        **({"python_growth": memory.growth} if args.trace else {}),
    }
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
