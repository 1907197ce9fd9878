"""A real `prefect server start` for tests, protected by basic auth (the creator team's
server), and helpers to read its flow runs. Registered in conftest.py (``pytest_plugins``):
any test module can ask for the ``prefect_server`` fixture (one server per module)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.chain_fixture import free_port

PREFECT = str(Path(sys.executable).with_name("prefect"))
AUTH = ("creator-team", "a-shared-secret")


def wait_healthy(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"Prefect server at {url} not healthy after {timeout}s")


def stop(process: subprocess.Popen) -> None:
    """An idle worker ignores the first SIGTERM: send two, then kill."""
    for _ in range(2):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                continue
    if process.poll() is None:
        process.kill()


def start_server(home: Path, auth: tuple[str, str] | None = AUTH) -> tuple[subprocess.Popen, dict]:
    """A Prefect server on a free port with its database in ``home``; returns it and the
    environment of a client (authenticated when ``auth`` is given)."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api,
        "PREFECT_UI_API_URL": api,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    server_env = {**env, "PREFECT_SERVER_API_AUTH_STRING": ":".join(auth)} if auth else env
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=server_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_healthy(api)
    except BaseException:
        stop(server)
        raise
    return server, ({**env, "PREFECT_API_AUTH_STRING": ":".join(auth)} if auth else env)


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory) -> Iterator[dict]:
    """The creator team's server (basic auth); yields an authenticated client's environment."""
    server, env = start_server(tmp_path_factory.mktemp("prefect-home"))
    try:
        yield env
    finally:
        stop(server)


def wait_for_runs(env: dict, expected: int, timeout: float) -> dict[str, str]:
    """Flow run name -> state type, once ``expected`` runs are final (or at the timeout)."""
    script = (
        "import json\n"
        "from prefect.client.orchestration import get_client\n"
        "with get_client(sync_client=True) as c:\n"
        "    print(json.dumps({r.name: r.state_type.value for r in c.read_flow_runs()}))\n"
    )
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
        )
        states = json.loads(done.stdout or "{}")
        final = [s for s in states.values() if s in {"COMPLETED", "FAILED", "CRASHED"}]
        if len(final) >= expected or "FAILED" in final or "CRASHED" in final:
            return states
        time.sleep(2)
    return states
