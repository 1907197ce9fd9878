"""SCAFFOLD: FedAvg whose contributors correct their local steps for client drift.

Karimireddy, Kale, Mohri, Reddi, Stich, Suresh, "SCAFFOLD: Stochastic Controlled Averaging for
Federated Learning", ICML 2020 (arXiv:1910.06378), Algorithm 1 with option II. The server
keeps a control variate c, each contributor i its own c_i (0 before its first round). A
contributor starts from the global weights x and takes K local SGD steps of size η

    y ← y - η·(g_i(y) - c_i + c)

then updates c_i⁺ = c_i - c + (x - y_i) / (K·η). The server moves x by the mean update and c
by the mean of Δc_i = c_i⁺ - c_i.

How this platform differs, so that contributors still send weights only:

* Δc_i = (x - y_i) / (K_i·η) - c depends only on what the creator already has (x, c, the
  submitted y_i, and K_i = epochs·⌈n_i / B⌉ from the task's settings and the example count it
  allows), so the creator computes it; contributors never send control variates. A
  contributor keeps c_i on its own machine (decentralml.io.local_state) under the training's
  random ``lineage``, and c travels in the round's package (``round_tensors``; the settings
  say ``round: {control_variate: {file: FILE, lineage: HEX}}``).
* Every invited contributor is taken to answer (the paper's |S| = N): c becomes the mean of
  the answering contributors' (x - y_i) / (K_i·η).
* x moves by the example-weighted mean update (FedAvg's weighting, like every averaging rule
  here) times the server learning rate η_g; the paper's mean is unweighted.
* The correction is exact for plain SGD (``training.optimizer: sgd``), as in the paper; with
  Adam it is applied to the gradient Adam then rescales.

Both halves live here: ``Scaffold`` (the server), ``ScaffoldRound`` (what a round tells
contributors) and ``DriftStep`` (the contributor's correction and its c_i).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from decentralml.io.local_state import ControlVariates
from decentralml.io.weights import check_against, decode, layout_of, weight_name
from decentralml.protocol.errors import IntegrityError, TaskRefused
from decentralml.strategies.base import (
    Contribution,
    LocalContext,
    LocalStep,
    NothingToAggregate,
    RoundParams,
    Strategy,
    StrategyParams,
    Tensors,
)

if TYPE_CHECKING:
    import keras

CONTROL_VARIATE_FILE = "control_variate.safetensors"
"""The package's file holding the round's server control variate c."""
LINEAGE_KEY = "lineage"
LINEAGE_BYTES = 16


def local_steps(num_examples: int, epochs: int, batch_size: int) -> int:
    """K: the SGD steps a contributor with ``num_examples`` takes (Keras' last batch may be
    short, and counts)."""
    return epochs * max(1, math.ceil(num_examples / batch_size))


def contributor_control_variate(
    own: Mapping[str, np.ndarray],
    server: Mapping[str, np.ndarray],
    start: Mapping[str, np.ndarray],
    trained: Mapping[str, np.ndarray],
    steps: int,
    learning_rate: float,
) -> Tensors:
    """Option II's c_i⁺ = c_i - c + (x - y_i) / (K·η), per tensor (float32)."""
    scale = 1.0 / (steps * learning_rate)
    return {
        name: (
            np.asarray(own[name], np.float64)
            - np.asarray(server[name], np.float64)
            + (np.asarray(start[name], np.float64) - np.asarray(trained[name], np.float64)) * scale
        ).astype(np.float32)
        for name in start
    }


class ControlVariateSettings(BaseModel):
    """Where the round's server control variate is (a plain file name inside the package)
    and the training it belongs to (``lineage``, random per training: the contributor keeps
    its own c_i under it, so two trainings never share one)."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    file: str = Field(pattern=r"^[A-Za-z0-9_-]+\.safetensors$", description="a .safetensors name")
    lineage: str = Field(pattern=r"^[0-9a-f]{32}$", description="32 lowercase hex digits")


class ScaffoldRound(RoundParams):
    """What a SCAFFOLD round asks of contributors: correct the local steps by c - c_i, c from
    the package's file (None: no correction)."""

    control_variate: ControlVariateSettings | None = None


class DriftCorrection:
    """SCAFFOLD's gradient correction c - c_i for one variable, as a Keras weight regularizer
    ⟨w, c - c_i⟩: its gradient is c - c_i, so each SGD step is y ← y - η·(g_i(y) - c_i + c).
    The correction is a variable assigned before each fit, read by the traced step."""

    def __init__(self, shape: tuple[int, ...], dtype: str) -> None:
        import keras

        self.correction = keras.Variable(
            np.zeros(shape, dtype=dtype), trainable=False, name="drift_correction"
        )

    def __call__(self, weight: keras.Variable) -> object:
        import keras

        return keras.ops.sum(weight * self.correction)


