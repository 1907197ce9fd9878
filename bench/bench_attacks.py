r"""Attacks and their price: accuracy, backdoor success and money paid to attackers, per defence.

Run from the project root (the issue-16 matrix: 120 runs of 5 rounds; one run took 3-8 min
on 2 cores at load 20, so run subsets with --partitions/--configs/--attacks and gather their
output with --from-logs; docs/benchmarks.md "The attack matrix" has the commands):

    nice -n 10 .venv/bin/python bench/bench_attacks.py --jobs 2 \
        --json .decentralml/bench-attacks.json

Each run is one federated training of the seed model on MNIST: 10 contributors, ``--epochs``
local epochs (1; batch, learning rate and optimizer are ``TrainingConfig``'s defaults: Adam
3e-3 restarted each round, as the contributor procedure does), ``--rounds`` rounds (5), on the
IID, Dirichlet(0.5) and ``shards`` (two classes each) partitions. The creator's side is the
real code: results are encoded as safetensors, stored, and judged by the creator's own judge
(``task_judge``: screening, originality, the policy over the configured rule's aggregate, and
for a task paying by value the creator's own pricing, ``creator.steps.value_pricing``), the
amounts are what the marketplace pays (``protocol.rules.accept_amount``), and the accepted
results are federated by the configured strategy, which keeps its state (FLAME, FoolsGold's
per-account history) across rounds. What is simulated: the marketplace and the contributors'
training, which reuses one compiled Keras model so that hundreds of trainings fit in a session.

Attacks (decentralml.simulation.attacks; ``NAME-K``: K of the 10 contributors attack):
``backdoor-1``, ``backdoor-3`` (BadNets corner patch on half of each attacker's shard),
``sybil-3`` (one training sent from 3 accounts, each with noise 0.06 > the copy threshold),
``label_flip-2``, ``free_rider-3`` (trains on 1 % of its shard and claims all of it),
``sign_flip-3``, ``scaled-3``, ``gaussian_noise-3``, ``inflated_examples-3``. Each
configuration's clean run (``none``) is measured in the same session.

Configurations, ``RULE+POLICY[+FILTER]``:
* ``fedavg+auto``: FedAvg, AutoAccept, ``per_result`` — the seed's meaning;
* ``fedavg+custom``: FedAvg, CustomAccept (update_norm, holdout_gate), ``per_result``;
* ``fedavg+value``: FedAvg, CustomAccept, ``payment_rule: value`` (the default for new configs);
* ``fedavg+value+flame`` / ``fedavg+value+foolsgold``: the same with FLAME / FoolsGold;
* any other rule the same way, e.g. ``median+value`` (trimmed_mean trims 30 %, Krum f = 3).

Printed: one line per run, a table, and last one JSON line with every run and the issue's
target ratios (each attacker's pay per result over the honest mean, the Sybil group's pay and
aggregate weight share, backdoor success and accuracy against the same configuration's clean
run).
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
REWARD = 100_000
PARTITIONS = ("iid", "dirichlet", "shards")
CONFIGS = ("fedavg+auto", "fedavg+value", "fedavg+value+flame", "fedavg+value+foolsgold")
ATTACKS = (
    "none", "backdoor-1", "backdoor-3", "sybil-3", "label_flip-2", "free_rider-3",
    "sign_flip-3", "scaled-3", "gaussian_noise-3", "inflated_examples-3",
)  # fmt: skip
FREE_RIDER_SHARE = 0.01
"""The free rider trains on this share of its shard and claims all of it."""


@dataclass
class Outcome:
    partition: str
    config: str
    attack: str
    rounds: int
    accuracy: list[float] = field(default_factory=list)
    backdoor_success: float = 0.0
    paid_attackers: int = 0
    paid_honest: int = 0
    honest_results: int = 0
    attacker_results: int = 0
    honest_refused: int = 0
    attackers_refused: int = 0
    attacker_weight_share: list[float] = field(default_factory=list)
    training_seconds: float = 0.0
    valuation_seconds: float = 0.0
    seconds: float = 0.0
    reasons: list[str] = field(default_factory=list)

    def ratios(self) -> dict[str, float | None]:
        """Each attacker's pay per result over one honest result's mean pay; for a Sybil,
        the group's pay per round over the honest mean and its mean aggregate weight share."""
        honest_mean = self.paid_honest / max(self.honest_results, 1)
        per_attacker = self.paid_attackers / max(self.attacker_results, 1)
        out: dict[str, float | None] = {
            "attacker_paid_over_honest": (
                round(per_attacker / honest_mean, 4)
                if self.attacker_results and honest_mean
                else None
            )
        }
        if self.attack.startswith("sybil"):
            k = _attackers(self.attack)
            out["sybil_group_paid_over_honest"] = (
                round(k * per_attacker / honest_mean, 4) if honest_mean else None
            )
            share = self.attacker_weight_share
            out["sybil_weight_share"] = round(sum(share) / len(share), 4) if share else 0.0
        return out


