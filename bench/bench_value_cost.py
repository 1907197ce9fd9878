"""What valuing a round costs as it grows: GTG-Shapley's held-out evaluations and seconds at
N contributors, against the same round's training measured in the same run.

    python bench/bench_value_cost.py [--contributors 10 25 50 100] [--seed N]

For each N: the shipped MLP (mnist_mlp), IID shards of MNIST's 60 000 training examples cut
N ways (so the round trains on the whole set whatever N), one epoch per result from the same
start; then ``ValuePricing`` with the automatic budget (``auto_budget``: 30 evaluations per
result, at least one whole cycle of guided permutations) prices all N results as the
creator's judge would after a policy that accepted them all; then round 2 from round 1's
FedAvg, where every value is small and the sampling runs longer. Reports per N and round: the
training's
seconds (N fits, one after another, as the creator would wait for them if it trained them
all), the valuation's seconds and evaluations, the budget, and the ratio valuation/training.
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
    parser.add_argument("--contributors", type=int, nargs="+", default=[10, 25, 50, 100])
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    import keras

    from decentralml.creator import task_settings
    from decentralml.ml.data.federated import contributor_shard, creator_holdout
    from decentralml.ml.models import build_model, evaluate, model_tensors, set_model_tensors
    from decentralml.ml.training import ReusableTrainer
    from decentralml.protocol.records import ResultSubmissionStatus, Submission, Verdict
    from decentralml.runtime.config import parse_config
    from decentralml.validation.base import Candidate, RoundView
    from decentralml.validation.value import ValuePricing, auto_budget

    keras.utils.set_random_seed(args.seed)
    trainer, scorer = ReusableTrainer("mnist_mlp"), build_model("mnist_mlp")
    start = model_tensors(trainer.model)
    holdout = creator_holdout(5000, 42)
    evaluations = 0

    def score(tensors) -> dict:
        nonlocal evaluations
        evaluations += 1
        set_model_tensors(scorer, dict(tensors))
        return evaluate(scorer, *holdout)

    def train(n: int, data, begin) -> tuple[list[Candidate], float]:
        """The round's N results from ``begin``, and the seconds their fits took."""
        began = time.perf_counter()
        candidates = []
        for i in range(n):
            x, y = contributor_shard(data, i)
            status = ResultSubmissionStatus.PendingValidation
            submission = Submission(i, 0, f"c{i}", status, 0, None, commit_order=i)
            tensors = trainer.fit(begin, x, y, seed=100 + i)
            candidates.append(Candidate(submission, tensors, None, {}, weight=len(y)))
        return candidates, time.perf_counter() - began

    def value(n: int, round_number: int, candidates, begin, training: float) -> dict:
        """Price the round's results as the creator's judge would; what it cost."""
        nonlocal evaluations
        accepted = [Verdict(c.submission_id, True, "passed") for c in candidates]
        evaluations = 0
        began = time.perf_counter()
        priced = ValuePricing(1000, seed=1).price(candidates, accepted, RoundView(begin, score))
        valuation = time.perf_counter() - began
        return {
            "contributors": n,
            "round": round_number,
            "training_seconds": round(training, 2),
            "valuation_seconds": round(valuation, 2),
            "evaluations": evaluations,
            "budget": auto_budget(n),
            "valuation_over_training": round(valuation / training, 3),
            "refused": sum(not v.accept for v in priced),
            "paid_1_unit": sum(v.accept and v.amount == 1 for v in priced),
        }

    rows = []
    for n in args.contributors:
        data = task_settings(parse_config({"contributors": n})).data
        first, training = train(n, data, start)
        rows.append(value(n, 1, first, start, training))
        total = sum(c.weight for c in first)  # round 2 starts from round 1's FedAvg
        second_start = {
            name: sum(c.weight * c.tensors[name] for c in first) / total for name in start
        }
        second, training = train(n, data, second_start)
        rows.append(value(n, 2, second, second_start, training))
    print(json.dumps({"bench": "value_cost", "seed": args.seed, "rounds": rows}))


if __name__ == "__main__":
    main()
