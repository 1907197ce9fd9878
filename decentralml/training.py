"""Local training of one contribution: start from the global weights, fit the shard, report.

Used identically by the contributor flow and by the packaged ``model_contributor.py``. How to
train (optimizer, learning rate, epochs, batch size, FedProx's proximal term) comes from the
task's settings (``training_options``), which the contributor checked before taking a slot;
SCAFFOLD's correction c - c_i comes from the package's control variate and the contributor's
own c_i (decentralml.contributor.drift_state).

Compiled models are reused across fits in one process (``_ModelPool``): building and
compiling a model per contribution means a fresh ``tf.function`` trace on every fit, which
cost more than the fit itself in simulations (issue 10: 2.5–12.6 s against 0.65–3.2 s for the
same fit on a reused model). A reused model is restarted so that the fit is the one a fresh
model would do (``restart``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from decentralml.models import build_model, model_tensors, set_model_tensors, weight_name

if TYPE_CHECKING:
    import keras

    from decentralml.task_settings import TaskSettings

OPTIMIZERS = ("adam", "sgd")
"""The local optimizers a task may ask for (keras.optimizers by these names)."""


@dataclass(frozen=True)
class TrainingOutcome:
    tensors: dict[str, np.ndarray]
    num_examples: int
    metrics: dict[str, float]


def training_options(settings: TaskSettings) -> dict[str, object]:
    """``train_contribution``'s keyword arguments from a task's settings (task.json). A task
    packaged before settings named an optimizer or a round trains with Adam, no proximal term
    (TaskSettings' defaults)."""
    return {
        "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
        "optimizer": settings.optimizer,
        "proximal_mu": settings.round.proximal_mu,
    }


class ProximalTerm:
    """FedProx's (μ/2)·‖w - w_global‖² for one variable, as a Keras weight regularizer: Keras
    adds every variable's regularizer to the loss it differentiates in ``fit`` (Li et al.
    2020, decentralml/strategies/fedprox.py).

    The anchor is a (non-trainable) variable, not a constant: the traced train step reads it,
    so a reused model gets the next round's global weights by ``assign`` without a retrace.
    μ is a constant of the trace, hence part of the reused models' key."""

    def __init__(self, anchor: np.ndarray, mu: float) -> None:
        import keras

        self.anchor = keras.Variable(anchor, trainable=False, name="proximal_anchor")
        self.mu = mu

    def __call__(self, weight: keras.Variable) -> object:
        import keras

        return 0.5 * self.mu * keras.ops.sum(keras.ops.square(weight - self.anchor))


class DriftCorrection:
    """SCAFFOLD's gradient correction c - c_i for one variable, as a Keras weight regularizer
    ⟨w, c - c_i⟩: its gradient is c - c_i, so each SGD step is y ← y - η·(g_i(y) - c_i + c),
    Karimireddy et al. 2020's local step (decentralml/strategies/scaffold.py). Like FedProx's
    anchor, the correction is a variable assigned before each fit, read by the traced step."""

    def __init__(self, shape: tuple[int, ...], dtype: str) -> None:
        import keras

        self.correction = keras.Variable(
            np.zeros(shape, dtype=dtype), trainable=False, name="drift_correction"
        )

    def __call__(self, weight: keras.Variable) -> object:
        import keras

        return keras.ops.sum(weight * self.correction)


def local_model(
    model_name: str,
    global_tensors: Mapping[str, np.ndarray],
    *,
    learning_rate: float,
    optimizer: str = "adam",
    proximal_mu: float = 0.0,
    drift_correction: bool = False,
) -> keras.Model:
    """The model compiled for local training: the global weights, the task's optimizer, and
    with ``proximal_mu`` > 0 the proximal term anchored at the global weights, or with
    ``drift_correction`` SCAFFOLD's correction term (zero until ``restart`` sets it)."""
    model = _compiled(model_name, learning_rate, optimizer)
    set_model_tensors(model, dict(global_tensors))
    _add_proximal_terms(model, proximal_mu)
    _add_drift_corrections(model, drift_correction)
    return model


def _add_drift_corrections(model: keras.Model, enabled: bool) -> None:
    """With ``enabled``, SCAFFOLD's correction term on every trainable variable."""
    if not enabled:
        return
    for variable in model.trainable_weights:
        if getattr(variable, "regularizer", None) is not None:
            raise ValueError(f"{variable.path} already has a regularizer: cannot add SCAFFOLD's")
        variable.regularizer = DriftCorrection(tuple(variable.shape), variable.dtype)


def _add_proximal_terms(model: keras.Model, mu: float) -> list[ProximalTerm]:
    """With ``mu`` > 0, a proximal term on every trainable variable, anchored at its current
    value (none otherwise)."""
    if mu <= 0:
        return []
    terms = [ProximalTerm(np.asarray(v.numpy()), mu) for v in model.trainable_weights]
    for variable, term in zip(model.trainable_weights, terms, strict=True):
        variable.regularizer = term
    return terms


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
    correction: Mapping[str, np.ndarray] | None = None,
    optimizer_state: Sequence[np.ndarray] | None = None,
) -> None:
    """Make a used model start a fit as a freshly built one would: the ``start`` weights,
    the optimizer's state zeroed (moments, step count; the learning rate kept) or, when
    given, set to ``optimizer_state`` (``optimizer_state(model)`` of an earlier fit: a
    contributor carrying its Adam moments across rounds), FedProx's anchors moved to
    ``start`` and SCAFFOLD's corrections set to ``correction`` (c - c_i, by tensor name; zero
    when None). The compiled train step and its trace are kept."""
    set_model_tensors(model, dict(start))
    kept = iter(optimizer_state) if optimizer_state is not None else None
    for variable in model.optimizer.variables:
        if "learning_rate" in variable.path:
            continue
        value = next(kept) if kept is not None else np.zeros(variable.shape, variable.dtype)
        variable.assign(value)
    for index, variable in enumerate(model.weights):
        term = getattr(variable, "regularizer", None)
        if isinstance(term, ProximalTerm):
            term.anchor.assign(variable.value)
        elif isinstance(term, DriftCorrection):
            value = None if correction is None else correction[weight_name(index, variable)]
            term.correction.assign(
                np.zeros(variable.shape, variable.dtype) if value is None else value
            )


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
    proximal_mu: float = 0.0,
    correction: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
) -> TrainingOutcome:
    """Fit the model, loaded with the global weights, on (x, y): a compiled model of this
    process when one is idle (restarted: the same fit as on a fresh model), else a new one.

    ``epochs`` and ``batch_size`` are passed by keyword: the seed passed epochs positionally
    as batch_size. ``proximal_mu`` > 0 adds FedProx's proximal term to the loss, and
    ``correction`` (c - c_i by tensor name) SCAFFOLD's correction term; the reported loss
    includes either.
    """
    import keras

    keras.utils.set_random_seed(seed)
    corrected = correction is not None
    key = (model_name, optimizer, float(learning_rate), float(proximal_mu), corrected)

    def build() -> keras.Model:
        return local_model(
            model_name,
            global_tensors,
            learning_rate=learning_rate,
            optimizer=optimizer,
            proximal_mu=proximal_mu,
            drift_correction=corrected,
        )

    with _models.borrow(key, build) as model:
        restart(model, global_tensors, correction)
        history = model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
        tensors = model_tensors(model)
    metrics = {name: float(values[-1]) for name, values in history.history.items()}
    return TrainingOutcome(tensors, len(y), metrics)


