"""MNIST with the CNN of McMahan et al. 2017 ("Communication-Efficient Learning of Deep
Networks from Decentralized Data", section 3): two 5x5 convolutions with 32 and 64 channels,
each followed by 2x2 max-pooling, a 512-unit ReLU layer and a softmax over the 10 digits
(1 663 370 parameters)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from decentralml.ml.data.datasets import MNIST
from decentralml.ml.workloads.base import Workload

if TYPE_CHECKING:
    import keras


def build(learning_rate: float = 0.001) -> keras.Model:
    import keras

    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28)),
            layers.Reshape((28, 28, 1)),
            layers.Conv2D(32, 5, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, 5, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(512, activation="relu"),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
    )
    return model


WORKLOAD = Workload(
    name="mnist_cnn",
    model="CNN of McMahan et al. 2017: 2 x (Conv 5x5 32/64 · MaxPool 2x2) · Dense(512) · softmax",
    dataset=MNIST,
    build_model=build,
)
