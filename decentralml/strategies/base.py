"""The aggregation interface: one module per rule, like Flower's strategy/.

Contributions arrive as an iterable so that a strategy can consume them one at a time: the
creator loads a contributor's weights, folds them in, and drops them, keeping memory at about
two models whatever the number of contributors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

Tensors = dict[str, np.ndarray]


class NothingToAggregate(ValueError):
    """No contribution was accepted this round; the caller keeps the previous weights."""


@dataclass(frozen=True)
class Contribution:
    tensors: Mapping[str, np.ndarray]
    num_examples: int


class Strategy(Protocol):
    name: str

    def aggregate(self, contributions: Iterable[Contribution]) -> Tensors:
        """Combine contributions into new global weights; NothingToAggregate if none."""


def accumulate_weighted(contributions: Iterable[Contribution], weight_of) -> Tensors:
    """Σ w_i·x_i / Σ w_i, accumulated in float64 in place: one accumulator plus one input live.

    Shared by every averaging strategy so none re-implements weighting. float64 keeps the sum
    exact enough that the order of arrival does not change the result beyond float32 rounding.
    """
    total: Tensors | None = None
    dtypes: dict[str, np.dtype] = {}
    weight_sum = 0.0
    for contribution in contributions:
        weight = float(weight_of(contribution))
        if weight <= 0:
            raise ValueError(f"contribution weight must be positive, got {weight}")
        if total is None:
            total = {
                n: np.zeros(t.shape, dtype=np.float64) for n, t in contribution.tensors.items()
            }
            dtypes = {n: t.dtype for n, t in contribution.tensors.items()}
        for name, accumulator in total.items():
            tensor = contribution.tensors[name]
            if weight == 1.0:
                np.add(accumulator, tensor, out=accumulator)
            else:
                accumulator += weight * tensor.astype(np.float64, copy=False)
        weight_sum += weight
    if total is None:
        raise NothingToAggregate("nothing to aggregate: no contribution was accepted")
    for accumulator in total.values():
        accumulator /= weight_sum
    return {name: accumulator.astype(dtypes[name]) for name, accumulator in total.items()}
