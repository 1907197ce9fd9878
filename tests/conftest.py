"""Test-session settings: everything offline, inside ignored project folders.

Prefect gets its own home and is told not to phone home; Keras and the MNIST cache live in the
project. Integration suites start their own servers (tests/chain_fixture.py for the chain).

Under pytest-xdist (``make test`` runs the suite on TEST_WORKERS processes) each worker gets
its own Prefect home: the ephemeral Prefect servers of two workers would otherwise share one
SQLite database and result storage. Everything else shared is safe to share: the MNIST cache
and the project wheel are written to a temporary name and renamed, tmp_path is per worker, and
every server a test starts listens on a free port.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ...; unset in a serial run
os.environ["PREFECT_HOME"] = str(ROOT / ".prefect-test" / (_WORKER or ""))
os.environ["KERAS_HOME"] = str(ROOT / ".keras")
os.environ.setdefault("DECENTRALML_DATA_DIR", str(ROOT / ".cache" / "data"))
# SCAFFOLD's per-contributor state (decentralml.io.local_state): fresh per session, never $HOME
if "DECENTRALML_STATE_DIR" not in os.environ:
    os.environ["DECENTRALML_STATE_DIR"] = tempfile.mkdtemp(prefix="dml-state-")
    atexit.register(shutil.rmtree, os.environ["DECENTRALML_STATE_DIR"], ignore_errors=True)
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Prefect configures logging once, when its main module is imported, with dictConfig, which
# closes every handler registered before. absl's handler (registered by TensorFlow's import)
# closes its stream then unless it is the current sys.stderr; under pytest's capture that stream
# is the capture's own file, so a test that imported TensorFlow before anything imported Prefect
# left the next test using capsys writing to a closed file, and pytest crashed at exit
# (tests/test_isolation.py). Prefect first, here: its configuration never sees absl's handler.
from prefect import flow as _configure_prefect_logging_first  # noqa: E402,F401

pytest_plugins = ["tests.chain_fixture", "tests.prefect_server"]


@pytest.fixture(autouse=True)
def _stop_shared_prefect_servers(request: pytest.FixtureRequest):
    """A ``decentralml contribute`` process started without PREFECT_API_URL starts its Prefect
    home's shared server (decentralml.runtime.local_server), which outlives it by design; after
    each test, the servers of the session's home and of homes under its tmp_path are stopped,
    by the pid each recorded."""
    yield
    from decentralml.runtime.local_server import STATE_FILE, stop

    records = [Path(os.environ["PREFECT_HOME"]) / STATE_FILE]
    if tmp_path := request.node.funcargs.get("tmp_path"):
        records += Path(tmp_path).rglob(STATE_FILE)
    for record in records:
        if record.exists():
            stop(record.parent)


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server for the whole session, one per xdist worker (entering one
    costs ~10 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
