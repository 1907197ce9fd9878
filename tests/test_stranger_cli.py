"""A stranger's first minutes with ``decentralml contribute`` (issue 18, part 1): in an empty
folder, with nothing but flags and variables, the command says what it does in one line per
event (a skipped task, a marketplace with nothing to take, a Prefect server that did not
start) and never a traceback for what is not a bug."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from decentralml.io.storage import ArtifactStore
from decentralml.marketplace.embedded import EmbeddedMarketplace
from decentralml.runtime import local_server
from decentralml.runtime.config import MARKETPLACE_ENV
from decentralml_cli import _contributor_config, build_parser, main
from tests.helpers import ROOT
from tests.test_contributor_agent import _trainable
from tests.test_contributor_trust import _publish

CONTRIBUTE = (sys.executable, "-m", "decentralml_cli", "contribute")


def _stranger_env(cwd: Path, **env: str) -> dict[str, str]:
    """A stranger's environment: its own Prefect home, Prefect's default logging (INFO), no
    Prefect server named (the agent uses its home's local one)."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_API", "PREFECT_LOGGING", "DECENTRALML_MARKETPLACE"))
    }
    return {**base, "PREFECT_HOME": str(cwd / ".prefect"), "PYTHONPATH": str(ROOT), **env}


def _stranger(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``decentralml contribute ...`` as a stranger runs it, to its end."""
    return subprocess.run(
        [*CONTRIBUTE, *args], cwd=cwd, env=_stranger_env(cwd, **env),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def _no_noise(err: str) -> None:
    """What a clean run or a skipped task must not print."""
    assert "Traceback" not in err and "Error flushing" not in err, err
    assert "| ERROR" not in err and "| DEBUG" not in err and "CancelledError" not in err, err


# --- nothing named: refused at once ----------------------------------------------------------


def test_an_empty_folder_with_no_marketplace_named_is_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Regression: with no config file, no --marketplace and no variable, the agent created
    .decentralml/marketplace.sqlite here and waited forever for tasks nobody could publish."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(MARKETPLACE_ENV, raising=False)
    assert main(["contribute", "--max-tasks", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: no marketplace to contribute to")
    assert str(tmp_path / ".decentralml" / "marketplace.sqlite") in err and "--marketplace" in err
    assert list(tmp_path.iterdir()) == []  # nothing created


# --- filters from flags and the environment --------------------------------------------------


def _filters(tmp_path: Path, *flags: str) -> tuple[list[str], list[str], int]:
    args = build_parser().parse_args(
        ["contribute", "--marketplace", str(tmp_path / "m.sqlite"), *flags]
    )
    terms = _contributor_config(args).contributor
    return terms.models, terms.creators, terms.min_reward_per_result


def test_filters_come_from_flags_over_variables_over_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: models, creators and min_reward_per_result existed only in a config file."""
    alice = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
    bob = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"
    monkeypatch.delenv("DECENTRALML_MODELS", raising=False)
    assert _filters(tmp_path) == ([], [], 1)  # the defaults: anything paying at least 1
    monkeypatch.setenv("DECENTRALML_MODELS", "mnist_mlp, mnist_cnn")
    monkeypatch.setenv("DECENTRALML_CREATORS", alice)
    monkeypatch.setenv("DECENTRALML_MIN_REWARD_PER_RESULT", "500")
    assert _filters(tmp_path) == (["mnist_mlp", "mnist_cnn"], [alice], 500)
    flags = ("--models", "mnist_cnn", "--creators", f"{alice},{bob}")
    assert _filters(tmp_path, *flags, "--min-reward-per-result", "7") == (
        ["mnist_cnn"], [alice, bob], 7,
    )  # fmt: skip
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"contributor": {"models": ["breast_cancer"]}}))
    assert _filters(tmp_path, "--config", str(config))[0] == ["mnist_mlp", "mnist_cnn"]


