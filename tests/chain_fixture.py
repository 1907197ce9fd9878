"""pytest plugin: a real local Substrate chain (chopsticks, chain/start.sh) for a test session.

Register it in conftest (``pytest_plugins = ["tests.chain_fixture"]``) or with
``-p tests.chain_fixture``. Fixtures:

* ``chain_url``: one chain per session on a free port, started by chain/start.sh and stopped
  by its PID at the end. ``DECENTRALML_CHAIN_URL`` reuses a running chain instead (``make
  chain``), which saves the ~6 s start.
* ``chain_client``: one shared ChainClient (metadata loads once, ~1.2 s).
* ``funded_keypair``: a factory of fresh random keypairs funded with ``dev_setStorage``, so
  tests sharing the chain never share an account.
* ``start_chain``: a factory for extra chains (another block mode, restart tests), each
  stopped at the end of the test.

When Node.js or the chain's npm dependencies are missing the chain fixtures FAIL if ``CI`` is
true (CI must install them: ``cd chain && npm ci``) and skip with the reason otherwise.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from substrateinterface import Keypair

from decentralml.chain.client import ChainClient

CHAIN_DIR = Path(__file__).resolve().parent.parent / "chain"
START_SCRIPT = CHAIN_DIR / "start.sh"
START_TIMEOUT_SECONDS = 420  # npm ci on a cold cache takes ~2.5 min, then ~6 s to start
MISSING_DEPS_EXIT = 2  # chain/start.sh: node, npm or node_modules missing and not installable
DEFAULT_FUNDS = 10**15  # 1000 units of 12 decimals: far above any test's fees


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _unavailable(reason: str) -> None:
    """Fail in CI (the chain is required there), skip elsewhere."""
    if _in_ci():
        pytest.fail(f"local chain unavailable in CI: {reason}", pytrace=False)
    pytest.skip(f"local chain unavailable: {reason}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ChainProcess:
    """A chopsticks process started by chain/start.sh; not our child, so stopped by PID."""

    pid: int
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 15.0) -> None:
        if not _alive(self.pid):
            return
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def launch_chain(log: Path, port: int | None = None, block_mode: str = "Instant") -> ChainProcess:
    """Start a chain with chain/start.sh and return once it serves RPC; skip/fail if the
    node tooling is missing, fail with the log tail for anything else."""
    if not START_SCRIPT.exists():
        pytest.fail(f"{START_SCRIPT} is missing", pytrace=False)
    port = port or free_port()
    command = [
        "bash", str(START_SCRIPT), "--port", str(port), "--block-mode", block_mode,
        "--log", str(log), "--pidfile", str(log.with_suffix(".pid")),
    ]  # fmt: skip
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=START_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"chain/start.sh did not finish in {START_TIMEOUT_SECONDS}s", pytrace=False)
    except FileNotFoundError:
        _unavailable("bash is not installed")
    if done.returncode == MISSING_DEPS_EXIT:
        _unavailable(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "deps")
    if done.returncode != 0:
        pytest.fail(f"chain/start.sh failed ({done.returncode}):\n{done.stderr}", pytrace=False)
    return ChainProcess(pid=int(done.stdout.strip().splitlines()[-1]), port=port, log=log)


@pytest.fixture(scope="session")
def chain_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The ws URL of a fresh local chain shared by the whole session."""
    external = os.environ.get("DECENTRALML_CHAIN_URL", "").strip()
    if external:
        yield external
        return
    chain = launch_chain(tmp_path_factory.mktemp("chain") / "chopsticks.log")
    try:
        yield chain.url
    finally:
        chain.stop()


@pytest.fixture(scope="session")
def chain_client(chain_url: str) -> Iterator[ChainClient]:
    client = ChainClient(chain_url)
    try:
        yield client
    finally:
        client.close()


def fund(client: ChainClient, address: str, amount: int) -> None:
    """Set an account's free balance directly (chopsticks dev RPC): instant, no block, no fee."""
    entry = [[address], {"providers": 1, "data": {"free": str(amount)}}]
    client.rpc("dev_setStorage", [{"System": {"Account": [entry]}}])


@pytest.fixture
def funded_keypair(chain_client: ChainClient) -> Callable[..., Keypair]:
    """``funded_keypair(amount=DEFAULT_FUNDS)`` -> a new random keypair holding ``amount``
    (``amount=0`` gives an unfunded one)."""

    def make(amount: int = DEFAULT_FUNDS) -> Keypair:
        keypair = Keypair.create_from_mnemonic(Keypair.generate_mnemonic(), ss58_format=42)
        if amount:
            fund(chain_client, keypair.ss58_address, amount)
        return keypair

    return make


@pytest.fixture
def start_chain(tmp_path: Path) -> Iterator[Callable[..., ChainProcess]]:
    """``start_chain(block_mode="Instant", port=None)``: an extra chain for this test only."""
    started: list[ChainProcess] = []

    def start(block_mode: str = "Instant", port: int | None = None) -> ChainProcess:
        log = tmp_path / f"chopsticks-{len(started)}.log"
        chain = launch_chain(log, port=port, block_mode=block_mode)
        started.append(chain)
        return chain

    try:
        yield start
    finally:
        for chain in started:
            chain.stop()


@contextmanager
def manual_blocks(client: ChainClient) -> Iterator[Callable[[], None]]:
    """Switch the chain to Manual block building; yields ``build()`` which puts everything
    pending into ONE block (FIFO), then restores Instant mode."""
    client.rpc("dev_setBlockBuildMode", ["Manual"])
    try:
        yield lambda: client.rpc("dev_newBlock", [{"count": 1}])
    finally:
        client.rpc("dev_setBlockBuildMode", ["Instant"])


def in_one_block(
    client: ChainClient, actions: list[Callable[[], object]], join_timeout: float = 120.0
) -> list[object]:
    """Run each action (each submits one extrinsic) in its own thread, letting them into the
    pool one at a time so pool order = submission order, then build ONE block holding them
    all. Returns each action's result, or the exception it raised, in action order."""
    outcomes: list[object] = [None] * len(actions)

    def run(i: int) -> None:
        try:
            outcomes[i] = actions[i]()
        except BaseException as exc:  # returned to the caller, who asserts on it
            outcomes[i] = exc

    with manual_blocks(client) as build_block:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(actions))]
        for i, thread in enumerate(threads):
            thread.start()
            wait_pending(client, i + 1)
        build_block()
        for thread in threads:
            thread.join(timeout=join_timeout)
    return outcomes


def wait_pending(client: ChainClient, count: int, timeout: float = 30.0) -> None:
    """Wait until ``count`` extrinsics sit in the pool (submitted from other threads)."""
    deadline = time.monotonic() + timeout
    while len(client.rpc("author_pendingExtrinsics", [])) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {count} pending extrinsics after {timeout}s")
        time.sleep(0.05)
