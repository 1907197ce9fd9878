"""FLAME in front of any rule: admit the majority's update directions, clip, add noise.

Nguyen et al., "FLAME: Taming Backdoors in Federated Learning", USENIX Security 2022,
Algorithm 1. Backdoored updates point in directions of their own; norm clipping alone cannot
catch one that is small, and noise alone would have to drown honest work to erase it. FLAME:

1. clusters the round's updates by cosine distance with HDBSCAN, the smallest cluster being
   a majority (``min_cluster_size = n // 2 + 1``, ``min_samples = 1``), and admits only the
   updates in that cluster (the others are outliers, left out of the aggregate);
2. clips every admitted update to S, the median L2 norm of *all* the round's updates
   (``clip_norm_multiple`` 1.0 of norm clipping);
3. aggregates the admitted updates with the configured rule, then adds Gaussian noise of
   standard deviation λ·S on every coordinate (λ = ``noise_multiple``; the paper's 0.001
   for image classification), seeded by the round as norm clipping's noise is.

Rounds of fewer than 3 updates skip step 1 (no majority cluster to find). When HDBSCAN finds
no cluster (all outliers), every update is admitted, as if the filter were not there: the
filter keeps a minority out, it never empties a round.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import ClassVar

import numpy as np

from decentralml.strategies.base import Contribution, Strategy, Tensors, materialize
from decentralml.strategies.clipping import NormClipped, add_noise, clip_updates, update_norms

PAPER_NOISE = 0.001
"""λ for image classification in the FLAME paper (section 5)."""


def majority_cluster(
    global_tensors: Mapping[str, np.ndarray], contributions: list[Contribution]
) -> list[int]:
    """The indexes of the contributions FLAME admits: the largest HDBSCAN cluster of their
    updates' cosine distances (all of them when there are fewer than 3, or no cluster)."""
    n = len(contributions)
    if n < 3:
        return list(range(n))
    from sklearn.cluster import HDBSCAN  # the creator's side only

    updates = np.stack([_flat_update(c.tensors, global_tensors) for c in contributions])
    norms = np.linalg.norm(updates, axis=1, keepdims=True)
    unit = updates / np.where(norms > 0, norms, 1.0)
    distances = np.clip(1.0 - unit @ unit.T, 0.0, 2.0)
    np.fill_diagonal(distances, 0.0)
    labels = HDBSCAN(
        min_cluster_size=n // 2 + 1,
        min_samples=1,
        metric="precomputed",
        allow_single_cluster=True,
        copy=True,
    ).fit_predict(distances)
    clustered = labels[labels >= 0]
    if clustered.size == 0:
        return list(range(n))
    largest = np.bincount(clustered).argmax()
    return [i for i in range(n) if labels[i] == largest]


def _flat_update(
    tensors: Mapping[str, np.ndarray], global_tensors: Mapping[str, np.ndarray]
) -> np.ndarray:
    names = sorted(global_tensors)
    return np.concatenate(
        [np.subtract(tensors[k], global_tensors[k], dtype=np.float64).ravel() for k in names]
    )


class Flame(NormClipped):
    """FLAME (see the module docstring) in front of ``rule``.

    Parameters:
        rule: the strategy that aggregates the admitted, clipped contributions.
        noise_multiple: λ, the noise's standard deviation per coordinate as a multiple of the
            median update norm (default: the paper's 0.001).
    """

    name: ClassVar[str] = "flame"

    def __init__(self, rule: Strategy, noise_multiple: float | None = None) -> None:
        super().__init__(rule, 1.0, PAPER_NOISE if noise_multiple is None else noise_multiple)
        self.admitted: list[int] = []
        """The indexes admitted in the last round aggregated (for reports and tests)."""

    def aggregate(
        self,
        round_number: int,
        global_tensors: Mapping[str, np.ndarray],
        contributions: Iterable[Contribution],
    ) -> Tensors:
        materialized = materialize(contributions)
        norms = update_norms(global_tensors, materialized)
        bound = float(np.median(norms))  # S: the median of all
        self.admitted = majority_cluster(global_tensors, materialized)
        admitted = [materialized[i] for i in self.admitted]
        clipped = clip_updates(
            global_tensors, admitted, 1.0, bound, [norms[i] for i in self.admitted]
        )
        del materialized, admitted
        aggregate = self.rule.aggregate(round_number, global_tensors, clipped)
        return add_noise(aggregate, self.noise_multiple * bound, round_number)
