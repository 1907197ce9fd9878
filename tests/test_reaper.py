"""kill -9 of a command in Prefect's ephemeral mode left its temporary Prefect server running
(200-246 MB each): the watcher (decentralml.runtime.reaper) ends it with the command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from decentralml.runtime.reaper import EPHEMERAL_SERVER, children_matching
from tests.helpers import ROOT

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux only")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes (its parent, killed, cannot reap it)
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout} s")


def _kill_and_expect_gone(
    command: subprocess.Popen, needle: str, start_timeout: float, what: str
) -> None:
    """Once ``command`` runs a child matching ``needle`` (and the watcher, polling every
    0.5 s, had time to see it), kill -9 the command: the child must end too."""
    child = None
    try:
        [(child, _)] = _wait(
            lambda: list(children_matching(command.pid, needle)), start_timeout, f"no {what}"
        )
        time.sleep(1.5)  # another process's poll: no clock of ours to inject
        command.send_signal(signal.SIGKILL)
        command.wait()
        _wait(lambda: not _alive(child), 30, f"the {what} outlived its killed command")
    finally:
        command.kill()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)


def test_a_killed_commands_helper_ends_with_it() -> None:
    """A parent (the command) starts a helper whose command line names the needle, and a
    watcher; kill -9 of the parent ends the helper."""
    helper = "import time; time.sleep(600)  # helper-to-reap"
    script = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {helper!r}])\n"
        "subprocess.Popen([sys.executable, '-c', 'from decentralml.runtime.reaper import watch;"
        ' import os; watch(os.getppid(), "helper-" + "to-reap")\'])\n'
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    _kill_and_expect_gone(parent, "helper-to-reap", 30, "helper")


@pytest.mark.slow
@pytest.mark.integration
def test_kill_9_of_a_command_leaves_no_prefect_server(tmp_path: Path) -> None:
    market = tmp_path / "market" / "m.sqlite"
    market.parent.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PYTHONPATH=str(ROOT))
    env["DECENTRALML_PREFECT_SERVER"] = "temporary"  # Prefect's own, a child of the command
    command = subprocess.Popen(
        [sys.executable, "-m", "decentralml_cli", "contribute", "--marketplace", str(market)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _kill_and_expect_gone(command, EPHEMERAL_SERVER, 240, "temporary Prefect server")


def _processes_named(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            # the server itself: not the command nor the shell, whose lines name it too
            server = cmdline.startswith(f"{sys.executable}\0-c\0import time")
            if server and marker in cmdline and _alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def test_a_server_orphaned_before_the_watcher_saw_it_ends_with_the_command(
    tmp_path: Path,
) -> None:
    """CI (2026-12-07): a SIGTERM while the demo's temporary Prefect server was being spawned
    left that server running; the command died before the watcher's next look at its
    children, so the orphan (reparented) was linked to nothing. Here the server is orphaned
    at birth (started through a shell that exits at once): it is never the command's child,
    and still ends with the command, found by the mark it inherited."""
    marker = f"orphan-{os.getpid()}-{tmp_path.name}"
    server = f"import time; time.sleep(600)  # {marker} {EPHEMERAL_SERVER}"
    script = (
        "import subprocess, sys\n"
        "from decentralml.runtime.reaper import watch_parent\n"
        "watch_parent()\n"
        f"subprocess.run(['sh', '-c', {sys.executable!r} + ' -c \"{server}\" &'], check=True)\n"
    )
    command = subprocess.Popen(
        [sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    try:
        [orphan] = _wait(lambda: _processes_named(marker), 30, "no orphaned server")
        command.wait(timeout=60)  # the command ends on its own: no signal to forward
        _wait(lambda: not _alive(orphan), 30, "the orphaned server outlived its command")
    finally:
        command.kill()
        for pid in _processes_named(marker):
            os.kill(pid, signal.SIGKILL)


def test_the_shared_local_server_does_not_carry_the_watchers_mark() -> None:
    """The home's shared Prefect server outlives the agent that started it (by design), so
    it must not inherit the mark that has the agent's watcher end it."""
    from decentralml.runtime import local_server
    from decentralml.runtime.reaper import LINEAGE

    assert not local_server._inherited(LINEAGE)
    assert not local_server._inherited("PREFECT_API_URL")
    assert local_server._inherited("PATH")
