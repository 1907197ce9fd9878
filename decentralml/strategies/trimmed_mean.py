"""Coordinate-wise trimmed mean.

Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates", ICML 2018 (arXiv:1803.01498), the trimmed-mean algorithm: per coordinate,
drop the k largest and the k smallest of the n values and average the remaining n - 2k, with
k = floor(trim_ratio · n). It tolerates up to k poisoned contributions per coordinate.

Not weighted by num_examples. Translation-equivariant like the median, so it runs on the
weights directly and ``global_tensors`` is not needed; sums are in float64.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import Field

from decentralml.strategies.base import (
    Contribution,
    Strategy,
    StrategyParams,
    Tensors,
    materialize,
    per_tensor,
)


def trimmed_count(trim_ratio: float, n: int) -> int:
    """k = floor(trim_ratio · n) values cut at each end; (n - 1) // 2 if 2k would leave none.

    With trim_ratio < 0.5 the fallback only catches floating-point rounding of the product.
    """
    k = math.floor(trim_ratio * n)
    return (n - 1) // 2 if 2 * k >= n else k


class TrimmedMeanParams(StrategyParams):
    """``strategy: {name: trimmed_mean, trim_ratio: 0.2}``: see TrimmedMean."""

    name: Literal["trimmed_mean"] = "trimmed_mean"
    trim_ratio: Annotated[float, Field(ge=0, lt=0.5)] = 0.2


class TrimmedMean(Strategy):
    """Coordinate-wise trimmed mean.

    Parameters:
        trim_ratio: fraction of the contributions cut at each end, per coordinate, in
            [0, 0.5). Default 0.2 (with 10 contributions, the 2 highest and 2 lowest values of
            each coordinate are dropped). 0 is the plain mean.

    Memory: the round's n models plus one float64 stack of the largest tensor.
    """

    name: ClassVar[str] = "trimmed_mean"
    Params: ClassVar[type[StrategyParams]] = TrimmedMeanParams

    def __init__(self, trim_ratio: float = 0.2) -> None:
        if not 0 <= trim_ratio < 0.5:
            raise ValueError(f"trim_ratio must be in [0, 0.5), got {trim_ratio}")
        self.trim_ratio = trim_ratio

    def aggregate(
        self,
        round_number: int,
        global_tensors: Mapping[str, np.ndarray],
        contributions: Iterable[Contribution],
    ) -> Tensors:
        materialized = materialize(contributions)
        n = len(materialized)
        k = trimmed_count(self.trim_ratio, n)

        def trimmed_mean(stack: np.ndarray) -> np.ndarray:
            if k == 0:
                return stack.mean(axis=0)
            stack.sort(axis=0)  # in place: the stack is ours
            return stack[k : n - k].mean(axis=0)

        return per_tensor(materialized, trimmed_mean)
