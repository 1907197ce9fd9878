"""FoolsGold (issue 16 part 3, decentralml/strategies/foolsgold.py): accounts that send one
training round after round, each with its own noise, lose their say by the similarity of their
update histories (Fung et al. 2020).

The synthetic rounds model what the real ones show: each honest contributor's update is the
round's common direction, its own data's direction (the same every round) and the round's
noise; the Sybil party trains like an honest contributor once a round and sends that update
from 3 accounts, each with fresh noise 0.4 of the update's norm, so its accounts are 0.52
apart (relative L2), beyond the 0.25 at which value pricing treats results as one training,
and honest ones 0.66 apart: within one round nothing tells them apart.
"""

from __future__ import annotations

import numpy as np
import pytest

from decentralml.io.weights import decode, encode
from decentralml.protocol.records import ResultSubmissionStatus, Submission, Verdict
from decentralml.runtime.config import parse_config
from decentralml.strategies import (
    Contribution,
    FedAdam,
    FedAvg,
    Flame,
    FoolsGold,
    NormClipped,
    NothingToAggregate,
    get_strategy,
)
from decentralml.validation.base import Candidate, RoundView
from decentralml.validation.value import ValuePricing

SIZE, HONEST, SYBILS = 4000, 7, 3
N = HONEST + SYBILS
START = {"w": np.zeros(SIZE, np.float32)}


def _unit(rng) -> np.ndarray:
    v = rng.normal(size=SIZE)
    return v / np.linalg.norm(v)


class World:
    """Rounds of 7 honest accounts ``h0``..``h6`` and 3 Sybil accounts ``s0``..``s2``."""

    def __init__(self, seed: int, own: float = 0.35, noise: float = 0.4) -> None:
        self.rng = np.random.default_rng(seed)
        self.own = [_unit(self.rng) for _ in range(HONEST + 1)]  # each party's own data
        self.own_weight, self.noise = own, noise
        self.common = _unit(self.rng)

    def round(self) -> list[Contribution]:
        self.common = _unit(self.rng)
        honest = [Contribution({"w": self._training(i)}, 100, f"h{i}") for i in range(HONEST)]
        base = self._training(HONEST)  # the Sybil party trains once
        sybils = [
            Contribution(
                {"w": (base + 0.4 * np.linalg.norm(base) * _unit(self.rng)).astype(np.float32)},
                100,
                f"s{k}",
            )
            for k in range(SYBILS)
        ]
        return honest + sybils

    def _training(self, party: int) -> np.ndarray:
        update = self.common + self.own_weight * self.own[party] + self.noise * _unit(self.rng)
        return update.astype(np.float32)


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b)))


def _sybil_weight(alpha: list[float], contributions: list[Contribution]) -> float:
    """The Sybils' share of the aggregate: Σ α_i·n_i over the Sybils / Σ n_i over the kept."""
    pairs = list(zip(alpha, contributions, strict=True))
    kept = sum(c.num_examples for a, c in pairs if a > 0)
    return sum(a * c.num_examples for a, c in pairs[HONEST:]) / kept


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sybils_sending_one_training_with_fresh_noise_lose_their_weight_by_round_3(seed) -> None:
    world, foolsgold = World(seed), FoolsGold(FedAvg())
    for round_number in (1, 2, 3):
        contributions = world.round()
        merged = foolsgold.aggregate(round_number, START, contributions)
    updates = [c.tensors["w"] for c in contributions]
    assert min(_relative(updates[i], updates[j]) for i in range(N) for j in range(i)) > 0.25
    alpha = foolsgold.weights
    assert max(alpha[HONEST:]) <= 0.05 and min(alpha[:HONEST]) >= 0.95, alpha
    assert _sybil_weight(alpha, contributions) <= 1.25 / N
    # The aggregate is the rule's over the α-scaled updates: Σ α_i·n_i·u_i / Σ_kept n_i.
    triples = list(zip(alpha, contributions, updates, strict=True))
    kept = sum(c.num_examples for a, c, _ in triples if a > 0)
    expected = sum(a * c.num_examples * u for a, c, u in triples) / kept
    np.testing.assert_allclose(merged["w"], expected, atol=1e-5)

    # Control: the same round judged on its own (no history) leaves the Sybils their say.
    alone = FoolsGold(FedAvg())
    alone.aggregate(3, START, contributions)
    assert _sybil_weight(alone.weights, contributions) > 2 / N, alone.weights


