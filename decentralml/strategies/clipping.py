"""Norm clipping in front of any rule, relative to the round's median update norm.

Bounding the norm of each update blunts scaled ("boosted") poisoning: Sun, Kairouz, Suresh,
McMahan, "Can You Really Backdoor Federated Learning?", 2019 (arXiv:1911.07963), section 3.
They clip to a fixed bound M; a creator does not know the right M for a model in advance, so
the bound here is a multiple of the round's median update norm, which honest contributors set
as long as they are more than half:

    u_i = w_i - g,   τ = median_j ‖u_j‖,   w_i ← g + u_i · min(1, clip_norm_multiple · τ / ‖u_i‖)

with ‖·‖ one L2 norm over all tensors together. A contribution within the bound is passed on as
it is (same object); a zero update is never scaled. If more than half of the updates are zero,
τ = 0 and every update is clipped to zero, i.e. the round keeps g.

With ``noise_multiple`` λ, the aggregate then gets Gaussian noise of standard deviation
λ · clip_norm_multiple · τ on every coordinate: Sun et al.'s "weak differential privacy"
(section 3), which blurs the small, consistent direction a backdoor needs. The noise is seeded
by the round number, so anyone replaying the round gets the same global weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import ClassVar

import numpy as np

from decentralml.strategies.base import (
    Contribution,
    Strategy,
    Tensors,
    Wrapper,
    materialize,
    update_norm,
)


def update_norms(
    global_tensors: Mapping[str, np.ndarray], contributions: Sequence[Contribution]
) -> list[float]:
    """Each contribution's update norm ‖w - g‖ (the global weights must name every tensor)."""
    missing = set(contributions[0].tensors) - set(global_tensors)
    if missing:
        raise ValueError(
            f"norm clipping needs the round's global weights; missing {sorted(missing)}"
        )
    return [update_norm(c.tensors, global_tensors) for c in contributions]


def clip_updates(
    global_tensors: Mapping[str, np.ndarray],
    contributions: list[Contribution],
    clip_norm_multiple: float,
    bound: float | None = None,
    norms: Sequence[float] | None = None,
) -> list[Contribution]:
    """Each update scaled to at most ``bound`` (default: clip_norm_multiple × the median
    update norm of ``contributions``), in float64. ``norms``: the updates' norms, when the
    caller measured them already."""
    if norms is None:
        norms = update_norms(global_tensors, contributions)
    if bound is None:
        bound = clip_norm_multiple * float(np.median(norms))
    clipped = []
    for contribution, norm in zip(contributions, norms, strict=True):
        if norm <= bound or norm == 0:
            clipped.append(contribution)
            continue
        scale = bound / norm
        tensors = {}
        for name, tensor in contribution.tensors.items():
            g = global_tensors[name].astype(np.float64)
            tensors[name] = (g + scale * (tensor.astype(np.float64) - g)).astype(tensor.dtype)
        clipped.append(replace(contribution, tensors=tensors))  # its account kept
    return clipped


class NormClipped(Wrapper):
    """Clip every update, then aggregate with ``rule``.

    Parameters:
        rule: the strategy that aggregates the clipped contributions.
        clip_norm_multiple: the bound as a multiple of the round's median update norm, > 0.
            No default: 1.0 clips every update above the median to the median norm; larger
            values only catch outliers.

    The rule's round settings, round tensors, local-training knowledge and state are the
    wrapper's: clipping keeps none of its own.

    Memory: the median needs every norm before anything is clipped, so the round's n models
    are materialized (plus one clipped copy per clipped contribution), even in front of a
    streaming rule such as FedAvg.
    """

    name: ClassVar[str] = "norm_clipped"

    def __init__(
        self, rule: Strategy, clip_norm_multiple: float, noise_multiple: float | None = None
    ) -> None:
        if not clip_norm_multiple > 0:
            raise ValueError(f"clip_norm_multiple must be > 0, got {clip_norm_multiple}")
        if noise_multiple is not None and not noise_multiple >= 0:
            raise ValueError(f"noise_multiple must be >= 0, got {noise_multiple}")
        super().__init__(rule)
        self.clip_norm_multiple = clip_norm_multiple
        self.noise_multiple = noise_multiple or 0.0

    def aggregate(
        self,
        round_number: int,
        global_tensors: Mapping[str, np.ndarray],
        contributions: Iterable[Contribution],
    ) -> Tensors:
        materialized = materialize(contributions)
        norms = update_norms(global_tensors, materialized)
        bound = self.clip_norm_multiple * float(np.median(norms))
        clipped = clip_updates(global_tensors, materialized, self.clip_norm_multiple, bound, norms)
        del materialized  # a clipped contribution's original can go once the caller drops it
        aggregate = self.rule.aggregate(round_number, global_tensors, clipped)
        return add_noise(aggregate, self.noise_multiple * bound, round_number)


def add_noise(tensors: Tensors, sigma: float, round_number: int) -> Tensors:
    """``tensors`` with N(0, sigma²) added to every coordinate, seeded by the round (the same
    round always gets the same noise); unchanged when sigma is 0."""
    if sigma <= 0:
        return tensors
    rng = np.random.default_rng([0x5EED, round_number])
    return {
        name: (tensor + rng.normal(0.0, sigma, tensor.shape)).astype(tensor.dtype)
        for name, tensor in sorted(tensors.items())
    }
