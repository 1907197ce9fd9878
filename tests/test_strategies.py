"""decentralml.strategies: FedAvg and Average against numpy references, and their memory use.

FedAvg is McMahan et al. 2017, Algorithm 1: w = Σ_k (n_k / n) w_k. The references below compute
that directly in float64 from fully materialized stacks; the strategies must match them while
streaming contributions one at a time.
"""

from __future__ import annotations

import itertools
import tracemalloc
from collections.abc import Iterator

import numpy as np
import pytest

from decentralml.strategies import Average, Contribution, FedAvg, get_strategy
from decentralml.strategies.base import accumulate_weighted

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
    result = FedAvg().aggregate(contributions)
    # Values are around 0..n with unit spread: float32 output rounding is ~1e-6 relative.
    _assert_close(result, _fedavg_reference(contributions), atol=4e-6 * max(n, 1))


@pytest.mark.parametrize("n", [1, 2, 5, 17])
def test_average_equals_the_plain_mean(n: int) -> None:
    contributions = _contributions(n, seed=1)
    result = Average().aggregate(contributions)
    _assert_close(result, _mean_reference(contributions), atol=4e-6 * max(n, 1))


def test_single_contribution_is_returned_unchanged() -> None:
    (only,) = _contributions(1)
    for strategy in (FedAvg(), Average()):
        result = strategy.aggregate([only])
        for name, tensor in only.tensors.items():
            assert result[name].tobytes() == tensor.tobytes()


def test_fedavg_on_a_hand_computed_case() -> None:
    a = Contribution({"w": np.array([0.0, 10.0], dtype=np.float32)}, num_examples=1)
    b = Contribution({"w": np.array([4.0, 20.0], dtype=np.float32)}, num_examples=3)
    np.testing.assert_array_equal(FedAvg().aggregate([a, b])["w"], [3.0, 17.5])
    np.testing.assert_array_equal(Average().aggregate([a, b])["w"], [2.0, 15.0])


def test_num_examples_actually_weight_the_result() -> None:
    small = Contribution({"w": np.zeros(4, dtype=np.float32)}, num_examples=100)
    large = Contribution({"w": np.ones(4, dtype=np.float32)}, num_examples=900)
    np.testing.assert_allclose(FedAvg().aggregate([small, large])["w"], 0.9, atol=1e-7)
    np.testing.assert_allclose(Average().aggregate([small, large])["w"], 0.5, atol=1e-7)
    # Scaling every count by the same factor changes nothing.
    scaled = [Contribution(c.tensors, c.num_examples * 7) for c in (small, large)]
    np.testing.assert_allclose(FedAvg().aggregate(scaled)["w"], 0.9, atol=1e-7)


def test_equal_counts_make_fedavg_the_plain_mean() -> None:
    contributions = [Contribution(c.tensors, 250) for c in _contributions(6, seed=2)]
    fedavg, average = FedAvg().aggregate(contributions), Average().aggregate(contributions)
    for name in fedavg:
        np.testing.assert_allclose(fedavg[name], average[name], rtol=0, atol=1e-6)


@pytest.mark.parametrize("strategy", [FedAvg(), Average()], ids=["fedavg", "average"])
def test_order_of_arrival_does_not_change_the_result(strategy) -> None:
    contributions = _contributions(6, seed=3)
    results = [
        strategy.aggregate(list(order))
        for order in itertools.islice(itertools.permutations(contributions), 0, 720, 97)
    ]
    results.append(strategy.aggregate(list(reversed(contributions))))
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
        result = strategy.aggregate(contributions)
        assert {n: t.dtype for n, t in result.items()} == {
            "k": np.dtype(dtype),
            "b": np.dtype(dtype),
        }
        assert {n: t.shape for n, t in result.items()} == {"k": (3, 2), "b": (2,)}
    np.testing.assert_array_equal(FedAvg().aggregate(contributions)["k"], np.full((3, 2), 2.75))
    np.testing.assert_array_equal(
        Average().aggregate(contributions)["b"], np.full(2, -7 / 3, dtype)
    )


