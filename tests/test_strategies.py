"""decentralml.strategies: every rule against hand-computed cases and numpy references, their
robustness to poisoned contributions and norm clipping. (The averaging rules' memory use over
a stream is a benchmark figure: bench/bench_aggregation.py.)

FedAvg is McMahan et al. 2017, Algorithm 1: w = Σ_k (n_k / n) w_k. The references below compute
each rule directly in float64 from fully materialized stacks (Krum with plain Python loops over
pairs); the strategies must match them, FedAvg and Average while streaming contributions one at
a time.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from decentralml.runtime.config import parse_config
from decentralml.strategies import (
    Average,
    Contribution,
    FedAvg,
    Krum,
    Median,
    MultiKrum,
    NormClipped,
    NothingToAggregate,
    TrimmedMean,
    get_strategy,
)
from decentralml.strategies.base import accumulate_weighted, update_norm
from decentralml.strategies.clipping import clip_updates
from decentralml.strategies.krum import effective_byzantine
from decentralml.strategies.trimmed_mean import trimmed_count

# FedAvg and Average do not read the global weights (the mean of g + u_i is g + the mean of u_i).
ANY_GLOBAL: dict[str, np.ndarray] = {}

# The seed model's layout (Flatten · Dense(128) · Dense(10)).
SEED_SHAPES = {
    "000.kernel": (784, 128),
    "001.bias": (128,),
    "002.kernel": (128, 10),
    "003.bias": (10,),
}


def _contributions(n: int, seed: int = 0, shapes: dict = SEED_SHAPES) -> list[Contribution]:
    rng = np.random.default_rng(seed)
    return [
        Contribution(
            {name: rng.normal(i, 1.0, shape).astype(np.float32) for name, shape in shapes.items()},
            num_examples=int(rng.integers(50, 5000)),
        )
        for i in range(n)
    ]


def _fedavg_reference(contributions: list[Contribution]) -> dict[str, np.ndarray]:
    n = np.array([c.num_examples for c in contributions], dtype=np.float64)
    return {
        name: np.tensordot(
            n / n.sum(), np.stack([c.tensors[name].astype(np.float64) for c in contributions]), 1
        )
        for name in contributions[0].tensors
    }


def _mean_reference(contributions: list[Contribution]) -> dict[str, np.ndarray]:
    return {
        name: np.stack([c.tensors[name].astype(np.float64) for c in contributions]).mean(axis=0)
        for name in contributions[0].tensors
    }


def _assert_close(result: dict, reference: dict, atol: float) -> None:
    assert list(result) == list(reference)
    for name in reference:
        assert result[name].shape == reference[name].shape, name
        np.testing.assert_allclose(result[name], reference[name], rtol=0, atol=atol, err_msg=name)


# --- correctness ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5, 17])
def test_fedavg_equals_the_weighted_mean(n: int) -> None:
    contributions = _contributions(n)
    result = FedAvg().aggregate(1, ANY_GLOBAL, contributions)
    # Values are around 0..n with unit spread: float32 output rounding is ~1e-6 relative.
    _assert_close(result, _fedavg_reference(contributions), atol=4e-6 * max(n, 1))


@pytest.mark.parametrize("n", [1, 2, 5, 17])
def test_average_equals_the_plain_mean(n: int) -> None:
    contributions = _contributions(n, seed=1)
    result = Average().aggregate(1, ANY_GLOBAL, contributions)
    _assert_close(result, _mean_reference(contributions), atol=4e-6 * max(n, 1))


def test_single_contribution_is_returned_unchanged() -> None:
    (only,) = _contributions(1)
    for strategy in (FedAvg(), Average()):
        result = strategy.aggregate(1, ANY_GLOBAL, [only])
        for name, tensor in only.tensors.items():
            assert result[name].tobytes() == tensor.tobytes()


def test_fedavg_on_a_hand_computed_case() -> None:
    a = Contribution({"w": np.array([0.0, 10.0], dtype=np.float32)}, num_examples=1)
    b = Contribution({"w": np.array([4.0, 20.0], dtype=np.float32)}, num_examples=3)
    np.testing.assert_array_equal(FedAvg().aggregate(1, ANY_GLOBAL, [a, b])["w"], [3.0, 17.5])
    np.testing.assert_array_equal(Average().aggregate(1, ANY_GLOBAL, [a, b])["w"], [2.0, 15.0])


def test_num_examples_actually_weight_the_result() -> None:
    small = Contribution({"w": np.zeros(4, dtype=np.float32)}, num_examples=100)
    large = Contribution({"w": np.ones(4, dtype=np.float32)}, num_examples=900)
    np.testing.assert_allclose(
        FedAvg().aggregate(1, ANY_GLOBAL, [small, large])["w"], 0.9, atol=1e-7
    )
    np.testing.assert_allclose(
        Average().aggregate(1, ANY_GLOBAL, [small, large])["w"], 0.5, atol=1e-7
    )
    # Scaling every count by the same factor changes nothing.
    scaled = [Contribution(c.tensors, c.num_examples * 7) for c in (small, large)]
    np.testing.assert_allclose(FedAvg().aggregate(1, ANY_GLOBAL, scaled)["w"], 0.9, atol=1e-7)


def test_equal_counts_make_fedavg_the_plain_mean() -> None:
    contributions = [Contribution(c.tensors, 250) for c in _contributions(6, seed=2)]
    fedavg, average = (
        FedAvg().aggregate(1, ANY_GLOBAL, contributions),
        Average().aggregate(1, ANY_GLOBAL, contributions),
    )
    for name in fedavg:
        np.testing.assert_allclose(fedavg[name], average[name], rtol=0, atol=1e-6)


@pytest.mark.parametrize("strategy", [FedAvg(), Average()], ids=["fedavg", "average"])
def test_order_of_arrival_does_not_change_the_result(strategy) -> None:
    contributions = _contributions(6, seed=3)
    results = [
        strategy.aggregate(1, ANY_GLOBAL, list(order))
        for order in itertools.islice(itertools.permutations(contributions), 0, 720, 97)
    ]
    results.append(strategy.aggregate(1, ANY_GLOBAL, list(reversed(contributions))))
    first = results[0]
    for other in results[1:]:
        for name in first:
            assert np.max(np.abs(other[name] - first[name])) <= 1e-6, name


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_output_dtype_is_the_input_dtype(dtype: type) -> None:
    contributions = [
        Contribution({"k": np.full((3, 2), v, dtype=dtype), "b": np.full(2, -v, dtype=dtype)}, n)
        for v, n in [(1.0, 1), (2.0, 1), (4.0, 2)]
    ]
    for strategy in (FedAvg(), Average()):
        result = strategy.aggregate(1, ANY_GLOBAL, contributions)
        assert {n: t.dtype for n, t in result.items()} == {
            "k": np.dtype(dtype),
            "b": np.dtype(dtype),
        }
        assert {n: t.shape for n, t in result.items()} == {"k": (3, 2), "b": (2,)}
    np.testing.assert_array_equal(
        FedAvg().aggregate(1, ANY_GLOBAL, contributions)["k"], np.full((3, 2), 2.75)
    )
    np.testing.assert_array_equal(
        Average().aggregate(1, ANY_GLOBAL, contributions)["b"], np.full(2, -7 / 3, dtype)
    )


def test_inputs_are_not_modified() -> None:
    contributions = _contributions(3, seed=4)
    before = [{n: t.copy() for n, t in c.tensors.items()} for c in contributions]
    FedAvg().aggregate(1, ANY_GLOBAL, contributions)
    Average().aggregate(1, ANY_GLOBAL, contributions)
    for contribution, saved in zip(contributions, before, strict=True):
        for name, tensor in saved.items():
            assert contribution.tensors[name].tobytes() == tensor.tobytes()


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", [FedAvg(), Average()], ids=["fedavg", "average"])
def test_nothing_to_aggregate(strategy) -> None:
    with pytest.raises(ValueError, match="nothing to aggregate: no contribution was accepted"):
        strategy.aggregate(1, ANY_GLOBAL, [])
    with pytest.raises(ValueError, match="nothing to aggregate"):
        strategy.aggregate(1, ANY_GLOBAL, iter(()))


@pytest.mark.parametrize("num_examples", [0, -1, -5000])
@pytest.mark.parametrize("position", [0, 2])
def test_non_positive_num_examples_is_refused(num_examples: int, position: int) -> None:
    contributions = _contributions(3, seed=5)
    contributions[position] = Contribution(contributions[position].tensors, num_examples)
    with pytest.raises(
        ValueError, match=rf"contribution weight must be positive, got {float(num_examples)}"
    ):
        FedAvg().aggregate(1, ANY_GLOBAL, contributions)
    # Average ignores the counts, so the same contributions are fine for it.
    assert set(Average().aggregate(1, ANY_GLOBAL, contributions)) == set(SEED_SHAPES)


def test_accumulate_weighted_with_a_custom_weight() -> None:
    contributions = _contributions(4, seed=6)
    result = accumulate_weighted(contributions, lambda c: c.num_examples**2)
    weights = np.array([c.num_examples**2 for c in contributions], dtype=np.float64)
    expected = sum(
        w * c.tensors["001.bias"].astype(np.float64)
        for w, c in zip(weights, contributions, strict=True)
    )
    np.testing.assert_allclose(result["001.bias"], expected / weights.sum(), rtol=0, atol=2e-5)


# --- registry ------------------------------------------------------------------------------


def test_get_strategy_by_config_name() -> None:
    assert isinstance(get_strategy("fedavg"), FedAvg)
    assert isinstance(get_strategy("average"), Average)
    assert get_strategy("fedavg").name == "fedavg"
    assert get_strategy("average").name == "average"


@pytest.mark.parametrize("name", ["FedAvg", "fedsgd", ""])
def test_get_strategy_unknown_name_lists_the_known_ones(name: str) -> None:
    with pytest.raises(ValueError) as error:
        get_strategy(name)
    assert str(error.value) == (
        f"unknown strategy {name!r}; known: "
        "['average', 'fedadagrad', 'fedadam', 'fedavg', 'fedavgm', 'fedprox', 'fedyogi', "
        "'krum', 'median', 'multi_krum', 'scaffold', 'trimmed_mean']"
    )


# --- robust rules: shared helpers ----------------------------------------------------------

SMALL_SHAPES = {"k": (6, 4), "b": (4,)}


def _round(n: int, seed: int, shapes: dict = SMALL_SHAPES) -> tuple[dict, list[Contribution]]:
    """A global model and n contributions around it, with counts the robust rules must ignore."""
    rng = np.random.default_rng(seed)
    g = {name: rng.normal(0, 1, shape).astype(np.float32) for name, shape in shapes.items()}
    contributions = [
        Contribution(
            {name: (t + rng.normal(0, 1 + i, t.shape)).astype(np.float32) for name, t in g.items()},
            num_examples=int(rng.integers(1, 10_000)),
        )
        for i in range(n)
    ]
    return g, contributions


def _stack(contributions: list[Contribution], name: str) -> np.ndarray:
    return np.stack([c.tensors[name].astype(np.float64) for c in contributions])


def _flat(tensors) -> np.ndarray:
    return np.concatenate([np.asarray(t, dtype=np.float64).ravel() for t in tensors.values()])


def _krum_reference(
    contributions: list[Contribution], f: int, m: int, neighbours: int | None = None
) -> list[int]:
    """Blanchard et al. 2017 written out with loops over pairs, on flattened float64 vectors:
    the m best-scored, score = sum of squared distances to the n - f - 2 nearest others."""
    vectors = [_flat(c.tensors) for c in contributions]
    n = len(vectors)
    k = n - f - 2 if neighbours is None else neighbours
    scores = []
    for i, v in enumerate(vectors):
        others = sorted(float(np.sum((v - w) ** 2)) for j, w in enumerate(vectors) if j != i)
        scores.append(sum(others[:k]))
    return sorted(range(n), key=lambda i: (scores[i], i))[:m]


ROBUST = [Median(), TrimmedMean(), Krum(), MultiKrum()]
ROBUST_IDS = ["median", "trimmed_mean", "krum", "multi_krum"]
ALL = [FedAvg(), Average(), *ROBUST, NormClipped(Median(), 2.0), NormClipped(FedAvg(), 1.0)]
ALL_IDS = ["fedavg", "average", *ROBUST_IDS, "clipped_median", "clipped_fedavg"]


# --- median ----------------------------------------------------------------------------------


def test_median_on_a_hand_computed_case() -> None:
    values = [[1.0, -5.0], [7.0, 2.0], [3.0, 100.0], [2.0, 0.0], [1e6, 1.0]]
    contributions = [Contribution({"w": np.array(v, np.float32)}, 1) for v in values]
    np.testing.assert_array_equal(Median().aggregate(1, {}, contributions)["w"], [3.0, 1.0])
    # An even count averages the two middle values.
    np.testing.assert_array_equal(Median().aggregate(1, {}, contributions[:4])["w"], [2.5, 1.0])


@pytest.mark.parametrize("n", [1, 2, 5, 8, 13])
def test_median_equals_numpys_median(n: int) -> None:
    g, contributions = _round(n, seed=n)
    result = Median().aggregate(1, g, contributions)
    for name in g:
        expected = np.median(_stack(contributions, name), axis=0)
        np.testing.assert_allclose(result[name], expected, rtol=1e-6, atol=0, err_msg=name)


# --- trimmed mean ----------------------------------------------------------------------------


def test_trimmed_mean_on_a_hand_computed_case() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 100.0]  # k = floor(0.2 · 5) = 1: mean of 2, 3, 4
    contributions = [Contribution({"w": np.array([v, -v], np.float32)}, 1) for v in values]
    np.testing.assert_array_equal(TrimmedMean(0.2).aggregate(1, {}, contributions)["w"], [3, -3])
    # trim_ratio 0 is the plain mean; 0.19 cuts nothing from 5 values.
    np.testing.assert_allclose(TrimmedMean(0).aggregate(1, {}, contributions)["w"], [22, -22])
    np.testing.assert_allclose(TrimmedMean(0.19).aggregate(1, {}, contributions)["w"], [22, -22])
    # 0.4 cuts 2 at each end: the median of 5.
    np.testing.assert_array_equal(TrimmedMean(0.4).aggregate(1, {}, contributions)["w"], [3, -3])


@pytest.mark.parametrize("trim_ratio", [0.0, 0.1, 0.2, 0.3, 0.49])
@pytest.mark.parametrize("n", [1, 2, 4, 7, 13])
def test_trimmed_mean_equals_the_sorted_slice_mean(trim_ratio: float, n: int) -> None:
    g, contributions = _round(n, seed=100 + n)
    result = TrimmedMean(trim_ratio).aggregate(1, g, contributions)
    k = math.floor(trim_ratio * n)
    for name in g:
        ordered = np.sort(_stack(contributions, name), axis=0)
        expected = ordered[k : n - k].mean(axis=0)
        np.testing.assert_allclose(result[name], expected, rtol=1e-6, atol=1e-6, err_msg=name)


def test_trimmed_count_never_cuts_everything() -> None:
    assert [trimmed_count(0.2, n) for n in (1, 4, 5, 9, 10, 11)] == [0, 0, 1, 1, 2, 2]
    # The guard for 2k >= n (only reachable through rounding below 0.5, or 0.5 itself).
    assert trimmed_count(0.5, 4) == 1 and trimmed_count(0.5, 5) == 2 and trimmed_count(0.5, 1) == 0


@pytest.mark.parametrize("trim_ratio", [-0.1, 0.5, 0.7, float("nan")])
def test_trimmed_mean_refuses_a_ratio_outside_0_to_half(trim_ratio: float) -> None:
    with pytest.raises(ValueError, match=r"trim_ratio must be in \[0, 0.5\)"):
        TrimmedMean(trim_ratio)


# --- Krum / Multi-Krum ------------------------------------------------------------------------


def test_krum_on_a_hand_computed_case() -> None:
    # Points on a line at 0, 1, 2, 3, 50, 51 (n = 6, f = 1: 3 neighbours each).
    # Scores (squared distances): 0 -> 1+4+9 = 14, 1 -> 1+1+4 = 6, 2 -> 1+1+4 = 6,
    # 3 -> 1+4+9 = 14, 50 -> 1+47²+48² = 4514, 51 -> 1+48²+49² = 4706.
    points = [0.0, 1.0, 2.0, 3.0, 50.0, 51.0]
    contributions = [Contribution({"w": np.array([p, 2 * p], np.float32)}, 1) for p in points]
    krum = Krum(byzantine=1)
    assert krum.selected(contributions) == [1]  # ties go to the first to arrive
    assert Krum(byzantine=1, select=4).selected(contributions) == [1, 2, 0, 3]
    np.testing.assert_array_equal(krum.aggregate(1, {}, contributions)["w"], [1.0, 2.0])
    np.testing.assert_array_equal(
        Krum(byzantine=1, select=4).aggregate(1, {}, contributions)["w"], [1.5, 3.0]
    )
    # Multi-Krum's default keeps n - f = 5: the four near 0..3 and 50.
    multi = MultiKrum(byzantine=1).aggregate(1, {}, contributions)["w"]
    np.testing.assert_array_equal(multi, np.array([11.2, 22.4], np.float32))


@pytest.mark.parametrize("f", [0, 1, 2, 3])
@pytest.mark.parametrize("n", [9, 12])
def test_krum_and_multi_krum_equal_the_reference(n: int, f: int) -> None:
    g, contributions = _round(n, seed=10 * n + f)
    assert n > 2 * f + 2  # the paper's condition holds here: f is used as given
    (expected,) = _krum_reference(contributions, f, 1)
    assert Krum(f).selected(contributions) == [expected]
    result = Krum(f).aggregate(1, g, contributions)
    for name, tensor in contributions[expected].tensors.items():
        assert result[name].tobytes() == tensor.tobytes()
    for m in (2, n - f, n):
        kept = _krum_reference(contributions, f, m)
        assert sorted(Krum(f, m).selected(contributions)) == sorted(kept)
        multi = Krum(f, m).aggregate(1, g, contributions)
        for name in g:
            expected_mean = _stack([contributions[i] for i in kept], name).mean(axis=0)
            np.testing.assert_allclose(multi[name], expected_mean, rtol=1e-6, atol=1e-6)
    assert sorted(MultiKrum(f).selected(contributions)) == sorted(
        _krum_reference(contributions, f, n - f)
    )


def test_effective_byzantine_keeps_n_above_2f_plus_2() -> None:
    table = {n: effective_byzantine(3, n) for n in range(1, 12)}
    assert table == {1: 0, 2: 0, 3: 0, 4: 0, 5: 1, 6: 1, 7: 2, 8: 2, 9: 3, 10: 3, 11: 3}
    for n, f in table.items():
        assert f == 0 or n > 2 * f + 2
    assert effective_byzantine(0, 10) == 0


# n -> neighbours counted with byzantine=5: n - f_eff - 2, at least 1, at most n - 1.
NEIGHBOURS_WITH_F5 = {1: 0, 2: 1, 3: 1, 4: 2, 5: 2, 6: 3}


@pytest.mark.parametrize("n", sorted(NEIGHBOURS_WITH_F5))
def test_krum_with_too_few_contributions_uses_f_eff(n: int) -> None:
    g, contributions = _round(n, seed=300 + n)
    f_eff = effective_byzantine(5, n)
    expected = _krum_reference(contributions, f_eff, 1, neighbours=NEIGHBOURS_WITH_F5[n])
    assert Krum(byzantine=5).selected(contributions) == expected
    # Multi-Krum's default keeps n - f_eff; select is capped at n.
    assert len(MultiKrum(byzantine=5).selected(contributions)) == n - f_eff
    assert len(Krum(byzantine=5, select=100).selected(contributions)) == n
    result = Krum(byzantine=5, select=100).aggregate(1, g, contributions)
    for name in g:
        np.testing.assert_allclose(
            result[name], _stack(contributions, name).mean(axis=0), rtol=1e-6, atol=1e-6
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"byzantine": -1}, "byzantine must be >= 0, got -1"),
        ({"select": 0}, r"select must be >= 1 \(or None for n - f\), got 0"),
    ],
)
def test_krum_refuses_bad_parameters(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Krum(**kwargs)
    with pytest.raises(ValueError, match=message):
        MultiKrum(**kwargs)


# --- robustness --------------------------------------------------------------------------------


def _poisoned_round(seed: int = 11) -> tuple[dict, list[Contribution], dict, float]:
    """10 honest updates near a common direction, then 3 attackers; returns g, contributions,
    the honest mean, and the honest spread (largest distance of an honest result to it)."""
    rng = np.random.default_rng(seed)
    g = {name: rng.normal(0, 0.1, shape).astype(np.float32) for name, shape in SEED_SHAPES.items()}
    direction = {name: rng.normal(0, 0.01, t.shape) for name, t in g.items()}

    def honest() -> dict[str, np.ndarray]:
        return {
            name: (t + direction[name] + rng.normal(0, 0.002, t.shape)).astype(np.float32)
            for name, t in g.items()
        }

    honest_ones = [Contribution(honest(), 600) for _ in range(10)]
    flipped = {
        name: (t - 10 * (honest_ones[0].tensors[name] - t)).astype(np.float32)
        for name, t in g.items()
    }
    huge = {name: np.full(t.shape, 1e6, np.float32) for name, t in g.items()}
    noise = {name: (t + rng.normal(0, 10, t.shape)).astype(np.float32) for name, t in g.items()}
    attackers = [Contribution(tensors, 600) for tensors in (flipped, huge, noise)]
    contributions = (
        honest_ones[:4] + attackers[:1] + honest_ones[4:8] + attackers[1:] + honest_ones[8:]
    )
    honest_mean = _flat(Average().aggregate(1, g, honest_ones))
    spread = max(float(np.linalg.norm(_flat(c.tensors) - honest_mean)) for c in honest_ones)
    return g, contributions, honest_mean, spread


@pytest.fixture(scope="module")
def poisoned_round() -> tuple[dict, list[Contribution], dict, float]:
    return _poisoned_round()


@pytest.mark.parametrize(
    "strategy",
    [Median(), TrimmedMean(0.25), Krum(byzantine=3), MultiKrum(byzantine=3), Krum(3, select=5)],
    ids=["median", "trimmed_mean", "krum", "multi_krum", "multi_krum_5"],
)
def test_robust_rules_stay_near_the_honest_mean(strategy, poisoned_round) -> None:
    g, contributions, honest_mean, spread = poisoned_round
    distance = float(np.linalg.norm(_flat(strategy.aggregate(1, g, contributions)) - honest_mean))
    # The honest updates differ by noise of norm ~0.002·√101770 ≈ 0.64 each; their mean is the
    # target. A robust rule lands within the honest cloud; the attackers are 10 to 10⁹ times
    # farther away.
    assert spread < 1.0
    assert distance <= spread, (distance, spread)


def test_a_trim_ratio_below_the_attackers_share_is_pulled_away(poisoned_round) -> None:
    """The control for the trimmed mean above: cutting 1 of 13 per end lets attackers in."""
    g, contributions, honest_mean, spread = poisoned_round
    result = TrimmedMean(0.1).aggregate(1, g, contributions)
    assert float(np.linalg.norm(_flat(result) - honest_mean)) > 100 * spread


def test_fedavg_and_average_are_pulled_far_away(poisoned_round) -> None:
    g, contributions, honest_mean, spread = poisoned_round
    for strategy in (FedAvg(), Average()):
        distance = float(
            np.linalg.norm(_flat(strategy.aggregate(1, g, contributions)) - honest_mean)
        )
        assert distance > 1e4 * spread, (distance, spread)


def test_krum_picks_an_honest_contribution(poisoned_round) -> None:
    _, contributions, _, _ = poisoned_round
    attackers = {4, 9, 10}
    (chosen,) = Krum(byzantine=3).selected(contributions)
    assert chosen not in attackers
    assert not attackers & set(MultiKrum(byzantine=3).selected(contributions))


def test_clipping_alone_tames_the_huge_attacker_for_fedavg(poisoned_round) -> None:
    g, contributions, honest_mean, spread = poisoned_round
    plain = np.linalg.norm(_flat(FedAvg().aggregate(1, g, contributions)) - honest_mean)
    clipped = np.linalg.norm(
        _flat(NormClipped(FedAvg(), 1.0).aggregate(1, g, contributions)) - honest_mean
    )
    # Each attacker now moves the mean by at most (1/13) of the median update norm.
    assert clipped < 3 * spread < plain / 1e4, (clipped, spread, plain)


# --- norm clipping -------------------------------------------------------------------------------


def _update_norms(g: dict, contributions: list[Contribution]) -> np.ndarray:
    return np.array([update_norm(c.tensors, g) for c in contributions])


@pytest.mark.parametrize("multiple", [0.5, 1.0, 2.0, 3.0])
def test_clipping_bounds_every_update_at_the_multiple_of_the_median(multiple: float) -> None:
    g, contributions = _round(9, seed=21)  # update norms grow with i
    before = _update_norms(g, contributions)
    bound = multiple * float(np.median(before))
    clipped = clip_updates(g, contributions, multiple)
    after = _update_norms(g, clipped)
    assert np.all(after <= bound * (1 + 1e-6)), (after, bound)
    for original, result, norm in zip(contributions, clipped, before, strict=True):
        if norm <= bound:
            assert result is original  # within the bound: passed on untouched
        else:
            assert update_norm(result.tensors, g) == pytest.approx(bound, rel=1e-6)
            # Same direction: u' = (bound / ‖u‖) · u.
            u = _flat(original.tensors) - _flat(g)
            u_clipped = _flat(result.tensors) - _flat(g)
            np.testing.assert_allclose(u_clipped, u * bound / norm, rtol=1e-5, atol=1e-6)
            assert result.num_examples == original.num_examples
            assert {n: t.dtype for n, t in result.tensors.items()} == {
                n: t.dtype for n, t in original.tensors.items()
            }


def test_clipping_by_hand() -> None:
    g = {"w": np.array([1.0, 1.0], np.float32)}
    updates = [[3.0, 4.0], [0.0, 1.0], [0.0, -2.0], [30.0, 40.0], [0.0, 0.0]]  # norms 5 1 2 50 0
    contributions = [Contribution({"w": g["w"] + np.float32(u)}, 1) for u in updates]
    clipped = clip_updates(g, contributions, 1.5)  # median norm 2: bound 3
    np.testing.assert_allclose(clipped[0].tensors["w"], [1 + 1.8, 1 + 2.4], rtol=1e-6)
    np.testing.assert_allclose(clipped[3].tensors["w"], [1 + 1.8, 1 + 2.4], rtol=1e-6)
    assert [clipped[i] is contributions[i] for i in (1, 2, 4)] == [True, True, True]


def test_clipping_with_a_large_multiple_changes_nothing() -> None:
    g, contributions = _round(7, seed=22)
    for rule in (Average(), Median(), Krum()):
        plain, wrapped = (
            rule.aggregate(1, g, contributions),
            NormClipped(rule, 1e9).aggregate(1, g, contributions),
        )
        for name in plain:
            assert plain[name].tobytes() == wrapped[name].tobytes()


def test_clipping_when_most_updates_are_zero_keeps_the_global_weights() -> None:
    g = {"w": np.array([1.0, 2.0], np.float32)}
    contributions = [Contribution({"w": g["w"].copy()}, 1) for _ in range(3)]
    contributions.append(Contribution({"w": np.array([100.0, -100.0], np.float32)}, 1))
    np.testing.assert_array_equal(
        NormClipped(Average(), 2.0).aggregate(1, g, contributions)["w"], g["w"]
    )


def test_clipping_needs_the_global_weights() -> None:
    _, contributions = _round(3, seed=23)
    with pytest.raises(ValueError, match=r"norm clipping needs the round's global weights"):
        NormClipped(Average(), 1.0).aggregate(1, {}, contributions)


@pytest.mark.parametrize("multiple", [0.0, -1.0, float("nan")])
def test_clipping_refuses_a_non_positive_multiple(multiple: float) -> None:
    with pytest.raises(ValueError, match="clip_norm_multiple must be > 0"):
        NormClipped(Average(), multiple)


# --- every strategy ----------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ALL, ids=ALL_IDS)
def test_every_strategy_refuses_an_empty_round(strategy) -> None:
    g, _ = _round(1, seed=0)
    for empty in ([], iter(())):
        with pytest.raises(NothingToAggregate, match="nothing to aggregate: no contribution"):
            strategy.aggregate(1, g, empty)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("strategy", ALL, ids=ALL_IDS)
def test_every_strategy_keeps_names_shapes_and_dtypes(strategy, dtype: type) -> None:
    g, contributions = _round(6, seed=24)
    g = {name: t.astype(dtype) for name, t in g.items()}
    contributions = [
        Contribution({n: t.astype(dtype) for n, t in c.tensors.items()}, c.num_examples)
        for c in contributions
    ]
    result = strategy.aggregate(1, g, iter(contributions))  # a one-pass iterable is enough
    assert {n: (t.shape, t.dtype) for n, t in result.items()} == {
        n: (t.shape, np.dtype(dtype)) for n, t in g.items()
    }


@pytest.mark.parametrize("strategy", ALL, ids=ALL_IDS)
def test_every_strategy_leaves_its_inputs_alone(strategy) -> None:
    g, contributions = _round(5, seed=25)
    saved_g = {n: t.copy() for n, t in g.items()}
    saved = [{n: t.copy() for n, t in c.tensors.items()} for c in contributions]
    result = strategy.aggregate(1, g, contributions)
    for contribution, tensors in zip(contributions, saved, strict=True):
        for name, tensor in tensors.items():
            assert contribution.tensors[name].tobytes() == tensor.tobytes()
            assert result[name] is not contribution.tensors[name]
    for name, tensor in saved_g.items():
        assert g[name].tobytes() == tensor.tobytes()


@pytest.mark.parametrize(
    "strategy", [*ROBUST, NormClipped(Average(), 2.0)], ids=[*ROBUST_IDS, "clipped"]
)
def test_robust_rules_ignore_num_examples(strategy) -> None:
    g, contributions = _round(7, seed=26)
    recounted = [Contribution(c.tensors, 10**i) for i, c in enumerate(contributions)]
    first, second = strategy.aggregate(1, g, contributions), strategy.aggregate(1, g, recounted)
    for name in first:
        assert first[name].tobytes() == second[name].tobytes()


@pytest.mark.parametrize("strategy", ROBUST, ids=ROBUST_IDS)
def test_robust_rules_return_a_single_contribution_unchanged(strategy) -> None:
    g, (only,) = _round(1, seed=27)
    result = strategy.aggregate(1, g, [only])
    for name, tensor in only.tensors.items():
        assert result[name].tobytes() == tensor.tobytes()


def test_mismatched_layouts_are_refused() -> None:
    g, contributions = _round(3, seed=28)
    contributions[2] = Contribution({"k": contributions[2].tensors["k"]}, 1)
    for strategy in ROBUST:
        with pytest.raises(ValueError, match="does not have the layout of contribution 0"):
            strategy.aggregate(1, g, contributions)


# --- registry and config ------------------------------------------------------------------------


def _from_config(section: object) -> object:
    return get_strategy(parse_config({"strategy": section}).strategy)


def test_get_strategy_from_the_config() -> None:
    assert type(_from_config({})) is FedAvg
    trimmed = _from_config({"name": "trimmed_mean", "trim_ratio": 0.3})
    assert isinstance(trimmed, TrimmedMean) and trimmed.trim_ratio == 0.3
    krum = _from_config({"name": "krum", "byzantine": 2})
    assert type(krum) is Krum and (krum.byzantine, krum.select) == (2, 1)
    krum3 = _from_config({"name": "krum", "byzantine": 2, "select": 3})
    assert (krum3.byzantine, krum3.select) == (2, 3)
    multi = _from_config({"name": "multi_krum", "byzantine": 2})
    assert type(multi) is MultiKrum and (multi.byzantine, multi.select) == (2, None)
    clipped = _from_config({"name": "median", "clip_norm_multiple": 2.5})
    assert isinstance(clipped, NormClipped) and clipped.clip_norm_multiple == 2.5
    assert type(clipped.rule) is Median
