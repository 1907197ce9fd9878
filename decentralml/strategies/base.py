"""The strategy interface and the helpers every rule shares: one module per rule, like
Flower's serverapp/strategy/.

A strategy lives for a whole training (the creator's session holds one): each round it says
what the task tells contributors (``configure_round``, and ``round_tensors`` for arrays such as
SCAFFOLD's control variate), then gets the round number, the global
weights the round started from and the round's accepted contributions, and returns the new
global weights (``aggregate``). A rule that keeps state across rounds (a server optimizer's
moments) exposes it as named arrays (``state``/``load_state``): the creator checkpoints it
beside the global weights, so a resumed training continues with the same state.

Contributions arrive as an iterable, so an averaging strategy folds them in one at a time
(one accumulator per tensor, no stack of n models); the creator's round holds the round's
screened weights anyway, since its round-level checks compare results with each other. The
robust rules (median, trimmed mean, Krum) need every contribution at once; they hold the
round's n models plus one float64 stack of a single tensor, never all tensors stacked at once.

A strategy with a contributor side (FedProx, SCAFFOLD) owns it in its own module: its
``Round`` settings (what a round tells contributors) and its ``LocalStep`` (what the
contributor's training does with them).
"""

from __future__ import annotations

import contextlib
import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from threadpoolctl import ThreadpoolController

Tensors = dict[str, np.ndarray]


class NothingToAggregate(ValueError):
    """No contribution was accepted this round; the caller keeps the previous weights."""


@dataclass(frozen=True)
class Contribution:
    """One accepted result: its weights, the example count the creator allows it to claim
    (capped by the creator; only example-weighted rules such as FedAvg use it), and the
    account that sent it (the contributor's address; "" when unknown, e.g. in tests and
    benchmarks), which a rule keeping per-account history (FoolsGold) reads."""

    tensors: Mapping[str, np.ndarray]
    num_examples: int
    account: str = ""


SHARED_PARAMS = {"name", "clip_norm_multiple", "noise_multiple", "backdoor_filter", "sybil_filter"}
"""The fields every strategy's config takes: the wrappers in front of the rule."""


class StrategyParams(BaseModel):
    """A strategy's config section (``strategy: {name: ..., ...}``): ``name`` picks the rule,
    the other fields are its constructor's parameters. Each rule declares its own subclass with
    ``name`` as a one-value Literal, so the config is a union discriminated by name and a
    parameter the rule does not take is refused.

    clip_norm_multiple: when set (> 0), every update is first clipped to that multiple of the
        round's median update norm (NormClipped). Default None: no clipping.
    noise_multiple: with clipping or FLAME, Gaussian noise of this multiple of the clipping
        bound is added to every coordinate of the aggregate (Sun et al. 2019's weak DP;
        FLAME's λ, default 0.001 there). Default None: none (FLAME: 0.001).
    backdoor_filter: ``flame``: before clipping, only the majority cluster of update
        directions is aggregated (strategies/flame.py, Nguyen et al. 2022); it implies
        clipping to the median norm. Default None.
    sybil_filter: ``foolsgold``: each update is first scaled by its account's FoolsGold
        weight, so accounts whose update histories point the same way across rounds lose
        their say (strategies/foolsgold.py, Fung et al. 2020); it goes in front of the
        backdoor filter or clipping, if any. Default None.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    clip_norm_multiple: Annotated[float, Field(gt=0)] | None = None
    noise_multiple: Annotated[float, Field(ge=0)] | None = None
    backdoor_filter: Literal["flame"] | None = None
    sybil_filter: Literal["foolsgold"] | None = None

    def arguments(self) -> dict[str, object]:
        """The rule's constructor arguments: every field but the shared ones."""
        return self.model_dump(exclude=SHARED_PARAMS)

    def local_training_problem(self, optimizer: str) -> str | None:
        """Why this rule cannot work with contributors training with ``optimizer`` (checked
        with the config, before anything is published); None when it can."""
        return None


