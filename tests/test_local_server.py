"""The local Prefect server the agents of one Prefect home share
(decentralml.runtime.local_server): real uvicorn processes, real health checks, stopped by
pid at the end of each test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from decentralml.runtime import local_server

TIMEOUT_SECONDS = 120


@pytest.fixture
def homes(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Two Prefect homes; their servers are stopped at the end, whatever the test did."""
    pair = (tmp_path / "home-a", tmp_path / "home-b")
    try:
        yield pair
    finally:
        for home in pair:
            local_server.stop(home)


def _alive(pid: int) -> bool:
    """Running, not gone nor a zombie (whose command line is empty) awaiting its reaping."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() != b""
    except OSError:
        return False


def test_agents_starting_at_once_start_one_server_per_home_and_later_ones_reuse_it(
    homes: tuple[Path, Path],
) -> None:
    a, b = homes
    with ThreadPoolExecutor(2) as pool:  # two agents of one home starting at the same moment
        both = list(pool.map(lambda _: local_server.ensure(a, TIMEOUT_SECONDS), range(2)))
    (first, started_first), (second, started_second) = both
    assert first == second and sorted([started_first, started_second]) == [False, True]
    assert local_server.ensure(a, TIMEOUT_SECONDS) == (first, False)  # a later agent
    assert json.loads((a / local_server.STATE_FILE).read_text())["pid"] == first.pid
    assert (a / "prefect.db").exists()  # its database lives in its Prefect home

    other, started = local_server.ensure(b, TIMEOUT_SECONDS)  # another home: its own server
    assert started and other.pid != first.pid and other.port != first.port

    assert local_server.stop(a) == first
    assert not _alive(first.pid) and local_server.running(a) is None
    assert local_server.stop(a) is None  # nothing left to stop
    assert local_server.running(b) == other  # the other home's server is untouched


def test_a_dead_servers_record_is_not_reused(tmp_path: Path) -> None:
    """A server gone since (a reboot, a kill) leaves its record behind: not running, and
    stop() removes the record without signalling whatever process took the pid since."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    record = local_server.LocalServer(pid=int(gone.stdout), port=9, home=str(tmp_path))
    tmp_path.joinpath(local_server.STATE_FILE).write_text(json.dumps(record.__dict__))
    assert local_server.running(tmp_path) is None
    assert local_server.stop(tmp_path) is None
    assert not tmp_path.joinpath(local_server.STATE_FILE).exists()
    # this test process is alive but is no Prefect server: never taken for one
    mine = local_server.LocalServer(pid=os.getpid(), port=9, home=str(tmp_path))
    tmp_path.joinpath(local_server.STATE_FILE).write_text(json.dumps(mine.__dict__))
    assert local_server.stop(tmp_path) is None and _alive(os.getpid())


def test_a_server_that_exits_at_start_is_launched_again_then_named_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injected: every launch exits at once (as a lost port race, or a broken install,
    does). Three launches, then one line naming the status and the log, and no record."""
    launches: list[int] = []

    def exits(home: Path, port: int) -> subprocess.Popen:
        launches.append(port)
        return subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])

    monkeypatch.setattr(local_server, "_launch", exits)
    with pytest.raises(local_server.ServerDidNotStart) as refused:
        local_server.ensure(tmp_path, TIMEOUT_SECONDS, wait=lambda: None)
    assert len(launches) == local_server.LAUNCHES
    assert str(refused.value) == (
        "the local Prefect server exited at start (status 3; its log: "
        f"{tmp_path.resolve() / 'decentralml-server.log'}); set PREFECT_API_URL to a running "
        "Prefect server"
    )
    assert not (tmp_path / local_server.STATE_FILE).exists()
