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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import ClassVar

import numpy as np

from decentralml.strategies.base import (
    Contribution,
    Strategy,
    Tensors,
    materialize,
    update_norm,
)


def clip_updates(
    global_tensors: Mapping[str, np.ndarray],
    contributions: list[Contribution],
    clip_norm_multiple: float,
) -> list[Contribution]:
    """Each update scaled to at most clip_norm_multiple × the median update norm (float64)."""
    missing = set(contributions[0].tensors) - set(global_tensors)
    if missing:
        raise ValueError(
            f"norm clipping needs the round's global weights; missing {sorted(missing)}"
        )
    norms = np.array([update_norm(c.tensors, global_tensors) for c in contributions])
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
        clipped.append(Contribution(tensors, contribution.num_examples))
    return clipped


class NormClipped(Strategy):
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

    def __init__(self, rule: Strategy, clip_norm_multiple: float) -> None:
        if not clip_norm_multiple > 0:
            raise ValueError(f"clip_norm_multiple must be > 0, got {clip_norm_multiple}")
        self.rule = rule
        self.clip_norm_multiple = clip_norm_multiple

    def aggregate(
        self,
        round_number: int,
        global_tensors: Mapping[str, np.ndarray],
        contributions: Iterable[Contribution],
    ) -> Tensors:
        materialized = materialize(contributions)
        clipped = clip_updates(global_tensors, materialized, self.clip_norm_multiple)
        del materialized  # a clipped contribution's original can go once the caller drops it
        return self.rule.aggregate(round_number, global_tensors, clipped)

    def configure_round(self, round_number: int) -> dict[str, object]:
        return self.rule.configure_round(round_number)

    def round_tensors(self, round_number: int, global_tensors: Mapping[str, np.ndarray]) -> Tensors:
        return self.rule.round_tensors(round_number, global_tensors)

    def round_file(self) -> str | None:
        return self.rule.round_file()

    def use_local_training(self, epochs: int, batch_size: int, learning_rate: float) -> None:
        self.rule.use_local_training(epochs, batch_size, learning_rate)

    def state(self) -> Tensors:
        return self.rule.state()

    def load_state(self, state: Mapping[str, np.ndarray], round_number: int) -> None:
        self.rule.load_state(state, round_number)