def test_a_bad_filter_value_is_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("DECENTRALML_CREATORS", "not-an-address")
    market = str(tmp_path / "m.sqlite")
    assert main(["contribute", "--marketplace", market, "--max-tasks", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "contributor.creators" in err, err


# --- the real command: one line per event, no tracebacks -------------------------------------


def test_a_prefect_server_that_does_not_start_is_one_line_exit_2(tmp_path: Path) -> None:
    """Regression: under load the temporary Prefect server missed its start-up timeout and
    the agent crashed with a 30-line traceback, exit status 1. Injected: a 1 s timeout."""
    EmbeddedMarketplace(tmp_path / "m.sqlite", block_time_seconds=6.0)
    done = _stranger(
        tmp_path, "--marketplace", str(tmp_path / "m.sqlite"), "--max-tasks", "1",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="1",
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    [error] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert error == (
        "error: the local Prefect server did not start within 1 s; set "
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS higher, or PREFECT_API_URL to a "
        "running Prefect server"
    )
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_each_skipped_task_is_one_line_and_an_empty_wait_says_where(tmp_path: Path) -> None:
    """Regressions: a task the filters skip printed nothing (the agent's info line never
    reached the terminal); a task refused inside its run printed three ERROR lines and two
    Prefect tracebacks before its one warning; an agent finding no task said nothing."""
    market_path = tmp_path / "marketplace.sqlite"
    market = EmbeddedMarketplace(market_path, block_time_seconds=6.0)
    store = ArtifactStore((tmp_path / "storage").as_uri())
    other = _publish(market, store, "other-model", model="resnet")
    refused = _trainable(market, store, "trainable", epochs=1)
    bad = tmp_path / "bad.npz"  # data of another shape: refused in the run, before a slot
    np.savez(bad, x=np.zeros((20, 5), np.float32), y=np.zeros(20, np.int64))
    config = tmp_path / "agent.yaml"  # only to stop the agent once nothing is left to take
    config.write_text(yaml.safe_dump({"contributor": {"idle_timeout_seconds": 3}}))

    done = _stranger(
        tmp_path, "--config", str(config), "--marketplace", str(market_path),
        "--data", str(bad), DECENTRALML_MODELS="mnist_mlp",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "contributed to 0 task(s)" in done.stdout
    err = done.stderr
    _no_noise(err)
    [filtered] = [line for line in err.splitlines() if f"skipping task {other}:" in line]
    assert "| INFO" in filtered and "filtered: trains 'resnet'" in filtered
    [failed] = [line for line in err.splitlines() if f"skipping task {refused}:" in line]
    assert "| WARNING" in failed and "DataError: local data" in failed
    [waiting] = [line for line in err.splitlines() if "no open task with a free slot" in line]
    assert str(market_path) in waiting
    assert market.list_task_results(refused) == []  # refused before taking a slot


def _ctrl_c(cwd: Path, market: Path) -> str:
    """Start an agent as a terminal's job, press Ctrl-C once it is looking for tasks; its
    stderr. It must stop at once: exit 130, its run Cancelled."""
    err_path = cwd / "stderr.txt"
    with err_path.open("w") as err:
        agent = subprocess.Popen(
            [*CONTRIBUTE, "--marketplace", str(market)], cwd=cwd,
            env=_stranger_env(cwd), stdout=subprocess.PIPE, stderr=err, text=True,
            start_new_session=True,  # its own process group, as a terminal's job has
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while "no open task with a free slot" not in err_path.read_text():
            assert agent.poll() is None and time.monotonic() < deadline, err_path.read_text()
            time.sleep(0.5)  # waiting for another process's output: no clock to inject
        os.killpg(agent.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        agent.communicate(timeout=90)
    finally:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGKILL)
    err = err_path.read_text()
    assert agent.returncode == 130, err[-3000:]
    assert "stopped: stopped by SIGINT after 0 task(s)" in err
    return err


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_stops_the_agent_at_once_and_quietly(tmp_path: Path) -> None:
    """Regression: Ctrl-C signals the terminal's whole process group, and Prefect's temporary
    server was in it: it died while the agent still had to record its run Cancelled and
    flush its events, so the agent printed "Error flushing" and a CancelledError traceback,
    or crashed (exit 1, "Connection refused"), or hung retrying. The agent now uses its
    Prefect home's shared server, in a session of its own: it outlives the Ctrl-C, and the
    next agent reuses it instead of starting one."""
    market = tmp_path / "m.sqlite"
    EmbeddedMarketplace(market, block_time_seconds=6.0)
    home = tmp_path / ".prefect"
    first = _ctrl_c(tmp_path, market)
    server = local_server.running(home)
    assert server is not None, first[-3000:]  # it survived the Ctrl-C and answers
    assert f"started a local Prefect server at {server.api_url}" in first
    second = _ctrl_c(tmp_path, market)
    assert "started a local Prefect server" not in second  # reused
    assert local_server.running(home) == server
    for err in (first, second):
        _no_noise(err)
    stopped = subprocess.run(
        [*CONTRIBUTE[:-1], "server", "stop"], cwd=tmp_path, env=_stranger_env(tmp_path),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert stopped.stdout == f"stopped the local Prefect server (pid {server.pid})\n"
    assert local_server.running(home) is None
