"""What FedAvgM and the FedOpt family share: FedAvg's mean as a pseudo-gradient, then a server
optimizer step whose state (momentum, moments) lives across rounds.

Reddi et al. 2021 (section 2) and Hsu et al. 2019 read FedAvg as one step of server SGD with
learning rate 1 on the pseudo-gradient: with Δ = Σ_k (n_k / n) w_k - g (the example-weighted
mean update), FedAvg is g + Δ. A server optimizer replaces that step by its own, coordinate-wise,
using buffers it carries from round to round. The buffers are the strategy's ``state``: named
``<buffer>/<tensor>`` (e.g. ``m/000.kernel``), float64, checkpointed beside the global weights.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Mapping
from typing import ClassVar

import numpy as np

from decentralml.strategies.base import Contribution, Strategy, Tensors, accumulate_weighted

Buffers = dict[str, np.ndarray]


class ServerOptimizer(Strategy):
    """A stateful strategy: ``update`` turns one tensor's Δ and its buffers into a step.

    Subclasses name their ``buffers`` and implement ``update``; rounds, state and
    checkpoints are handled here once. The state after round r is kept apart from the state
    round r started from, so aggregating round r again (a late result re-opens the review)
    starts from the same place and the round's step is not applied twice.
    """

    buffers: ClassVar[tuple[str, ...]]

    def __init__(self) -> None:
        self._state: Tensors = {}  # after round self._round
        self._start: Tensors = {}  # before round self._round
        self._round: int | None = None

    @abstractmethod
    def update(self, delta: np.ndarray, previous: Buffers) -> tuple[np.ndarray, Buffers]:
        """For one tensor, in float64: the step added to the global weights and the buffers
        after this round, from the round's Δ and the buffers after the previous round
        (``previous`` is empty before the first). Must not modify ``previous``."""

    def aggregate(
        self,
        round_number: int,
        global_tensors: Mapping[str, np.ndarray],
        contributions: Iterable[Contribution],
    ) -> Tensors:
        if round_number != self._round:
            self._start, self._round = self._state, round_number
        # Every call of a round starts from the round's start: the value pricing aggregates
        # subsets first, and a round that then aggregates nothing keeps the start's state.
        self._state = self._start
        mean = accumulate_weighted(contributions, lambda c: c.num_examples)
        missing = set(mean) - set(global_tensors)
        if missing:
            raise ValueError(
                f"{self.name} needs the round's global weights; missing {sorted(missing)}"
            )
        new_global: Tensors = {}
        state: Tensors = {}
        for name, averaged in mean.items():
            g = np.asarray(global_tensors[name], dtype=np.float64)
            previous = {
                b: self._start[f"{b}/{name}"] for b in self.buffers if f"{b}/{name}" in self._start
            }
            step, buffers = self.update(averaged.astype(np.float64) - g, previous)
            new_global[name] = (g + step).astype(averaged.dtype)
            state.update({f"{b}/{name}": value for b, value in buffers.items()})
        self._state = state
        return new_global

    def state(self) -> Tensors:
        return dict(self._state)

    def load_state(self, state: Mapping[str, np.ndarray], round_number: int) -> None:
        unknown = [key for key in state if key.split("/", 1)[0] not in self.buffers]
        if unknown:
            raise ValueError(
                f"{self.name} keeps buffers {list(self.buffers)}, but the checkpoint holds "
                f"{sorted(unknown)[:3]}: it was written by another strategy"
            )
        self._state = {key: np.array(value, dtype=np.float64) for key, value in state.items()}
        self._start, self._round = {}, round_number
