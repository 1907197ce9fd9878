"""Payment by value on real MNIST training, through the creator's own judge (issue findings).

The outside tester's Sybil: one party trains once and submits the update from 3 accounts, each
with Gaussian noise just above the copy threshold (relative distance ~0.06 > 0.05). With the
fixed share all 3 were paid: 3 rewards for one training. With ``payment_rule: value`` the three
share the value of one training. A label flipper among IID contributors is worth nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

import numpy as np
import pytest

from decentralml.io.storage import ArtifactStore
from decentralml.io.weights import encode, layout_of
from decentralml.protocol.records import ResultSubmissionStatus, Submission, TaskResult, Verdict
from decentralml.runtime.config import TaskConfig
from decentralml.simulation.attacks import Attack
from decentralml.validation import Judge, make_policy, screening_rules
from decentralml.validation.value import ValuePricing

pytestmark = [pytest.mark.slow]

REWARD = 1000
HONEST = 6


@pytest.fixture(scope="module")
def results():
    """(tensors, claim, who) for 6 honest IID contributors, 3 Sybil accounts of one training
    and 1 label flipper: one epoch each on its own MNIST shard of 10."""
    import keras

    from decentralml.creator import task_settings
    from decentralml.ml.data.federated import contributor_shard, creator_holdout
    from decentralml.ml.models import build_model, evaluate, model_tensors, set_model_tensors
    from decentralml.ml.training import ReusableTrainer
    from decentralml.runtime.config import parse_config

    keras.utils.set_random_seed(5)
    trainer, scorer = ReusableTrainer("mnist_mlp"), build_model("mnist_mlp")
    start = model_tensors(trainer.model)
    holdout = creator_holdout(5000, 42)
    data = task_settings(parse_config({"contributors": 10})).data
    shards = [contributor_shard(data, i) for i in range(10)]
    out = []
    for i in range(HONEST):
        out.append((trainer.fit(start, *shards[i], seed=i), len(shards[i][1]), "honest"))
    sybil = trainer.fit(start, *shards[6], seed=6)
    rng = np.random.default_rng(0)
    for _ in range(3):
        out.append((_noisy_copy(start, sybil, 0.06, rng), len(shards[6][1]), "sybil"))
    x, y = shards[7]
    out.append((trainer.fit(start, x, Attack("label_flip").labels(y), seed=7), len(y), "flip"))

    def score(tensors) -> dict:
        set_model_tensors(scorer, dict(tensors))
        return evaluate(scorer, *holdout)

    return start, out, score


def _noisy_copy(start, trained, relative: float, rng) -> dict:
    """``trained`` with Gaussian noise making its update ``relative`` away from the original."""
    names = sorted(start)
    update = np.concatenate([(trained[n] - start[n]).ravel() for n in names])
    sigma = relative * np.linalg.norm(update) / np.sqrt(update.size)
    return {n: (trained[n] + rng.normal(0, sigma, trained[n].shape)).astype(trained[n].dtype)
            for n in names}  # fmt: skip


def _judge(start, results, score, pricing, policy=None):
    store = ArtifactStore(f"memory://value-{uuid.uuid4().hex}")
    submissions = []
    for sid, (tensors, claim, _) in enumerate(results):
        url = store.url_for(f"submission-{sid}.safetensors")
        artifact = store.put(url, encode(tensors))
        status = ResultSubmissionStatus.PendingValidation
        result = TaskResult(url, artifact.sha256, claim)
        submissions.append(Submission(sid, 1, f"c{sid}", status, 0, result, commit_order=sid))
    task = TaskConfig()  # the default policy: CustomAccept (update_norm, holdout_gate)
    judge = Judge(
        fetch=lambda url, digest: store.get(url, digest),
        result_location=lambda s: store.url_for(f"submission-{s.submission_id}.safetensors"),
        layout=layout_of(start),
        global_tensors=start,
        max_bytes=10_000_000,
        policy=policy or make_policy(task),
        evaluate=score,
        rules=screening_rules(task),
        pricing=pricing,
    )
    return [d.verdict for d in judge.review(submissions)]


def _paid(verdicts, results, who: str) -> list[int]:
    return [
        (v.amount if v.amount is not None else REWARD) if v.accept else 0
        for v, (_, _, kind) in zip(verdicts, results, strict=True)
        if kind == who
    ]


def test_sybil_accounts_are_paid_one_training_and_a_flipper_nothing(results) -> None:
    start, out, score = results
    fixed = _judge(start, out, score, None)
    assert sum(_paid(fixed, out, "sybil")) == 3 * REWARD  # the finding: 3 rewards, 1 training

    valued = _judge(start, out, score, ValuePricing(REWARD, seed=1))
    honest = _paid(valued, out, "honest")
    assert all(v.accept for v, (_, _, k) in zip(valued, out, strict=True) if k == "honest")
    mean = sum(honest) / len(honest)
    assert sum(_paid(valued, out, "sybil")) <= 1.25 * mean, (honest, _paid(valued, out, "sybil"))
    assert sum(_paid(valued, out, "flip")) <= 0.1 * mean
    paid = [v for v in valued if v.accept]
    assert all(v.value is not None and v.amount >= 1 for v in paid)
    flipper = next(v for v, (_, _, k) in zip(valued, out, strict=True) if k == "flip")
    assert not flipper.accept and "takes more" in flipper.reason  # refused: demonstrable harm
    assert sum(v.amount for v in paid) <= REWARD * len(paid)  # never more than per_result


def test_a_reviewer_sees_each_results_value_before_deciding(results) -> None:
    """Regression (issue 16: "the ManualAccept form shows each result's value"): on a task
    paying by value, ManualAccept's reviewer saw held-out metrics only. Now each pending
    result's value comes first in the form, measured without changing what is then paid."""
    from decentralml.validation.manual import ManualAccept, review_markdown, summarize

    start, out, score = results
    seen = []

    def reviewer(candidates):
        seen.extend(summarize(c) for c in candidates)
        return {c.submission_id: Verdict(c.submission_id, True, "ok") for c in candidates}

    pricing = ValuePricing(REWARD, seed=1)
    manual = _judge(start, out, score, pricing, ManualAccept(round_decider=reviewer))
    assert [s.submission_id for s in seen] == list(range(len(out)))
    values = {s.submission_id: s.value for s in seen}
    assert all(value is not None for value in values.values())
    kinds = {sid: kind for sid, (_, _, kind) in enumerate(out)}
    flip = next(sid for sid, kind in kinds.items() if kind == "flip")
    assert values[flip] < 0 < min(v for sid, v in values.items() if kinds[sid] == "honest")
    form = review_markdown(1, seen, "reject")
    assert "| submission | contributor | value |" in form and f"| {values[flip]:+.4f} |" in form
    assert "value" not in review_markdown(1, [replace(seen[0], value=None)], "reject")
    # Measuring the values first changed nothing of the pricing: accepting everything pays
    # what AutoAccept's round pays.
    auto = _judge(
        start, out, score, pricing, make_policy(TaskConfig(validation_strategy="AutoAccept"))
    )
    assert [(v.accept, v.amount) for v in manual] == [(v.accept, v.amount) for v in auto]


