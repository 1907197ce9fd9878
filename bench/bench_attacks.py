"""Attacks and their price: accuracy and money lost to attackers, per defence, in one run.

Run from the project root (about 40 min on 2 cores for the full matrix):

    .venv/bin/python bench/bench_attacks.py --json .decentralml/bench-attacks.json

Each run is one federated training of the seed model on MNIST: 10 contributors, 1 local epoch
(batch 32, Adam 1e-3 restarted each round, as the contributor flow does), 5 rounds, with 3 of
the 10 contributors attacking (decentralml.simulation.attacks), on the IID and the
``shards`` (2 classes each) partitions. The creator's side is the real code: results are
encoded as safetensors, stored, and judged by the creator's own judge (``task_judge``:
screening, originality, the policy over the configured rule's aggregate) and federated by the
configured strategy. What is simulated: the marketplace (each accepted result is paid
``pays_amount // max_assignments`` = 100 000) and the contributors' training, which reuses one
compiled Keras model so that 60+ trainings fit in a session. The baseline of each partition is
the same configuration with no attacker, measured in the same run.

Configurations:
* ``fedavg+auto``: FedAvg and AutoAccept (screening and originality only) — the seed's meaning;
* ``defended``: the shipped default (FedAvg, CustomAccept with update_norm and holdout_gate);
* ``median+auto``, ``trimmed_mean+auto``, ``krum+auto``: the robust rules (trim_ratio 0.3,
  Krum with f = 3), which pay everyone whose result passes screening.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

CONTRIBUTORS = 10
ATTACKERS = 3
REWARD = 100_000
CONFIGS = ("fedavg+auto", "defended", "median+auto", "trimmed_mean+auto", "krum+auto")
KINDS = ("sign_flip", "scaled", "gaussian_noise", "label_flip", "free_rider", "inflated_examples")


@dataclass
class Outcome:
    partition: str
    config: str
    attack: str
    accuracy: list[float] = field(default_factory=list)
    paid_attackers: int = 0
    paid_honest: int = 0
    honest_rejected: int = 0
    attackers_rejected: int = 0
    seconds: float = 0.0
    reasons: list[str] = field(default_factory=list)


class World:
    """Data, shards and two compiled models, built once per worker process."""

    def __init__(self, partition: str) -> None:
        import keras

        from decentralml.creator import task_settings
        from decentralml.ml.data.federated import contributor_shard, creator_holdout, test_split
        from decentralml.ml.models import build_model, model_tensors
        from decentralml.ml.training import ReusableTrainer
        from decentralml.runtime.config import parse_config

        config = parse_config({"contributors": CONTRIBUTORS, "data": {"partition": partition}})
        data = task_settings(config).data
        self.shards = [contributor_shard(data, i) for i in range(CONTRIBUTORS)]
        self.holdout = creator_holdout(5000, 42)
        self.test = test_split()
        keras.utils.set_random_seed(0)
        self.trainer = ReusableTrainer("mnist_mlp")
        self.scorer = build_model("mnist_mlp")
        self.initial = model_tensors(self.trainer.model)

    def train(self, start: dict, x: np.ndarray, y: np.ndarray, seed: int) -> dict:
        """One contributor's local epoch from ``start``, Adam restarted (fresh moments)."""
        return self.trainer.fit(start, x, y, seed=seed)

    def score(self, tensors, split) -> dict:
        from decentralml.ml.models import evaluate, set_model_tensors

        set_model_tensors(self.scorer, dict(tensors))
        return evaluate(self.scorer, *split)


_WORLDS: dict[str, World] = {}