class RoundParams(BaseModel):
    """A strategy's part of what a round tells contributors (task.json's ``round`` object):
    its own typed fields, strict and bounded, since a contributor reads them from a stranger's
    package. The wire's ``RoundSettings`` is assembled from every registered strategy's
    ``Round`` (decentralml.ml.task_settings), so a strategy owns its keys. Every field needs a
    default meaning "not asked": a package of another strategy leaves them unset."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")


@dataclass(frozen=True)
class LocalContext:
    """What a contributor-side step may read of its task: the round's settings (an object
    with one attribute per ``RoundParams`` field), the local training the task asks for, the
    global weights, the package's top-level data files, and who trains for whom."""

    round: object
    epochs: int
    batch_size: int
    learning_rate: float
    global_tensors: Mapping[str, np.ndarray]
    data_files: Mapping[str, bytes]
    worker: str
    creator: str


class LocalStep(ABC):
    """A strategy's contributor half: how its round parameters change the local training
    (Flower leaves this to the client app; here the strategy module owns it).

    The contributor calls ``check`` before taking a slot (refuse a bad package with
    TaskRefused: nothing was paid), ``prepare`` after it (read local state), then trains with
    the step ``attach``ed to the compiled model and ``restart``ed at every fit, and calls
    ``finish`` once its result is sent (keep local state for the next round). A compiled
    model is reused across fits of equal ``trace_key``, so whatever a fit needs that the
    trace does not fix must be set in ``restart``."""

    def check(self, context: LocalContext) -> None:
        """Refuse, before a slot is paid, a package this step cannot train with."""
        return None

    def prepare(self, context: LocalContext) -> None:
        """Read what the step keeps on the contributor's machine across rounds."""
        return None

    @abstractmethod
    def trace_key(self) -> Hashable:
        """What the compiled train step depends on (a constant of the trace)."""

    @abstractmethod
    def attach(self, model: object) -> None:
        """Add the step's terms to a freshly compiled Keras model."""

    @abstractmethod
    def restart(self, model: object, start: Mapping[str, np.ndarray]) -> None:
        """Set the step's terms for a fit starting from ``start`` (a reused model)."""

    def finish(
        self, context: LocalContext, trained: Mapping[str, np.ndarray], num_examples: int
    ) -> None:
        """After the result was sent: keep what the next round of this training needs."""
        return None


class Strategy(ABC):
    """A federated strategy for one training. ``name`` is its config name (``strategy.name``)
    and ``Params`` its config section; the constructor takes that section's parameters.

    A strategy with a contributor side also declares ``Round``, its part of the round's
    settings (``configure_round`` returns it as a dict), and ``local_step``, which turns a
    package's settings into its ``LocalStep`` (None when the round asks nothing of it)."""

    name: ClassVar[str]
    Params: ClassVar[type[StrategyParams]]
    Round: ClassVar[type[RoundParams] | None] = None

    @classmethod
    def local_step(cls, round_settings: object) -> LocalStep | None:
        """The contributor-side step ``round_settings`` asks of this strategy, or None."""
        return None

    @classmethod
    def from_params(cls, params: StrategyParams) -> Strategy:
        return cls(**params.arguments())

    def configure_round(self, round_number: int) -> dict[str, object]:
        """What the round's task tells contributors beyond the training settings (it travels
        in the task package's settings, key ``round``). Default: nothing."""
        return {}

    def round_tensors(self, round_number: int, global_tensors: Mapping[str, np.ndarray]) -> Tensors:
        """Arrays the round's task ships to every contributor beside its settings (SCAFFOLD's
        server control variate), named like the global weights; the package carries them as
        one safetensors file that ``configure_round`` names. Default: none."""
        return {}

    def round_file(self) -> str | None:
        """The package file name the round's tensors travel in (one safetensors file that
        ``configure_round`` also names for contributors); None for a rule that ships none."""
        return None

    def use_local_training(self, epochs: int, batch_size: int, learning_rate: float) -> None:
        """The local training the tasks ask for, told once per training by whoever builds the
        strategy for a creator. Only a rule that reasons about the contributors' local steps
        (SCAFFOLD) needs it. Default: ignored."""
        return None

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


class Wrapper(Strategy):
    """A strategy in front of another, ``rule``, that aggregates what it passes on (norm
    clipping, FLAME, FoolsGold): the rule's round settings, round tensors, local-training
    knowledge and state are the wrapper's, unless it adds state of its own."""

    def __init__(self, rule: Strategy) -> None:
        self.rule = rule

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