def _kind(attack: str) -> str:
    return attack.rsplit("-", 1)[0]


def _attackers(attack: str) -> int:
    return 0 if attack == "none" else int(attack.rsplit("-", 1)[1])


@dataclass(frozen=True)
class Configuration:
    """What ``RULE+POLICY[+FILTER]`` names: the strategy section, the policy, the payment rule."""

    strategy: dict
    validation: str
    payment_rule: str

    @classmethod
    def parse(cls, name: str) -> Configuration:
        rule, policy, *filters = name.split("+")
        if policy not in ("auto", "custom", "value"):
            raise SystemExit(f"configuration {name!r}: the policy is auto, custom or value")
        section: dict = {"name": rule}
        section.update(
            {"trimmed_mean": {"trim_ratio": 0.3}, "krum": {"byzantine": 3}}.get(rule, {})
        )
        for extra in filters:
            if extra not in ("flame", "foolsgold"):
                raise SystemExit(f"configuration {name!r}: a filter is flame or foolsgold")
            section["backdoor_filter" if extra == "flame" else "sybil_filter"] = extra
        validation = "AutoAccept" if policy == "auto" else "CustomAccept"
        return cls(section, validation, "value" if policy == "value" else "per_result")


class World:
    """Data, shards and two compiled models, built once per worker process and partition."""

    def __init__(self, partition: str, epochs: int) -> None:
        import keras

        from decentralml.creator import task_settings
        from decentralml.ml.data.federated import contributor_shard, creator_holdout, test_split
        from decentralml.ml.models import build_model, model_tensors
        from decentralml.ml.training import ReusableTrainer
        from decentralml.runtime.config import TrainingConfig, parse_config

        config = parse_config({"contributors": CONTRIBUTORS, "data": {"partition": partition}})
        data = task_settings(config).data
        self.shards = [contributor_shard(data, i) for i in range(CONTRIBUTORS)]
        self.holdout = creator_holdout(5000, 42)
        self.test = test_split()
        self.training = TrainingConfig(epochs=epochs)
        keras.utils.set_random_seed(0)
        self.trainer = ReusableTrainer(
            "mnist_mlp", self.training.learning_rate, optimizer=self.training.optimizer
        )
        self.scorer = build_model("mnist_mlp")
        self.initial = model_tensors(self.trainer.model)
        self.training_seconds = 0.0

    def train(self, start: dict, x: np.ndarray, y: np.ndarray, seed: int) -> dict:
        """One contributor's local training from ``start``, the optimizer restarted."""
        started = time.perf_counter()
        trained = self.trainer.fit(
            start, x, y, epochs=self.training.epochs, batch_size=self.training.batch_size, seed=seed
        )
        self.training_seconds += time.perf_counter() - started
        return trained

    def score(self, tensors, split) -> dict:
        from decentralml.ml.models import evaluate, set_model_tensors

        set_model_tensors(self.scorer, dict(tensors))
        return evaluate(self.scorer, *split)

    def backdoor_success(self, tensors) -> float:
        from decentralml.ml.models import set_model_tensors
        from decentralml.simulation.attacks import backdoor_success_rate

        set_model_tensors(self.scorer, dict(tensors))
        predict = lambda x: np.asarray(self.scorer(x, training=False))  # noqa: E731
        return float(backdoor_success_rate(predict, *self.test) or 0.0)


class TimedPricing:
    """The creator's pricing, timed: what valuation adds to a round."""

    def __init__(self, inner) -> None:
        self.inner, self.seconds = inner, 0.0

    def price(self, *args):
        return self._timed("price", *args)

    def estimate(self, *args):
        return self._timed("estimate", *args)

    def _timed(self, method: str, *args):
        started = time.perf_counter()
        try:
            return getattr(self.inner, method)(*args)
        finally:
            self.seconds += time.perf_counter() - started