def _after_two_rounds(seed: int, rule=FedAvg) -> tuple[World, FoolsGold]:
    world, foolsgold = World(seed), FoolsGold(rule())
    for round_number in (1, 2):
        foolsgold.aggregate(round_number, START, world.round())
    return world, foolsgold


@pytest.mark.parametrize("rule", [FedAvg, FedAdam])
def test_a_resumed_foolsgold_weighs_round_3_as_an_uninterrupted_one(rule) -> None:
    """The histories (and the rule's own state, FedAdam's moments) go through a real
    checkpoint's bytes; a new FoolsGold loaded from them gives round 3 the same α and the
    same weights."""
    world, straight = _after_two_rounds(4, rule)
    saved = straight.state()
    assert {k for k in saved if k.startswith("foolsgold/")} == {
        f"foolsgold/{a}" for a in [*(f"h{i}" for i in range(HONEST)), "s0", "s1", "s2"]
    }
    assert all(saved[f"foolsgold/h{i}"].shape == (SIZE,) for i in range(HONEST))
    resumed = FoolsGold(rule())
    resumed.load_state(decode(encode(saved, {"round": 2})), 2)
    third = world.round()
    expected = straight.aggregate(3, START, third)
    got = resumed.aggregate(3, START, third)
    assert resumed.weights == straight.weights
    np.testing.assert_array_equal(got["w"], expected["w"])
    forgetful = FoolsGold(rule())  # without the histories the Sybils keep their say
    if rule is FedAvg:
        forgetful.aggregate(3, START, third)
        assert max(forgetful.weights[HONEST:]) > 0.5 > max(straight.weights[HONEST:])


def test_subsets_of_a_round_leave_the_histories_as_the_round_itself_does() -> None:
    """The held-out gate and the value pricing aggregate subsets of a round; the histories
    after the round are those of the round's own aggregation, and a round where nothing was
    accepted adds nothing to them."""
    world, probed = _after_two_rounds(5)
    _, plain = _after_two_rounds(5)
    third = world.round()
    for subset in (third[:3], third[HONEST:], third[::2]):
        probed.aggregate(3, START, subset)
    np.testing.assert_array_equal(
        probed.aggregate(3, START, third)["w"], plain.aggregate(3, START, third)["w"]
    )
    assert sorted(probed.state()) == sorted(plain.state())
    for key, history in plain.state().items():
        np.testing.assert_array_equal(probed.state()[key], history, err_msg=key)

    before = {k: v.copy() for k, v in probed.state().items()}
    probed.aggregate(4, START, world.round()[:5])  # subsets tried, then nothing accepted
    with pytest.raises(NothingToAggregate):
        probed.aggregate(4, START, [])
    assert sorted(probed.state()) == sorted(before)
    for key, history in before.items():
        np.testing.assert_array_equal(probed.state()[key], history, err_msg=key)


def test_contributions_without_an_account_are_fresh_and_forgotten() -> None:
    twins = [Contribution({"w": np.ones(SIZE, np.float32)}, 1) for _ in range(2)]
    other = Contribution({"w": _unit(np.random.default_rng(0)).astype(np.float32)}, 1)
    foolsgold = FoolsGold(FedAvg())
    foolsgold.aggregate(1, START, [*twins, other])
    assert foolsgold.weights == [0.0, 0.0, 1.0]  # two perfect twins: α = 0 for both
    assert foolsgold.state() == {}
    foolsgold.aggregate(2, START, twins)  # every α 0: the round keeps the global weights
    assert foolsgold.weights == [1.0, 1.0]  # twins alone: nothing tells them apart


