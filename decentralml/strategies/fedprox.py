"""FedProx: FedAvg whose contributors keep their local models near the global one.

Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith, "Federated Optimization in Heterogeneous
Networks", MLSys 2020 (arXiv:1812.06127), Algorithm 2: each contributor k minimizes

    h_k(w) = F_k(w) + (μ/2)·‖w - g‖²

instead of its local loss F_k alone; the server aggregates as FedAvg. The proximal term is
applied in the contributor's training (decentralml/training.py); μ travels in the round's
task settings (``round: {proximal_mu: μ}``) and a contributor refuses a μ outside [0, 10].
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from decentralml.strategies.base import StrategyParams
from decentralml.strategies.fedavg import FedAvg

MAX_PROXIMAL_MU = 10.0
"""The largest μ a contributor follows: beyond it the term swamps the local loss and the
contribution barely moves (Li et al. tune μ in {0.001, 0.01, 0.1, 1})."""


class FedProxParams(StrategyParams):
    """``strategy: {name: fedprox, proximal_mu: 0.01}``."""

    name: Literal["fedprox"] = "fedprox"
    proximal_mu: Annotated[float, Field(ge=0, le=MAX_PROXIMAL_MU)] = 0.01


class FedProx(FedAvg):
    """FedAvg aggregation; each round tells contributors ``proximal_mu``.

    Parameters:
        proximal_mu: μ, in [0, 10]. Default 0.01. 0 is FedAvg.
    """

    name: ClassVar[str] = "fedprox"
    Params: ClassVar[type[StrategyParams]] = FedProxParams

    def __init__(self, proximal_mu: float = 0.01) -> None:
        if not 0 <= proximal_mu <= MAX_PROXIMAL_MU:
            raise ValueError(f"proximal_mu must be in [0, {MAX_PROXIMAL_MU}], got {proximal_mu}")
        self.proximal_mu = proximal_mu

    def configure_round(self, round_number: int) -> dict[str, object]:
        return {"proximal_mu": self.proximal_mu}
