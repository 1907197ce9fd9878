"""The creator's review step on small real parts (SQLite marketplace, memory storage)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from substrateinterface import Keypair

from decentralml.contributor import result_url
from decentralml.creator import Creator, review, wait_for_results
from decentralml.io.storage import ArtifactStore
from decentralml.io.weights import encode
from decentralml.marketplace.embedded import EmbeddedMarketplace
from decentralml.protocol.accounts import contributor_dev_keypair, dev_keypair
from decentralml.protocol.errors import StorageError
from decentralml.protocol.records import Submission, Task, TaskResult, TaskSpec, Verdict
from decentralml.runtime.config import parse_config
from decentralml.validation.base import PerCandidatePolicy
from tests.helpers import commit_and_send

GLOBAL = {"000.kernel": np.zeros((3, 2), np.float32), "001.bias": np.zeros(2, np.float32)}


def _task_with_results(
    market: EmbeddedMarketplace,
    store: ArtifactStore,
    creator: Keypair,
    sent: list[tuple[float, int]],
    spec: TaskSpec,
) -> tuple[Task, list[Submission]]:
    """``creator``'s task of ``spec`` (funded; its global weights ``GLOBAL``) with
    contributor i's result: every weight ``sent[i][0]``, claiming ``sent[i][1]`` examples."""
    market.fund(creator.ss58_address, 1000)
    global_art = store.put(store.round_url("r", 1, "global.safetensors"), encode(GLOBAL))
    spec = replace(
        spec,
        expiration_block=market.current_block() + 100,
        global_weights_path=global_art.url,
        global_weights_sha256=global_art.sha256,
    )
    task = market.get_task(market.create_task(creator, spec))
    for index, (value, examples) in enumerate(sent):
        worker = contributor_dev_keypair(index)
        sid = market.assign_task(worker, task.task_id)
        tensors = {name: np.full_like(t, value) for name, t in GLOBAL.items()}
        artifact = store.put(result_url(task, sid), encode(tensors))
        result = TaskResult(artifact.url, artifact.sha256, examples, {}, global_art.sha256)
        commit_and_send(market, worker, sid, result)
    return task, market.list_task_results(task.task_id)


@pytest.fixture
def round_with_results(tmp_path: Path):
    market = EmbeddedMarketplace(tmp_path / "m.sqlite")
    alice = dev_keypair("Alice")
    store = ArtifactStore(f"memory://creator-{tmp_path.name}")
    spec = TaskSpec("q", 300, 3, 0)
    task, submissions = _task_with_results(market, store, alice, [(1.0, 100), (4.0, 300)], spec)
    creator = Creator(parse_config({}), market, store, alice, "r", Path("."))
    return creator, task, submissions


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


def _value_round(market: EmbeddedMarketplace, store: ArtifactStore, creator: Keypair):
    """A task paying by value (two fixed shares of 100): contributor 0 sends weights of 1,
    contributor 1 weights of 4 (on a loss of 10 less the mean weight, values 0 and 3)."""
    spec = TaskSpec("q", 200, 2, 0, payment_rule="value")
    return _task_with_results(market, store, creator, [(1.0, 100), (4.0, 100)], spec)


def test_a_value_round_caps_a_newcomers_pay_by_its_marketplace_reputation(tmp_path) -> None:
    """Issue 16 (reputation "used to cap newcomers' share"): the creator's review reads each
    worker's reputation from the marketplace. Contributor 1's result carries the whole
    round's value, two fixed shares; as a fresh account it is paid one (the default
    ``newcomer_share_cap``), the reason says why, and the other share is not paid to anyone.
    Once another creator (Bob) accepted one of its results, the same round pays it both
    (less the 1 unit every paid result gets at least)."""
    market = EmbeddedMarketplace(tmp_path / "m.sqlite")
    store = ArtifactStore(f"memory://value-{tmp_path.name}")
    alice, bob = dev_keypair("Alice"), dev_keypair("Bob")
    task, submissions = _value_round(market, store, alice)
    creator = Creator(parse_config({}), market, store, alice, "v", Path("."))
    accept_all = _Policy(lambda c: Verdict(c.submission.submission_id, True, "ok"))

    def loss(tensors) -> dict:
        return {"loss": 10.0 - float(np.mean(tensors["001.bias"]))}

    fresh = review(creator, task, submissions, GLOBAL, accept_all, loss)
    assert [v.amount for v in fresh.verdicts] == [1, 100]
    assert "capped: newcomer, reputation 0 < 1" in fresh.verdicts[1].reason
    assert "capped" not in fresh.verdicts[0].reason

    elsewhere, _ = _value_round(market, ArtifactStore(f"memory://bob-{tmp_path.name}"), bob)
    [earlier] = [
        s for s in market.list_task_results(elsewhere.task_id) if s.worker == submissions[1].worker
    ]
    market.accept(bob, earlier.submission_id)
    assert market.reputation(submissions[1].worker).score == 1
    established = review(creator, task, submissions, GLOBAL, accept_all, loss)
    assert [v.amount for v in established.verdicts] == [1, 199]  # 1 unit to the floor of 0
    assert "capped" not in established.verdicts[1].reason