def test_a_value_round_pays_measured_value_end_to_end(tmp_path, prefect_harness) -> None:
    """A whole round through the creator's flows on the embedded marketplace, the task
    recording ``payment_rule: value``: three contributors' real results are valued, paid the
    amounts their verdicts name (in proportion to value, together no more than three fixed
    shares), each value is recorded, and the rest of the escrow is refunded."""
    from concurrent.futures import ThreadPoolExecutor

    from decentralml.contributor import Contributor
    from decentralml.creator.session import open_session
    from decentralml.runtime.backends import contributor_keypair
    from flows.contributor import run_agent
    from flows.creator import outcome, publish, run_round
    from tests.helpers import write_config

    _, config = write_config(
        tmp_path,
        contributors=10,
        **{
            "task.max_assignments": 3,
            "task.pays_amount": 3 * REWARD,
            "task.payment_rule": "value",
            "task.validation_strategy": "AutoAccept",
        },
    )
    session = open_session(config, run="value")
    market, store = session.creator.market, session.creator.store
    task_id = publish(session, 1)
    assert market.get_task(task_id).spec.payment_rule == "value"
    agents = [
        Contributor(market, store, contributor_keypair(config.marketplace, i), i) for i in range(3)
    ]
    with ThreadPoolExecutor(3) as pool:
        for done in [pool.submit(run_agent, a, 0.2, 0, None, 1) for a in agents]:
            done.result(timeout=600)
    report = outcome(run_round(session, 1, task_id, return_state=True))
    results = market.list_task_results(task_id)
    assert [s.status for s in results] == [ResultSubmissionStatus.Accepted] * 3
    assert all(s.value is not None and s.value > 0 and s.paid >= 1 for s in results)
    task = market.get_task(task_id)
    assert task.paid == sum(s.paid for s in results) == report.paid <= 3 * REWARD
    assert task.paid + task.refunded == 3 * REWARD and market.escrow_total() == 0
    by_value = sorted(results, key=lambda s: s.value)
    assert [s.paid for s in by_value] == sorted(s.paid for s in results)  # more value, more pay
    assert all(s.paid <= REWARD for s in results)  # fresh accounts: one fixed share at most