def _nothing() -> NothingToAggregate:
    return NothingToAggregate("nothing to aggregate: no contribution was accepted")


def accumulate_weighted(
    contributions: Iterable[Contribution], weight_of: Callable[[Contribution], float]
) -> Tensors:
    """Σ w_i·x_i / Σ w_i, streamed: one accumulator per tensor, folded into in place.

    Shared by every averaging strategy so none re-implements weighting. Each contribution is
    one BLAS ``axpy`` per tensor (acc += (w_i / w_1)·x_i: one read of the input, no temporary),
    so the mean runs at memory bandwidth with one model of extra memory; the accumulator is
    divided in place at the end and returned. It sums in the inputs' precision (float32 for
    float32 and float16 weights, float64 for float64), as Flower's ``aggregate`` does: for a
    mean of up to a few hundred float32 models the summation error stays within a few units in
    the last place (bench/bench_aggregation.py measures it against a float64 reference).
    Weights are taken relative to the first one so that the sums stay within the inputs' range.
    """
    with _one_blas_thread():
        return _accumulate(contributions, weight_of)


def _accumulate(
    contributions: Iterable[Contribution], weight_of: Callable[[Contribution], float]
) -> Tensors:
    total: Tensors | None = None
    layout: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    first_weight = weight_sum = 0.0
    for contribution in contributions:
        weight = float(weight_of(contribution))
        if weight <= 0:
            raise ValueError(f"contribution weight must be positive, got {weight}")
        if total is None:
            first_weight = weight
            layout = {n: (t.shape, t.dtype) for n, t in contribution.tensors.items()}
            total = {
                n: np.array(t, dtype=_accumulator_dtype(t.dtype), order="C").reshape(-1)
                for n, t in contribution.tensors.items()
            }
        else:
            relative = weight / first_weight
            for name, accumulator in total.items():
                _fold_in(accumulator, contribution.tensors[name], relative)
        weight_sum += weight / first_weight
        del contribution  # a streamed input goes before the next one is loaded
    if total is None:
        raise _nothing()
    mean = {}
    for name, accumulator in total.items():
        np.divide(accumulator, weight_sum, out=accumulator)
        shape, dtype = layout[name]
        mean[name] = accumulator.reshape(shape).astype(dtype, copy=False)
    return mean


def _accumulator_dtype(dtype: np.dtype) -> np.dtype:
    """float32 for float32 and narrower floats (a float16 sum would lose the mean), float64 for
    float64: BLAS has no float16 axpy."""
    return np.result_type(dtype, np.float32)


@functools.cache
def _axpy_for(typecode: str) -> Callable[..., np.ndarray]:
    from scipy.linalg.blas import get_blas_funcs  # scipy comes with scikit-learn

    return get_blas_funcs("axpy", dtype=np.dtype(typecode))


@functools.cache
def _blas_controller() -> ThreadpoolController:
    from threadpoolctl import ThreadpoolController  # comes with scikit-learn

    _axpy_for("f")  # loads scipy's OpenBLAS first, so that the controller sees it
    return ThreadpoolController()


def _one_blas_thread() -> contextlib.AbstractContextManager[object]:
    """axpy is memory-bound: a second thread adds no bandwidth, and on a busy machine
    OpenBLAS's waiting threads made the mean many times slower (docs/benchmarks.md)."""
    return _blas_controller().limit(limits=1, user_api="blas")


def _fold_in(accumulator: np.ndarray, tensor: np.ndarray, weight: float) -> None:
    """accumulator += weight·tensor with BLAS axpy on the flat, contiguous ``accumulator``."""
    flat = np.asarray(tensor).reshape(-1)
    if flat.size != accumulator.size:  # axpy would silently update only a prefix
        raise ValueError(
            f"a contribution's tensor has {flat.size} values, the first one's {accumulator.size}"
        )
    updated = _axpy_for(accumulator.dtype.char)(flat, accumulator, a=weight)
    if updated is not accumulator:  # f2py updates in place an array of the routine's type
        accumulator[...] = updated


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
