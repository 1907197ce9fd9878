"""Agent start-up: from ``decentralml contribute`` launched to its first "looking for tasks"
line, with Prefect's temporary server per process (the old way) vs the Prefect home's shared
local server, first start and reused (issue 18, part 1).

Run from the project root (3-6 min on 2 busy cores):

    .venv/bin/python bench/bench_agent_start.py --repeats 3

Each repeat, in this order, runs a real ``python -m decentralml_cli contribute`` process on an
empty embedded marketplace, reads its stderr until the agent says "no open task with a free
slot", then stops it (SIGTERM to the agent alone) and waits for it to end:

* ``temporary``: DECENTRALML_PREFECT_SERVER=temporary, Prefect's ephemeral mode: the process
  starts (and stops) a server of its own, its database already migrated (a warm home);
* ``shared_first``: a fresh Prefect home: the agent starts the shared server (and migrates a
  new database), detached;
* ``shared_reused``: the same home again: the agent finds the server alive and reuses it.

``imports`` is the floor no server choice removes: ``import flows.contributor`` (Prefect,
TensorFlow, the procedure) in a fresh interpreter. Medians over the repeats; the ratios are
of medians measured in this same run. Every shared server started is stopped at the end.
Ends with ONE JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from decentralml.marketplace.embedded import EmbeddedMarketplace  # noqa: E402
from decentralml.runtime import local_server  # noqa: E402

READY = "no open task with a free slot"


def _env(home: Path, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    base.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    base.setdefault("DO_NOT_TRACK", "1")
    base["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    return {**base, "PREFECT_HOME": str(home), "PYTHONPATH": str(ROOT), **extra}


def time_to_ready(cwd: Path, market: Path, env: dict[str, str]) -> float:
    """Seconds from launch to the agent's first "looking for tasks" line; then a stop."""
    started = time.perf_counter()
    agent = subprocess.Popen(
        [sys.executable, "-m", "decentralml_cli", "contribute", "--marketplace", str(market)],
        cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        for line in agent.stderr:
            if READY in line:
                ready = time.perf_counter() - started
                break
        else:
            raise SystemExit(f"the agent ended before looking for tasks (exit {agent.wait()})")
        agent.send_signal(signal.SIGTERM)  # the agent alone: a Ctrl-C to its group would kill
        agent.communicate(timeout=300)  # a temporary server under it (tests/test_stranger_cli)
        return ready
    finally:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGKILL)
            agent.wait()


def time_imports(env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import flows.contributor"], cwd=ROOT, env=env, check=True
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {
        "imports": [], "temporary": [], "shared_first": [], "shared_reused": [],
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-agent-start-") as scratch:
        work = Path(scratch)
        market = work / "marketplace.sqlite"
        EmbeddedMarketplace(market, block_time_seconds=6.0)
        temporary = _env(work / "home-temporary", DECENTRALML_PREFECT_SERVER="temporary")
        time_to_ready(work, market, temporary)  # its database migrated once, as a user's is
        homes = [work / f"home-shared-{i}" for i in range(args.repeats)]
        try:
            for home in homes:
                times["imports"].append(time_imports(temporary))
                times["temporary"].append(time_to_ready(work, market, temporary))
                shared = _env(home)
                times["shared_first"].append(time_to_ready(work, market, shared))
                times["shared_reused"].append(time_to_ready(work, market, shared))
        finally:
            for home in homes:
                local_server.stop(home)
    medians = {f"{name}_s": round(statistics.median(v), 2) for name, v in times.items()}
    print(json.dumps({
        **medians,
        "reused_vs_temporary": round(medians["shared_reused_s"] / medians["temporary_s"], 3),
        "first_vs_temporary": round(medians["shared_first_s"] / medians["temporary_s"], 3),
        "server_part_temporary_s": round(medians["temporary_s"] - medians["imports_s"], 2),
        "server_part_reused_s": round(medians["shared_reused_s"] - medians["imports_s"], 2),
        "repeats": args.repeats,
        "runs_s": {name: [round(t, 2) for t in v] for name, v in times.items()},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
