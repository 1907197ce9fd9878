"""Never hangs: N consecutive ``decentralml demo`` runs under a hang watchdog, and how long
SIGTERM takes to stop a command at several points of its life (issue 20, target 4).

Run from the project root (each demo ~1 min on 2 cores; 30 of them take ~30–60 min):

    nice -n 5 .venv/bin/python bench/bench_stress.py --runs 30 --jsonl .decentralml/stress.jsonl
    nice -n 5 .venv/bin/python bench/bench_stress.py --sigterm --jsonl .decentralml/sigterm.jsonl

Demo mode runs ``decentralml demo --contributors 10 --rounds 1 --epochs 1`` N times, each in a
fresh temporary directory (its own marketplace, storage, PREFECT_HOME and KERAS_HOME, so no
run inherits another's state), in its own session so the whole process tree can be watched
and stopped. A run is a **hang** when its process tree uses less than ``--idle-cpu`` of a core
over ``--idle-seconds`` (a deadlock sits in futex waits at ~0 % CPU: the one an outside tester
met sat at 2 % for 3.5 minutes), or runs longer than ``--max-multiple`` × the median of the
runs so far (``--first-timeout`` before three have finished). A hang gets a
``py-spy dump --native`` of every Python process of its tree into its record, then the tree is
killed. Every run is one JSONL record: exit code, wall seconds, CPU seconds of the tree, hang
or not, processes left behind after the command exited (they are killed too), the dump.

``--sigterm`` starts each command of ``SIGTERM_POINTS`` (a 2-contributor demo, a contributor
agent, a one-round training) and sends SIGTERM to its process group at a point of its life
recognised from its own output (start-up, Prefect server start, training, waiting for
contributions); it measures the seconds until the command and every process it started are
gone (target ≤ 10 s; a second SIGTERM is never sent) and prints their maximum.

Ends with ONE JSON line.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.sigterm_points import POINTS, Tree, describe, stop_at  # noqa: E402

CONFIG = ROOT / "configs" / "mnist.yaml"
DEMO = ["demo", "--contributors", "10", "--rounds", "1", "--epochs", "1"]
STDERR_TAIL = 4000
DRAIN_SECONDS = 10.0
"""How long the command's helpers (the reaper, Prefect's temporary server) may take to end
after the command exits before one still running counts as left behind."""


@dataclass
class Run:
    run: int
    exit_code: int | None
    duration_s: float
    cpu_s: float
    hang: bool
    hang_reason: str | None = None
    leftovers: list[str] = field(default_factory=list)
    dumps: dict[str, str] = field(default_factory=dict)
    output_tail: str = ""


def watch(tree: Tree, idle_seconds: float, idle_cpu: float, deadline_s: float) -> str | None:
    """Wait for the command to exit; return why it counts as hung, or None once it exits."""
    samples: list[tuple[float, float]] = []  # (wall, tree CPU seconds)
    while tree.poll() is None:
        now = time.perf_counter() - tree.started
        samples.append((now, tree.cpu_seconds()))
        while samples and samples[0][0] < now - idle_seconds:
            oldest = samples.pop(0)
            if now - oldest[0] >= idle_seconds:
                used = samples[-1][1] - oldest[1]
                if used < idle_cpu * idle_seconds:
                    return f"{used:.2f} CPU s in the last {idle_seconds:.0f} s"
        if now > deadline_s:
            return f"still running after {deadline_s:.0f} s"
        time.sleep(1.0)
    return None


def demo_run(index: int, args: argparse.Namespace, durations: list[float]) -> Run:
    deadline = (
        args.max_multiple * statistics.median(durations)
        if len(durations) >= 3
        else args.first_timeout
    )
    with tempfile.TemporaryDirectory(prefix="stress-") as tmp:
        workdir = Path(tmp)
        tree = Tree([*DEMO, "--config", str(CONFIG)], workdir)
        try:
            reason = watch(tree, args.idle_seconds, args.idle_cpu, deadline)
            dumps = tree.dump() if reason else {}
            duration = time.perf_counter() - tree.started
            leftovers = [] if reason else [describe(p) for p in tree.drain(DRAIN_SECONDS)]
            cpu = tree.cpu_seconds()
        finally:
            tree.kill()  # also when this bench is interrupted
        return Run(
            run=index,
            exit_code=tree.returncode,
            duration_s=round(duration, 2),
            cpu_s=round(cpu, 2),
            hang=reason is not None,
            hang_reason=reason,
            leftovers=leftovers,
            dumps=dumps,
            output_tail=tree.output()[-STDERR_TAIL:] if reason or tree.returncode else "",
        )


def record(out, row: dict, line: str) -> None:
    """One JSONL record per run, written at once (a killed bench keeps what it measured)."""
    out.write(json.dumps(row) + "\n")
    out.flush()
    print(line, file=sys.stderr, flush=True)


def worst(seconds: list[float | None]) -> float | None:
    """The longest stop; None if any command did not stop (a hang)."""
    return None if None in seconds or not seconds else max(seconds)


def run_demos(args: argparse.Namespace) -> dict:
    durations: list[float] = []
    runs: list[Run] = []
    with open(args.jsonl, "a") as out:
        for index in range(args.runs):
            run = demo_run(index, args, durations)
            runs.append(run)
            if not run.hang and run.exit_code == 0:
                durations.append(run.duration_s)
            record(
                out,
                asdict(run),
                f"run {index}: exit {run.exit_code} {run.duration_s:.1f} s "
                f"cpu {run.cpu_s:.1f} s hang={run.hang} leftovers={len(run.leftovers)}",
            )
    return summarize([asdict(run) for run in runs])


def summarize(runs: list[dict]) -> dict:
    """The summary line of demo runs' records (``--summarize`` reads them back from a JSONL
    file: a bench stopped early still reports what it ran)."""
    durations = [r["duration_s"] for r in runs if not r["hang"] and r["exit_code"] == 0]
    return {
        "bench": "stress",
        "command": " ".join(["decentralml", *DEMO]),
        "runs": len(runs),
        "hangs": sum(r["hang"] for r in runs),
        "failures": sum(not r["hang"] and r["exit_code"] != 0 for r in runs),
        "leftover_runs": sum(bool(r["leftovers"]) for r in runs),
        "median_s": round(statistics.median(durations), 1) if durations else None,
        "max_s": max(durations, default=None),
        "median_cpu_s": round(statistics.median(r["cpu_s"] for r in runs), 1) if runs else None,
    }


def run_points(args: argparse.Namespace) -> dict:
    """Each SIGTERM point ``args.repeat`` times: seconds from SIGTERM until the command's
    whole process tree is gone."""
    seconds: dict[str, list[float | None]] = {}
    with open(args.jsonl, "a") as out:
        for point in POINTS:
            if args.only and args.only not in point.name:
                continue
            for _ in range(args.repeat):
                with tempfile.TemporaryDirectory(prefix="sigterm-") as tmp:
                    stop = stop_at(point, Path(tmp), reach_timeout=300, guard=args.guard)
                seconds.setdefault(point.name, []).append(stop.stop_s)
                record(
                    out,
                    asdict(stop),
                    f"{point.name}: reached at {stop.reached_after_s:.1f} s, stopped in "
                    f"{stop.stop_s} s, exit {stop.exit_code}, left {stop.left_running}",
                )
    stopped = [s for times in seconds.values() for s in times]
    return {
        "bench": "sigterm",
        "points": {name: worst(times) for name, times in seconds.items()},
        "max_stop_s": worst(stopped),
        "not_stopped": sum(t is None for t in stopped),
        "target_s": 10,
    }


def main() -> None:
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--jsonl", type=Path, default=ROOT / ".decentralml" / "stress.jsonl")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument(
        "--idle-cpu", type=float, default=0.05, help="fraction of a core under which it is idle"
    )
    parser.add_argument("--max-multiple", type=float, default=5.0)
    parser.add_argument("--first-timeout", type=float, default=900.0)
    parser.add_argument("--sigterm", action="store_true", help="measure SIGTERM stop times")
    parser.add_argument(
        "--summarize", action="store_true", help="only print the summary of --jsonl's demo runs"
    )
    parser.add_argument("--only", help="--sigterm: the points whose name contains this")
    parser.add_argument("--repeat", type=int, default=1, help="--sigterm: runs per point")
    parser.add_argument(
        "--guard", type=float, default=60.0, help="--sigterm: seconds before a stop is a hang"
    )
    args = parser.parse_args()
    args.jsonl.parent.mkdir(parents=True, exist_ok=True)
    if args.summarize:
        rows = [json.loads(line) for line in args.jsonl.read_text().splitlines() if line]
        summary = summarize(rows)
    else:
        summary = run_points(args) if args.sigterm else run_demos(args)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
