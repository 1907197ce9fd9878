"""The seed's "average" policy: every accepted contribution counts the same.

Kept for compatibility with DecentralML's federate_contributors_model(policy="average"). Unlike
the seed it averages all weights (not only trainable variables) and runs after screening.
Not robust: one poisoned contribution moves the result by 1/n of its update, without bound.
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


class AverageParams(StrategyParams):
    """``strategy: average``: no parameters of its own."""

    name: Literal["average"] = "average"


class Average(Strategy):
    """Unweighted mean of the accepted contributions, streamed. Parameters: none."""

    name: ClassVar[str] = "average"
    Params: ClassVar[type[StrategyParams]] = AverageParams

    def aggregate(
        self,
        round_number: int,
        global_tensors: Mapping[str, np.ndarray],
        contributions: Iterable[Contribution],
    ) -> Tensors:
        return accumulate_weighted(contributions, lambda c: 1.0)
