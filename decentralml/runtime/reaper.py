"""Take a command's helper processes down with it, even when it is killed with SIGKILL.

In Prefect's ephemeral mode the first API client starts a temporary server as a child
process (``uvicorn ... prefect.server.api.server:create_app``) and stops it at exit. A command
killed with ``kill -9`` runs no exit code: the server outlived it (200-246 MB each in the
outside test). Linux tells a child nothing when its parent dies, so a small watcher process
started with the command (``watch_parent``) looks at the command's children every half second,
remembers those it should reap, and terminates them once the command is gone. A remembered
process is identified by its pid and its start time, so a recycled pid is never touched.

Linux only (it reads /proc); elsewhere nothing is started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

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
        os.kill(pid, sig)
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            stat = _stat(pid)
            if stat is None or stat[1] != started:
                return
            time.sleep(0.1)


def watch(parent: int, needle: str = EPHEMERAL_SERVER) -> None:
    """Until ``parent`` is gone, remember its children matching ``needle``; then end them."""
    parent_stat = _stat(parent)
    if parent_stat is None:
        return
    remembered: dict[int, int] = {}
    while (current := _stat(parent)) is not None and current[1] == parent_stat[1]:
        remembered.update(children_matching(parent, needle))
        time.sleep(POLL_SECONDS)
    for pid, started in remembered.items():
        _terminate(pid, started)


def watch_parent() -> subprocess.Popen | None:
    """Start the watcher for this process (Linux; else None). It needs no cleanup: it ends
    when this process does, after ending what it remembered."""
    if not PROC.joinpath("self", "stat").exists():
        return None
    return subprocess.Popen(
        [sys.executable, "-m", "decentralml.runtime.reaper", str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C to the command's group does not stop it first
    )


if __name__ == "__main__":
    watch(int(sys.argv[1]))
