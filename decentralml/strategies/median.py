"""Coordinate-wise median.

Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates", ICML 2018 (arXiv:1803.01498), the median-based algorithm: each coordinate
of the new weights is the median of that coordinate over the contributions. With fewer than
half of the contributions poisoned, every coordinate stays within the range of honest values.

Not weighted by num_examples: a contributor who claims more examples gets no more say. The
median is translation-equivariant, median(g + u_i) = g + median(u_i), so it is taken on the
weights directly and ``global_tensors`` is not needed. For an even n the two middle values are
averaged, in float64.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import ClassVar, Literal

import numpy as np

from decentralml.strategies.base import (
    Contribution,
    Strategy,
    StrategyParams,
    Tensors,
    materialize,
    per_tensor,
)


def _median(stack: np.ndarray) -> np.ndarray:
    return np.median(stack, axis=0, overwrite_input=True)  # the stack is ours to reorder


class MedianParams(StrategyParams):
    """``strategy: median``: no parameters of its own."""

    name: Literal["median"] = "median"


class Median(Strategy):
    """Coordinate-wise median. Parameters: none.

    Memory: the round's n models plus one float64 stack of the largest tensor.
    """

    name: ClassVar[str] = "median"
    Params: ClassVar[type[StrategyParams]] = MedianParams

    def aggregate(
        self,
        round_number: int,
        global_tensors: Mapping[str, np.ndarray],
        contributions: Iterable[Contribution],
    ) -> Tensors:
        return per_tensor(materialize(contributions), _median)