def run(partition: str, config: str, attack: str, rounds: int) -> Outcome:
    from decentralml.creator import rule_aggregator
    from decentralml.io.storage import ArtifactStore
    from decentralml.io.weights import encode
    from decentralml.protocol import layout
    from decentralml.protocol.records import (
        ResultSubmissionStatus,
        Submission,
        Task,
        TaskResult,
        TaskSpec,
        TaskStatus,
    )
    from decentralml.runtime.config import TaskConfig, parse_config
    from decentralml.simulation.attacks import Attack
    from decentralml.strategies import Contribution, NothingToAggregate, get_strategy
    from decentralml.validation import make_policy, screening_rules, task_judge

    world = _WORLDS.setdefault(partition, World(partition))
    started = time.perf_counter()
    outcome = Outcome(partition, config, attack)
    strategy_name = config.split("+")[0] if config != "defended" else "fedavg"
    validation = "CustomAccept" if config == "defended" else "AutoAccept"
    task = TaskConfig(validation_strategy=validation, max_assignments=CONTRIBUTORS)
    policy = make_policy(task)
    # Robust rules sized for the threat: trim 30 % per side, Krum told f = 3 of 10.
    sized = {"trimmed_mean": {"trim_ratio": 0.3}, "krum": {"byzantine": 3}}
    sized["multi_krum"] = sized["krum"]
    section = {"name": strategy_name, **sized.get(strategy_name, {})}
    strategy = get_strategy(parse_config({"strategy": section}).strategy)
    store = ArtifactStore(f"memory://bench-{uuid.uuid4().hex}")
    attackers = set(range(CONTRIBUTORS - ATTACKERS, CONTRIBUTORS)) if attack != "none" else set()
    behaviour = Attack(attack) if attack != "none" else None
    largest = max(len(y) for _, y in world.shards)
    global_tensors = dict(world.initial)
    rng = np.random.default_rng(7)
    for round_number in range(1, rounds + 1):
        weights = store.put(store.round_url("bench", round_number, "global.safetensors"), b"")
        spec = TaskSpec("bench", REWARD * CONTRIBUTORS, CONTRIBUTORS, 10**9)
        spec = dataclasses.replace(spec, global_weights_path=weights.url, round_number=round_number)
        record = Task(round_number, "creator", spec, TaskStatus.InProgress, 0, CONTRIBUTORS)
        submissions, who = [], {}
        order = rng.permutation(CONTRIBUTORS)
        honest_bytes: list[bytes] = []
        for position, index in enumerate(int(i) for i in order):
            x, y = world.shards[index]
            is_attacker = index in attackers and behaviour is not None
            if is_attacker and behaviour.kind == "free_rider":
                data = honest_bytes[0] if honest_bytes else encode(global_tensors)
                claim = len(y)
            else:
                labels = behaviour.labels(y) if is_attacker else y
                trained = world.train(global_tensors, x, labels, seed=round_number * 100 + index)
                if is_attacker:
                    trained = behaviour.weights(global_tensors, trained, seed=index)
                data = encode(trained)
                claim = behaviour.claim(len(y)) if is_attacker else len(y)
                if not is_attacker:
                    honest_bytes.append(data)
            sid = len(submissions)
            url = layout.result_url(spec.global_weights_path, sid)
            artifact = store.put(url, data)
            result = TaskResult(url, artifact.sha256, claim)
            status = ResultSubmissionStatus.PendingValidation
            submissions.append(
                Submission(sid, round_number, f"c{index}", status, 0, result, commit_order=position)
            )
            who[sid] = is_attacker
        judge = task_judge(  # the creator's own judge, over the round's configured rule
            store,
            record,
            global_tensors,
            policy,
            evaluate=lambda tensors: world.score(tensors, world.holdout),
            max_result_bytes=10_000_000,
            rules=screening_rules(task, largest),
            aggregate=rule_aggregator(strategy, round_number, global_tensors),
        )
        decisions = judge.review(submissions)
        accepted = []
        for decision in decisions:
            sid = decision.submission_id
            if decision.verdict is None:  # deferred: memory storage is never unavailable
                continue
            if decision.accepted:
                candidate = decision.candidate
                accepted.append(
                    Contribution(candidate.tensors, candidate.weight, candidate.submission.worker)
                )
                if who[sid]:
                    outcome.paid_attackers += REWARD
                else:
                    outcome.paid_honest += REWARD
            elif who[sid]:
                outcome.attackers_rejected += 1
            else:
                outcome.honest_rejected += 1
                outcome.reasons.append(f"round {round_number}: {decision.verdict.reason}")
        with contextlib.suppress(NothingToAggregate):  # nothing accepted: keep the weights
            global_tensors = strategy.aggregate(round_number, global_tensors, accepted)
        outcome.accuracy.append(round(world.score(global_tensors, world.test)["accuracy"], 4))
    outcome.seconds = round(time.perf_counter() - started, 1)
    return outcome


def _run(args: tuple[str, str, str, int]) -> Outcome:
    return run(*args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", default="iid,shards")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--attacks", default=",".join(KINDS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    jobs = []
    for partition in args.partitions.split(","):
        jobs += [(partition, c, "none", args.rounds) for c in ("fedavg+auto", "defended")]
        for attack in args.attacks.split(","):
            jobs += [(partition, c, attack, args.rounds) for c in args.configs.split(",")]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        outcomes = list(pool.map(_run, jobs))
    print_table(outcomes)
    print(f"{len(outcomes)} runs in {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=2))
    return 0


def print_table(outcomes: list[Outcome]) -> None:
    clean = {(o.partition, o.config): o.accuracy[-1] for o in outcomes if o.attack == "none"}
    print(
        f"{'partition':<9} {'attack':<18} {'config':<18} {'final acc':>9} {'vs clean':>9} "
        f"{'paid attackers':>14} {'honest rejected':>15} {'attackers rej.':>14}"
    )
    for o in outcomes:
        base = clean.get((o.partition, "fedavg+auto"))
        delta = f"{o.accuracy[-1] - base:+.4f}" if base is not None else "-"
        print(
            f"{o.partition:<9} {o.attack:<18} {o.config:<18} {o.accuracy[-1]:>9.4f} {delta:>9} "
            f"{o.paid_attackers:>14} {o.honest_rejected:>15} {o.attackers_rejected:>14}"
        )


if __name__ == "__main__":
    sys.exit(main())
