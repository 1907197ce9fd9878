"""Real commands stopped with SIGTERM at points of their life, shared by tests/test_sigterm.py
(everything the command started must be gone) and bench/bench_stress.py --sigterm (how many
seconds that took; target ≤ 10). Each command runs in its own session in a working directory
of its own, with its own PREFECT_HOME (Prefect's temporary server, a child of the command);
SIGTERM goes to the command's PID only, as ``kill`` or a supervisor sends it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from decentralml.runtime.reaper import EPHEMERAL_SERVER

ROOT = Path(__file__).resolve().parent.parent


def command_env(workdir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Prefect's and Keras's homes inside ``workdir``, quiet and offline, MNIST from the
    shared cache; Prefect's ephemeral mode (the command starts its own temporary server)."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_HOME=str(workdir / ".prefect"),
        KERAS_HOME=str(workdir / ".keras"),
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        PREFECT_LOGGING_LEVEL=os.environ.get("PREFECT_LOGGING_LEVEL", "WARNING"),
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONUNBUFFERED="1",
    )
    env.setdefault("PYTHONPATH", str(ROOT))
    env.setdefault("DECENTRALML_DATA_DIR", str(ROOT / ".cache" / "data"))
    return {**env, **(extra or {})}


class Tree:
    """A ``decentralml`` command started in its own session, and every process it starts:
    descendants are remembered when first seen, so one re-parented to init (an orphaned
    server, the command's watcher) still counts."""

    def __init__(self, args: list[str], workdir: Path, env: dict[str, str] | None = None):
        self.log_path = workdir / "output.log"
        self._log = self.log_path.open("wb")
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "decentralml_cli", *args],
            cwd=workdir,
            env=command_env(workdir, env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.root = psutil.Process(self.process.pid)
        self.seen: dict[int, psutil.Process] = {self.process.pid: self.root}
        self.cpu: dict[int, float] = {}

    def refresh(self) -> None:
        """Remember new descendants and the CPU seconds each has used so far."""
        try:
            for child in self.root.children(recursive=True):
                self.seen.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass
        for pid, proc in list(self.seen.items()):
            try:
                times = proc.cpu_times()
                self.cpu[pid] = times.user + times.system
            except psutil.NoSuchProcess:
                pass

    def cpu_seconds(self) -> float:
        return sum(self.cpu.values())

    def poll(self) -> int | None:
        self.refresh()
        return self.process.poll()

    def alive(self) -> list[psutil.Process]:
        """Processes of the tree still running (a zombie is gone for our purpose)."""
        self.refresh()
        self.process.poll()  # reaps the command itself once it exits
        living = []
        for proc in self.seen.values():
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    living.append(proc)
            except psutil.NoSuchProcess:
                pass
        return living

    def drain(self, seconds: float) -> list[psutil.Process]:
        """The processes of the tree still running after up to ``seconds``."""
        deadline = time.perf_counter() + seconds
        while (living := self.alive()) and time.perf_counter() < deadline:
            time.sleep(0.1)
        return living

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL every process of the tree, by the PIDs seen started."""
        for proc in self.alive():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        self.process.wait()
        self._log.close()

    def server_port(self) -> int | None:
        """The port of the command's temporary Prefect server, once it runs."""
        for proc in self.alive():
            try:
                cmdline = proc.cmdline()
            except psutil.NoSuchProcess:
                continue
            if EPHEMERAL_SERVER in cmdline and "--port" in cmdline:
                return int(cmdline[cmdline.index("--port") + 1])
        return None

    def dump(self) -> dict[str, str]:
        """``py-spy dump --native`` of every live Python process of the tree."""
        py_spy = Path(sys.executable).parent / "py-spy"
        dumps = {}
        for proc in self.alive():
            try:
                if "python" not in proc.name():
                    continue
            except psutil.NoSuchProcess:
                continue
            done = subprocess.run(
                [str(py_spy), "dump", "--native", "--pid", str(proc.pid)],
                capture_output=True,
                text=True,
                timeout=120,
            )
            dumps[str(proc.pid)] = done.stdout + done.stderr
        return dumps


def describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {' '.join(proc.cmdline())[:200]}"
    except psutil.NoSuchProcess:
        return f"{proc.pid} (gone)"


# --- when a point is reached, read from outside the command ----------------------------------


def watcher_started(tree: Tree, workdir: Path) -> bool:
    """Start-up: the arguments are parsed and the watcher runs; TensorFlow and Prefect are
    still being imported."""
    return len(tree.alive()) > 1


def server_starting(tree: Tree, workdir: Path) -> bool:
    """Prefect's temporary server process exists (it takes 10-45 s to answer)."""
    return tree.server_port() is not None


def flow_running(tree: Tree, workdir: Path) -> bool:
    """A flow run is Running on the temporary server: an agent polling, or a creator."""
    port = tree.server_port()
    if port is None:
        return False
    query = {"flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}}}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/flow_runs/filter",
        data=json.dumps(query).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return bool(json.load(response))
    except OSError:
        return False


def _market(workdir: Path):
    from decentralml.marketplace.embedded import EmbeddedMarketplace

    path = workdir / "marketplace.sqlite"
    if not path.exists():
        path = workdir / ".decentralml" / "marketplace.sqlite"  # the demo's, from its config
    return EmbeddedMarketplace(path) if path.exists() else None


def task_published(tree: Tree, workdir: Path) -> bool:
    """The creator published its round and waits for results."""
    market = _market(workdir)
    return market is not None and bool(market.list_tasks(open_only=False))


def slot_taken(tree: Tree, workdir: Path) -> bool:
    """A contributor took a slot: it is downloading and training."""
    market = _market(workdir)
    return market is not None and any(
        market.list_task_results(task.task_id) for task in market.list_tasks(open_only=False)
    )


def hanging(tree: Tree, workdir: Path) -> bool:
    """The injected fault holds the GIL (decentralml.runtime.crashpoints, mode ``hang``)."""
    return ": hanging" in tree.output()


# --- the points ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    name: str
    args: list[str]
    reached: Callable[[Tree, Path], bool]
    setup: Callable[[Path], dict[str, str]] = lambda workdir: {}
    """Prepares ``workdir`` (a config, a published task); returns environment for the command."""
    notes: str = ""


def small_config(workdir: Path) -> dict[str, str]:
    from tests.helpers import write_config

    write_config(workdir)
    return {}


def agent_env(workdir: Path) -> dict[str, str]:
    """A contributor configured by environment only: marketplace, key; no config file."""
    from decentralml.marketplace.embedded import EmbeddedMarketplace

    EmbeddedMarketplace(workdir / "marketplace.sqlite", block_time_seconds=6.0)
    return {
        "DECENTRALML_MARKETPLACE_URL": str(workdir / "marketplace.sqlite"),
        "DECENTRALML_CONTRIBUTOR_URI": "//Bob",
        # Prefect's temporary server, the one the command starts and must take down with it: a
        # home's shared server outlives its agents by design (decentralml.runtime.local_server)
        "DECENTRALML_PREFECT_SERVER": "temporary",
    }


def agent_with_a_task(workdir: Path) -> dict[str, str]:
    """The agent's environment, and a real task to train (3 epochs: still training when
    stopped)."""
    from decentralml.io.storage import ArtifactStore
    from decentralml.marketplace.embedded import EmbeddedMarketplace
    from tests.test_contributor_agent import _trainable

    env = agent_env(workdir)
    market = EmbeddedMarketplace(workdir / "marketplace.sqlite", block_time_seconds=6.0)
    store = ArtifactStore((workdir / ".decentralml" / "storage").as_uri())
    _trainable(market, store, "stopped", epochs=3)
    return env


def hang_when_published(workdir: Path) -> dict[str, str]:
    small_config(workdir)
    return {"DECENTRALML_CRASH_AT": "published", "DECENTRALML_CRASH_MODE": "hang"}


DEMO = ["demo", "--config", "config.yaml", "--contributors", "2", "--rounds", "1"]
TRAIN = ["train", "--config", "config.yaml", "--rounds", "1"]
POINTS = [
    Point("demo/start-up", DEMO, watcher_started, small_config),
    Point("demo/prefect-server-start", DEMO, server_starting, small_config),
    Point("demo/training", DEMO, slot_taken, small_config),
    Point("contribute/prefect-server-start", ["contribute"], server_starting, agent_env),
    Point("contribute/waiting", ["contribute"], flow_running, agent_env),
    Point("contribute/training", ["contribute"], slot_taken, agent_with_a_task),
    Point("train/waiting", TRAIN, task_published, small_config),
    Point(
        "train/hung-holding-the-gil",
        TRAIN,
        hanging,
        hang_when_published,
        "a thread blocked in native code holding the GIL, as in the deadlock of issue 20",
    ),
]


@dataclass
class Stop:
    point: str
    reached_after_s: float
    stop_s: float | None
    """Seconds from SIGTERM until the command and everything it started were gone (None:
    still running after the hang guard)."""
    exit_code: int | None
    left_running: list[str] = field(default_factory=list)
    output_tail: str = ""


def stop_at(point: Point, workdir: Path, reach_timeout: float, guard: float) -> Stop:
    """Run ``point``'s command in ``workdir``, SIGTERM it once the point is reached, and wait
    up to ``guard`` seconds (a hang guard, not a target) for its whole tree to end."""
    extra = point.setup(workdir)
    tree = Tree(point.args, workdir, extra)
    try:
        deadline = time.perf_counter() + reach_timeout
        while not point.reached(tree, workdir):
            if tree.poll() is not None or time.perf_counter() > deadline:
                raise AssertionError(
                    f"{point.name}: point not reached (exit {tree.process.returncode}):\n"
                    + tree.output()[-3000:]
                )
            time.sleep(0.1)
        reached = time.perf_counter() - tree.started
        tree.refresh()
        signalled = time.perf_counter()
        tree.process.send_signal(signal.SIGTERM)
        left = tree.drain(guard)
        stopped = time.perf_counter() - signalled
        return Stop(
            point=point.name,
            reached_after_s=round(reached, 2),
            stop_s=None if left else round(stopped, 2),
            exit_code=tree.process.poll(),
            left_running=[describe(proc) for proc in left],
            output_tail=tree.output()[-3000:],
        )
    finally:
        tree.kill()
