"""The contributor agent running unattended, on real parts: its filters, its concurrency limit,
its idle timeout, `decentralml tasks`, and a clean stop on SIGTERM (against a real Prefect
server) and on SIGINT (ephemeral Prefect), each agent a real `decentralml contribute` process
configured by environment only (no config file in its working directory)."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import UUID

import pytest

from decentralml.contributor import Contributor, filter_reason
from decentralml.creator import task_settings
from decentralml.io.storage import ArtifactStore
from decentralml.io.weights import encode
from decentralml.marketplace.embedded import EmbeddedMarketplace
from decentralml.ml.models import build_model, model_tensors
from decentralml.protocol.accounts import contributor_dev_keypair, dev_keypair
from decentralml.runtime.config import ContributorConfig, RunConfig, TrainingConfig
from flows.contributor import run_agent
from tests.helpers import ROOT, write_config
from tests.prefect_server import wait_for_runs
from tests.test_contributor_trust import AGENT_LOG, _publish, _skips

ALICE, MALLORY = dev_keypair("Alice"), dev_keypair("Mallory")


@pytest.fixture
def market(tmp_path: Path) -> EmbeddedMarketplace:
    return EmbeddedMarketplace(tmp_path / "marketplace.sqlite", block_time_seconds=6.0)


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    """Where an agent started in ``tmp_path`` without a config file keeps its storage."""
    return ArtifactStore((tmp_path / ".decentralml" / "storage").as_uri())


def _trainable(market: EmbeddedMarketplace, store: ArtifactStore, name: str, epochs: int) -> int:
    """A real task: the contributor package, the seed model's weights, ``epochs`` local epochs."""
    settings = task_settings(RunConfig(training=TrainingConfig(epochs=epochs))).dump()
    weights = encode(model_tensors(build_model("mnist_mlp")))
    return _publish(
        market, store, name, settings=settings, global_bytes=weights,
        model="mnist_mlp", epochs=epochs,
    )  # fmt: skip


# --- filters: decided from the record, before any download ---------------------------------


def test_filters_skip_tasks_by_reward_model_and_creator_with_one_info_line(
    market: EmbeddedMarketplace, store: ArtifactStore, caplog: pytest.LogCaptureFixture
) -> None:
    tasks = {
        "cheap": _publish(market, store, "cheap", pays_amount=100, model="mnist_mlp"),
        "other-model": _publish(market, store, "other-model", model="resnet"),
        "no-model": _publish(market, store, "no-model"),
        "stranger": _publish(market, store, "stranger", creator="Mallory", model="mnist_mlp"),
    }
    terms = ContributorConfig(
        min_reward_per_result=100, models=["mnist_mlp"], creators=[ALICE.ss58_address]
    )
    worker = contributor_dev_keypair(0)
    # Storage the agent must not read: every asset sits in a folder it cannot reach.
    contributor = Contributor(
        market, ArtifactStore("memory://nothing-here"), worker, 0, None, terms
    )
    with caplog.at_level(logging.INFO, logger=AGENT_LOG):
        assert run_agent(contributor, poll_seconds=0.01, max_tasks=len(tasks)) == []
    assert _skips(caplog) == {
        tasks["cheap"]: "filtered: pays 50 per result, below min_reward_per_result 100",
        tasks["other-model"]: "filtered: trains 'resnet', not one of contributor.models "
        "['mnist_mlp']",
        tasks["no-model"]: "filtered: records no model, not one of contributor.models "
        "['mnist_mlp']",
        tasks["stranger"]: f"filtered: its creator {MALLORY.ss58_address} is not in "
        "contributor.creators",
    }
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert all(market.list_task_results(t) == [] for t in tasks.values())


def test_a_task_passing_every_filter_is_wanted(
    market: EmbeddedMarketplace, store: ArtifactStore
) -> None:
    task = market.get_task(_publish(market, store, "good", pays_amount=1000, model="mnist_mlp"))
    # Alice's address in another SS58 spelling (prefix 2, as a chain reports it) still matches.
    kusama_alice = "HNZata7iMYWmk5RvZRTiAsSDhV8366zq2YGb3tLH5Upf74F"
    terms = ContributorConfig(
        min_reward_per_result=500, models=["mnist_mlp"], creators=[kusama_alice]
    )
    assert filter_reason(task, terms) is None
    assert filter_reason(task, ContributorConfig()) is None  # empty lists: any model, anyone


# --- concurrency and idle timeout (real training under a Prefect test server) --------------


