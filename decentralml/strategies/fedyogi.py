"""FedYogi: Yogi as the server optimizer.

Reddi et al., "Adaptive Federated Optimization", ICLR 2021 (arXiv:2003.00295), Algorithm 2,
FedYogi: v ← v - (1 - β₂)·Δ²·sign(v - Δ²) (the rest is FedOpt's, fedopt.py). Unlike Adam's, v
changes additively, by at most (1 - β₂)·Δ² a round, so a sudden large Δ does not swamp it.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from decentralml.strategies.base import StrategyParams
from decentralml.strategies.fedopt import DecayingFedOpt, DecayingFedOptParams


class FedYogiParams(DecayingFedOptParams):
    """``strategy: {name: fedyogi, eta: 0.01, beta_1: 0.9, beta_2: 0.99, tau: 0.001}``."""

    name: Literal["fedyogi"] = "fedyogi"


class FedYogi(DecayingFedOpt):
    """Parameters (DecayingFedOpt's): eta (default 0.01), beta_1 (0.9), beta_2 (0.99), tau
    (1e-3); see decentralml/strategies/fedopt.py."""

    name: ClassVar[str] = "fedyogi"
    Params: ClassVar[type[StrategyParams]] = FedYogiParams

    def second_moment(self, v: np.ndarray, delta_squared: np.ndarray) -> np.ndarray:
        return v - (1 - self.beta_2) * delta_squared * np.sign(v - delta_squared)
