"""Nobody writes for anybody else: the grief attack of the outside test, on a real S3 server.

Before, contributors uploaded into the creator's storage with one shared credential; after
three victims committed, one contributor overwrote the first's result with its own bytes,
deleted the second's and flipped a byte in the third's: all three were rejected unpaid and the
attacker was paid. Now each party holds only its own credentials on SeaweedFS (identities in
``-s3.config``): the creator owns ``bucket``; each contributor owns a bucket of its own, where
it hosts its results, and may only read the creator's. The three victims are strangers:
``decentralml contribute`` in their own processes, folders and HOMEs, configured by
environment only (marketplace, key, their own S3 credentials, where they host results). The
creator takes hosted results only (``storage.accept_uploads: false``) and pulls them over
http from 127.0.0.1, which it allows on purpose.

Checked: every one of the attacker's writes and deletes is refused by the storage; every
victim is paid; the attacker's own submission (the global weights sent back, hosted in its
own bucket) is judged on its own bytes and rejected.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import s3fs

from decentralml.creator.session import open_session
from decentralml.io.storage import sha256_hex
from decentralml.io.weights import decode, encode
from decentralml.marketplace.embedded import EmbeddedMarketplace
from decentralml.protocol.records import ResultSubmissionStatus, TaskResult
from decentralml.runtime.backends import contributor_keypair
from flows.creator import outcome, publish, run_round
from tests.helpers import ROOT, commit_and_send, write_config
from tests.prefect_server import start_server, stop
from tests.test_s3_round import BUCKET, WeedServer, _create_bucket, weed_binary

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CREATOR = ("creatorkey", "creator-secret")
VICTIMS = {"alice": "//Bob", "carol": "//Charlie", "erin": "//Dave"}
ATTACKER = "mallory"
PARTIES = (*VICTIMS, ATTACKER)


def _credentials(name: str) -> tuple[str, str]:
    return f"{name}key", f"{name}-secret"


def _s3_config(path: Path) -> Path:
    """SeaweedFS identities: the creator administers; each contributor reads and writes its
    own bucket and only reads the creator's (its task packages and global weights)."""
    identities = [
        {
            "name": "creator",
            "credentials": [{"accessKey": CREATOR[0], "secretKey": CREATOR[1]}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
    ]
    for name in PARTIES:
        key, secret = _credentials(name)
        identities.append(
            {
                "name": name,
                "credentials": [{"accessKey": key, "secretKey": secret}],
                "actions": [f"Read:{name}", f"Write:{name}", f"List:{name}", f"Read:{BUCKET}"],
            }
        )
    path.write_text(json.dumps({"identities": identities}))
    return path


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WeedServer]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREATOR[0])  # this process is the creator
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREATOR[1])
    config = _s3_config(tmp_path / "s3.json")
    server = WeedServer(weed_binary(), tmp_path / "weed-data", (f"-s3.config={config}",))
    server.start()
    try:
        server.wait_until_serving()
        _create_bucket(server.endpoint_url)
        admin = _fs(server, CREATOR)
        for name in PARTIES:
            admin.mkdir(name)
        yield server
    finally:
        server.stop()


@pytest.fixture
def contributor_prefect(tmp_path: Path) -> Iterator[dict]:
    """The strangers' Prefect (none of the creator's): one server for the three, no auth."""
    server, env = start_server(tmp_path / "contributor-prefect", auth=None)
    try:
        yield env
    finally:
        stop(server)


def _fs(server: WeedServer, credentials: tuple[str, str]) -> s3fs.S3FileSystem:
    key, secret = credentials
    return s3fs.S3FileSystem(
        key=key,
        secret=secret,
        client_kwargs={"endpoint_url": server.endpoint_url},
        skip_instance_cache=True,
    )


