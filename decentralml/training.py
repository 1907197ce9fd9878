"""Local training of one contribution: start from the global weights, fit the shard, report.

Used identically by the contributor flow and by the packaged ``model_contributor.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from decentralml.models import build_model, model_tensors, set_model_tensors


@dataclass(frozen=True)
class TrainingOutcome:
    tensors: dict[str, np.ndarray]
    num_examples: int
    metrics: dict[str, float]


def train_contribution(
    model_name: str,
    global_tensors: Mapping[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int = 0,
) -> TrainingOutcome:
    """Fit a fresh copy of the model, loaded with the global weights, on (x, y).

    ``epochs`` and ``batch_size`` are passed by keyword: the seed passed epochs positionally
    as batch_size.
    """
    import keras

    keras.utils.set_random_seed(seed)
    model = build_model(model_name, learning_rate)
    set_model_tensors(model, dict(global_tensors))
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