_WORLDS: dict[tuple[str, int], World] = {}


def submissions_of_round(world, attack, attackers, global_tensors, round_number):
    """(tensors, claim, is_attacker) per contributor for one round."""
    from decentralml.simulation.attacks import SYBIL_NOISE, Attack, noisy_copy

    kind = _kind(attack)
    behaviour = Attack(kind) if attack != "none" else None
    sybil_training = None
    out = {}
    for index in range(CONTRIBUTORS):
        x, y = world.shards[index]
        seed = round_number * 100 + index
        if index not in attackers:
            out[index] = (world.train(global_tensors, x, y, seed), len(y), False)
        elif kind == "free_rider":  # 1 % of its data, the full claim
            few = max(1, int(FREE_RIDER_SHARE * len(y)))
            out[index] = (world.train(global_tensors, x[:few], y[:few], seed), len(y), True)
        elif kind == "sybil":  # one training (the first account's), every account's noise
            if sybil_training is None:
                sybil_training = world.train(global_tensors, x, y, seed)
            sent = noisy_copy(global_tensors, sybil_training, SYBIL_NOISE, seed)
            out[index] = (sent, len(y), True)
        else:
            px, py = behaviour.data(x, y)
            trained = world.train(global_tensors, px, py, seed)
            sent = behaviour.weights(global_tensors, trained, seed=index)
            out[index] = (sent, behaviour.claim(len(y)), True)
    return out


def run(partition: str, config: str, attack: str, rounds: int, epochs: int) -> Outcome:
    from decentralml.creator import rule_aggregator
    from decentralml.creator.steps import value_pricing
    from decentralml.io.storage import ArtifactStore
    from decentralml.io.weights import encode
    from decentralml.protocol import layout, rules
    from decentralml.protocol.records import (
        ResultSubmissionStatus,
        Submission,
        Task,
        TaskResult,
        TaskSpec,
        TaskStatus,
    )
    from decentralml.runtime.config import parse_config
    from decentralml.strategies import Contribution, NothingToAggregate, get_strategy
    from decentralml.validation import make_policy, screening_rules, task_judge

    world = _WORLDS.setdefault((partition, epochs), World(partition, epochs))
    world.training_seconds = 0.0
    started = time.perf_counter()
    outcome = Outcome(partition, config, attack, rounds)
    setup = Configuration.parse(config)
    run_config = parse_config(
        {
            "contributors": CONTRIBUTORS,
            "strategy": setup.strategy,
            "task": {
                "validation_strategy": setup.validation,
                "max_assignments": CONTRIBUTORS,
                "pays_amount": REWARD * CONTRIBUTORS,
                "payment_rule": setup.payment_rule,
                # No marketplace here, so no account has a record: the matrix measures the
                # pricing itself, without the newcomer cap (which only lowers fresh accounts' pay).
                "newcomer_share_cap": None,
            },
        }
    )
    task = run_config.task
    policy = make_policy(task)
    strategy = get_strategy(run_config.strategy)
    store = ArtifactStore(f"memory://bench-{uuid.uuid4().hex}")
    attackers = set(range(CONTRIBUTORS - _attackers(attack), CONTRIBUTORS))
    largest = max(len(y) for _, y in world.shards)
    global_tensors = dict(world.initial)
    rng = np.random.default_rng(7)
    valuation = 0.0
    for round_number in range(1, rounds + 1):
        weights = store.put(store.round_url("bench", round_number, "global.safetensors"), b"")
        spec = TaskSpec("bench", task.pays_amount, CONTRIBUTORS, 10**9)
        spec = dataclasses.replace(
            spec,
            global_weights_path=weights.url,
            round_number=round_number,
            payment_rule=task.payment_rule,
        )
        record = Task(round_number, "creator", spec, TaskStatus.InProgress, 0, CONTRIBUTORS)
        sent = submissions_of_round(world, attack, attackers, global_tensors, round_number)
        submissions, who = [], {}
        for position, index in enumerate(int(i) for i in rng.permutation(CONTRIBUTORS)):
            tensors, claim, is_attacker = sent[index]
            sid = len(submissions)
            url = layout.result_url(spec.global_weights_path, sid)
            artifact = store.put(url, encode(tensors))
            status = ResultSubmissionStatus.PendingValidation
            result = TaskResult(url, artifact.sha256, claim)
            submissions.append(
                Submission(sid, round_number, f"c{index}", status, 0, result, commit_order=position)
            )
            who[sid] = is_attacker
        pricing = value_pricing(run_config, record)
        timed = TimedPricing(pricing) if pricing is not None else None
        judge = task_judge(  # the creator's own judge, over the round's configured rule
            store,
            record,
            global_tensors,
            policy,
            evaluate=lambda tensors: world.score(tensors, world.holdout),
            max_result_bytes=10_000_000,
            rules=screening_rules(task, largest),
            aggregate=rule_aggregator(strategy, round_number, global_tensors),
            pricing=timed,
        )
        decisions = judge.review(submissions)
        valuation += timed.seconds if timed is not None else 0.0
        accepted, attacker_weight = [], 0
        for decision in decisions:
            sid = decision.submission_id
            if decision.verdict is None:  # deferred: memory storage is never unavailable
                continue
            if who[sid]:
                outcome.attacker_results += 1
            else:
                outcome.honest_results += 1
            if decision.accepted:
                amount = rules.accept_amount(record, decision.verdict)
                assert isinstance(amount, int), amount
                record = dataclasses.replace(record, paid=record.paid + amount)
                candidate = decision.candidate
                accepted.append(
                    Contribution(candidate.tensors, candidate.weight, candidate.submission.worker)
                )
                if who[sid]:
                    outcome.paid_attackers += amount
                    attacker_weight += max(candidate.weight, 1)
                else:
                    outcome.paid_honest += amount
            elif who[sid]:
                outcome.attackers_refused += 1
            else:
                outcome.honest_refused += 1
                outcome.reasons.append(f"round {round_number}: {decision.verdict.reason}")
        total_weight = sum(max(c.num_examples, 1) for c in accepted)
        outcome.attacker_weight_share.append(
            round(attacker_weight / total_weight, 4) if total_weight else 0.0
        )
        with contextlib.suppress(NothingToAggregate):  # nothing accepted: keep the weights
            global_tensors = strategy.aggregate(round_number, global_tensors, accepted)
        outcome.accuracy.append(round(world.score(global_tensors, world.test)["accuracy"], 4))
    outcome.backdoor_success = round(world.backdoor_success(global_tensors), 4)
    outcome.training_seconds = round(world.training_seconds, 1)
    outcome.valuation_seconds = round(valuation, 1)
    outcome.seconds = round(time.perf_counter() - started, 1)
    return outcome


