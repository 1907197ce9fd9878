"""Local training of one contribution: start from the global weights, fit the shard, report.

Every caller trains through here: the contributor procedure (flow, packaged script, seed API)
and the benchmarks. How to train (optimizer, learning rate, epochs, batch size) comes from the
task's settings (``training_options``), which the contributor checked before taking a slot;
what the round's strategy adds to the local training (FedProx's proximal term, SCAFFOLD's
drift correction) comes as the strategy's own ``LocalStep`` objects
(decentralml.strategies.base): this module names no strategy.

Compiled models are reused across fits in one process (``_ModelPool``): building and
compiling a model per contribution means a fresh ``tf.function`` trace on every fit, which
costs more than the fit itself in simulations (docs/benchmarks.md). A reused model is
restarted so that the fit is the one a fresh model would do (``restart``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from decentralml.ml.models import build_model, model_tensors, set_model_tensors
from decentralml.ml.task_settings import OPTIMIZERS

if TYPE_CHECKING:
    import keras

    from decentralml.ml.task_settings import TaskSettings
    from decentralml.strategies import LocalStep


@dataclass(frozen=True)
class TrainingOutcome:
    tensors: dict[str, np.ndarray]
    num_examples: int
    metrics: dict[str, float]


def training_options(settings: TaskSettings) -> dict[str, object]:
    """``train_contribution``'s keyword arguments from a task's settings (task.json), but the
    round strategy's steps, which the caller prepares (``TaskSettings.local_steps``). A task
    packaged before settings named an optimizer trains with Adam (TaskSettings' default)."""
    return {
        "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
        "optimizer": settings.optimizer,
    }


def local_model(
    model_name: str,
    global_tensors: Mapping[str, np.ndarray],
    *,
    learning_rate: float,
    optimizer: str = "adam",
    steps: Sequence[LocalStep] = (),
) -> keras.Model:
    """The model compiled for local training: the global weights, the task's optimizer and
    the round strategy's ``steps`` attached (each restarted for a fit by ``restart``)."""
    model = _compiled(model_name, learning_rate, optimizer)
    set_model_tensors(model, dict(global_tensors))
    for step in steps:
        step.attach(model)
    return model


def _compiled(model_name: str, learning_rate: float, optimizer: str) -> keras.Model:
    """The registry's model compiled with the named local optimizer."""
    import keras

    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer {optimizer!r} is not one of {list(OPTIMIZERS)}")
    model = build_model(model_name, learning_rate)
    if optimizer != "adam":  # the registry's models compile with Adam
        config = model.get_compile_config()
        config["optimizer"] = keras.optimizers.serialize(
            keras.optimizers.get(
                {"class_name": optimizer, "config": {"learning_rate": learning_rate}}
            )
        )
        model.compile_from_config(config)
    return model


def restart(
    model: keras.Model,
    start: Mapping[str, np.ndarray],
    optimizer_state: Sequence[np.ndarray] | None = None,
    steps: Sequence[LocalStep] = (),
) -> None:
    """Make a used model start a fit as a freshly built one would: the ``start`` weights,
    the optimizer's state zeroed (moments, step count; the learning rate kept) or, when
    given, set to ``optimizer_state`` (``optimizer_state(model)`` of an earlier fit: a
    contributor carrying its Adam moments across rounds), and each of the round strategy's
    ``steps`` restarted for this fit. The compiled train step and its trace are kept."""
    set_model_tensors(model, dict(start))
    kept = iter(optimizer_state) if optimizer_state is not None else None
    for variable in model.optimizer.variables:
        if "learning_rate" in variable.path:
            continue
        value = next(kept) if kept is not None else np.zeros(variable.shape, variable.dtype)
        variable.assign(value)
    for step in steps:
        step.restart(model, start)


def optimizer_state(model: keras.Model) -> list[np.ndarray]:
    """The optimizer's state after a fit (moments, step count; not the learning rate), in the
    order ``restart`` takes it back."""
    return [
        np.array(variable.numpy())
        for variable in model.optimizer.variables
        if "learning_rate" not in variable.path
    ]


class _ModelPool:
    """Idle compiled models by what their traced train step depends on (model, optimizer,
    learning rate, μ). A model is lent to one fit at a time: contributors train in threads,
    and Keras models are not safe to fit from two threads at once. The pool holds at most as
    many models per key as fits ran concurrently."""

    def __init__(self) -> None:
        self._idle: dict[Hashable, list[keras.Model]] = {}
        self._lock = threading.Lock()

    @contextmanager
    def borrow(self, key: Hashable, build: Callable[[], keras.Model]) -> Iterator[keras.Model]:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            model = idle.pop() if idle else None
        model = model if model is not None else build()
        try:
            yield model
        finally:
            with self._lock:
                self._idle[key].append(model)


_models = _ModelPool()


def train_contribution(
    model_name: str,
    global_tensors: Mapping[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    optimizer: str = "adam",
    steps: Sequence[LocalStep] = (),
    seed: int = 0,
) -> TrainingOutcome:
    """Fit the model, loaded with the global weights, on (x, y): a compiled model of this
    process when one is idle (restarted: the same fit as on a fresh model), else a new one.

    ``epochs`` and ``batch_size`` are passed by keyword: the seed passed epochs positionally
    as batch_size. ``steps`` are the round strategy's contributor-side steps (prepared by the
    caller); the reported loss includes their terms.
    """
    import keras

    keras.utils.set_random_seed(seed)
    key = (model_name, optimizer, float(learning_rate), tuple(s.trace_key() for s in steps))

    def build() -> keras.Model:
        return local_model(
            model_name,
            global_tensors,
            learning_rate=learning_rate,
            optimizer=optimizer,
            steps=steps,
        )

    with _models.borrow(key, build) as model:
        restart(model, global_tensors, steps=steps)
        history = model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
        tensors = model_tensors(model)
    metrics = {name: float(values[-1]) for name, values in history.history.items()}
    return TrainingOutcome(tensors, len(y), metrics)


class ReusableTrainer:
    """Many local fits on one compiled model: simulations train dozens of contributions in
    one process, and a fresh model per fit costs a compile and a new ``tf.function`` trace.

    Each fit starts like ``train_contribution``'s with the same ``optimizer`` and ``steps``:
    the given weights, a seeded shuffle, a restarted optimizer (its moments and step count
    zeroed; the learning rate kept) and the strategy's steps restarted, by the fit's own
    ``steps`` when it passes some (SCAFFOLD's per-contributor correction) — they must have the
    trace keys of the trainer's."""

    def __init__(
        self,
        model_name: str,
        learning_rate: float = 0.001,
        *,
        optimizer: str = "adam",
        steps: Sequence[LocalStep] = (),
    ) -> None:
        self.model = _compiled(model_name, learning_rate, optimizer)
        self.steps = tuple(steps)
        for step in self.steps:
            step.attach(self.model)

    def fit(
        self,
        start: Mapping[str, np.ndarray],
        x: np.ndarray,
        y: np.ndarray,
        *,
        epochs: int = 1,
        batch_size: int = 32,
        seed: int = 0,
        steps: Sequence[LocalStep] | None = None,
        optimizer_state: Sequence[np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        import keras

        steps = self.steps if steps is None else tuple(steps)
        if [s.trace_key() for s in steps] != [s.trace_key() for s in self.steps]:
            raise ValueError("a fit's steps must be the trainer's kind (its compiled trace)")
        keras.utils.set_random_seed(seed)
        restart(self.model, start, optimizer_state, steps)
        self.model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
        return model_tensors(self.model)
