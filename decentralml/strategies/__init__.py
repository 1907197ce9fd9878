"""Aggregation strategies, one module each; ``get_strategy`` builds one from its config.

``registry`` maps each config name (``strategy.name``) to the class that implements it; the
config's list of names is checked against it in tests/test_strategies.py.
"""

from __future__ import annotations

from decentralml.config import StrategyConfig
from decentralml.strategies.average import Average
from decentralml.strategies.base import Contribution, NothingToAggregate, Strategy, Tensors
from decentralml.strategies.clipping import NormClipped
from decentralml.strategies.fedavg import FedAvg
from decentralml.strategies.krum import Krum, MultiKrum
from decentralml.strategies.median import Median
from decentralml.strategies.trimmed_mean import TrimmedMean

registry: dict[str, type[Strategy]] = {
    "fedavg": FedAvg,
    "average": Average,
    "median": Median,
    "trimmed_mean": TrimmedMean,
    "krum": Krum,
    "multi_krum": MultiKrum,
}


def get_strategy(config: StrategyConfig | str) -> Strategy:
    """The configured rule, wrapped in NormClipped when ``clip_norm_multiple`` is set.

    A bare name builds the rule with its defaults. Parameters a rule does not take (e.g.
    trim_ratio for krum) are ignored. For krum, select=None means 1; for multi_krum, n - f.
    """
    if isinstance(config, str):
        if config not in registry:
            raise ValueError(f"unknown strategy {config!r}; known: {sorted(registry)}")
        return registry[config]()
    rule: Strategy
    if config.name == "trimmed_mean":
        rule = TrimmedMean(config.trim_ratio)
    elif config.name == "krum":
        rule = Krum(config.byzantine, config.select if config.select is not None else 1)
    elif config.name == "multi_krum":
        rule = MultiKrum(config.byzantine, config.select)
    else:
        rule = registry[config.name]()
    if config.clip_norm_multiple is not None:
        return NormClipped(rule, config.clip_norm_multiple)
    return rule


__all__ = [
    "Average",
    "Contribution",
    "FedAvg",
    "Krum",
    "Median",
    "MultiKrum",
    "NormClipped",
    "NothingToAggregate",
    "Strategy",
    "Tensors",
    "TrimmedMean",
    "get_strategy",
    "registry",
]
