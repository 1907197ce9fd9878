"""Scale: one round of ``decentralml demo`` with 100 contributors, against 10 in the same run.

Run from the project root (10–25 min on 2 shared cores):

    .venv/bin/python bench/bench_scale.py --json .decentralml/bench-scale.json

Each case is ``decentralml demo`` in a subprocess (its own Prefect ephemeral server, embedded
marketplace and file storage in a fresh folder): 1 round, 1 local epoch, the seed model, IID
shards (55 000 training images / N: 5 500 each at 10, 550 at 100), AutoAccept. Cases:

* ``threads-10``: 10 contributors on Prefect's thread pool, the baseline;
* ``threads-100``: 100 contributors on the thread pool;
* ``dask-100``: 100 contributors on a Dask LocalCluster (prefect-dask's DaskTaskRunner), the
  engine a user points at many machines.

While a case runs, /proc is sampled every 0.5 s over the demo's process tree (the CLI and its
children, such as Prefect's temporary server): peak RSS (sum over the tree) and peak threads.
Reports per case wall time, exit code, accepted and paid submissions, and the ratio of the
time per contribution at 100 against the baseline's. Ends with ONE JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CASES = {"threads-10": ("threads", 10), "threads-100": ("threads", 100), "dask-100": ("dask", 100)}
PAGE = os.sysconf("SC_PAGE_SIZE")


def descendants(root: int) -> list[int]:
    """``root`` and every process below it, from /proc/*/stat's parent ids."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def tree_usage(root: int) -> tuple[int, int]:
    """(resident bytes, threads) summed over the process tree."""
    rss = threads = 0
    for pid in descendants(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        threads += int(fields[17])  # field 20 of stat: num_threads
        rss += int(fields[21]) * PAGE  # field 24: rss in pages
    return rss, threads


def kill_tree(root: int) -> None:
    for pid in reversed(descendants(root)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Sampler(threading.Thread):
    """The peaks of ``tree_usage`` until stopped."""

    def __init__(self, root: int, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.root, self.every = root, every
        self.peak_rss = self.peak_threads = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            rss, threads = tree_usage(self.root)
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_threads = max(self.peak_threads, threads)


def case_config(folder: Path, runner: str, contributors: int) -> Path:
    """The shipped config with this case's shape; state in ``folder``."""
    config = yaml.safe_load((ROOT / "decentralml/configs/mnist.yaml").read_text())
    config["training"]["epochs"] = 1
    config["task"]["validation_strategy"] = "AutoAccept"
    config["task"]["max_assignments"] = contributors
    config["task"]["pays_amount"] = 1000 * contributors
    config["marketplace"]["path"] = str(folder / "marketplace.sqlite")
    config["storage"]["url"] = f"file://{folder / 'storage'}"
    config["rounds"], config["contributors"] = 1, contributors
    config["simulation"] = {"runner": runner, "address": None}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_case(name: str, runner: str, contributors: int, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-scale-{name}-") as tmp:
        folder = Path(tmp)
        summary = folder / "summary.json"
        command = [
            sys.executable, "-m", "decentralml_cli", "demo",
            "--config", str(case_config(folder, runner, contributors)),
            "--summary-json", str(summary),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_HOME": str(folder / "prefect")}
        env.pop("PREFECT_API_URL", None)  # each case: its own ephemeral server
        log = (folder / "demo.log").open("w")
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
        sampler = Sampler(process.pid)
        sampler.start()
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(process.pid)  # Prefect's temporary server outlives a killed CLI
            process.wait()
            code = -9
        wall = time.perf_counter() - started
        sampler.done.set()
        sampler.join()
        log.close()
        result = {
            "case": name,
            "runner": runner,
            "contributors": contributors,
            "exit_code": code,
            "wall_s": round(wall, 1),
            "peak_rss_mb": round(sampler.peak_rss / 2**20),
            "peak_threads": sampler.peak_threads,
        }
        result.update(outcome(summary))
        if code != 0:
            result["log_tail"] = (folder / "demo.log").read_text()[-3000:]
        return result


def outcome(summary: Path) -> dict:
    """Accepted and paid submissions of the demo's one round, if it finished."""
    if not summary.exists():
        return {"accepted": 0, "paid": 0, "final_metric": None}
    data = json.loads(summary.read_text())
    rounds = data["reports"]
    return {
        "accepted": sum(len(r["accepted"]) for r in rounds),
        "paid": sum(1 for r in rounds for amount in r["payments"].values() if amount > 0),
        "final_metric": data["final_metric"],
        "demo_wall_s": data["wall_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per case")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = {}
    for name in args.cases:
        runner, contributors = CASES[name]
        results[name] = run_case(name, runner, contributors, args.timeout)
        shown = {k: v for k, v in results[name].items() if k != "log_tail"}
        print(json.dumps(shown), file=sys.stderr, flush=True)
    figures = {"cases": results, "ratios": ratios(results)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures))


def ratios(results: dict) -> dict:
    """Time per contribution at 100 against the 10-contributor baseline (1.0: linear)."""
    base = results.get("threads-10")
    if not base or base["exit_code"] != 0:
        return {}
    per_base = base["wall_s"] / base["contributors"]
    return {
        f"{name}_per_contribution_vs_threads-10": round(
            r["wall_s"] / r["contributors"] / per_base, 3
        )
        for name, r in results.items()
        if name != "threads-10" and r["exit_code"] == 0
    }


if __name__ == "__main__":
    main()
