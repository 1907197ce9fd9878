"""FedAvgM: FedAvg with server momentum.

Hsu, Qi, Brown, "Measuring the Effects of Non-Identical Data Distribution for Federated Visual
Classification", 2019 (arXiv:1909.06335), section 3: with the pseudo-gradient
d = g - Σ_k (n_k / n) w_k (minus FedAvg's update),

    v ← β·v + d,     g ← g - η·v          (v starts at 0)

Momentum carries the direction of past rounds, which damps the round-to-round swings of
non-IID contributors. η = 1, β = 0 is FedAvg. Hsu et al. note that the effective step is
η / (1 - β): with β = 0.9 and η = 1 a steady direction is taken up to 10 times.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import Field

from decentralml.strategies.base import StrategyParams
from decentralml.strategies.server_optimizer import Buffers, ServerOptimizer


class FedAvgMParams(StrategyParams):
    """``strategy: {name: fedavgm, server_learning_rate: 1.0, server_momentum: 0.9}``."""

    name: Literal["fedavgm"] = "fedavgm"
    server_learning_rate: Annotated[float, Field(gt=0)] = 1.0
    server_momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9


class FedAvgM(ServerOptimizer):
    """Server momentum on FedAvg's pseudo-gradient; state: ``momentum/<tensor>`` (v).

    Parameters:
        server_learning_rate: η, > 0. Default 1.0 (FedAvg's step).
        server_momentum: β, in [0, 1). Default 0.9 (Hsu et al.'s experiments). 0 is FedAvg
            (with η = 1).
    """

    name: ClassVar[str] = "fedavgm"
    Params: ClassVar[type[StrategyParams]] = FedAvgMParams
    buffers: ClassVar[tuple[str, ...]] = ("momentum",)

    def __init__(self, server_learning_rate: float = 1.0, server_momentum: float = 0.9) -> None:
        if not server_learning_rate > 0:
            raise ValueError(f"server_learning_rate must be > 0, got {server_learning_rate}")
        if not 0 <= server_momentum < 1:
            raise ValueError(f"server_momentum must be in [0, 1), got {server_momentum}")
        super().__init__()
        self.server_learning_rate = server_learning_rate
        self.server_momentum = server_momentum

    def update(self, delta: np.ndarray, previous: Buffers) -> tuple[np.ndarray, Buffers]:
        pseudo_gradient = -delta
        momentum = previous.get("momentum")
        v = (
            pseudo_gradient
            if momentum is None
            else self.server_momentum * momentum + pseudo_gradient
        )
        return -self.server_learning_rate * v, {"momentum": v}
