"""The strategy interface and the helpers every rule shares: one module per rule, like
Flower's serverapp/strategy/.

A strategy lives for a whole training (the creator's session holds one): each round it says
what the task tells contributors (``configure_round``), then gets the round number, the global
weights the round started from and the round's accepted contributions, and returns the new
global weights (``aggregate``). A rule that keeps state across rounds (a server optimizer's
moments) exposes it as named arrays (``state``/``load_state``): the creator checkpoints it
beside the global weights, so a resumed training continues with the same state.

Contributions arrive as an iterable so that an averaging strategy can consume them one at a
time: the creator loads a contributor's weights, folds them in, and drops them, keeping memory
at about two models whatever the number of contributors. The robust rules (median, trimmed
mean, Krum) need every contribution at once; they hold the round's n models plus one float64
stack of a single tensor, never all tensors stacked at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

Tensors = dict[str, np.ndarray]


class NothingToAggregate(ValueError):
    """No contribution was accepted this round; the caller keeps the previous weights."""


@dataclass(frozen=True)
class Contribution:
    """One accepted result: its weights and the example count the creator allows it to claim
    (capped by the creator; only example-weighted rules such as FedAvg use it)."""

    tensors: Mapping[str, np.ndarray]
    num_examples: int


class StrategyParams(BaseModel):
    """A strategy's config section (``strategy: {name: ..., ...}``): ``name`` picks the rule,
    the other fields are its constructor's parameters. Each rule declares its own subclass with
    ``name`` as a one-value Literal, so the config is a union discriminated by name and a
    parameter the rule does not take is refused.

    clip_norm_multiple: when set (> 0), every update is first clipped to that multiple of the
        round's median update norm (NormClipped). Default None: no clipping.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    clip_norm_multiple: Annotated[float, Field(gt=0)] | None = None

    def arguments(self) -> dict[str, object]:
        """The rule's constructor arguments: every field but the shared ones."""
        return self.model_dump(exclude={"name", "clip_norm_multiple"})


class Strategy(ABC):
    """A federated strategy for one training. ``name`` is its config name (``strategy.name``)
    and ``Params`` its config section; the constructor takes that section's parameters."""

    name: ClassVar[str]
    Params: ClassVar[type[StrategyParams]]

    @classmethod
    def from_params(cls, params: StrategyParams) -> Strategy:
        return cls(**params.arguments())

    def configure_round(self, round_number: int) -> dict[str, object]:
        """What the round's task tells contributors beyond the training settings (it travels
        in the task package's settings, key ``round``). Default: nothing."""
        return {}

    @abstractmethod
    def aggregate(
        self,
        round_number: int,
        global_tensors: Mapping[str, np.ndarray],
        contributions: Iterable[Contribution],
    ) -> Tensors:
        """Combine contributions into new global weights; NothingToAggregate if none.

        ``global_tensors`` are the weights the round started from: contribution i's update is
        u_i = w_i - g. The returned tensors have the contributions' names, shapes and dtypes.
        Calling it again for the same round (a late result re-opens the review) starts again
        from the state the round began with: a round's update is never applied twice.
        """

    def state(self) -> Tensors:
        """The state to checkpoint after a round, as named arrays. Default: none."""
        return {}

    def load_state(self, state: Mapping[str, np.ndarray], round_number: int) -> None:
        """Continue from the ``state`` checkpointed after round ``round_number``. A stateless
        rule accepts only an empty state: anything else was written by another strategy."""
        if state:
            raise ValueError(
                f"{self.name} keeps no state, but the checkpoint holds {sorted(state)[:3]}...: "
                "it was written by another strategy"
            )

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


def _nothing() -> NothingToAggregate:
    return NothingToAggregate("nothing to aggregate: no contribution was accepted")


def accumulate_weighted(
    contributions: Iterable[Contribution], weight_of: Callable[[Contribution], float]
) -> Tensors:
    """Σ w_i·x_i / Σ w_i, accumulated in float64 in place: one accumulator plus one input live.

    Shared by every averaging strategy so none re-implements weighting. float64 keeps the sum
    exact enough that the order of arrival does not change the result beyond float32 rounding.
    """
    total: Tensors | None = None
    dtypes: dict[str, np.dtype] = {}
    weight_sum = 0.0
    for contribution in contributions:
        weight = float(weight_of(contribution))
        if weight <= 0:
            raise ValueError(f"contribution weight must be positive, got {weight}")
        if total is None:
            total = {
                n: np.zeros(t.shape, dtype=np.float64) for n, t in contribution.tensors.items()
            }
            dtypes = {n: t.dtype for n, t in contribution.tensors.items()}
        for name, accumulator in total.items():
            tensor = contribution.tensors[name]
            if weight == 1.0:
                np.add(accumulator, tensor, out=accumulator)
            else:
                accumulator += weight * tensor.astype(np.float64, copy=False)
        weight_sum += weight
    if total is None:
        raise _nothing()
    for accumulator in total.values():
        accumulator /= weight_sum
    return {name: accumulator.astype(dtypes[name]) for name, accumulator in total.items()}


def materialize(contributions: Iterable[Contribution]) -> list[Contribution]:
    """The round's contributions as a list (n models in memory); NothingToAggregate if none.

    Checks that every contribution has the first one's tensor names and shapes, so a rule never
    stacks mismatched tensors (the creator's screening already checks the model's layout).
    """
    materialized = list(contributions)
    if not materialized:
        raise _nothing()
    layout = {name: t.shape for name, t in materialized[0].tensors.items()}
    for index, contribution in enumerate(materialized[1:], start=1):
        other = {name: t.shape for name, t in contribution.tensors.items()}
        if other != layout:
            raise ValueError(
                f"contribution {index} does not have the layout of contribution 0 "
                f"({sorted(other)} vs {sorted(layout)} or different shapes); screen results "
                "against the model before aggregating"
            )
    return materialized


def stacked(contributions: list[Contribution], name: str) -> np.ndarray:
    """One tensor of every contribution as a fresh float64 array of shape (n, *shape)."""
    first = contributions[0].tensors[name]
    stack = np.empty((len(contributions), *first.shape), dtype=np.float64)
    for row, contribution in zip(stack, contributions, strict=True):
        row[...] = contribution.tensors[name]
    return stack


def per_tensor(
    contributions: list[Contribution], rule: Callable[[np.ndarray], np.ndarray]
) -> Tensors:
    """Apply a coordinate-wise ``rule`` (float64 stack (n, *shape) -> shape) tensor by tensor,
    returning each result in the contributions' dtype. One tensor's stack lives at a time."""
    first = contributions[0].tensors
    return {
        name: np.asarray(rule(stacked(contributions, name))).astype(tensor.dtype, copy=False)
        for name, tensor in first.items()
    }


def update_norm(
    tensors: Mapping[str, np.ndarray], global_tensors: Mapping[str, np.ndarray]
) -> float:
    """‖w - g‖₂ over all tensors together, in float64."""
    total = 0.0
    for name, tensor in tensors.items():
        update = np.subtract(tensor, global_tensors[name], dtype=np.float64)
        total += float(np.vdot(update, update))
    return float(np.sqrt(total))
