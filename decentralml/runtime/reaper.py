"""Take a command's helper processes down with it, even when it is killed with SIGKILL.

In Prefect's ephemeral mode the first API client starts a temporary server as a child
process (``uvicorn ... prefect.server.api.server:create_app``) and stops it at exit. A command
killed with ``kill -9`` runs no exit code: the server outlived it (200-246 MB each in the
outside test). Linux tells a child nothing when its parent dies, so a small watcher process
started with the command (``watch_parent``) looks at the command's children every half second,
remembers those it should reap, and terminates them once the command is gone. A remembered
process is identified by its pid and its start time, so a recycled pid is never touched.
A server spawned just before the command died may never be seen among its children (a SIGTERM
during the spawn: the command exits, the server is orphaned between two polls), so the watcher
also marks the command's environment (``LINEAGE``): every process started afterwards inherits
the mark, and once the command is gone the watcher also ends the marked servers, wherever they
were reparented. A server meant to outlive its command (the home's shared local server,
decentralml.runtime.local_server) is started without the mark.

The watcher also holds SIGTERM to its word: the command forwards every signal its Python
handlers catch through a pipe (``signal.set_wakeup_fd``: written by the C-level handler, so even
by an interpreter whose GIL is held by a deadlocked thread, where no Python handler ever runs),
and a command still alive ``STOP_GRACE_SECONDS`` after a SIGTERM is killed (then its server
ends as above): SIGTERM stops any command within 10 s (issue 20).

Linux only (it reads /proc); elsewhere nothing is started.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from decentralml.runtime.shutdown import STOP_GRACE_SECONDS

PROC = Path("/proc")
EPHEMERAL_SERVER = "prefect.server.api.server:create_app"
"""What the command line of Prefect's temporary server contains (its uvicorn app factory)."""
POLL_SECONDS = 0.5
LINEAGE = "DECENTRALML_WATCHED_COMMAND"
"""The environment variable watch_parent sets in its command: ``<pid>-<start time>``."""


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of ``pid``, None once it is gone."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), int(fields[19])


def _cmdline(pid: int) -> str:
    try:
        return (
            (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def children_matching(parent: int, needle: str) -> Iterator[tuple[int, int]]:
    """(pid, start time) of each child of ``parent`` whose command line contains ``needle``."""
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = _stat(pid)
        if stat and stat[0] == parent and needle in _cmdline(pid):
            yield pid, stat[1]


def _environ_has(pid: int, entry: bytes) -> bool:
    try:
        return entry in (PROC / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:  # gone, or another user's
        return False


def _lineage_mark(pid: int, started: int) -> str:
    return f"{pid}-{started}"


def of_lineage(mark: str, needle: str) -> Iterator[tuple[int, int]]:
    """(pid, start time) of each process, wherever it is now, whose command line contains
    ``needle`` and whose environment carries ``LINEAGE=mark``."""
    entry = f"{LINEAGE}={mark}".encode()
    for path in PROC.iterdir():
        if not path.name.isdigit():
            continue
        pid = int(path.name)
        stat = _stat(pid)
        if stat and needle in _cmdline(pid) and _environ_has(pid, entry):
            yield pid, stat[1]


def terminate(pid: int, still_it: Callable[[int], bool], grace_seconds: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_seconds``, each only while ``still_it(pid)`` (a
    pid is reused once its process ends); a child of ours is reaped as it ends."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not still_it(pid):
            return
        with contextlib.suppress(ProcessLookupError):  # ended (and reaped) since the check
            os.kill(pid, sig)
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            if not still_it(pid):
                return
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.1)


def _terminate(pid: int, started: int, grace_seconds: float = 5.0) -> None:
    """terminate ``pid`` while it is the process that started at ``started``."""

    def same(candidate: int) -> bool:
        stat = _stat(candidate)
        return stat is not None and stat[1] == started

    terminate(pid, same, grace_seconds)


def watch(parent: int, needle: str = EPHEMERAL_SERVER, signals: int | None = None) -> None:
    """Until ``parent`` is gone, remember its children matching ``needle``; then end them.
    ``signals``: the read end of the parent's wakeup pipe; SIGTERM read there gives the
    parent ``STOP_GRACE_SECONDS`` to end before it is killed. Then also ends the matching
    processes that inherited the parent's mark (``LINEAGE``, in this watcher's environment
    when watch_parent started it), even when the parent was gone before this one started."""
    mark = os.environ.get(LINEAGE, "")
    mark = mark if mark.startswith(f"{parent}-") else None
    parent_stat = _stat(parent)
    if parent_stat is None or (mark and mark != _lineage_mark(parent, parent_stat[1])):
        for pid, started in of_lineage(mark, needle) if mark else ():
            _terminate(pid, started, grace_seconds=1.0)
        return
    remembered: dict[int, int] = {}
    kill_at = None
    while (current := _stat(parent)) is not None and current[1] == parent_stat[1]:
        remembered.update(children_matching(parent, needle))
        if kill_at is not None and time.monotonic() >= kill_at:
            kill_at = float("inf")  # once: it may be a zombie its parent reaps any moment
            with contextlib.suppress(ProcessLookupError):
                os.kill(parent, signal.SIGKILL)  # the same process: checked just above
            for pid, started in remembered.items():  # no time left for a clean stop
                _terminate(pid, started, grace_seconds=0.0)
        caught = _caught_signals(signals, POLL_SECONDS if kill_at is None else 0.1)
        if caught is None:  # the pipe closed: the parent is exiting
            signals = None
        elif signal.SIGTERM in caught and kill_at is None:
            kill_at = time.monotonic() + STOP_GRACE_SECONDS
    if mark:  # the orphans: spawned, then their parent died before they were seen
        remembered.update(of_lineage(mark, needle))
    for pid, started in remembered.items():
        _terminate(pid, started, grace_seconds=1.0 if kill_at else 5.0)


def _caught_signals(signals: int | None, timeout: float) -> bytes | None:
    """The signals (one byte each, its number) the parent caught within ``timeout``; None
    once the pipe is closed. Without a pipe, just waits ``timeout``."""
    if signals is None:
        time.sleep(timeout)
        return b""
    if not select.select([signals], [], [], timeout)[0]:
        return b""
    return os.read(signals, 512) or None


def watch_parent() -> subprocess.Popen | None:
    """Start the watcher for this process (Linux; else None) and forward this process's caught
    signals to it. It needs no cleanup: it ends when this process does, after ending what it
    remembered. Call it from the main thread (the wakeup fd is set there)."""
    if not PROC.joinpath("self", "stat").exists():
        return None
    me = _stat(os.getpid())
    if me is not None:  # inherited by every process started from now on (see LINEAGE)
        os.environ[LINEAGE] = _lineage_mark(os.getpid(), me[1])
    read_end, write_end = os.pipe()
    watcher = subprocess.Popen(
        [sys.executable, "-m", "decentralml.runtime.reaper", str(os.getpid()), str(read_end)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        pass_fds=(read_end,),
        start_new_session=True,  # a Ctrl-C to the command's group does not stop it first
    )
    os.close(read_end)
    os.set_blocking(write_end, False)  # the C handler must never block on a full pipe
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    return watcher


if __name__ == "__main__":
    watch(int(sys.argv[1]), signals=int(sys.argv[2]) if len(sys.argv) > 2 else None)
