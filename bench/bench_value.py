"""Contribution value on real MNIST: accuracy of GTG-Shapley against exact Shapley values, its
cost beside the round's training, and what value pricing pays Sybils and a label flipper.

    python bench/bench_value.py [--seed N]

Round A (accuracy): 6 contributors, 1 epoch on IID shards cut to 100..5500 examples (the last
with flipped labels); exact Shapley over all 64 subsets against GTG-Shapley with a budget of
40 evaluations: Spearman correlation, evaluations, seconds. Round B (price): 10 results (6
honest, 3 Sybil accounts of one training with noise 0.06 above the copy threshold, 1 label
flipper) through the creator's default judge, per_result against value: what each group is
paid, and the valuation's seconds against the round's training seconds (measured in this run).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    import keras
    import numpy as np

    from decentralml.creator import task_settings
    from decentralml.ml.data.federated import contributor_shard, creator_holdout
    from decentralml.ml.models import build_model, evaluate, model_tensors, set_model_tensors
    from decentralml.ml.training import ReusableTrainer
    from decentralml.protocol.records import ResultSubmissionStatus, Submission
    from decentralml.runtime.config import parse_config
    from decentralml.simulation.attacks import Attack
    from decentralml.validation.base import Candidate, RoundView
    from decentralml.validation.value import (
        RoundUtility,
        ValuePricing,
        exact_shapley,
        gtg_shapley,
        spearman,
    )

    keras.utils.set_random_seed(args.seed)
    trainer, scorer = ReusableTrainer("mnist_mlp"), build_model("mnist_mlp")
    start = model_tensors(trainer.model)
    holdout = creator_holdout(5000, 42)
    data = task_settings(parse_config({"contributors": 10})).data
    shards = [contributor_shard(data, i) for i in range(10)]
    flip = Attack("label_flip")

    def score(tensors) -> dict:
        set_model_tensors(scorer, dict(tensors))
        return evaluate(scorer, *holdout)

    def candidate(sid: int, tensors, weight: int) -> Candidate:
        status = ResultSubmissionStatus.PendingValidation
        submission = Submission(sid, 0, f"c{sid}", status, 0, None, commit_order=sid)
        return Candidate(submission, tensors, None, {}, weight=weight)

    # Round A: accuracy of the estimate.
    sizes = (100, 300, 1000, 2500, 5500, 5500)
    round_a = []
    for i, size in enumerate(sizes):
        x, y = shards[i][0][:size], shards[i][1][:size]
        labels = flip.labels(y) if i == 5 else y
        round_a.append(candidate(i, trainer.fit(start, x, labels, seed=20 + i), size))
    view = RoundView(start, score)
    players = list(range(6))
    began = time.perf_counter()
    exact = exact_shapley(players, (exact_utility := RoundUtility(round_a, view)))
    exact_seconds = time.perf_counter() - began
    began = time.perf_counter()
    utility = RoundUtility(round_a, view, budget=40)
    estimate = gtg_shapley(players, utility, seed=0, scale=utility.start_loss)
    gtg_seconds = time.perf_counter() - began
    rho = spearman([estimate.values[p] for p in players], [exact.values[p] for p in players])

    # Round B: what each pays.
    began = time.perf_counter()
    results = [(trainer.fit(start, *shards[i], seed=i), len(shards[i][1])) for i in range(6)]
    sybil = trainer.fit(start, *shards[6], seed=6)
    x, y = shards[7]
    flipped = trainer.fit(start, x, flip.labels(y), seed=7)
    training_seconds = time.perf_counter() - began
    rng = np.random.default_rng(0)
    names = sorted(start)
    update = np.concatenate([(sybil[n] - start[n]).ravel() for n in names])
    sigma = 0.06 * np.linalg.norm(update) / np.sqrt(update.size)
    for _ in range(3):
        noisy = {n: (sybil[n] + rng.normal(0, sigma, sybil[n].shape)).astype(sybil[n].dtype)
                 for n in names}  # fmt: skip
        results.append((noisy, len(shards[6][1])))
    results.append((flipped, len(y)))
    kinds = ["honest"] * 6 + ["sybil"] * 3 + ["flip"]
    round_b = [candidate(i, tensors, claim) for i, (tensors, claim) in enumerate(results)]
    from decentralml.protocol.records import Verdict

    accepted = [Verdict(c.submission_id, True, "passed") for c in round_b]
    began = time.perf_counter()
    priced = ValuePricing(1000, seed=1).price(round_b, accepted, RoundView(start, score))
    value_seconds = time.perf_counter() - began
    paid = {kind: 0 for kind in ("honest", "sybil", "flip")}
    for verdict, kind in zip(priced, kinds, strict=True):
        paid[kind] += verdict.amount if verdict.accept else 0
    honest_mean = paid["honest"] / 6
    print(
        json.dumps(
            {
                "bench": "value",
                "seed": args.seed,
                "spearman_gtg_vs_exact_6": round(rho, 3),
                "exact_evaluations": exact_utility.evaluations,
                "exact_seconds": round(exact_seconds, 2),
                "gtg_evaluations": utility.evaluations,
                "gtg_seconds": round(gtg_seconds, 2),
                "flipper_value_exact": round(exact.values[5], 4),
                "honest_values_exact": [round(exact.values[p], 4) for p in range(5)],
                "per_result_paid": {"honest_each": 1000, "sybil_total": 3000, "flip": 1000},
                "value_paid": {
                    "honest_mean": round(honest_mean, 1),
                    "sybil_total": paid["sybil"],
                    "sybil_over_honest_mean": round(paid["sybil"] / honest_mean, 3),
                    "flip": paid["flip"],
                },
                "value_seconds_10": round(value_seconds, 2),
                "training_seconds_8_fits": round(training_seconds, 2),
                "value_over_training": round(value_seconds / training_seconds, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
