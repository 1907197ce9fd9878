"""The seed's workload: its MLP on MNIST (the default; nothing changes for existing configs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from decentralml.ml.data.datasets import MNIST
from decentralml.ml.workloads.base import Workload

if TYPE_CHECKING:
    import keras


def build(learning_rate: float = 0.001) -> keras.Model:
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


WORKLOAD = Workload(
    name="mnist_mlp",
    model="Flatten · Dense(128, relu) · Dense(10) logits, Adam",
    dataset=MNIST,
    build_model=build,
)