@pytest.mark.slow
def test_two_tasks_are_worked_at_once_under_the_agent_flow(
    market: EmbeddedMarketplace,
    store: ArtifactStore,
    prefect_harness,
) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentTaskRunId,
    )
    from prefect.context import get_run_context

    from tasks.contributor import STEPS

    first, second = (_trainable(market, store, name, epochs=1) for name in ("a", "b"))
    # The proof of concurrency, independent of how fast this machine is: each task trains
    # only once both tasks are training. A serial agent never gets the second one going, the
    # barrier times out and neither task is done.
    both_training = threading.Barrier(2, timeout=120)

    def train_once_both_train(*args, **kwargs):
        both_training.wait()
        return STEPS.train(*args, **kwargs)

    steps = dataclasses.replace(STEPS, train=train_once_both_train)
    terms = ContributorConfig(max_concurrent_tasks=2)
    contributor = Contributor(market, store, contributor_dev_keypair(0), 0, None, terms)

    @flow(name="test-agent")
    def agent_flow() -> tuple[str, list[int]]:
        done = run_agent(contributor, poll_seconds=0.05, max_tasks=2, steps=steps)
        return str(get_run_context().flow_run.id), sorted(c.task_id for c in done)

    agent_run_id, done = agent_flow()
    assert done == [first, second]
    with get_client(sync_client=True) as client:
        # This session's Prefect server keeps other tests' runs, some with the same names:
        # the task runs are found through the agent's run, as a creator's UI shows them.
        tracking = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(agent_run_id)]))
        )
        children = FlowRunFilter(
            parent_task_run_id=FlowRunFilterParentTaskRunId(any_=[t.id for t in tracking])
        )
        task_runs = client.read_flow_runs(flow_run_filter=children)
        # The subflows' final states reach the API's reads a moment after the flow returns
        # (under load it took more than 30 s): wait for them, bounded.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(
            r.state_type.value == "COMPLETED" for r in task_runs
        ):
            time.sleep(0.5)
            task_runs = client.read_flow_runs(flow_run_filter=children)
    seen = [(r.name, r.state_type.value, r.tags) for r in task_runs]
    # Both tasks linked to the agent's run, each its own run, each finished and tagged.
    assert sorted(r.name for r in task_runs) == [
        f"contributor-0-task-{t}" for t in (first, second)
    ], seen
    assert all(r.state_type.value == "COMPLETED" for r in task_runs), seen
    assert all("role:contributor" in r.tags for r in task_runs), seen


@pytest.mark.slow
def test_the_agent_ends_completed_after_its_idle_timeout(
    tmp_path: Path, prefect_harness, caplog: pytest.LogCaptureFixture
) -> None:
    from flows.contributor import agent

    path, _ = write_config(tmp_path, **{"contributor.idle_timeout_seconds": 1.0})
    with caplog.at_level(logging.INFO, logger="flows.contributor"):
        state = agent(str(path), 0, return_state=True)
    assert state.is_completed() and state.result() == 0
    # it stopped because it was idle (not for a signal nor a task limit)
    assert "no task for 1.0 s: the agent stops" in caplog.messages


# --- `decentralml tasks`, configured by environment only -------------------------------------