def _stranger(
    home: Path, name: str, market: Path, prefect: dict, index: int, s3_endpoint: str
) -> subprocess.Popen:
    home.mkdir()
    key, secret = _credentials(name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PREFECT_API"))}
    env.update(
        HOME=str(home),
        PREFECT_HOME=str(home / "prefect-home"),
        PREFECT_API_URL=prefect["PREFECT_API_URL"],
        PREFECT_LOGGING_LEVEL="WARNING",
        DECENTRALML_MARKETPLACE_URL=str(market),
        DECENTRALML_CONTRIBUTOR_URI=VICTIMS[name],
        DECENTRALML_RESULTS_URL=f"s3://{name}/results",
        DECENTRALML_RESULTS_ENDPOINT_URL=s3_endpoint,
        AWS_ACCESS_KEY_ID=key,
        AWS_SECRET_ACCESS_KEY=secret,
        PYTHONPATH=str(ROOT),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "decentralml_cli", "contribute", "--index", str(index),
         "--max-tasks", "1"],
        cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_results(
    market: EmbeddedMarketplace, task_id: int, strangers: list[subprocess.Popen], timeout: float
) -> list:
    """The strangers' results once each has sent one; a stranger that exited without is a
    failure showing its output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sent = [s for s in market.list_task_results(task_id) if s.result is not None]
        if len(sent) >= len(strangers):
            return sent
        for process in strangers:
            if process.poll() not in (None, 0):
                out, err = process.communicate()
                raise AssertionError(f"a stranger exited {process.returncode}: {out}{err[-3000:]}")
        time.sleep(0.5)
    for process in strangers:
        stop(process)
    outputs = [process.communicate()[1][-1500:] for process in strangers]
    raise AssertionError(f"results not sent within {timeout} s: {outputs}")


def _refused(operation) -> bool:
    try:
        operation()
    except PermissionError:
        return True
    return False


def test_a_griefer_cannot_touch_anothers_result_and_every_victim_is_paid(
    tmp_path: Path, s3: WeedServer, contributor_prefect: dict, prefect_harness
) -> None:
    market_path = tmp_path / "shared" / "marketplace.sqlite"
    market_path.parent.mkdir()
    (tmp_path / "creator").mkdir()
    _, config = write_config(
        tmp_path / "creator",
        contributors=10,
        **{
            "name": "grief",
            "marketplace.path": str(market_path),
            "storage": {
                "url": f"s3://{BUCKET}/grief",
                "endpoint_url": s3.endpoint_url,
                "accept_uploads": False,
                "pull_schemes": ["http"],
                "pull_trusted_hosts": ["127.0.0.1"],
            },
            "task.max_assignments": 4,
            "task.pays_amount": 4000,
        },
    )
    session = open_session(config, run="grief")
    task_id = publish(session, 1)
    strangers = [
        _stranger(tmp_path / name, name, market_path, contributor_prefect, index, s3.endpoint_url)
        for index, name in enumerate(VICTIMS)
    ]
    try:
        market = EmbeddedMarketplace(market_path)
        victims = _wait_results(market, task_id, strangers, timeout=600)
        outputs = [process.communicate(timeout=120) for process in strangers]
    finally:
        for process in strangers:
            stop(process)
    for process, (_, err) in zip(strangers, outputs, strict=True):
        assert process.returncode == 0 and "Traceback" not in err, err[-3000:]

    # The attack: with its own credentials, on the victims' hosted results and on the
    # creator's storage, where the creator keeps the copies it pulls.
    mallory = _fs(s3, _credentials(ATTACKER))
    first, second, third = (s.result.result_path for s in victims)
    objects = [
        link.split("?")[0].removeprefix(f"{s3.endpoint_url}/") for link in (first, second, third)
    ]
    assert _refused(lambda: mallory.pipe_file(objects[0], b"mallory's bytes"))
    mallory.rm(objects[1])  # S3's multi-delete reports a refusal per key, s3fs raises none
    assert _refused(lambda: mallory.pipe_file(objects[2], b"\x00" + b"flipped"))
    assert _refused(lambda: mallory.pipe_file(f"{BUCKET}/grief/runs/grief/x", b"x"))
    admin = _fs(s3, CREATOR)
    for victim, path in zip(victims, objects, strict=True):
        assert sha256_hex(admin.cat_file(path)) == victim.result.sha256  # all still intact

    # The attacker's own submission: the global weights sent back, hosted in its bucket.
    task = market.get_task(task_id)
    worker = contributor_keypair(config.marketplace, 3)
    sid = market.assign_task(worker, task_id)
    untrained = encode(decode(session.creator.store.get(task.spec.global_weights_path)))
    mallory.pipe_file(f"{ATTACKER}/results/own.safetensors", untrained)
    link = mallory.url(f"{ATTACKER}/results/own.safetensors", expires=3600)
    result = TaskResult(link, sha256_hex(untrained), 500, {}, task.spec.global_weights_sha256)
    commit_and_send(market, worker, sid, result)

    report = outcome(run_round(session, 1, task_id, return_state=True))
    assert sorted(report.accepted) == sorted(v.submission_id for v in victims)
    for victim in victims:
        paid = market.get_submission(victim.submission_id)
        assert paid.status is ResultSubmissionStatus.Accepted and paid.paid == 1000
    own = market.get_submission(sid)
    assert own.status is ResultSubmissionStatus.Rejected and own.paid == 0
    assert "global weights" in own.reason, own.reason  # judged on its own bytes