class ReusableTrainer:
    """Many local fits on one compiled model: simulations train dozens of contributions in
    one process, and a fresh model per fit costs a compile and a new ``tf.function`` trace.

    Each fit starts like ``train_contribution``'s with the same ``optimizer`` and
    ``proximal_mu``: the given weights, a seeded shuffle, a restarted optimizer (its moments
    and step count zeroed; the learning rate kept), with ``proximal_mu`` > 0 the proximal
    term re-anchored at the given weights, and with ``drift_correction`` SCAFFOLD's
    correction set to the fit's ``correction``."""

    def __init__(
        self,
        model_name: str,
        learning_rate: float = 0.001,
        *,
        optimizer: str = "adam",
        proximal_mu: float = 0.0,
        drift_correction: bool = False,
    ) -> None:
        self.model = _compiled(model_name, learning_rate, optimizer)
        _add_proximal_terms(self.model, proximal_mu)
        _add_drift_corrections(self.model, drift_correction)

    def fit(
        self,
        start: Mapping[str, np.ndarray],
        x: np.ndarray,
        y: np.ndarray,
        *,
        epochs: int = 1,
        batch_size: int = 32,
        seed: int = 0,
        correction: Mapping[str, np.ndarray] | None = None,
        optimizer_state: Sequence[np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        import keras

        keras.utils.set_random_seed(seed)
        restart(self.model, start, correction, optimizer_state)
        self.model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
        return model_tensors(self.model)
