"""prefect.yaml for real: a Prefect server, a process worker, and the creator's and a
contributor's deployments running one round between them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from decentralml.domain import ResultSubmissionStatus
from decentralml.runtime import open_marketplace
from tests.helpers import ROOT, write_config

pytestmark = [pytest.mark.slow, pytest.mark.integration]
PREFECT = str(Path(sys.executable).with_name("prefect"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"Prefect server at {url} not healthy after {timeout}s")


def _stop(process: subprocess.Popen) -> None:
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


@pytest.fixture
def prefect_server(tmp_path):
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_healthy(env["PREFECT_API_URL"])
        yield env
    finally:
        _stop(server)


def _prefect(env: dict, *args: str) -> str:
    done = subprocess.run(
        [PREFECT, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_deployments_run_a_round_through_a_worker(prefect_server, tmp_path):
    env = {**prefect_server, "DECENTRALML_PROJECT_DIR": str(ROOT)}
    config_path, config = write_config(tmp_path, contributors=3, **{"task.max_assignments": 1})
    _prefect(env, "work-pool", "create", "decentralml", "--type", "process")
    deployed = _prefect(env, "--no-prompt", "deploy", "--all")
    assert "creator-train" in deployed and "contributor-agent" in deployed

    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", "decentralml"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _prefect(
            env,
            "deployment",
            "run",
            "contributor-agent/contributor-agent",
            "-p",
            f"config_path={config_path}",
            "-p",
            "shard_index=1",
            "-p",
            "max_tasks=1",
        )
        _prefect(env, "deployment", "run", "creator-train-from-config/creator-train",
                 "-p", f"config_path={config_path}")  # fmt: skip
        states = _wait_for_runs(env, expected=6, timeout=420)
    finally:
        _stop(worker)
    assert set(states.values()) == {"COMPLETED"}, states
    assert {"agent-1", "contributor-1-task-0", f"{config.name}-round-1-task-0"} <= set(states)

    [submission] = open_marketplace(config.marketplace).list_task_results(0)
    assert submission.status is ResultSubmissionStatus.Accepted
    assert submission.paid == config.task.pays_amount


def _wait_for_runs(env: dict, expected: int, timeout: float) -> dict[str, str]:
    """Flow run name -> state type, once `expected` runs are final (or at the timeout)."""
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
        states = yaml.safe_load(done.stdout or "{}")
        final = [s for s in states.values() if s in {"COMPLETED", "FAILED", "CRASHED"}]
        if len(final) >= expected or "FAILED" in final or "CRASHED" in final:
            return states
        time.sleep(2)
    return states