def _run(args: tuple) -> Outcome:
    outcome = run(*args)
    print(json.dumps({"run": asdict(outcome) | outcome.ratios()}), flush=True)
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", default=",".join(PARTITIONS))
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--attacks", default=",".join(ATTACKS), help="'none': the clean run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--from-logs",
        nargs="+",
        type=Path,
        help="run nothing: gather the per-run lines of earlier runs' output into the tables",
    )
    args = parser.parse_args()
    if args.from_logs:
        outcomes = gathered(args.from_logs)
        print_markdown(outcomes)
        print(json.dumps(summarize(outcomes)))
        return 0
    configs = args.configs.split(",")
    for name in configs:
        Configuration.parse(name)
    attacks = [a for a in args.attacks.split(",") if a]
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise SystemExit(
            f"unknown attack(s) {', '.join(unknown)}; choose from {', '.join(ATTACKS)}"
        )
    jobs = [
        (partition, config, attack, args.rounds, args.epochs)
        for partition in args.partitions.split(",")
        for attack in attacks
        for config in configs
    ]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        outcomes = list(pool.map(_run, jobs))
    print_table(outcomes)
    print(f"{len(outcomes)} runs in {time.perf_counter() - started:.0f} s")
    summary = summarize(outcomes)
    summary["command"] = " ".join(["bench/bench_attacks.py", *sys.argv[1:]])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return 0


