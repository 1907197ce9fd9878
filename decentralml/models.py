"""Model registry: the seed's MNIST classifier here; each workload (decentralml/workloads/)
registers its own model under the workload's name.

TensorFlow is imported inside the builders so that importing the core package stays fast for
tools that never train (marketplace, storage, CLI listing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

ModelBuilder = Callable[[float], "keras.Model"]
_REGISTRY: dict[str, ModelBuilder] = {}


def register(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    def wrap(builder: ModelBuilder) -> ModelBuilder:
        _REGISTRY[name] = builder
        return builder

    return wrap


@register("mnist_mlp")
def mnist_mlp(learning_rate: float = 0.001) -> keras.Model:
    """The seed's model exactly: Flatten(28,28) · Dense(128, relu) · Dense(10) on logits."""
    import tensorflow as tf

    model = tf.keras.models.Sequential(
        [
            tf.keras.Input(shape=(28, 28)),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(128, activation="relu"),
            tf.keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
    )
    return model


def _with_workloads() -> dict[str, ModelBuilder]:
    """The registry once every built-in workload (decentralml.workloads) registered its model:
    imported here, lazily, because the workloads import this module."""
    import decentralml.workloads  # noqa: F401

    return _REGISTRY


def available_models() -> list[str]:
    return sorted(_with_workloads())


def build_model(name: str, learning_rate: float = 0.001) -> keras.Model:
    """Build and compile a registered model; unknown names list the known ones."""
    try:
        builder = _with_workloads()[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {available_models()}") from None
    return builder(learning_rate)


def model_tensors(model: keras.Model) -> dict[str, np.ndarray]:
    """The model's weights by stable names ("000.kernel", "001.bias", ...).

    Keras variable paths carry per-process counters ("dense_3/kernel"), so two processes
    building the same model disagree on them; position plus the variable's own name does not.
    """
    return {
        weight_name(index, variable): np.asarray(variable.numpy())
        for index, variable in enumerate(model.weights)
    }


def weight_name(index: int, variable: keras.Variable) -> str:
    """The stable name of ``model.weights[index]`` (see ``model_tensors``)."""
    return f"{index:03d}.{variable.name}"


def set_model_tensors(model: keras.Model, tensors: dict[str, np.ndarray]) -> None:
    """Load named tensors into the model in the order ``model_tensors`` produced them."""
    names = list(model_tensors(model))
    model.set_weights([tensors[name] for name in names])


SCORES = ("accuracy",)
"""The higher-is-better metrics ``evaluate`` computes: what a workload may name as its primary
metric (validators, reports and the UI read it from evaluate's output)."""


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 1024) -> dict:
    """Loss, accuracy and ``class_loss`` (the mean loss of each class's examples: the held-out
    gate asks whether a result helps any class at all) from ONE forward pass over (x, y).

    The models here are classifiers trained with sparse categorical cross-entropy; the loss is
    computed as they compile it (from logits or from probabilities)."""
    import keras

    outputs = model.predict(x, batch_size=batch_size, verbose=0)
    from_logits = bool(getattr(model.loss, "from_logits", False))
    per_example = np.asarray(
        keras.losses.sparse_categorical_crossentropy(y, outputs, from_logits=from_logits)
    )
    labels = np.asarray(y).astype(np.int64)
    return {
        "loss": float(per_example.mean()),
        "accuracy": float(np.mean(np.argmax(outputs, axis=-1) == labels)),
        "examples": len(y),
        "class_loss": [
            float(per_example[labels == c].mean()) if np.any(labels == c) else float("nan")
            for c in range(outputs.shape[-1])
        ],
    }
