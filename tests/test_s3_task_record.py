"""S3 as contributors reach it: through the endpoint on the task record, with their own
credentials, and a one-line refusal naming the variables when those are missing or wrong.

A real S3 server (SeaweedFS ``weed mini``, the fixture of tests/test_s3_round.py) with real
credentials; the CLI runs as a subprocess, so its exit status and output are the real ones.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import s3fs

from decentralml.contributor import result_url
from decentralml.creator.session import open_session
from decentralml.protocol.errors import StorageCredentialsError
from decentralml.protocol.records import ResultSubmissionStatus
from decentralml.runtime.config import parse_config
from flows.contributor import contribute, open_contributor
from flows.creator import publish, run_round
from tests.helpers import ROOT, small_config, write_config
from tests.test_s3_round import BUCKET, KEY, SECRET, WeedServer
from tests.test_s3_round import s3_server as _weed_fixture

s3_server = _weed_fixture  # the SeaweedFS fixture, used here under its own name

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NO_AWS_FILES = {  # nothing but the variables we set: no ~/.aws, no instance metadata
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
    "AWS_CONFIG_FILE": "/nonexistent/config",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _s3_config(tmp_path: Path, server: WeedServer, **overrides: object):
    tmp_path.mkdir(parents=True, exist_ok=True)
    return write_config(
        tmp_path,
        **{
            "contributors": 1,
            "task.max_assignments": 1,
            "task.pays_amount": 100,
            "storage.url": f"s3://{BUCKET}/records",
            "storage.endpoint_url": server.endpoint_url,
            **overrides,
        },
    )


@pytest.fixture(autouse=True)
def _fresh_s3_clients(monkeypatch: pytest.MonkeyPatch):
    """s3fs caches a client per option set, credentials included: a test that changes the
    environment must not get an earlier test's client."""
    for name, value in NO_AWS_FILES.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    yield
    s3fs.S3FileSystem.clear_instance_cache()


def test_a_contributor_without_storage_config_uses_the_endpoint_on_the_record(
    tmp_path: Path, s3_server: WeedServer, monkeypatch: pytest.MonkeyPatch, prefect_harness
) -> None:
    _, config = _s3_config(tmp_path / "creator", s3_server)
    session = open_session(config, run="record-endpoint")
    market = session.creator.market
    task = market.get_task(publish(session, 1))
    assert task.spec.storage_endpoint == s3_server.endpoint_url
    assert (task.spec.model, task.spec.epochs) == (config.model.name, config.training.epochs)

    # The contributor's own config: the shared marketplace, no storage section at all.
    data = small_config(tmp_path / "contributor")
    data["marketplace"]["path"] = config.marketplace.path
    del data["storage"]
    own = parse_config(data, "contributor.yaml")
    assert own.storage.endpoint_url is None and own.storage.url.startswith("file://")
    contributor = open_contributor(own, 0, market)

    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")  # first without credentials: refused, unpaid
    s3fs.S3FileSystem.clear_instance_cache()  # (a contributor is another process, no cache)
    with pytest.raises(StorageCredentialsError) as refused:
        contribute(contributor, task)
    assert str(refused.value) == (
        f"storage s3://{BUCKET} at {s3_server.endpoint_url} needs credentials and found none: "
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
    )
    assert market.list_task_results(task.task_id) == []  # refused before taking a slot

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    s3fs.S3FileSystem.clear_instance_cache()
    sent = contribute(contributor, task)
    submission = market.get_submission(sent.submission_id)
    assert submission.result.result_path == result_url(task, sent.submission_id)
    assert submission.result.result_path.startswith(f"s3://{BUCKET}/records/")
    assert not (tmp_path / "contributor" / "storage").exists()  # nothing went to its own root

    report = run_round(session, 1, task.task_id)
    assert report.accepted == [sent.submission_id] and report.payments == {sent.submission_id: 100}
    assert market.get_submission(sent.submission_id).status is ResultSubmissionStatus.Accepted


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "decentralml_cli", *args],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("credentials", "said"),
    [
        ({}, "needs credentials and found none"),
        ({"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": "not-it-at-all"},  # wrong secret
         "refused the credentials (Forbidden)"),
        ({"AWS_ACCESS_KEY_ID": "nosuchkeyid", "AWS_SECRET_ACCESS_KEY": "not-it-at-all"},  # both
         "refused the credentials (Forbidden)"),
    ],
)  # fmt: skip
def test_missing_or_wrong_credentials_are_one_line_and_exit_2(
    tmp_path: Path, s3_server: WeedServer, credentials: dict[str, str], said: str
) -> None:
    config_path, config = _s3_config(tmp_path, s3_server)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(NO_AWS_FILES, **credentials)
    done = _cli(["publish", "--config", str(config_path)], env, tmp_path)

    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith(
        f"error: invalid configuration in {config_path}: storage.url: storage s3://{BUCKET} at "
        f"{s3_server.endpoint_url} {said}"
    )
    assert line.endswith("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)")
    assert "not-it-at-all" not in line and SECRET not in line  # no secret is ever printed
    assert not Path(config.marketplace.path).exists()  # refused before anything was opened