def summarize(outcomes: list[Outcome]) -> dict:
    """Every run with its ratios, and per partition and configuration the issue's targets."""
    clean = {(o.partition, o.config, o.rounds): o for o in outcomes if o.attack == "none"}
    runs, targets = [], {}
    for o in outcomes:
        base = clean.get((o.partition, o.config, o.rounds))
        row = {k: v for k, v in asdict(o).items() if k != "reasons"} | o.ratios()
        row["honest_refused_reasons"] = o.reasons[:3]
        if base is not None and o.attack != "none":
            row["success_over_clean_points"] = round(
                100 * (o.backdoor_success - base.backdoor_success), 2
            )
            row["accuracy_vs_clean_points"] = round(100 * (o.accuracy[-1] - base.accuracy[-1]), 2)
        runs.append(row)
        key = f"{o.partition}/{o.config}/{o.rounds} rounds"
        t = targets.setdefault(key, {"honest_refused": 0})
        t["honest_refused"] += o.honest_refused
        if o.attack in ("backdoor-1", "backdoor-3", "label_flip-2", "free_rider-3"):
            t[f"{o.attack}_paid_over_honest"] = row["attacker_paid_over_honest"]
        if o.attack.startswith("backdoor") and "success_over_clean_points" in row:
            t[f"{o.attack}_success_over_clean_points"] = row["success_over_clean_points"]
            t[f"{o.attack}_accuracy_vs_clean_points"] = row["accuracy_vs_clean_points"]
        if o.attack == "sybil-3":
            t["sybil_group_paid_over_honest"] = row["sybil_group_paid_over_honest"]
            t["sybil_weight_share"] = row["sybil_weight_share"]
    return {"bench": "attacks", "contributors": CONTRIBUTORS, "runs": runs, "targets": targets}


def gathered(logs: list[Path]) -> list[Outcome]:
    """The outcomes an earlier run printed, one ``{"run": ...}`` line each (a session split
    over several invocations, or stopped early, still gives its tables)."""
    names = {f.name for f in dataclasses.fields(Outcome)}
    outcomes = []
    for log in logs:
        for line in log.read_text().splitlines():
            if line.startswith('{"run":'):
                row = json.loads(line)["run"]
                outcomes.append(Outcome(**{k: v for k, v in row.items() if k in names}))
    return outcomes


def print_markdown(outcomes: list[Outcome]) -> None:
    """The docs' table: one row per run, the ratios against the same configuration's clean
    run where the session has one."""
    clean = {(o.partition, o.config, o.rounds): o for o in outcomes if o.attack == "none"}
    print(
        "| partition | attack | config | final acc | vs clean (pts) | backdoor success | "
        "paid attackers | paid honest | each attacker / honest mean | honest refused | "
        "attacker results refused | training s | valuation s |"
    )
    print("|---" * 13 + "|")
    for o in outcomes:
        base = clean.get((o.partition, o.config, o.rounds))
        delta = "-"
        if base is not None and o.attack != "none":
            delta = f"{100 * (o.accuracy[-1] - base.accuracy[-1]):+.2f}"
        ratio = o.ratios()["attacker_paid_over_honest"]
        print(
            f"| {o.partition} | {o.attack} | {o.config} | {o.accuracy[-1]:.4f} | {delta} | "
            f"{100 * o.backdoor_success:.2f} % | {o.paid_attackers} | {o.paid_honest} | "
            f"{'-' if ratio is None else f'{ratio:.3f}'} | {o.honest_refused} of "
            f"{o.honest_results} | {o.attackers_refused} of {o.attacker_results} | "
            f"{o.training_seconds} | {o.valuation_seconds} |"
        )


def print_table(outcomes: list[Outcome]) -> None:
    print(
        f"{'partition':<9} {'attack':<19} {'config':<23} {'acc':>6} {'ASR':>6} "
        f"{'paid att.':>10} {'paid honest':>11} {'att/hon':>7} {'hon. ref.':>9} "
        f"{'att. ref.':>9} {'train s':>7} {'value s':>7}"
    )
    for o in outcomes:
        ratio = o.ratios()["attacker_paid_over_honest"]
        print(
            f"{o.partition:<9} {o.attack:<19} {o.config:<23} {o.accuracy[-1]:>6.4f} "
            f"{o.backdoor_success:>6.4f} {o.paid_attackers:>10} {o.paid_honest:>11} "
            f"{'-' if ratio is None else f'{ratio:.3f}':>7} {o.honest_refused:>9} "
            f"{o.attackers_refused:>9} {o.training_seconds:>7} {o.valuation_seconds:>7}"
        )


if __name__ == "__main__":
    sys.exit(main())