def _round_from_start(partition: str, attackers: dict[int, str]):
    """One round's results on ``partition`` from a fresh model, with the task's default
    training (TrainingConfig: Adam 3e-3, batch 32; one epoch): (start, results, score), the
    contributors of ``attackers`` attacking as named there (``label_flip``: trains on 9 - y;
    ``free_rider``: trains on 1 % of its shard and claims all of it)."""
    import keras

    from decentralml.creator import task_settings
    from decentralml.ml.data.federated import contributor_shard, creator_holdout
    from decentralml.ml.models import build_model, evaluate, model_tensors, set_model_tensors
    from decentralml.ml.training import ReusableTrainer
    from decentralml.runtime.config import TrainingConfig, parse_config

    keras.utils.set_random_seed(5)
    training = TrainingConfig()
    trainer = ReusableTrainer("mnist_mlp", training.learning_rate, optimizer=training.optimizer)
    scorer, start = build_model("mnist_mlp"), model_tensors(trainer.model)
    holdout = creator_holdout(5000, 42)
    config = parse_config({"contributors": 10, "data": {"partition": partition}})
    out = []
    for i in range(10):
        x, y = contributor_shard(task_settings(config).data, i)
        kind = attackers.get(i, "honest")
        if kind == "label_flip":
            y_trained, x_trained = Attack("label_flip").labels(y), x
        elif kind == "free_rider":
            x_trained, y_trained = x[: len(y) // 100], y[: len(y) // 100]
        else:
            x_trained, y_trained = x, y
        tensors = trainer.fit(start, x_trained, y_trained, batch_size=training.batch_size, seed=i)
        out.append((tensors, len(y), kind))

    def score(tensors) -> dict:
        set_model_tensors(scorer, dict(tensors))
        return evaluate(scorer, *holdout)

    return start, out, score


def _each_paid_over_honest_mean(verdicts, results, who: str) -> list[float]:
    honest = _paid(verdicts, results, "honest")
    mean = sum(honest) / len(honest)
    return [paid / mean for paid in _paid(verdicts, results, who)]


@pytest.fixture(scope="module")
def shards_round():
    """The shards round with contributors 8 and 9 flipping labels (each contributor holds
    two classes, 7 holds one), judged by the default policy and by value."""
    start, out, score = _round_from_start("shards", {8: "label_flip", 9: "label_flip"})
    fixed = _judge(start, out, score, None)
    valued = _judge(start, out, score, ValuePricing(REWARD, seed=1))
    return out, fixed, valued


def test_label_flippers_on_shards_are_refused_or_paid_nothing(shards_round) -> None:
    """Regression (issue 16: "label flips are paid: on the shards partition 4 of 4"): on
    two-class shards a flipper's update is as long as an honest one and the holdout gate
    cannot tell them apart, so the default policy pays both flippers the fixed share. By
    value each was valued 0 and paid 1 unit, as everyone was (the aggregate barely moved the
    uncapped held-out loss and the budget finished no cycle); each is now refused or paid at
    most 10 % of the honest mean."""
    out, fixed, valued = shards_round
    assert _paid(fixed, out, "label_flip") == [REWARD, REWARD]  # the finding: both paid
    ratios = _each_paid_over_honest_mean(valued, out, "label_flip")
    assert all(ratio <= 0.1 for ratio in ratios), ratios


def test_no_honest_contributor_on_shards_is_refused_and_value_is_measured(shards_round) -> None:
    """Regression (issue 16, part 5: "no honest result may be refused"): in the same round
    every honest result, two classes each (one of them a single class), is accepted, and the
    values carry information: the honest results are not all paid alike (they were, 1 unit
    each, every value 0)."""
    out, _, valued = shards_round
    honest = [v for v, (_, _, kind) in zip(valued, out, strict=True) if kind == "honest"]
    assert all(v.accept for v in honest), [v.reason for v in honest if not v.accept]
    assert len({v.amount for v in honest}) > 1 and max(v.amount for v in honest) > 1
    assert sum(v.value > 0 for v in honest) >= 6, [v.value for v in honest]


def test_a_free_rider_claiming_all_its_data_is_paid_next_to_nothing() -> None:
    """Regression (issue 16: the free rider trains on 1 % of its shard and claims all of it;
    the seed's copy of the global weights was refused only by accident of distance). Trained
    on 1 %, its update is no copy and the default policy pays it the fixed share. By value it
    earns at most 10 % of the honest mean (0.001 in this round; 0.095 before the value
    measured the capped loss with finer truncation, 0.11-0.16 with other sampling seeds)."""
    start, out, score = _round_from_start("iid", {9: "free_rider"})
    fixed = _judge(start, out, score, None)
    assert _paid(fixed, out, "free_rider") == [REWARD]  # the finding: its update is no copy
    valued = _judge(start, out, score, ValuePricing(REWARD, seed=1))
    ratios = _each_paid_over_honest_mean(valued, out, "free_rider")
    assert all(ratio <= 0.1 for ratio in ratios), ratios
    assert all(v.accept for v, (_, _, k) in zip(valued, out, strict=True) if k == "honest")
