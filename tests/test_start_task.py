"""The contributor package as shipped: unpack it and run ./start_task.sh for real."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from decentralml.accounts import contributor_dev_keypair
from decentralml.contributor import result_url
from decentralml.creator import create_round_task, upload_assets, upload_global
from decentralml.domain import ResultSubmissionStatus
from decentralml.packaging import unpack_package
from decentralml.session import open_session
from decentralml.storage import sha256_hex
from decentralml.validation import screen
from tests.helpers import ROOT, write_config

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_start_task_trains_and_submits(tmp_path):
    config_path, config = write_config(tmp_path, contributors=4, **{"task.max_assignments": 2})
    session = open_session(config, run="start-task")
    creator, market = session.creator, session.creator.market
    task_id = create_round_task(
        creator, 1, upload_assets(creator, 1), upload_global(creator, 1, session.global_tensors)
    )
    task = market.get_task(task_id)
    package_dir = tmp_path / "package"
    unpack_package(creator.store.get(task.spec.assets_path, task.spec.assets_sha256), package_dir)

    env = {
        **os.environ,
        "DECENTRALML_PYTHON": sys.executable,
        "DECENTRALML_CONTRIBUTOR_URI": "//Bob",
    }
    done = subprocess.run(
        [
            "./start_task.sh",
            "--task-id",
            str(task_id),
            "--shard-index",
            "1",
            "--config",
            str(config_path),
        ],
        cwd=package_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    [submission] = market.list_task_results(task_id)
    assert submission.worker == contributor_dev_keypair(0).ss58_address
    assert submission.status is ResultSubmissionStatus.PendingValidation
    stored = creator.store.get(submission.result.result_path)
    assert sha256_hex(stored) == submission.result.sha256
    assert 10_000 < submission.result.num_examples < 15_000  # a quarter of the 55 000 pool
    location = result_url(task, submission.submission_id)
    tensors = screen(submission, creator.store.get, session.layout, location, 10**8)
    assert isinstance(tensors, dict), tensors
    assert session.evaluate_tensors(tensors, session.test)["accuracy"] > 0.85
    assert str(ROOT) not in (package_dir / "task.json").read_text()  # no local paths shipped
