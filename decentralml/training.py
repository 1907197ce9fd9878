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
    2020, decentralml/strategies/fedprox.py)."""

    def __init__(self, anchor: np.ndarray, mu: float) -> None:
        import keras

        self.anchor = keras.ops.convert_to_tensor(anchor)
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
    set_model_tensors(model, dict(global_tensors))
    if proximal_mu > 0:
        for variable in model.trainable_weights:
            variable.regularizer = ProximalTerm(np.asarray(variable.numpy()), proximal_mu)
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

    Each fit starts like ``train_contribution``'s: the given weights, a seeded shuffle, and a
    restarted optimizer (its moments and step count zeroed; the learning rate kept)."""

    def __init__(self, model_name: str, learning_rate: float = 0.001) -> None:
        self.model = build_model(model_name, learning_rate)

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
        for variable in self.model.optimizer.variables:
            if "learning_rate" not in variable.path:
                variable.assign(np.zeros(variable.shape, dtype=variable.dtype))
        self.model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
        return model_tensors(self.model)