def test_inputs_are_not_modified() -> None:
    contributions = _contributions(3, seed=4)
    before = [{n: t.copy() for n, t in c.tensors.items()} for c in contributions]
    FedAvg().aggregate(contributions)
    Average().aggregate(contributions)
    for contribution, saved in zip(contributions, before, strict=True):
        for name, tensor in saved.items():
            assert contribution.tensors[name].tobytes() == tensor.tobytes()


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", [FedAvg(), Average()], ids=["fedavg", "average"])
def test_nothing_to_aggregate(strategy) -> None:
    with pytest.raises(ValueError, match="nothing to aggregate: no contribution was accepted"):
        strategy.aggregate([])
    with pytest.raises(ValueError, match="nothing to aggregate"):
        strategy.aggregate(iter(()))


@pytest.mark.parametrize("num_examples", [0, -1, -5000])
@pytest.mark.parametrize("position", [0, 2])
def test_non_positive_num_examples_is_refused(num_examples: int, position: int) -> None:
    contributions = _contributions(3, seed=5)
    contributions[position] = Contribution(contributions[position].tensors, num_examples)
    with pytest.raises(
        ValueError, match=rf"contribution weight must be positive, got {float(num_examples)}"
    ):
        FedAvg().aggregate(contributions)
    # Average ignores the counts, so the same contributions are fine for it.
    assert set(Average().aggregate(contributions)) == set(SEED_SHAPES)


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


@pytest.mark.parametrize("name", ["FedAvg", "fedprox", ""])
def test_get_strategy_unknown_name_lists_the_known_ones(name: str) -> None:
    with pytest.raises(ValueError) as error:
        get_strategy(name)
    assert str(error.value) == f"unknown strategy {name!r}; known: ['average', 'fedavg']"


# --- memory --------------------------------------------------------------------------------

# A 4 MB model shaped like the seed's MLP with a wider hidden layer (784·1270 float32 ≈ 4 MB).
BIG_SHAPES = {
    "000.kernel": (784, 1270),
    "001.bias": (1270,),
    "002.kernel": (1270, 10),
    "003.bias": (10,),
}
BIG_BYTES = sum(int(np.prod(s)) * 4 for s in BIG_SHAPES.values())


def _stream(n: int) -> Iterator[Contribution]:
    """Each contribution is created on the fly, as the creator loads one result at a time."""
    rng = np.random.default_rng(7)
    for i in range(n):
        tensors = {
            name: rng.standard_normal(shape, dtype=np.float32) for name, shape in BIG_SHAPES.items()
        }
        yield Contribution(tensors, num_examples=100 + i)


def _peak_bytes(strategy, n: int) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = strategy.aggregate(_stream(n))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert {name: t.shape for name, t in result.items()} == BIG_SHAPES
    return peak


@pytest.mark.parametrize("strategy", [FedAvg(), Average()], ids=["fedavg", "average"])
def test_streaming_50_contributions_keeps_memory_at_a_few_models(strategy) -> None:
    assert 4_000_000 < BIG_BYTES < 4_100_000
    peak_50 = _peak_bytes(strategy, 50)
    # Accumulator (float64: 2 models) + the input being folded in + its float64 temporary or the
    # next input + the float32 output. Materializing all 50 would be 50 models.
    assert peak_50 < 6 * BIG_BYTES, f"peak {peak_50 / BIG_BYTES:.2f} models"
    # And the peak does not grow with the number of contributions.
    peak_5 = _peak_bytes(strategy, 5)
    assert peak_50 < peak_5 + BIG_BYTES / 2, (peak_5 / BIG_BYTES, peak_50 / BIG_BYTES)


def test_materializing_the_contributions_would_cost_50_models() -> None:
    """The control for the test above: the same measurement sees a list of 50 models."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        materialized = list(_stream(50))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(materialized) == 50
    assert peak > 49 * BIG_BYTES
