"""FedAdagrad: Adagrad as the server optimizer.

Reddi et al., "Adaptive Federated Optimization", ICLR 2021 (arXiv:2003.00295), Algorithm 2,
FedAdagrad: v ← v + Δ² (the rest is FedOpt's, fedopt.py). v only grows, so each coordinate's
step shrinks as its updates add up.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from decentralml.strategies.base import StrategyParams
from decentralml.strategies.fedopt import FedOpt, FedOptParams


class FedAdagradParams(FedOptParams):
    """``strategy: {name: fedadagrad, eta: 0.1, beta_1: 0.9, tau: 0.001}``."""

    name: Literal["fedadagrad"] = "fedadagrad"
    eta: float = Field(default=0.1, gt=0)


class FedAdagrad(FedOpt):
    """Parameters:
    eta: server learning rate η, > 0. Default 0.1 (v grows every round, so a larger η than
        FedAdam's; Flower's default too).
    beta_1: first-moment decay β₁, in [0, 1). Default 0.9.
    tau: adaptivity τ, > 0. Default 1e-3 (v starts at τ²).
    """

    name: ClassVar[str] = "fedadagrad"
    Params: ClassVar[type[StrategyParams]] = FedAdagradParams

    def __init__(self, eta: float = 0.1, beta_1: float = 0.9, tau: float = 1e-3) -> None:
        super().__init__(eta, beta_1, tau)

    def second_moment(self, v: np.ndarray, delta_squared: np.ndarray) -> np.ndarray:
        return v + delta_squared