class DriftStep(LocalStep):
    """SCAFFOLD's contributor side for one task: check the package's c (before a slot), read
    this contributor's c_i (0 the first time), correct every local step by c - c_i, and keep
    c_i⁺ = c_i - c + (x - y_i) / (K·η) once the result is sent (option II).

    ``correction`` given directly (benchmarks, tests) skips the package and the local store."""

    def __init__(
        self,
        announced: ControlVariateSettings | None = None,
        correction: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        self.announced = announced
        self.server: dict[str, np.ndarray] = {}
        self.own: dict[str, np.ndarray] = {}
        self.store: ControlVariates | None = None
        self.correction: dict[str, np.ndarray] | None = (
            None if correction is None else dict(correction)
        )

    def server_variate(self, context: LocalContext) -> dict[str, np.ndarray]:
        """c from the package, checked against the global weights' layout (names, shapes,
        dtypes, finite values): TaskRefused, one line."""
        assert self.announced is not None
        if self.announced.file not in context.data_files:
            raise TaskRefused(
                f"task's control variate refused: the package has no {self.announced.file}"
            )
        try:
            tensors = decode(context.data_files[self.announced.file])
            check_against(tensors, layout_of(context.global_tensors))
        except IntegrityError as problem:
            raise TaskRefused(f"task's control variate refused: {problem}") from None
        return tensors

    def check(self, context: LocalContext) -> None:
        if self.announced is not None:
            self.server_variate(context)

    def prepare(self, context: LocalContext) -> None:
        if self.announced is None:
            return
        self.server = self.server_variate(context)
        self.store = ControlVariates(context.worker, context.creator, self.announced.lineage)
        self.own = self.store.load(layout_of(context.global_tensors))
        self.correction = {name: self.server[name] - self.own[name] for name in self.server}

    def trace_key(self) -> Hashable:
        return ("scaffold",)

    def attach(self, model: keras.Model) -> None:
        for variable in model.trainable_weights:
            if getattr(variable, "regularizer", None) is not None:
                raise ValueError(
                    f"{variable.path} already has a regularizer: cannot add SCAFFOLD's"
                )
            variable.regularizer = DriftCorrection(tuple(variable.shape), variable.dtype)

    def restart(self, model: keras.Model, start: Mapping[str, np.ndarray]) -> None:
        for index, variable in enumerate(model.weights):
            term = getattr(variable, "regularizer", None)
            if isinstance(term, DriftCorrection):
                value = (
                    None
                    if self.correction is None
                    else self.correction.get(weight_name(index, variable))
                )
                term.correction.assign(
                    np.zeros(variable.shape, variable.dtype) if value is None else value
                )

    def finish(
        self, context: LocalContext, trained: Mapping[str, np.ndarray], num_examples: int
    ) -> None:
        if self.store is None:
            return
        steps = local_steps(num_examples, context.epochs, context.batch_size)
        self.store.save(
            contributor_control_variate(
                self.own, self.server, context.global_tensors, trained, steps, context.learning_rate
            )
        )


class ScaffoldParams(StrategyParams):
    """``strategy: {name: scaffold, server_learning_rate: 1.0}``."""

    name: Literal["scaffold"] = "scaffold"
    server_learning_rate: Annotated[float, Field(gt=0, le=10)] = 1.0

    def local_training_problem(self, optimizer: str) -> str | None:
        """The control variates are (x - y_i) / (K·η): the mean gradient only when every
        local step is plain SGD's η·g. With Adam they are off by Adam's rescaling, and the
        correction wrecks training (a 3-contributor demo fell from 0.93 to 0.64)."""
        if optimizer == "sgd":
            return None
        return (
            "strategy scaffold corrects plain SGD steps (Karimireddy et al. 2020): set "
            f"training.optimizer: sgd (it is {optimizer}) and a learning rate such as 0.05 "
            "(demo: --optimizer sgd --learning-rate 0.05)"
        )


class Scaffold(Strategy):
    """SCAFFOLD's server; state: ``c/<tensor>``, the control variate after the last round,
    and ``lineage``, the training's random id (16 bytes) that contributors key their c_i by.

    Parameters:
        server_learning_rate: η_g, in (0, 10]. Default 1.0 (x becomes the mean of the y_i).
    """

    name: ClassVar[str] = "scaffold"
    Params: ClassVar[type[StrategyParams]] = ScaffoldParams
    Round: ClassVar[type[RoundParams]] = ScaffoldRound

    @classmethod
    def local_step(cls, round_settings: object) -> LocalStep | None:
        announced = getattr(round_settings, "control_variate", None)
        return DriftStep(announced) if announced is not None else None

    def __init__(self, server_learning_rate: float = 1.0) -> None:
        if not 0 < server_learning_rate <= 10:
            raise ValueError(f"server_learning_rate must be in (0, 10], got {server_learning_rate}")
        self.server_learning_rate = server_learning_rate
        self._local: tuple[int, int, float] | None = None  # epochs, batch size, η
        self._state: Tensors = {}  # c after round self._round
        self._start: Tensors = {}  # c before round self._round
        self._round: int | None = None
        self._lineage = secrets.token_bytes(LINEAGE_BYTES)

    def use_local_training(self, epochs: int, batch_size: int, learning_rate: float) -> None:
        self._local = (epochs, batch_size, learning_rate)

    def round_file(self) -> str | None:
        return CONTROL_VARIATE_FILE

    def configure_round(self, round_number: int) -> dict[str, object]:
        return {"control_variate": {"file": CONTROL_VARIATE_FILE, "lineage": self._lineage.hex()}}

    def round_tensors(self, round_number: int, global_tensors: Mapping[str, np.ndarray]) -> Tensors:
        """c as round ``round_number`` starts: zeros before any round was aggregated."""
        current = self._start if round_number == self._round else self._state
        return {
            name: np.asarray(current.get(f"c/{name}", np.zeros(np.shape(g))), dtype=np.float32)
            for name, g in global_tensors.items()
        }

    def aggregate(
        self,
        round_number: int,
        global_tensors: Mapping[str, np.ndarray],
        contributions: Iterable[Contribution],
    ) -> Tensors:
        if self._local is None:
            raise ValueError("scaffold needs the tasks' local training (use_local_training)")
        epochs, batch_size, learning_rate = self._local
        if round_number != self._round:
            self._start, self._round = self._state, round_number
        self._state = self._start  # as ServerOptimizer: nothing aggregated keeps the start
        weighted: Tensors = {}  # Σ n_i·y_i
        scaled: Tensors = {}  # Σ y_i / K_i
        examples = inverse_steps = 0.0
        count = 0
        for contribution in contributions:
            n = contribution.num_examples
            if n <= 0:
                raise ValueError(f"contribution weight must be positive, got {n}")
            inverse = 1.0 / local_steps(n, epochs, batch_size)
            for name, y in contribution.tensors.items():
                y64 = np.asarray(y, dtype=np.float64)
                weighted[name] = weighted.get(name, 0.0) + n * y64
                scaled[name] = scaled.get(name, 0.0) + inverse * y64
            examples += n
            inverse_steps += inverse
            count += 1
        if count == 0:
            raise NothingToAggregate("nothing to aggregate: no contribution was accepted")
        new_global: Tensors = {}
        state: Tensors = {}
        for name, total in weighted.items():
            x = np.asarray(global_tensors[name], dtype=np.float64)
            mean_update = total / examples - x
            new_global[name] = (x + self.server_learning_rate * mean_update).astype(
                np.asarray(global_tensors[name]).dtype
            )
            # mean_i (x - y_i) / (K_i·η) = (x·Σ 1/K_i - Σ y_i/K_i) / (η·|S|)
            drift = (x * inverse_steps - scaled[name]) / (learning_rate * count)
            state[f"c/{name}"] = drift.astype(np.float32)
        self._state = state
        return new_global

    def state(self) -> Tensors:
        return {**self._state, LINEAGE_KEY: np.frombuffer(self._lineage, dtype=np.uint8).copy()}

    def load_state(self, state: Mapping[str, np.ndarray], round_number: int) -> None:
        unknown = [key for key in state if key != LINEAGE_KEY and not key.startswith("c/")]
        lineage = np.asarray(state.get(LINEAGE_KEY, ()))
        if unknown or lineage.dtype != np.uint8 or lineage.shape != (LINEAGE_BYTES,):
            raise ValueError(
                f"scaffold keeps its control variate c/... and a {LINEAGE_BYTES}-byte lineage, "
                f"but the checkpoint holds {sorted(state)[:3]}: it was written by another strategy"
            )
        self._lineage = lineage.tobytes()
        self._state = {
            key: np.asarray(value, dtype=np.float32)
            for key, value in state.items()
            if key != LINEAGE_KEY
        }
        self._start, self._round = {}, round_number
