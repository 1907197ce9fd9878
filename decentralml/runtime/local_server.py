"""One long-lived local Prefect server per Prefect home, shared by the agents that use it.

In Prefect's ephemeral mode each process starts a temporary server of its own (a uvicorn
subprocess running ``prefect.server.api.server:create_app``, migrating the SQLite database on
every start) and stops it at exit: 10-75 s of every ``decentralml contribute`` on a busy
machine, and on Ctrl-C the server, in the terminal's process group, dies first, so the
agent's last events fail to flush ("Error flushing N events"). Here the first agent starts
the same server detached (its own session, so a terminal's Ctrl-C does not reach it) and
records it in the Prefect home; every later agent with that home finds it alive and reuses
it in a fraction of a second. ``decentralml server stop`` stops it.

Keyed by the Prefect home (where its SQLite database lives): two homes, two servers; a lock
file makes two agents starting at once start one. No Prefect import: only a process, a port
and three files in the home (``decentralml-server.json``, ``.lock``, ``.log``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from decentralml.protocol.errors import DecentralMLError
from decentralml.runtime.reaper import LINEAGE, terminate

STATE_FILE = "decentralml-server.json"
APP = "prefect.server.api.server:create_app"
HEALTH_TIMEOUT_SECONDS = 2.0
LAUNCHES = 3
"""How many times a server that exits at once is launched again (each on a new port)."""
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Asks 127.0.0.1 itself, never through an http_proxy of the environment."""


class ServerDidNotStart(DecentralMLError):
    """The local Prefect server did not answer within its start-up timeout."""


@dataclass(frozen=True)
class LocalServer:
    """A running local server: its process and where its API listens."""

    pid: int
    port: int
    home: str

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"


def _files(home: Path) -> tuple[Path, Path, Path]:
    """The state, lock and log files of ``home``'s server."""
    state = home / STATE_FILE
    return state, state.with_suffix(".lock"), state.with_suffix(".log")


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    """Only one process at a time looks for, starts or stops ``home``'s server."""
    home.mkdir(parents=True, exist_ok=True)
    with _files(home)[1].open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, even on a crash
        yield


def _is_our_server(pid: int, port: int) -> bool:
    """Whether ``pid`` is alive and (where /proc tells) still the server on ``port``, not a
    process that reused a dead server's pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's: not ours
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return True  # no /proc (macOS): the health check below decides
    args = cmdline.read_bytes().split(b"\0")
    return APP.encode() in args and str(port).encode() in args


def _healthy(port: int) -> bool:
    url = f"http://127.0.0.1:{port}/api/health"
    try:
        with _DIRECT.open(url, timeout=HEALTH_TIMEOUT_SECONDS) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):  # refused, reset, timed out, an HTTP error
        return False


def _recorded(home: Path) -> LocalServer | None:
    try:
        return LocalServer(**json.loads(_files(home)[0].read_text()))
    except (OSError, ValueError, TypeError):
        return None


def running(home: Path) -> LocalServer | None:
    """``home``'s server if it is alive and answers, else None."""
    server = _recorded(home)
    if server and _is_our_server(server.pid, server.port) and _healthy(server.port):
        return server
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(home: Path, port: int) -> subprocess.Popen:
    """Prefect's own temporary-server command (SubprocessASGIServer), detached: its own
    session (no terminal signal reaches it), its output in the home's log, its cwd the home
    (it outlives the folder the agent ran in)."""
    env = {
        **{k: v for k, v in os.environ.items() if _inherited(k)},
        "PREFECT_HOME": str(home),
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",  # the services ephemeral mode runs, no more
        "PREFECT__SERVER_FINAL": "1",
    }
    command = [
        sys.executable, "-m", "uvicorn", "--factory", APP, "--host", "127.0.0.1",
        "--port", str(port), "--log-level", "error", "--lifespan", "on",
    ]  # fmt: skip
    with _files(home)[2].open("a") as log:
        return subprocess.Popen(
            command, cwd=home, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True,
        )  # fmt: skip


def _inherited(name: str) -> bool:
    """Not PREFECT_API_*, nor the command watcher's mark: this server outlives its command."""
    return not name.startswith("PREFECT_API_") and name != LINEAGE


def _stop_process(pid: int, port: int, grace_seconds: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_seconds``, while ``pid`` is still the server."""
    terminate(pid, lambda candidate: _is_our_server(candidate, port), grace_seconds)


def _start(home: Path, timeout_seconds: float, wait: Callable[[], None]) -> LocalServer:
    """Launch, then wait until it answers. A server that exits at once lost its free port to
    another process between our choosing it and its binding it: launched again on another."""
    deadline = time.monotonic() + timeout_seconds
    port = _free_port()
    process, launches = _launch(home, port), 1
    while not _healthy(port):
        if process.poll() is not None and launches < LAUNCHES:
            port = _free_port()
            process, launches = _launch(home, port), launches + 1
        elif process.poll() is not None:
            raise ServerDidNotStart(
                f"the local Prefect server exited at start (status {process.returncode}; its "
                f"log: {_files(home)[2]}); set PREFECT_API_URL to a running Prefect server"
            )
        elif time.monotonic() > deadline:
            _stop_process(process.pid, port)
            process.poll()
            raise ServerDidNotStart(
                f"the local Prefect server did not start within {timeout_seconds:g} s; set "
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS higher, or PREFECT_API_URL to "
                "a running Prefect server"
            )
        wait()
    server = LocalServer(pid=process.pid, port=port, home=str(home))
    _files(home)[0].write_text(json.dumps(asdict(server)))
    return server


def ensure(
    home: Path, timeout_seconds: float, wait: Callable[[], None] = lambda: time.sleep(0.2)
) -> tuple[LocalServer, bool]:
    """``home``'s running server, started (detached) if none answers; and whether it was
    started now. Raises ServerDidNotStart (one line with the fix) after ``timeout_seconds``."""
    home = home.resolve()
    with _locked(home):
        if server := running(home):
            return server, False
        return _start(home, timeout_seconds, wait), True


def stop(home: Path) -> LocalServer | None:
    """Stop ``home``'s server; the one stopped, or None if none was running."""
    home = home.resolve()
    with _locked(home):
        server = _recorded(home)
        _files(home)[0].unlink(missing_ok=True)
        if server is None or not _is_our_server(server.pid, server.port):
            return None
        _stop_process(server.pid, server.port)
        return server
