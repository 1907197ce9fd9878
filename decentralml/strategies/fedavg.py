"""FedAvg: the mean of client weights weighted by their number of training examples.

McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data",
AISTATS 2017 (arXiv:1602.05629), Algorithm 1: w ← Σ_k (n_k / n) w_k.

Not robust: one poisoned contribution moves the result by (its weight share) × (its update),
without bound. The counts are the ones the creator allows (it caps what contributors report).
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
    accumulate_weighted,
)


class FedAvgParams(StrategyParams):
    """``strategy: fedavg`` (the default): no parameters of its own."""

    name: Literal["fedavg"] = "fedavg"


class FedAvg(Strategy):
    """Example-weighted mean, streamed (about two models in memory).

    Parameters: none; weights come from each contribution's num_examples. ``global_tensors``
    is not needed: the weighted mean of the weights is g plus the weighted mean of the updates.
    """

    name: ClassVar[str] = "fedavg"
    Params: ClassVar[type[StrategyParams]] = FedAvgParams

    def aggregate(
        self,
        round_number: int,
        global_tensors: Mapping[str, np.ndarray],
        contributions: Iterable[Contribution],
    ) -> Tensors:
        return accumulate_weighted(contributions, lambda c: c.num_examples)
