"""An idle waiting round: what the creator's process holds while nobody has answered yet.

Run from the project root (≈2 min on 2 cores):

    nice -n 5 .venv/bin/python bench/bench_idle_round.py --seconds 20

Publishes one round of ``configs/mnist.yaml`` (embedded marketplace, file storage, in a temporary
folder) that no contributor takes, then measures, each in a fresh process that waits on it
with the round's own ``wait_for_results`` (the plain step, polled every ``poll_seconds``) for
``--seconds``:

* ``session``: the round as a local run waits (and a deployment's run waited before it
  suspended, flows/waker.py): the creator's session open (TensorFlow, the compiled model, the
  held-out and test splits), then the wait;
* ``light``: the same wait with only what it needs: Prefect, the marketplace and the storage
  (``open_creator``), no TensorFlow;
* ``waker``: the real waker flow (``flows.waker.wait_and_resume``, the deployment
  ``creator-wait-for-results``) run by Prefect's engine against a Prefect server of its own
  (started here, in another process, as a deployment's server is), waiting the same
  ``--seconds``; the run it would resume does not exist, so it resumes nothing.

Each reports its peak resident memory (``VmHWM``), its resident memory at the end of the wait
(``VmRSS``), whether TensorFlow was imported, and ``overhead_s``: the process's wall time
less the wait (start-up and exit). ``idle_ratio`` = session's idle RSS / light's. A round run
from a deployment holds no process while it waits, for the reviewer (flows/manual_review.py)
or for its results (flows/waker.py): 0 MB; the waker holds ``waker_peak_mb``, and the resumed
run pays the session's start-up again (``session_overhead_s``).

Ends with ONE JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
VARIANTS = ("session", "light", "waker")


def memory_mb() -> dict[str, float]:
    """This process's peak and current resident memory, MB (Linux)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in {"VmHWM", "VmRSS"}:
            fields[name] = round(int(value.split()[0]) / 1024, 1)
    return {"peak_mb": fields["VmHWM"], "idle_mb": fields["VmRSS"]}


def config_in(folder: Path):
    """configs/mnist.yaml with its state in ``folder``: one round nobody takes."""
    import yaml

    from decentralml.runtime.config import parse_config

    data = yaml.safe_load((ROOT / "configs" / "mnist.yaml").read_text())
    data["marketplace"]["path"] = str(folder / "marketplace.sqlite")
    data["storage"]["url"] = (folder / "storage").as_uri()
    data["rounds"], data["poll_seconds"] = 1, 1
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, parse_config(data, str(path))


def publish(folder: Path) -> tuple[Path, int]:
    """The round, published by a session of its own (this process is not measured)."""
    from decentralml.creator.round import publish_round
    from decentralml.creator.session import open_session

    path, config = config_in(folder)
    return path, publish_round(open_session(config, run="idle"), 1)


def wait(variant: str, config_path: str, task_id: int, seconds: float) -> dict:
    """One measured process: open what ``variant`` opens, then wait ``seconds`` on the task."""
    import prefect  # noqa: F401 (a deployment's run has it loaded in both cases)

    from decentralml.creator import wait_for_results
    from decentralml.creator.session import open_creator, open_session
    from decentralml.runtime.config import load_config

    config = load_config(config_path)
    if variant == "waker":
        run_waker(config.model_copy(update={"round_timeout_seconds": seconds}), task_id)
    elif variant == "session":
        creator = open_session(config, run="idle").creator
        wait_for_results(creator.market, task_id, seconds, config.poll_seconds)
    else:
        creator = open_creator(config, run="idle")
        wait_for_results(creator.market, task_id, seconds, config.poll_seconds)
    return {"variant": variant, **memory_mb(), "tensorflow": "tensorflow" in sys.modules}


def run_waker(config, task_id: int) -> None:
    """The waker's flow, as its deployment runs it, for a suspended run that is not there."""
    from uuid import uuid4

    from flows.waker import wait_and_resume

    wait_and_resume(
        config=config.model_dump(mode="json"), run="idle", round_number=1, task_id=task_id,
        suspended_run=str(uuid4()),
    )  # fmt: skip


def measured(variant: str, config_path: Path, task_id: int, seconds: float, api: str) -> dict:
    """One variant in a fresh process; ``api``: the Prefect server the waker talks to."""
    command = [sys.executable, __file__, "--child", variant, str(config_path), str(task_id)]
    env = {**os.environ, "PREFECT_API_URL": api} if variant == "waker" else None
    started = time.monotonic()
    done = subprocess.run(
        [*command, "--seconds", str(seconds)], capture_output=True, text=True, check=True, env=env
    )
    overhead = round(time.monotonic() - started - seconds, 1)
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "overhead_s": overhead}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20, help="how long each process waits")
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "CONFIG", "TASK"))
    args = parser.parse_args()
    if args.child:
        variant, config_path, task_id = args.child
        print(json.dumps(wait(variant, config_path, int(task_id), args.seconds)))
        return
    from decentralml.runtime import local_server

    with tempfile.TemporaryDirectory(prefix="dml-idle-") as folder:
        config_path, task_id = publish(Path(folder))
        home = Path(folder) / "prefect-home"
        server, _ = local_server.ensure(home, timeout_seconds=120)
        try:
            runs = {
                v: measured(v, config_path, task_id, args.seconds, server.api_url) for v in VARIANTS
            }
        finally:
            local_server.stop(home)
    session, light = runs["session"], runs["light"]
    fields = ("peak_mb", "idle_mb", "tensorflow", "overhead_s")
    print(json.dumps({
        "bench": "idle_round",
        "seconds": args.seconds,
        **{f"{v}_{k}": runs[v][k] for v in VARIANTS for k in fields},
        "idle_ratio": round(session["idle_mb"] / light["idle_mb"], 2),
        "peak_ratio": round(session["peak_mb"] / light["peak_mb"], 2),
        "waker_peak_ratio": round(session["peak_mb"] / runs["waker"]["peak_mb"], 2),
        "suspended_round_mb": 0,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
