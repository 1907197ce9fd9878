"""The creator's review step on small real parts (SQLite marketplace, memory storage)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from decentralml.contributor import result_url
from decentralml.creator import Creator, review, wait_for_results
from decentralml.io.storage import ArtifactStore
from decentralml.io.weights import encode
from decentralml.marketplace.embedded import EmbeddedMarketplace
from decentralml.protocol.accounts import contributor_dev_keypair, dev_keypair
from decentralml.protocol.errors import StorageError
from decentralml.protocol.records import TaskResult, TaskSpec, Verdict
from decentralml.runtime.config import parse_config
from decentralml.validation.base import PerCandidatePolicy
from tests.helpers import commit_and_send

GLOBAL = {"000.kernel": np.zeros((3, 2), np.float32), "001.bias": np.zeros(2, np.float32)}


@pytest.fixture
def round_with_results(tmp_path: Path):
    market = EmbeddedMarketplace(tmp_path / "m.sqlite")
    alice = dev_keypair("Alice")
    market.fund(alice.ss58_address, 1000)
    store = ArtifactStore(f"memory://creator-{tmp_path.name}")
    global_art = store.put(store.round_url("r", 1, "global.safetensors"), encode(GLOBAL))
    spec = TaskSpec(
        "q",
        300,
        3,
        market.current_block() + 100,
        global_weights_path=global_art.url,
        global_weights_sha256=global_art.sha256,
    )
    task = market.get_task(market.create_task(alice, spec))
    for index, (value, examples) in enumerate([(1.0, 100), (4.0, 300)]):
        worker = contributor_dev_keypair(index)
        sid = market.assign_task(worker, task.task_id)
        tensors = {name: np.full_like(t, value) for name, t in GLOBAL.items()}
        artifact = store.put(result_url(task, sid), encode(tensors))
        commit_and_send(
            market,
            worker,
            sid,
            TaskResult(artifact.url, artifact.sha256, examples, {}, global_art.sha256),
        )
    creator = Creator(parse_config({}), market, store, alice, "r", Path("."))
    return creator, task, market.list_task_results(task.task_id)


class _Policy(PerCandidatePolicy):
    name = "test"

    def __init__(self, decide):
        self.decide = decide


def test_review_federates_accepted_results_weighted_by_capped_examples(round_with_results):
    creator, task, submissions = round_with_results
    accept_all = _Policy(lambda c: Verdict(c.submission.submission_id, True, "ok"))
    outcome = review(creator, task, submissions, GLOBAL, accept_all, lambda t: {})
    assert [v.accept for v in outcome.verdicts] == [True, True]
    # 300 claimed, counted as 2 × the lower median 100: (100·1 + 200·4) / 300
    np.testing.assert_allclose(outcome.new_global["001.bias"], [3.0, 3.0])
    generous = replace(creator, config=parse_config({"task": {"examples_cap_multiple": 3}}))
    outcome = review(generous, task, submissions, GLOBAL, accept_all, lambda t: {})
    np.testing.assert_allclose(outcome.new_global["001.bias"], [3.25, 3.25])  # (100·1+300·4)/400


def test_review_reads_only_inside_the_creators_own_storage(round_with_results):
    creator, task, submissions = round_with_results
    elsewhere = replace(creator, store=ArtifactStore("memory://someone-else"))
    accept_all = _Policy(lambda c: Verdict(c.submission.submission_id, True, "ok"))
    with pytest.raises(StorageError, match="outside this creator's storage"):
        review(elsewhere, task, submissions, GLOBAL, accept_all, lambda t: {})


def test_review_with_nothing_accepted_keeps_no_new_weights(round_with_results):
    creator, task, submissions = round_with_results
    reject_all = _Policy(lambda c: Verdict(c.submission.submission_id, False, "no"))
    outcome = review(creator, task, submissions, GLOBAL, reject_all, lambda t: {})
    assert outcome.new_global is None and len(outcome.rejected) == 2


def test_a_crashing_validator_is_not_mistaken_for_no_result(round_with_results):
    creator, task, submissions = round_with_results

    def broken(candidate):
        raise ValueError("validator bug")

    with pytest.raises(ValueError, match="validator bug"):
        review(creator, task, submissions, GLOBAL, _Policy(broken), lambda t: {})


def test_an_oversized_result_is_refused_by_the_model_size_not_only_the_ceiling(
    round_with_results,
):
    creator, task, submissions = round_with_results
    padded = submissions[0]
    data = encode(GLOBAL, {"padding": "x" * 200_000})  # valid safetensors, bloated header
    artifact = creator.store.put(padded.result.result_path, data)
    padded = replace(padded, result=replace(padded.result, sha256=artifact.sha256))
    accept_all = _Policy(lambda c: Verdict(c.submission.submission_id, True, "ok"))
    outcome = review(creator, task, [padded], GLOBAL, accept_all, lambda t: {})
    [verdict] = outcome.verdicts
    assert not verdict.accept and "limit" in verdict.reason


def test_review_reports_each_results_holdout_metrics_evaluated_once(round_with_results):
    creator, task, submissions = round_with_results
    evaluated: list[float] = []

    def evaluate(tensors) -> dict:
        value = float(tensors["001.bias"][0])
        evaluated.append(value)
        return {"accuracy": value / 10, "loss": 1 / value}

    def needs_accuracy(candidate):  # a policy that reads the metrics too: no second pass
        accept = candidate.holdout_metrics()["accuracy"] > 0.2
        return Verdict(candidate.submission_id, accept, "accuracy")

    outcome = review(creator, task, submissions, GLOBAL, _Policy(needs_accuracy), evaluate)
    first, second = (s.submission_id for s in submissions)
    assert sorted(evaluated) == [1.0, 4.0]
    assert outcome.holdout == {
        first: {"accuracy": 0.1, "loss": 1.0},
        second: {"accuracy": 0.4, "loss": 0.25},
    }
    assert outcome.counted == {first: 100, second: 200}  # rejected or not: 300 capped at 2 × 100
    assert [v.accept for v in outcome.verdicts] == [False, True]


def test_waiting_reports_slots_results_and_deadline_on_every_poll(round_with_results, caplog):
    creator, task, _ = round_with_results
    statuses = []
    with caplog.at_level("WARNING", logger="decentralml"):
        wait_for_results(creator.market, task.task_id, 0.25, 0.1, on_poll=statuses.append)
    assert len(statuses) >= 2
    assert {(s.slots, s.assigned, s.results) for s in statuses} == {(3, 2, 2)}
    assert statuses[0].seconds_left > statuses[-1].seconds_left >= 0
    assert statuses[-1].blocks_left > 90 and statuses[-1].fraction == 2 / 3
    assert "deadline reached with 2 submissions" in caplog.text
