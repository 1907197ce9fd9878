"""A real federated round: TensorFlow training on MNIST shards, Prefect flows, embedded
marketplace, file storage — with broken, copied, misdirected and poisoned contributions
injected beside the honest ones, and the default policy (CustomAccept: update_norm, then the
held-out gate) deciding."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from decentralml.contributor import Contributor, assign, result_url
from decentralml.creator.session import open_session
from decentralml.io.storage import sha256_hex
from decentralml.io.weights import decode, encode
from decentralml.protocol.records import ResultSubmissionStatus, TaskResult
from decentralml.runtime.backends import contributor_keypair
from flows.contributor import contribute
from flows.creator import publish, run_round
from tests.helpers import commit_and_send, write_config

pytestmark = [pytest.mark.slow]

HONEST = 2
FAULTS = (
    "truncated",
    "wrong_shape",
    "nan",
    "digest_mismatch",
    "lazy",
    "copy",
    "elsewhere",
    "sign_flip",
)


def _faulty_bytes(kind: str, start: dict[str, np.ndarray], honest: dict[str, np.ndarray]) -> bytes:
    tensors = {name: tensor.copy() for name, tensor in start.items()}
    if kind == "wrong_shape":
        tensors["001.bias"] = np.zeros(64, dtype=np.float32)
    if kind == "nan":
        tensors["000.kernel"][0, 0] = np.nan
    if kind == "lazy":  # well-formed, but untrained: the global weights sent back
        return encode(start)
    if kind == "copy":  # an honest contributor's weights, committed after it
        return encode(honest, {"num_examples": 1000})
    if kind == "sign_flip":  # an honest update reversed and scaled (×10)
        return encode({n: start[n] - 10 * (honest[n] - start[n]) for n in start})
    data = encode(tensors)
    return data[: len(data) // 2] if kind == "truncated" else data


def _send_fault(session, task, index: int, kind: str, honest_sid: int) -> int:
    """A contributor who takes a slot and sends a bad result of the given kind."""
    market, store = session.creator.market, session.creator.store
    worker = contributor_keypair(session.creator.config.marketplace, index)
    submission_id = assign(market, worker, task.task_id)
    honest = decode(store.get(result_url(task, honest_sid)))
    data = _faulty_bytes(kind, session.global_tensors, honest)
    artifact = store.put(result_url(task, submission_id), data)
    if kind == "digest_mismatch":  # the file is swapped after its digest was recorded
        store.put(artifact.url, encode({k: v + 1 for k, v in session.global_tensors.items()}))
    path = "file:///etc/hostname" if kind == "elsewhere" else artifact.url
    result = TaskResult(path, artifact.sha256, 1000, {}, task.spec.global_weights_sha256)
    commit_and_send(market, worker, submission_id, result)
    return submission_id


@pytest.fixture(scope="module")
def finished_round(tmp_path_factory, prefect_harness):
    tmp_path = tmp_path_factory.mktemp("round")
    slots = HONEST + len(FAULTS)
    _, config = write_config(
        tmp_path,
        **{
            "contributors": HONEST,
            "task.max_assignments": slots,
            "task.pays_amount": 700,
            "task.validation_strategy": "CustomAccept",
        },
    )
    session = open_session(config, run="test-round")
    started = datetime.now(UTC)  # this module's flow runs begin here
    market = session.creator.market
    initial_accuracy = session.evaluate_tensors(session.global_tensors, session.test)["accuracy"]
    creator_before = market.balance(session.creator.keypair.ss58_address)
    issuance_before = market.total_issuance()

    task_id = publish(session, 1)
    task = market.get_task(task_id)
    workers = [contributor_keypair(config.marketplace, i) for i in range(HONEST)]
    honest = [
        contribute(Contributor(market, session.creator.store, workers[i], i), task)
        for i in range(HONEST)
    ]
    first = honest[0].submission_id
    faults = {
        _send_fault(session, task, HONEST + n, kind, first): kind for n, kind in enumerate(FAULTS)
    }
    report = run_round(session, 1, task_id)
    return locals()


def test_honest_results_are_accepted_and_improve_the_model(finished_round):
    report, honest = finished_round["report"], finished_round["honest"]
    assert sorted(report.accepted) == sorted(c.submission_id for c in honest)
    assert finished_round["initial_accuracy"] < 0.3  # an untrained 10-class model
    assert report.metric_name == "accuracy" and report.metric > 0.85


def test_each_broken_result_is_rejected_with_its_reason(finished_round):
    report, faults = finished_round["report"], finished_round["faults"]
    expected_words = {
        "truncated": "truncated",
        "wrong_shape": "shape",
        "nan": "NaN",
        "digest_mismatch": "sha256",
        "lazy": "unchanged global weights",
        "copy": f"copy of submission {finished_round['honest'][0].submission_id}",
        "elsewhere": "it was not read",
        "sign_flip": "update norm",
    }
    assert set(report.rejected) == set(faults)
    for submission_id, kind in faults.items():
        assert expected_words[kind] in report.rejected[submission_id], report.rejected


def test_verdicts_are_recorded_and_only_accepted_results_paid(finished_round):
    market, report = finished_round["market"], finished_round["report"]
    reward = 700 // (HONEST + len(FAULTS))
    for sid in report.accepted:
        submission = market.get_submission(sid)
        assert submission.status is ResultSubmissionStatus.Accepted
        assert submission.paid == reward
        assert market.balance(submission.worker) == reward
    for sid, reason in report.rejected.items():
        submission = market.get_submission(sid)
        assert submission.status is ResultSubmissionStatus.Rejected
        assert submission.reason == reason and submission.paid == 0
    expected = {sid: reward for sid in report.accepted} | {sid: 0 for sid in report.rejected}
    assert report.payments == expected


def test_creator_gets_back_what_was_not_paid(finished_round):
    market, session = finished_round["market"], finished_round["session"]
    creator = session.creator.keypair.ss58_address
    paid = sum(finished_round["report"].payments.values())
    assert market.balance(creator) == finished_round["creator_before"] - paid
    assert finished_round["report"].refund == 700 - paid
    assert market.escrow_total() == 0
    assert market.total_issuance() == finished_round["issuance_before"]


def test_checkpoint_holds_the_new_global_weights(finished_round):
    session = finished_round["session"]
    store = session.creator.store
    stored = decode(store.get(store.checkpoint_url("test-round", 1)))
    for name, tensor in session.global_tensors.items():
        np.testing.assert_array_equal(stored[name], tensor)
    task = session.creator.market.get_task(finished_round["task_id"])
    published = decode(store.get(task.spec.global_weights_path, task.spec.global_weights_sha256))
    assert any(not np.array_equal(published[n], t) for n, t in session.global_tensors.items())
    assert sha256_hex(store.get(task.spec.assets_path)) == task.spec.assets_sha256


def test_prefect_records_no_key_material_and_no_arrays(finished_round):
    """Flow parameters are stored by Prefect and shown in its UI: keys and data stay out."""
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterExpectedStartTime

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
    names = {run.name for run in runs}
    assert {
        "contributor-0-task-0",
        "test-round-round-1-task-0",
        "test-round-publish-round-1",
    } <= names
    stored = [json.dumps(run.parameters, default=str) for run in runs]
    keys = [contributor_keypair(finished_round["config"].marketplace, i) for i in range(HONEST)]
    keys.append(finished_round["session"].creator.keypair)
    for keypair in keys:
        assert all(keypair.private_key.hex() not in parameters for parameters in stored)
    # Each of this round's runs keeps its parameters small. Not every run of the session: a
    # task whose question is 4096 emoji is a legitimate 25 kB parameter (a CI run met one).
    with get_client(sync_client=True) as client:
        since = FlowRunFilterExpectedStartTime(after_=finished_round["started"])
        mine = client.read_flow_runs(flow_run_filter=FlowRunFilter(expected_start_time=since))
    assert {"contributor-0-task-0", "test-round-round-1-task-0"} <= {r.name for r in mine}
    sizes = {run.name: len(json.dumps(run.parameters, default=str)) for run in mine}
    assert max(sizes.values()) < 5_000, f"arrays or models leaked into run parameters: {sizes}"


def test_round_verdicts_are_a_keyed_table_artifact_in_prefect(finished_round):
    import json

    from prefect.artifacts import Artifact

    report = finished_round["report"]
    table = Artifact.get("test-round-round-1-submissions")  # the run's key: its latest version
    data = table.data if isinstance(table.data, list) else json.loads(table.data)
    rows = {row["submission"]: row for row in data}
    assert {sid for sid, r in rows.items() if r["verdict"] == "rejected"} == set(report.rejected)
    for sid, reason in report.rejected.items():
        assert rows[sid]["reason"] == reason and rows[sid]["paid"] == 0
    assert all(rows[sid]["paid"] == report.payments[sid] for sid in report.accepted)
