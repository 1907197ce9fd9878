"""FedAdam: Adam as the server optimizer.

Reddi et al., "Adaptive Federated Optimization", ICLR 2021 (arXiv:2003.00295), Algorithm 2,
FedAdam: v ← β₂·v + (1 - β₂)·Δ² (the rest is FedOpt's, decentralml/strategies/fedopt.py).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from decentralml.strategies.base import StrategyParams
from decentralml.strategies.fedopt import DecayingFedOpt, DecayingFedOptParams


class FedAdamParams(DecayingFedOptParams):
    """``strategy: {name: fedadam, eta: 0.01, beta_1: 0.9, beta_2: 0.99, tau: 0.001}``."""

    name: Literal["fedadam"] = "fedadam"


class FedAdam(DecayingFedOpt):
    """Parameters (DecayingFedOpt's): eta (default 0.01), beta_1 (0.9), beta_2 (0.99), tau
    (1e-3); see decentralml/strategies/fedopt.py."""

    name: ClassVar[str] = "fedadam"
    Params: ClassVar[type[StrategyParams]] = FedAdamParams

    def second_moment(self, v: np.ndarray, delta_squared: np.ndarray) -> np.ndarray:
        return self.beta_2 * v + (1 - self.beta_2) * delta_squared
