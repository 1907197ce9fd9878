"""The `decentralml` command as a user runs it: a subprocess with a config file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from decentralml.accounts import contributor_dev_keypair
from tests.helpers import ROOT, write_config


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"}
    return subprocess.run(
        [sys.executable, "-m", "decentralml.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_bad_config_names_the_field(tmp_path):
    path, _ = write_config(tmp_path)
    path.write_text(path.read_text().replace("batch_size: 32", "batch_size: -4"))
    done = run_cli("tasks", "--config", str(path))
    assert done.returncode == 2
    assert "training.batch_size" in done.stderr and "greater than 0" in done.stderr


def test_missing_config_file_is_reported(tmp_path):
    done = run_cli("tasks", "--config", str(tmp_path / "nope.yaml"))
    assert done.returncode == 2 and "does not exist" in done.stderr


@pytest.mark.slow
def test_demo_writes_summary_and_pays_each_accepted_contributor_once(tmp_path):
    path, _ = write_config(tmp_path, **{"task.pays_amount": 1000})
    summary_path = tmp_path / "summary.json"
    done = run_cli(
        "demo",
        "--config",
        str(path),
        "--rounds",
        "2",
        "--contributors",
        "2",
        "--summary-json",
        str(summary_path),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    assert summary["final_accuracy"] == summary["rounds"][-1]["accuracy"] > 0.9
    assert all(len(r["accepted"]) == 2 and not r["rejected"] for r in summary["rounds"])
    workers = {contributor_dev_keypair(i).ss58_address for i in range(2)}
    assert {p["contributor"] for p in summary["payments"]} == workers
    for payment in summary["payments"]:  # 2 rounds x (1000 // 2 slots), paid once each
        assert payment["amount"] == payment["balance_change"] == 1000
    assert "round" in done.stdout and "final test accuracy" in done.stdout

    listed = run_cli("results", "0", "--config", str(path))
    assert listed.returncode == 0 and listed.stdout.count("Accepted") == 2
    balance = run_cli("balance", "//Bob", "--config", str(path))
    assert balance.stdout.split() == [contributor_dev_keypair(0).ss58_address, "1000"]


@pytest.mark.slow
def test_creator_and_contributor_in_separate_processes(tmp_path):
    """publish → (another process) contribute → round, sharing SQLite and file storage."""
    path, _ = write_config(tmp_path, **{"task.max_assignments": 1, "contributors": 3})
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"}
    contributor = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "decentralml.cli",
            "contribute",
            "--config",
            str(path),
            "--index",
            "2",
            "--rounds",
            "1",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        published = run_cli("publish", "--config", str(path), "--round", "1", "--run", "cli")
        assert published.returncode == 0, published.stderr[-3000:]
        assert "published as task 0" in published.stdout
        out, err = contributor.communicate(timeout=600)
    finally:
        contributor.kill()
    assert contributor.returncode == 0, err[-3000:]
    assert "contributed to 1 task(s)" in out

    decisions = tmp_path / "decisions.yaml"
    decisions.write_text("0: {accept: true, reason: checked by hand}\n")
    settled = run_cli(
        "round",
        "0",
        "--config",
        str(path),
        "--run",
        "cli",
        "--validation",
        "ManualAccept",
        "--decisions",
        str(decisions),
    )
    assert settled.returncode == 0, settled.stderr[-3000:]
    row = settled.stdout.strip().splitlines()[-1].split()
    assert row[:2] == ["1", "0"] and float(row[2]) > 0.8 and row[3:] == ["1", "0"]
    balance = run_cli("balance", contributor_dev_keypair(2).ss58_address, "--config", str(path))
    assert balance.stdout.split()[1] == str(1_000_000)
    results = run_cli("results", "0", "--config", str(path))
    assert "Accepted" in results.stdout and "checked by hand" in results.stdout
