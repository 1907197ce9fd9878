"""FedProx: FedAvg whose contributors keep their local models near the global one.

Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith, "Federated Optimization in Heterogeneous
Networks", MLSys 2020 (arXiv:1812.06127), Algorithm 2: each contributor k minimizes

    h_k(w) = F_k(w) + (μ/2)·‖w - g‖²

instead of its local loss F_k alone; the server aggregates as FedAvg. Both halves live here:
the server tells contributors μ (``round: {proximal_mu: μ}``, ``FedProxRound``, refused
outside [0, 10]) and the contributor adds the proximal term to its loss (``ProximalStep``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

import numpy as np
from pydantic import Field

from decentralml.strategies.base import LocalStep, RoundParams, StrategyParams
from decentralml.strategies.fedavg import FedAvg

if TYPE_CHECKING:
    import keras

MAX_PROXIMAL_MU = 10.0
"""The largest μ a contributor follows: beyond it the term swamps the local loss and the
contribution barely moves (Li et al. tune μ in {0.001, 0.01, 0.1, 1})."""


class FedProxParams(StrategyParams):
    """``strategy: {name: fedprox, proximal_mu: 0.01}``."""

    name: Literal["fedprox"] = "fedprox"
    proximal_mu: Annotated[float, Field(ge=0, le=MAX_PROXIMAL_MU)] = 0.01


class FedProxRound(RoundParams):
    """What a FedProx round asks of contributors: μ (0: no proximal term)."""

    proximal_mu: float = Field(
        0.0, ge=0, le=MAX_PROXIMAL_MU, description=f"in [0, {MAX_PROXIMAL_MU:g}]"
    )


class ProximalTerm:
    """(μ/2)·‖w - w_global‖² for one variable, as a Keras weight regularizer: Keras adds every
    variable's regularizer to the loss it differentiates in ``fit``.

    The anchor is a (non-trainable) variable, not a constant: the traced train step reads it,
    so a reused model gets the next round's global weights by ``assign`` without a retrace.
    μ is a constant of the trace, hence the step's ``trace_key``."""

    def __init__(self, anchor: np.ndarray, mu: float) -> None:
        import keras

        self.anchor = keras.Variable(anchor, trainable=False, name="proximal_anchor")
        self.mu = mu

    def __call__(self, weight: keras.Variable) -> object:
        import keras

        return 0.5 * self.mu * keras.ops.sum(keras.ops.square(weight - self.anchor))


class ProximalStep(LocalStep):
    """FedProx's contributor side: the proximal term on every trainable variable, anchored at
    the weights each fit starts from."""

    def __init__(self, mu: float) -> None:
        if not 0 < mu <= MAX_PROXIMAL_MU:
            raise ValueError(f"proximal_mu must be in (0, {MAX_PROXIMAL_MU}], got {mu}")
        self.mu = mu

    def trace_key(self) -> Hashable:
        return ("fedprox", float(self.mu))

    def attach(self, model: keras.Model) -> None:
        for variable in model.trainable_weights:
            variable.regularizer = ProximalTerm(np.asarray(variable.numpy()), self.mu)

    def restart(self, model: keras.Model, start: Mapping[str, np.ndarray]) -> None:
        for variable in model.trainable_weights:
            term = getattr(variable, "regularizer", None)
            if isinstance(term, ProximalTerm):
                term.anchor.assign(variable.value)


class FedProx(FedAvg):
    """FedAvg aggregation; each round tells contributors ``proximal_mu``.

    Parameters:
        proximal_mu: μ, in [0, 10]. Default 0.01. 0 is FedAvg.
    """

    name: ClassVar[str] = "fedprox"
    Params: ClassVar[type[StrategyParams]] = FedProxParams
    Round: ClassVar[type[RoundParams]] = FedProxRound

    def __init__(self, proximal_mu: float = 0.01) -> None:
        if not 0 <= proximal_mu <= MAX_PROXIMAL_MU:
            raise ValueError(f"proximal_mu must be in [0, {MAX_PROXIMAL_MU}], got {proximal_mu}")
        self.proximal_mu = proximal_mu

    def configure_round(self, round_number: int) -> dict[str, object]:
        return FedProxRound(proximal_mu=self.proximal_mu).model_dump()

    @classmethod
    def local_step(cls, round_settings: object) -> LocalStep | None:
        mu = getattr(round_settings, "proximal_mu", 0.0)
        return ProximalStep(mu) if mu > 0 else None
