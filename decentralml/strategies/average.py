"""The seed's "average" policy: every accepted contribution counts the same.

Kept for compatibility with DecentralML's federate_contributors_model(policy="average"). Unlike
the seed it averages all weights (not only trainable variables) and runs after screening.
"""

from __future__ import annotations

from collections.abc import Iterable

from decentralml.strategies.base import Contribution, Tensors, accumulate_weighted


class Average:
    """Unweighted mean of the accepted contributions."""

    name = "average"

    def aggregate(self, contributions: Iterable[Contribution]) -> Tensors:
        return accumulate_weighted(contributions, lambda c: 1.0)
