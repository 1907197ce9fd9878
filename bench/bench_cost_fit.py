"""Per-contributor cost: a steady round's span against the number of contributors N.

Run from the project root (≈40 min on 2 quiet cores for the default sizes):

    nice -n 5 .venv/bin/python bench/bench_cost_fit.py --json .decentralml/bench-cost-fit.json

For each N (default 5, 10, 25, 50, 100, 200) this runs ``bench/bench_round_overhead.py`` in a
child process (``decentralml demo``'s engine in that process, the shipped config, 3 rounds of
1 local epoch, the total training data fixed: 55 000 images / N per contributor) and takes the
median of its steady rounds' spans (rounds 2.., without the start-up). The same child also fits
every contribution again, back to back on one reused Keras model (``baseline_fit_s``): Keras's
own cost of a round of N fits.

Both are fitted as lines in N by least squares: ``span = a + b·N`` and
``keras = c + k·N``. ``k`` is what one more ``fit`` costs Keras itself with the data fixed
(its per-call set-up: the dataset adapter, the epoch iterator, the callbacks); ``b − k`` is
what the platform adds per contributor per round (orchestration, marketplace, storage, checks,
threads). Issue 20's target: ``b − k ≤ 0.4 s``.

``--runners threads,dask`` runs each N on both runners (issue 20: Dask at least as fast as
threads at N = 100). Ends with ONE JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OVERHEAD = ROOT / "bench" / "bench_round_overhead.py"
SIZES = (5, 10, 25, 50, 100, 200)
TARGET_PER_CONTRIBUTOR_S = 0.4


def measure(contributors: int, runner: str, rounds: int, timeout: float) -> dict:
    """One child run of the overhead bench: the steady span (median) and Keras's round."""
    with tempfile.TemporaryDirectory(prefix="bench-cost-fit-") as tmp:
        out = Path(tmp) / "line.json"
        env = {**os.environ, "PREFECT_HOME": str(Path(tmp) / "prefect")}
        env.pop("PREFECT_API_URL", None)
        command = [sys.executable, str(OVERHEAD), "--contributors", str(contributors),
                   "--rounds", str(rounds), "--runner", runner, "--json", str(out)]  # fmt: skip
        try:
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"n": contributors, "runner": runner, "error": f"over {timeout:.0f} s"}
        if done.returncode != 0 or not out.exists():
            return {"n": contributors, "runner": runner, "error": done.stderr.decode()[-1500:]}
        line = json.loads(out.read_text())
    spans = [r["span_s"] for r in line["steady_rounds"]]
    return {
        "n": contributors,
        "runner": runner,
        "steady_span_s": round(statistics.median(spans), 2),
        "steady_spans_s": spans,
        "keras_round_s": round(line["baseline_fit_s"] / rounds, 2),
        "wall_s": line["wall_s"],
        "final_accuracy": line.get("final_accuracy"),
    }


def line_fit(points: list[tuple[float, float]]) -> dict[str, float]:
    """Least squares ``y = intercept + slope·x`` and R²."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    intercept = my - slope * mx
    total = sum((y - my) ** 2 for y in ys)
    residual = sum((y - intercept - slope * x) ** 2 for x, y in points)
    return {
        "intercept_s": round(intercept, 3),
        "slope_s": round(slope, 3),
        "r2": round(1 - residual / total, 3) if total else 1.0,
    }


def fits(rows: list[dict]) -> dict[str, object]:
    """The two lines and the platform's own cost per contributor, for one runner's rows."""
    good = [r for r in rows if "error" not in r]
    if len(good) < 2:
        return {"error": "fewer than two sizes finished"}
    span = line_fit([(r["n"], r["steady_span_s"]) for r in good])
    keras = line_fit([(r["n"], r["keras_round_s"]) for r in good])
    added = span["slope_s"] - keras["slope_s"]
    return {
        "span": span,
        "keras": keras,
        "per_contributor_added_s": round(added, 3),
        "target_s": TARGET_PER_CONTRIBUTOR_S,
        "met": added <= TARGET_PER_CONTRIBUTOR_S,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--runners", default="threads")
    parser.add_argument("--rounds", type=int, default=3, help="≥ 2: rounds 2.. are steady")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per child run")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.rounds < 2:
        print("error: --rounds must be >= 2 (round 1 carries the start-up)", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: dict[str, list[dict]] = {}
    for n in sizes:  # sizes outermost: each runner's N measured in the same window
        for runner in args.runners.split(","):
            row = measure(n, runner, args.rounds, args.timeout)
            rows.setdefault(runner, []).append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    result = {
        "bench": "cost_fit",
        "rounds": args.rounds,
        "rows": rows,
        "fits": {runner: fits(r) for runner, r in rows.items()},
    }
    both = {runner: {r["n"]: r.get("steady_span_s") for r in r_} for runner, r_ in rows.items()}
    if {"threads", "dask"} <= both.keys():
        common = sorted(set(both["threads"]) & set(both["dask"]))
        result["dask_vs_threads_span"] = {
            n: round(both["dask"][n] / both["threads"][n], 3)
            for n in common
            if both["dask"][n] and both["threads"][n]
        }
    line = json.dumps(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
