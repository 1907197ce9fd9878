"""Models on the Keras side: built by name, evaluated, and read or written as named tensors.

``build_model`` and ``available_models`` are the workload registry's
(``decentralml.ml.workloads``): a task's model name is a built-in workload's or a registered
architecture description's, and each workload module builds its own model, so names resolve in
one place. They are re-exported here for the trainers, which need a model by name and its
tensors together. TensorFlow is imported inside the builders and ``evaluate`` so that importing
this module stays fast for tools that never train (marketplace, storage, CLI listing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from decentralml.io.weights import weight_name
from decentralml.ml.workloads import ModelBuilder, available_models, build_model

if TYPE_CHECKING:
    import keras

__all__ = [
    "SCORES",
    "ModelBuilder",
    "available_models",
    "build_model",
    "evaluate",
    "model_tensors",
    "set_model_tensors",
    "weight_name",
]


def model_tensors(model: keras.Model) -> dict[str, np.ndarray]:
    """The model's weights by stable names ("000.kernel", "001.bias", ...).

    Keras variable paths carry per-process counters ("dense_3/kernel"), so two processes
    building the same model disagree on them; position plus the variable's own name does not.
    """
    return {
        weight_name(index, variable): np.asarray(variable.numpy())
        for index, variable in enumerate(model.weights)
    }


def set_model_tensors(model: keras.Model, tensors: dict[str, np.ndarray]) -> None:
    """Load named tensors into the model in the order ``model_tensors`` produced them."""
    names = list(model_tensors(model))
    model.set_weights([tensors[name] for name in names])


SCORES = ("accuracy",)
"""The higher-is-better metrics ``evaluate`` computes: what a workload may name as its primary
metric (validators, reports and the UI read it from evaluate's output)."""


def predict(model: keras.Model, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """The model's outputs on ``x``, by eager calls on batches. ``model.predict`` builds a
    tf.data pipeline (graph ops) on every call: the creator evaluates many aggregates a round
    (the held-out gate, the value of each result), and each build cost time and left
    TensorFlow graphs for the garbage collector to free in whatever thread it ran, which could
    deadlock against a thread building ops (see flows/simulation.py)."""
    import keras

    if len(x) == 0:
        return np.zeros((0, *model.output_shape[1:]), dtype=np.float32)
    parts = [
        keras.ops.convert_to_numpy(model(x[start : start + batch_size], training=False))
        for start in range(0, len(x), batch_size)
    ]
    return np.concatenate(parts)


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 1024) -> dict:
    """Loss, accuracy, ``class_loss`` (the mean loss of each class's examples: the held-out
    gate asks whether a result helps any class at all) and ``capped_loss`` (each example's
    loss capped at a uniform guess's, ln(classes): what contribution value measures, see
    decentralml/validation/value.py) from ONE forward pass over (x, y).

    The models here are classifiers trained with sparse categorical cross-entropy; the loss is
    computed as they compile it (from logits or from probabilities)."""
    import keras

    outputs = predict(model, x, batch_size)
    from_logits = bool(getattr(model.loss, "from_logits", False))
    per_example = np.asarray(
        keras.losses.sparse_categorical_crossentropy(y, outputs, from_logits=from_logits)
    )
    labels = np.asarray(y).astype(np.int64)
    return {
        "loss": float(per_example.mean()),
        "capped_loss": float(np.minimum(per_example, np.log(outputs.shape[-1])).mean()),
        "accuracy": float(np.mean(np.argmax(outputs, axis=-1) == labels)),
        "examples": len(y),
        "class_loss": [
            float(per_example[labels == c].mean()) if np.any(labels == c) else float("nan")
            for c in range(outputs.shape[-1])
        ],
    }
