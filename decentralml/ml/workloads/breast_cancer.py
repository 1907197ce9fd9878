"""A non-image workload: an MLP on the Wisconsin breast-cancer table
(``decentralml.ml.data.breast_cancer``: 30 standardized features, benign or malignant)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from decentralml.ml.data.breast_cancer import BREAST_CANCER
from decentralml.ml.workloads.base import Workload

if TYPE_CHECKING:
    import keras


def build(learning_rate: float = 0.001) -> keras.Model:
    import keras

    model = keras.Sequential(
        [
            keras.Input(shape=(30,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(2),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
    )
    return model


WORKLOAD = Workload(
    name="breast_cancer",
    model="MLP 30 · Dense(32, relu) · Dense(16, relu) · Dense(2) logits, Adam",
    dataset=BREAST_CANCER,
    build_model=build,
    config={
        "data.holdout_examples": 100,
        "task.question": "Train the breast-cancer classifier on your rows of the table",
    },
)
