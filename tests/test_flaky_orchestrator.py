"""A slow or flaky orchestrator loses no submission.

The demo runs as a user runs it (the CLI in a subprocess) against a real `prefect server
start`, with faults injected on purpose between the two (tests/flaky_api.py): 503s on every
3rd task-run creation and state update, and every artifact refused with a 500.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from decentralml.protocol.accounts import contributor_dev_keypair
from tests.helpers import ROOT, write_config

CONTRIBUTORS = 4


@pytest.mark.slow
@pytest.mark.integration
def test_a_round_through_a_flaky_prefect_api_pays_every_submission(prefect_server, tmp_path):
    path, _ = write_config(
        tmp_path,
        **{
            "task.pays_amount": 4000,
            "task.validation_strategy": "AutoAccept",
            "simulation.runner": "threads",
        },
    )
    summary_path, faults = tmp_path / "summary.json", tmp_path / "faults.json"
    done = subprocess.run(
        [sys.executable, "-m", "tests.flaky_api", "demo", "--config", str(path),
         "--contributors", str(CONTRIBUTORS), "--summary-json", str(summary_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**prefect_server, "FLAKY_API_REPORT": str(faults)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(faults.read_text())
    seen, injected = report["seen"], report["injected"]
    # The faults did happen: every kind of request the run made met its fault at least once.
    # How many task runs Prefect creates by POST (not through its event stream) varies from
    # run to run (one CI run made fewer than 3 and, faulting every 3rd, met none).
    assert seen.get("set_state_503", 0) >= 1 and seen.get("artifacts_500", 0) >= 1, report
    assert all(injected.get(name, 0) >= 1 for name in seen), report

    summary = json.loads(summary_path.read_text())
    (round_,) = summary["rounds"]
    assert len(round_["accepted"]) == CONTRIBUTORS and not round_["rejected"]
    workers = {contributor_dev_keypair(i).ss58_address for i in range(CONTRIBUTORS)}
    assert {p["contributor"] for p in summary["payments"]} == workers
    for payment in summary["payments"]:  # each slot paid once: 4000 // 4
        assert payment["amount"] == payment["balance_change"] == 1000
    assert "not published" in done.stderr  # the refused artifacts: a warning, not a failure


def test_a_progress_artifact_the_api_refuses_is_a_warning(monkeypatch, caplog):
    import httpx

    from decentralml.creator import WaitStatus
    from tasks import reporting

    def refused(*args, **kwargs):  # the fault, injected on purpose
        raise httpx.ConnectError("connection refused")

    monkeypatch.setattr(reporting, "create_progress_artifact", refused)
    reporting.log.addHandler(caplog.handler)  # Prefect's logging config may stop propagation
    progress = reporting.WaitProgress("mnist-demo", 1)
    progress(WaitStatus(7, slots=4, assigned=1, results=0, seconds_left=60, blocks_left=10))
    reporting.log.removeHandler(caplog.handler)
    assert "mnist-demo-round-1-progress progress not published: ConnectError" in caplog.text


def test_the_cli_gives_prefect_its_retry_settings_unless_the_user_set_them():
    script = (
        "import decentralml_cli as cli\n"
        "cli.main(['workloads'])\n"
        "from prefect.settings import PREFECT_CLIENT_MAX_RETRIES as retries\n"
        "print('retries', retries.value())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_CLIENT_MAX_RETRIES"}
    ours = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert "retries 8" in ours.stdout, ours.stderr[-2000:]
    env["PREFECT_CLIENT_MAX_RETRIES"] = "2"
    theirs = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert "retries 2" in theirs.stdout, theirs.stderr[-2000:]