def test_sybils_priced_through_the_configured_rule_earn_about_nothing() -> None:
    """The value pricing aggregates subsets through the training's strategy with each
    result's account (creator.steps.rule_aggregator): by round 3 the Sybils' α is 0 in every
    subset, so together they are paid at most 1.25x one honest contributor (here: about
    nothing), and pricing leaves the histories as they were."""
    from decentralml.creator.steps import rule_aggregator

    world, foolsgold = _after_two_rounds(6)
    _, twin = _after_two_rounds(6)
    third = world.round()
    target = world.common  # what the held-out split rewards: this round's common direction

    def evaluate(tensors) -> dict:
        return {"loss": float(np.sum((tensors["w"] - target) ** 2))}

    candidates = [
        Candidate(
            Submission(i, 1, c.account, ResultSubmissionStatus.PendingValidation, 0),
            c.tensors,
            evaluate,
            weight=c.num_examples,
        )
        for i, c in enumerate(third)
    ]
    view = RoundView(START, evaluate, rule_aggregator(foolsgold, 3, START))
    verdicts = [Verdict(c.submission_id, True, "passed") for c in candidates]
    priced = ValuePricing(reward_per_result=1000, seed=3).price(candidates, verdicts, view)
    paid = [v.amount or 0 for v in priced]
    honest_mean = np.mean(paid[:HONEST])
    assert all(v.accept for v in priced[:HONEST]) and honest_mean > 0
    assert sum(paid[HONEST:]) <= 1.25 * honest_mean, paid
    assert sum(paid[HONEST:]) <= 0.05 * honest_mean, paid  # measured: 1 unit each

    accepted = [c for c, v in zip(third, priced, strict=True) if v.accept]
    np.testing.assert_array_equal(
        foolsgold.aggregate(3, START, accepted)["w"], twin.aggregate(3, START, accepted)["w"]
    )
    for key, history in twin.state().items():
        np.testing.assert_array_equal(foolsgold.state()[key], history, err_msg=key)


def test_the_sybil_filter_is_configured_in_front_of_any_rule_and_backdoor_filter() -> None:
    def strategy(**section):
        return get_strategy(parse_config({"strategy": section}).strategy)

    plain = strategy(name="fedavg", sybil_filter="foolsgold")
    assert type(plain) is FoolsGold and type(plain.rule) is FedAvg
    both = strategy(name="median", sybil_filter="foolsgold", backdoor_filter="flame")
    assert type(both) is FoolsGold and type(both.rule) is Flame
    assert type(both.rule.rule).__name__ == "Median"
    clipped = strategy(name="fedadam", sybil_filter="foolsgold", clip_norm_multiple=2.0)
    assert type(clipped.rule) is NormClipped and type(clipped.rule.rule) is FedAdam
    assert type(strategy(name="fedavg")) is FedAvg
    with pytest.raises(Exception, match="sybil_filter"):
        strategy(name="fedavg", sybil_filter="krum")


@pytest.mark.slow
def test_real_sybils_lose_their_weight_and_honest_contributors_keep_theirs() -> None:
    """Real MNIST, IID shards, one epoch: 7 honest contributors and a party that trains on
    its shard once a round and sends the result from 3 accounts with fresh noise 0.4 of its
    norm. Measured: round 1 every α is 1 (honest updates lie 0.56-0.62 apart, as alike as the
    Sybils'); from round 2 the Sybils' α is 0 and every honest α 1 (5 rounds)."""
    import keras

    from decentralml.creator import task_settings
    from decentralml.ml.data.federated import contributor_shard
    from decentralml.ml.models import model_tensors
    from decentralml.ml.training import ReusableTrainer
    from decentralml.strategies.foolsgold import flat_update

    keras.utils.set_random_seed(5)
    trainer = ReusableTrainer("mnist_mlp")
    global_tensors = model_tensors(trainer.model)
    data = task_settings(parse_config({"contributors": N})).data
    shards = [contributor_shard(data, i) for i in range(HONEST + 1)]
    rng, foolsgold = np.random.default_rng(0), FoolsGold(FedAvg())
    for round_number in (1, 2, 3):
        trained = [
            trainer.fit(global_tensors, x, y, seed=100 * round_number + i)
            for i, (x, y) in enumerate(shards)
        ]
        contributions = [
            Contribution(t, len(shards[i][1]), f"h{i}") for i, t in enumerate(trained[:HONEST])
        ]
        base, size = trained[HONEST], len(shards[HONEST][1])
        norm = float(np.linalg.norm(flat_update(base, global_tensors)))
        for k in range(SYBILS):
            noise = {n: rng.normal(size=t.shape) for n, t in base.items()}
            scale = 0.4 * norm / np.sqrt(sum(float(np.vdot(e, e)) for e in noise.values()))
            tensors = {n: (t + scale * noise[n]).astype(t.dtype) for n, t in base.items()}
            contributions.append(Contribution(tensors, size, f"s{k}"))
        global_tensors = foolsgold.aggregate(round_number, global_tensors, contributions)
    alpha = foolsgold.weights
    assert max(alpha[HONEST:]) <= 0.05 and min(alpha[:HONEST]) >= 0.95, alpha
    assert _sybil_weight(alpha, contributions) <= 1.25 / N
