"""Aggregation strategies, one module each; ``get_strategy`` picks one by its config name."""

from decentralml.strategies.average import Average
from decentralml.strategies.base import Contribution, NothingToAggregate, Strategy, Tensors
from decentralml.strategies.fedavg import FedAvg

_STRATEGIES: dict[str, type] = {"fedavg": FedAvg, "average": Average}


def get_strategy(name: str) -> Strategy:
    try:
        return _STRATEGIES[name]()
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; known: {sorted(_STRATEGIES)}") from None


__all__ = [
    "Average",
    "Contribution",
    "FedAvg",
    "NothingToAggregate",
    "Strategy",
    "Tensors",
    "get_strategy",
]
