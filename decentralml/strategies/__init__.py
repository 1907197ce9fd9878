"""Federated strategies, one module each; ``get_strategy`` builds one from its config.

``registry`` maps each config name (``strategy.name``) to the class that implements it; each
class's ``Params`` is its config section, and decentralml.runtime.config builds the ``strategy``
section from them (a union discriminated by name). Adding a strategy is one module plus its
line here, also for a rule with a contributor side: its module holds its server class, its
``Round`` settings and its ``LocalStep`` (docs/architecture.md, "How to add a strategy").
"""

from __future__ import annotations

from decentralml.strategies.average import Average
from decentralml.strategies.base import (
    Contribution,
    LocalContext,
    LocalStep,
    NothingToAggregate,
    RoundParams,
    Strategy,
    StrategyParams,
    Tensors,
)
from decentralml.strategies.clipping import NormClipped
from decentralml.strategies.fedadagrad import FedAdagrad
from decentralml.strategies.fedadam import FedAdam
from decentralml.strategies.fedavg import FedAvg
from decentralml.strategies.fedavgm import FedAvgM
from decentralml.strategies.fedprox import FedProx
from decentralml.strategies.fedyogi import FedYogi
from decentralml.strategies.flame import Flame
from decentralml.strategies.foolsgold import FoolsGold
from decentralml.strategies.krum import Krum, MultiKrum
from decentralml.strategies.median import Median
from decentralml.strategies.scaffold import Scaffold
from decentralml.strategies.trimmed_mean import TrimmedMean

registry: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        FedAvg,
        Average,
        Median,
        TrimmedMean,
        Krum,
        MultiKrum,
        FedAvgM,
        FedAdam,
        FedYogi,
        FedAdagrad,
        FedProx,
        Scaffold,
    )
}


def get_strategy(config: StrategyParams | str) -> Strategy:
    """The configured strategy, wrapped in Flame when ``backdoor_filter`` is ``flame``, else
    in NormClipped when ``clip_norm_multiple`` is set (with ``noise_multiple``'s noise), and
    then in FoolsGold when ``sybil_filter`` is ``foolsgold``: outermost, since it needs each
    contribution's account and raw update (the filters inside see its α-scaled updates).

    A bare name builds the strategy with its defaults. The creator's session builds one per
    training and keeps it across rounds (a stateful strategy's state lives in it).
    """
    if isinstance(config, str):
        if config not in registry:
            raise ValueError(f"unknown strategy {config!r}; known: {sorted(registry)}")
        return registry[config]()
    strategy = registry[config.name].from_params(config)
    if config.backdoor_filter == "flame":
        strategy = Flame(strategy, config.noise_multiple)
    elif config.clip_norm_multiple is not None:
        strategy = NormClipped(strategy, config.clip_norm_multiple, config.noise_multiple)
    if config.sybil_filter == "foolsgold":
        strategy = FoolsGold(strategy)
    return strategy


__all__ = [
    "Average",
    "Contribution",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedProx",
    "FedYogi",
    "Flame",
    "FoolsGold",
    "Krum",
    "LocalContext",
    "LocalStep",
    "Median",
    "MultiKrum",
    "NormClipped",
    "NothingToAggregate",
    "RoundParams",
    "Scaffold",
    "Strategy",
    "StrategyParams",
    "Tensors",
    "TrimmedMean",
    "get_strategy",
    "registry",
]
