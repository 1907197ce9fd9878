"""The contributor's steps after training, on real parts (SQLite marketplace, memory storage):
encode the result, commit to it, upload it, send it, in that order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from decentralml.contributor import commit, encode_result, result_url, submit, upload_result
from decentralml.io.storage import ArtifactStore, StoredArtifact, sha256_hex
from decentralml.io.weights import decode, read_metadata
from decentralml.marketplace.embedded import EmbeddedMarketplace
from decentralml.ml.training import TrainingOutcome
from decentralml.protocol.accounts import contributor_dev_keypair, dev_keypair
from decentralml.protocol.commitment import result_commitment
from decentralml.protocol.errors import AlreadyCommitted, NotCommitted
from decentralml.protocol.records import ResultSubmissionStatus, Task, TaskSpec

ALICE, BOB = dev_keypair("Alice"), contributor_dev_keypair(0)
OUTCOME = TrainingOutcome(
    {"000.kernel": np.ones((3, 2), np.float32), "001.bias": np.zeros(2, np.float32)},
    num_examples=120,
    metrics={"accuracy": 0.75},
)


@pytest.fixture
def slot(tmp_path: Path) -> tuple[EmbeddedMarketplace, ArtifactStore, Task, int]:
    market = EmbeddedMarketplace(tmp_path / "m.sqlite", block_time_seconds=1e9)
    market.fund(ALICE.ss58_address, 300)
    store = ArtifactStore(f"memory://contributor-{tmp_path.name}")
    spec = TaskSpec(
        "q", 300, 3, 100, global_weights_path=store.url_for("global.safetensors"),
        global_weights_sha256="cd" * 32,
    )  # fmt: skip
    task = market.get_task(market.create_task(ALICE, spec))
    return market, store, task, market.assign_task(BOB, task.task_id)


def test_commit_before_upload_then_send(slot) -> None:
    market, store, task, sid = slot
    data = encode_result(task, OUTCOME)
    assert read_metadata(data) == {"num_examples": 120, "base": "cd" * 32}
    np.testing.assert_array_equal(decode(data)["000.kernel"], OUTCOME.tensors["000.kernel"])

    commitment = commit(market, BOB, sid, sha256_hex(data))
    assert commitment == result_commitment(BOB.ss58_address, sha256_hex(data))
    assert market.get_submission(sid).commitment == commitment
    assert not store.exists(result_url(task, sid))  # nothing readable yet

    artifact = upload_result(store, task, sid, data)
    assert artifact == StoredArtifact(result_url(task, sid), sha256_hex(data), len(data))
    result = submit(market, BOB, task, sid, artifact, OUTCOME)
    stored = market.get_submission(sid)
    assert stored.status is ResultSubmissionStatus.PendingValidation and stored.result == result


def test_a_retried_commit_is_a_no_op_and_another_result_is_refused(slot) -> None:
    market, _, task, sid = slot
    data = encode_result(task, OUTCOME)
    first = commit(market, BOB, sid, sha256_hex(data))
    assert commit(market, BOB, sid, sha256_hex(data)) == first
    assert market.get_submission(sid).commit_order == 0
    with pytest.raises(AlreadyCommitted, match="a commitment cannot be changed"):
        commit(market, BOB, sid, sha256_hex(data + b" "))
    assert market.get_submission(sid).commitment == first


def test_sending_without_committing_is_refused(slot) -> None:
    market, store, task, sid = slot
    artifact = upload_result(store, task, sid, encode_result(task, OUTCOME))
    with pytest.raises(NotCommitted):
        submit(market, BOB, task, sid, artifact, OUTCOME)