def _cli(cwd: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "decentralml_cli", *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_tasks_lists_reward_per_result_free_slots_blocks_left_model_epochs_creator(
    tmp_path: Path, market: EmbeddedMarketplace, store: ArtifactStore
) -> None:
    task_id = _publish(
        market, store, "listed", pays_amount=1000, max_assignments=4, model="mnist_mlp", epochs=3
    )
    market.assign_task(contributor_dev_keypair(0), task_id)
    expiry = market.get_task(task_id).spec.expiration_block
    lister = _cli(tmp_path, "tasks", "--marketplace", str(tmp_path / "marketplace.sqlite"))
    out, err = lister.communicate(timeout=120)
    assert lister.returncode == 0, err
    header, row = out.splitlines()
    assert header.split() == [
        "id", "status", "reward/result", "free/slots", "blocks", "left", "model", "epochs",
        "creator",
    ]  # fmt: skip
    cells = row.split()
    assert cells[:4] == [str(task_id), "InProgress", "250", "3/4"]
    assert expiry - market.current_block() <= int(cells[4]) <= 100  # blocks left, not a block
    assert cells[5:] == ["mnist_mlp", "3", f"{ALICE.ss58_address[:6]}...{ALICE.ss58_address[-4:]}"]


def test_the_cli_gives_prefects_ephemeral_server_time_to_start_on_a_cold_machine(
    tmp_path: Path,
) -> None:
    """Regression: `contribute` failed on a cold machine with Prefect's default 20 s start
    timeout; only the Makefile raised it. The CLI now raises it itself, before Prefect reads
    its settings, and keeps a value the user set."""
    show = (
        "import sys\n"
        "from decentralml_cli import main\n"
        "main(['tasks', '--marketplace', sys.argv[1]])\n"
        "from prefect.settings import get_current_settings\n"
        "print('timeout', get_current_settings().server.ephemeral.startup_timeout_seconds)\n"
    )
    base = {k: v for k, v in os.environ.items()
            if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}  # fmt: skip
    market = str(tmp_path / "market.sqlite")
    for extra, expected in (
        ({}, "timeout 120"),
        ({"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "45"}, "timeout 45"),
    ):
        done = subprocess.run(
            [sys.executable, "-c", show, market],
            cwd=tmp_path, env={**base, "PYTHONPATH": str(ROOT), **extra},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().splitlines()[-1] == expected, done.stdout


def test_a_marketplace_flag_naming_a_folder_is_one_line_exit_2(tmp_path: Path) -> None:
    lister = _cli(tmp_path, "tasks", "--marketplace", str(tmp_path))
    _, err = lister.communicate(timeout=120)
    assert lister.returncode == 2 and "Traceback" not in err
    assert err.startswith("error: invalid configuration in no config file: marketplace.path: ")
    assert len(err.splitlines()) == 1


# --- a clean stop ----------------------------------------------------------------------------


def _agent_env(tmp_path: Path) -> dict[str, str]:
    """A contributor configured by environment only: marketplace, key; no config file."""
    return {
        "DECENTRALML_MARKETPLACE_URL": str(tmp_path / "marketplace.sqlite"),
        "DECENTRALML_CONTRIBUTOR_URI": "//Bob",
    }


def _wait_until(condition, process: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"agent exited before {what}: {process.communicate()[1][-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"no {what} after {timeout} s")
        time.sleep(0.1)


@contextmanager
def _killed_at_the_end(process: subprocess.Popen) -> Iterator[None]:
    """A failed assertion must leave nothing running: kill the agent and its children."""
    try:
        yield
    finally:
        if process.poll() is None:
            for child in _still_running(_descendants(process.pid)):
                os.kill(child, signal.SIGKILL)
            process.kill()
            process.wait()


def _parent_of(pid: int) -> int | None:
    """From /proc (Linux): the field after the parenthesised command name is the state."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = stat.rsplit(")", 1)[1].split()[:2]
    return None if state == "Z" else int(ppid)  # a zombie has already exited


def _descendants(pid: int) -> list[int]:
    parents = {int(p.name): _parent_of(int(p.name)) for p in Path("/proc").glob("[0-9]*")}
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _still_running(pids: list[int]) -> list[int]:
    """Those of ``pids`` still running (a PID is not reused within the seconds this takes)."""
    return [pid for pid in pids if _parent_of(pid) is not None]


@pytest.mark.slow
@pytest.mark.integration
def test_sigterm_finishes_the_task_in_progress_and_ends_the_run_cancelled(
    prefect_server,
    tmp_path: Path,
    market: EmbeddedMarketplace,
    store: ArtifactStore,
) -> None:
    first = _trainable(market, store, "first", epochs=3)
    second = _trainable(market, store, "second", epochs=3)
    # a grace long enough for the 3 epochs (by default a task is killed 5 s after SIGTERM)
    env = {**prefect_server, **_agent_env(tmp_path), "DECENTRALML_STOP_GRACE_SECONDS": "600"}
    agent = _cli(tmp_path, "contribute", env=env)
    with _killed_at_the_end(agent):
        _wait_until(lambda: market.list_task_results(first), agent, 240, "slot taken")
        children = _descendants(agent.pid)
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=180)
    assert agent.returncode == 0, err[-3000:]
    assert "Traceback" not in err and "stopped by SIGTERM after 1 task(s)" in err
    [submission] = market.list_task_results(first)
    assert submission.result is not None  # the task in progress was finished
    assert market.list_task_results(second) == []  # and no other one started
    states = wait_for_runs(prefect_server, expected=1, timeout=30)
    assert states["agent-0"] == "CANCELLED" and states[f"contributor-0-task-{first}"] == "COMPLETED"
    assert not _still_running(children)


@pytest.mark.slow
@pytest.mark.integration
def test_ctrl_c_in_ephemeral_mode_leaves_no_prefect_server_behind(tmp_path: Path) -> None:
    EmbeddedMarketplace(tmp_path / "marketplace.sqlite", block_time_seconds=6.0)  # no tasks
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["DECENTRALML_PREFECT_SERVER"] = "temporary"  # Prefect's own, a child of the agent
    agent = _cli(tmp_path, "contribute", env={**env, **_agent_env(tmp_path)})
    with _killed_at_the_end(agent):
        # Ephemeral mode: the temporary Prefect server is a child; the agent then polls.
        _wait_until(lambda: _descendants(agent.pid), agent, 180, "temporary Prefect server")
        time.sleep(3)  # past the server's start-up, into the agent's loop
        children = _descendants(agent.pid)
        agent.send_signal(signal.SIGINT)
        _, err = agent.communicate(timeout=120)
    assert agent.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "stopped by SIGINT after 0 task(s)" in err
    # The Prefect server is gone at once; the command's watcher (decentralml.runtime.reaper)
    # ends by itself within its poll once the command is gone.
    watchers = [pid for pid in children if "decentralml.runtime.reaper" in _cmdline(pid)]
    others = [pid for pid in children if pid not in watchers]
    assert not _still_running(others), _still_running(others)
    deadline = time.monotonic() + 15
    while _still_running(watchers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _still_running(watchers), _still_running(watchers)
