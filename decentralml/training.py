"""Local training of one contribution: start from the global weights, fit the shard, report.

Used identically by the contributor flow and by the packaged ``model_contributor.py``. How to
train (optimizer, learning rate, epochs, batch size, FedProx's proximal term) comes from the
task's settings (``training_options``), which the contributor checked before taking a slot.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from decentralml.models import build_model, model_tensors, set_model_tensors

if TYPE_CHECKING:
    import keras

OPTIMIZERS = ("adam", "sgd")
"""The local optimizers a task may ask for (keras.optimizers by these names)."""


@dataclass(frozen=True)
class TrainingOutcome:
    tensors: dict[str, np.ndarray]
    num_examples: int
    metrics: dict[str, float]


def training_options(settings: Mapping[str, object]) -> dict[str, object]:
    """``train_contribution``'s keyword arguments from a task's settings (task.json). A task
    packaged before settings named an optimizer or a round trains with Adam, no proximal term."""
    round_settings = dict(settings.get("round") or {})  # type: ignore[call-overload]
    return {
        "epochs": settings["epochs"],
        "batch_size": settings["batch_size"],
        "learning_rate": settings["learning_rate"],
        "optimizer": settings.get("optimizer", "adam"),
        "proximal_mu": float(round_settings.get("proximal_mu", 0.0)),
    }


class ProximalTerm:
    """FedProx's (μ/2)·‖w - w_global‖² for one variable, as a Keras weight regularizer: Keras
    adds every variable's regularizer to the loss it differentiates in ``fit`` (Li et al.
    2020, decentralml/strategies/fedprox.py)."""

    def __init__(self, anchor: np.ndarray, mu: float) -> None:
        import keras

        # A variable, not a constant: a reused model re-anchors it each fit without a retrace.
        self.anchor = keras.Variable(anchor, trainable=False)
        self.mu = mu

    def __call__(self, weight: keras.Variable) -> object:
        import keras

        return 0.5 * self.mu * keras.ops.sum(keras.ops.square(weight - self.anchor))


def local_model(
    model_name: str,
    global_tensors: Mapping[str, np.ndarray],
    *,
    learning_rate: float,
    optimizer: str = "adam",
    proximal_mu: float = 0.0,
) -> keras.Model:
    """The model compiled for local training: the global weights, the task's optimizer, and
    with ``proximal_mu`` > 0 the proximal term anchored at the global weights."""
    model = _compiled(model_name, learning_rate, optimizer)
    set_model_tensors(model, dict(global_tensors))
    _add_proximal_terms(model, proximal_mu)
    return model


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
    seed: int = 0,
) -> TrainingOutcome:
    """Fit a fresh copy of the model, loaded with the global weights, on (x, y).

    ``epochs`` and ``batch_size`` are passed by keyword: the seed passed epochs positionally
    as batch_size. ``proximal_mu`` > 0 adds FedProx's proximal term to the loss (the reported
    loss includes it).
    """
    import keras

    keras.utils.set_random_seed(seed)
    model = local_model(
        model_name,
        global_tensors,
        learning_rate=learning_rate,
        optimizer=optimizer,
        proximal_mu=proximal_mu,
    )
    history = model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
    metrics = {name: float(values[-1]) for name, values in history.history.items()}
    return TrainingOutcome(model_tensors(model), len(y), metrics)


class ReusableTrainer:
    """Many local fits on one compiled model: simulations train dozens of contributions in
    one process, and a fresh model per fit costs a compile and a new ``tf.function`` trace.

    Each fit starts like ``train_contribution``'s with the same ``optimizer`` and
    ``proximal_mu``: the given weights, a seeded shuffle, a restarted optimizer (its moments
    and step count zeroed; the learning rate kept) and, with ``proximal_mu`` > 0, the proximal
    term re-anchored at the given weights."""

    def __init__(
        self,
        model_name: str,
        learning_rate: float = 0.001,
        *,
        optimizer: str = "adam",
        proximal_mu: float = 0.0,
    ) -> None:
        self.model = _compiled(model_name, learning_rate, optimizer)
        self._proximal = _add_proximal_terms(self.model, proximal_mu)

    def fit(
        self,
        start: Mapping[str, np.ndarray],
        x: np.ndarray,
        y: np.ndarray,
        *,
        epochs: int = 1,
        batch_size: int = 32,
        seed: int = 0,
    ) -> dict[str, np.ndarray]:
        import keras

        keras.utils.set_random_seed(seed)
        set_model_tensors(self.model, dict(start))
        for term, variable in zip(self._proximal, self.model.trainable_weights, strict=False):
            term.anchor.assign(variable.numpy())  # no terms (and no pairs) without FedProx
        for variable in self.model.optimizer.variables:
            if "learning_rate" not in variable.path:
                variable.assign(np.zeros(variable.shape, dtype=variable.dtype))
        self.model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
        return model_tensors(self.model)
