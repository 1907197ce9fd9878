"""The default defences on real training: the seed model on real MNIST shards.

Regressions for what an outside tester measured (one sign-flipped ×10, noise or huge-valued
result among three honest ones took test accuracy from 0.936 to 0.36 / 0.07 / 0.19 and was
paid), and the other side: honest contributors holding only two digit classes each score
~20 % alone on the held-out split, yet the default policy must accept all of them.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from decentralml.creator import task_settings
from decentralml.io.storage import ArtifactStore
from decentralml.io.weights import encode, layout_of
from decentralml.ml.data.federated import contributor_shard, creator_holdout
from decentralml.ml.data.federated import test_split as mnist_test_split
from decentralml.ml.models import build_model, evaluate, model_tensors, set_model_tensors
from decentralml.ml.training import ReusableTrainer
from decentralml.protocol.records import ResultSubmissionStatus, Submission, TaskResult
from decentralml.runtime.config import TaskConfig, parse_config
from decentralml.simulation.attacks import Attack
from decentralml.strategies import Contribution, FedAvg
from decentralml.validation import Judge, make_policy, screening_rules

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def lab():
    """Shared data and models: the creator's splits, a trainer and a scorer."""
    import keras

    keras.utils.set_random_seed(1)
    scorer = build_model("mnist_mlp")
    trainer = ReusableTrainer("mnist_mlp")
    return {
        "scorer": scorer,
        "trainer": trainer,
        "initial": model_tensors(trainer.model),
        "holdout": creator_holdout(5000, 42),
        "test": mnist_test_split(),
    }


def shards(partition: str, contributors: int = 10) -> list:
    config = parse_config({"contributors": contributors, "data": {"partition": partition}})
    data = task_settings(config).data
    return [contributor_shard(data, i) for i in range(contributors)]


def score(lab, tensors, split: str = "holdout") -> dict:
    set_model_tensors(lab["scorer"], dict(tensors))
    return evaluate(lab["scorer"], *lab[split])


def judge_round(lab, global_tensors, results: list[tuple[dict, int]], validation: str):
    """Store each (weights, claimed examples) as a submission in commitment order and judge
    the round with the shipped policy of that name; returns the decisions by position."""
    store = ArtifactStore(f"memory://defences-{uuid.uuid4().hex}")
    submissions = []
    for sid, (tensors, claim) in enumerate(results):
        url = store.url_for(f"submission-{sid}.safetensors")
        artifact = store.put(url, encode(tensors))
        result = TaskResult(url, artifact.sha256, claim)
        status = ResultSubmissionStatus.PendingValidation
        submissions.append(Submission(sid, 1, f"c{sid}", status, 0, result, commit_order=sid))
    task = TaskConfig(validation_strategy=validation)
    judge = Judge(
        fetch=lambda url, digest: store.get(url, digest),
        result_location=lambda s: store.url_for(f"submission-{s.submission_id}.safetensors"),
        layout=layout_of(global_tensors),
        global_tensors=global_tensors,
        max_bytes=10_000_000,
        policy=make_policy(task),
        evaluate=lambda tensors: score(lab, tensors),
        rules=screening_rules(task),
    )
    return judge.review(submissions)


def federate(global_tensors, decisions) -> dict:
    accepted = [
        Contribution(d.candidate.tensors, d.candidate.weight) for d in decisions if d.accepted
    ]
    return FedAvg().aggregate(1, global_tensors, accepted)


POISON = {
    "sign_flip": lambda g, t: Attack("sign_flip").weights(g, t),
    "gaussian_noise": lambda g, t: Attack("gaussian_noise").weights(g, t, seed=5),
    "huge_values": lambda g, t: {n: np.full_like(x, 1e6) for n, x in t.items()},
}


@pytest.fixture(scope="module")
def honest_iid(lab):
    parts = shards("iid")
    start = lab["initial"]
    trained = [lab["trainer"].fit(start, *parts[i], seed=i) for i in range(4)]
    return [(t, len(parts[i][1])) for i, t in enumerate(trained)]


@pytest.mark.parametrize("kind", sorted(POISON))
def test_one_poisoned_result_among_three_honest_is_refused_by_default(lab, honest_iid, kind):
    start = lab["initial"]
    poison = POISON[kind](start, honest_iid[3][0])
    results = [*honest_iid[:3], (poison, honest_iid[3][1])]

    defended = judge_round(lab, start, results, "CustomAccept")
    assert [d.verdict.accept for d in defended] == [True, True, True, False]
    assert defended[3].verdict.reason.startswith("update norm ")
    accuracy = score(lab, federate(start, defended), "test")["accuracy"]
    assert accuracy > 0.88  # ~0.90: three honest epochs of 5 500 images each

    auto = judge_round(lab, start, results, "AutoAccept")  # the seed's meaning, and its risk
    assert all(d.verdict.accept for d in auto)
    assert score(lab, federate(start, auto), "test")["accuracy"] < accuracy - 0.15


def test_label_flippers_among_iid_contributors_are_refused_and_nobody_else(lab):
    parts = shards("iid")
    start, flip = lab["initial"], Attack("label_flip")
    results = []
    for i, (x, y) in enumerate(parts):
        labels = flip.labels(y) if i >= 7 else y
        results.append((lab["trainer"].fit(start, x, labels, seed=10 + i), len(y)))
    decisions = judge_round(lab, start, results, "CustomAccept")
    verdicts = [d.verdict for d in decisions]
    assert [v.accept for v in verdicts] == [True] * 7 + [False] * 3, [v.reason for v in verdicts]
    for verdict in verdicts[7:]:
        assert verdict.reason.startswith("held-out loss of the round's aggregate is ")


@pytest.mark.parametrize("present", [10, 7], ids=["all-ten", "seven-of-ten"])
def test_honest_two_class_contributors_are_all_accepted_over_rounds(lab, present: int):
    """The shards-disjoint partition: every honest result accepted in each of three rounds, although
    each one alone scores far below the seed's min_accuracy of 0.5 — also when three of the
    ten shards are missing (their holders were refused as attackers), where leaving one
    honest result out can lower the overall loss: it is still the support of its classes."""
    parts = shards("shards-disjoint")[:present]
    global_tensors = lab["initial"]
    for round_number in range(3):
        results = [
            (lab["trainer"].fit(global_tensors, x, y, seed=100 * round_number + i), len(y))
            for i, (x, y) in enumerate(parts)
        ]
        alone = [score(lab, tensors)["accuracy"] for tensors, _ in results]
        assert max(alone) < 0.5, alone
        decisions = judge_round(lab, global_tensors, results, "CustomAccept")
        refused = [d.verdict for d in decisions if not d.verdict.accept]
        assert refused == [], refused
        global_tensors = federate(global_tensors, decisions)
    assert score(lab, global_tensors, "test")["accuracy"] > 0.3
