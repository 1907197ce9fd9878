"""FedAvg: the mean of client weights weighted by their number of training examples.

McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data",
AISTATS 2017 (arXiv:1602.05629), Algorithm 1: w ← Σ_k (n_k / n) w_k.
"""

from __future__ import annotations

from collections.abc import Iterable

from decentralml.strategies.base import Contribution, Tensors, accumulate_weighted


class FedAvg:
    """Example-weighted mean. Parameters: none; weights come from each result's num_examples."""

    name = "fedavg"

    def aggregate(self, contributions: Iterable[Contribution]) -> Tensors:
        return accumulate_weighted(contributions, lambda c: c.num_examples)
