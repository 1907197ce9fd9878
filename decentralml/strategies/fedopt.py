"""Adaptive federated optimization: what FedAdam, FedYogi and FedAdagrad share.

Reddi, Charles, Zaheer, Garrett, Rush, Konečný, Kumar, McMahan, "Adaptive Federated
Optimization", ICLR 2021 (arXiv:2003.00295), Algorithm 2. With Δ = Σ_k (n_k / n) w_k - g the
example-weighted mean update of the round (the negative pseudo-gradient), coordinate-wise:

    m ← β₁·m + (1 - β₁)·Δ                              (m starts at 0)
    v ← second_moment(v, Δ²)                           (v starts at τ², as the paper asks)
    g ← g + η · m / (√v + τ)

second_moment is Adam's, Yogi's or Adagrad's (their modules). As in the paper there is no bias
correction (Flower's FedAdam adds Adam's; we keep the paper's Algorithm 2). τ bounds how much a
coordinate with a small second moment can move: the step is at most about η·|m|/τ.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Annotated, ClassVar

import numpy as np
from pydantic import Field

from decentralml.strategies.base import StrategyParams
from decentralml.strategies.server_optimizer import Buffers, ServerOptimizer


class FedOptParams(StrategyParams):
    """The parameters every FedOpt variant takes (see FedOpt)."""

    eta: Annotated[float, Field(gt=0)] = 0.01
    beta_1: Annotated[float, Field(ge=0, lt=1)] = 0.9
    tau: Annotated[float, Field(gt=0)] = 1e-3


class FedOpt(ServerOptimizer):
    """Reddi et al.'s Algorithm 2; state: ``m/<tensor>`` and ``v/<tensor>``.

    Parameters (each variant documents its defaults):
        eta: η, the server learning rate, > 0.
        beta_1: β₁, the first moment's decay, in [0, 1).
        tau: τ, the adaptivity bound, > 0; v starts at τ².
    """

    buffers: ClassVar[tuple[str, ...]] = ("m", "v")

    def __init__(self, eta: float, beta_1: float, tau: float) -> None:
        if not eta > 0 or not tau > 0:
            raise ValueError(f"eta and tau must be > 0, got eta={eta}, tau={tau}")
        if not 0 <= beta_1 < 1:
            raise ValueError(f"beta_1 must be in [0, 1), got {beta_1}")
        super().__init__()
        self.eta, self.beta_1, self.tau = eta, beta_1, tau

    @abstractmethod
    def second_moment(self, v: np.ndarray, delta_squared: np.ndarray) -> np.ndarray:
        """v after this round from v before it and Δ² (float64, fresh array)."""

    def update(self, delta: np.ndarray, previous: Buffers) -> tuple[np.ndarray, Buffers]:
        m = previous.get("m", np.zeros_like(delta))
        v = previous.get("v", np.full_like(delta, self.tau**2))
        m = self.beta_1 * m + (1 - self.beta_1) * delta
        v = self.second_moment(v, delta * delta)
        return self.eta * m / (np.sqrt(v) + self.tau), {"m": m, "v": v}


class DecayingFedOptParams(FedOptParams):
    """FedOpt's parameters plus the second moment's rate β₂ (FedAdam, FedYogi)."""

    beta_2: Annotated[float, Field(ge=0, lt=1)] = 0.99


class DecayingFedOpt(FedOpt):
    """A FedOpt variant whose second moment has a rate β₂ (FedAdam, FedYogi).

    Parameters:
        eta: η, > 0. Default 0.01.
        beta_1: β₁, in [0, 1). Default 0.9.
        beta_2: β₂, in [0, 1). Default 0.99.
        tau: τ, > 0. Default 1e-3 (v starts at τ²).
    """

    def __init__(
        self, eta: float = 0.01, beta_1: float = 0.9, beta_2: float = 0.99, tau: float = 1e-3
    ) -> None:
        if not 0 <= beta_2 < 1:
            raise ValueError(f"beta_2 must be in [0, 1), got {beta_2}")
        super().__init__(eta, beta_1, tau)
        self.beta_2 = beta_2
