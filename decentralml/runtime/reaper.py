"""Take a command's helper processes down with it, even when it is killed with SIGKILL.

In Prefect's ephemeral mode the first API client starts a temporary server as a child
process (``uvicorn ... prefect.server.api.server:create_app``) and stops it at exit. A command
killed with ``kill -9`` runs no exit code: the server outlived it (200-246 MB each in the
outside test). Linux tells a child nothing when its parent dies, so a small watcher process
started with the command (``watch_parent``) looks at the command's children every half second,
remembers those it should reap, and terminates them once the command is gone. A remembered
process is identified by its pid and its start time, so a recycled pid is never touched.

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
from collections.abc import Iterator
from pathlib import Path

from decentralml.runtime.shutdown import STOP_GRACE_SECONDS

PROC = Path("/proc")
EPHEMERAL_SERVER = "prefect.server.api.server:create_app"
"""What the command line of Prefect's temporary server contains (its uvicorn app factory)."""
POLL_SECONDS = 0.5


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


def _terminate(pid: int, started: int, grace_seconds: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_seconds``: only while ``pid`` is the same process."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        stat = _stat(pid)
        if stat is None or stat[1] != started:
            return
        with contextlib.suppress(ProcessLookupError):  # ended (and reaped) since the check
            os.kill(pid, sig)
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            stat = _stat(pid)
            if stat is None or stat[1] != started:
                return
            time.sleep(0.1)


def watch(parent: int, needle: str = EPHEMERAL_SERVER, signals: int | None = None) -> None:
    """Until ``parent`` is gone, remember its children matching ``needle``; then end them.
    ``signals``: the read end of the parent's wakeup pipe; SIGTERM read there gives the
    parent ``STOP_GRACE_SECONDS`` to end before it is killed."""
    parent_stat = _stat(parent)
    if parent_stat is None:
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
