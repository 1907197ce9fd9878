"""What a workload is: a model builder, a dataset with the shape of its examples, a metric.

Everything a contributor receives about a workload is data, never code: the dataset's name
(a built-in it can load), the spec its own data must meet, the preprocessing as numbers (a
divisor, a mean and a scale) and, for a creator's own model, a Keras architecture description
(``decentralml.workloads.architecture``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

Split = tuple[np.ndarray, np.ndarray]
Preprocessing = dict[str, object]
"""Data only: ``{"kind": "rescale", "divisor": 255.0}`` or
``{"kind": "standardize", "mean": [...], "scale": [...]}``."""


@dataclass(frozen=True)
class DataSpec:
    """One example as the dataset ships it, before preprocessing: a contributor's own data
    must have this shape per example, fit this dtype without loss and use only these labels."""

    input_shape: tuple[int, ...]
    dtype: str
    labels: tuple[int, ...]

    def to_settings(self) -> dict[str, object]:
        return {
            "input_shape": list(self.input_shape),
            "dtype": self.dtype,
            "labels": list(self.labels),
        }

    @classmethod
    def from_settings(cls, value: object) -> DataSpec:
        """From task.json; a stranger wrote it, so every field is checked (ValueError)."""
        if not isinstance(value, Mapping):
            raise ValueError("data spec is missing")
        shape, dtype, labels = value.get("input_shape"), value.get("dtype"), value.get("labels")
        if not (isinstance(shape, list) and shape and all(_positive_int(d) for d in shape)):
            raise ValueError(f"data spec input_shape {shape!r} is not a list of positive ints")
        if dtype not in ("uint8", "int64", "float32", "float64"):
            raise ValueError(f"data spec dtype {dtype!r} is not uint8, int64, float32 or float64")
        if not (isinstance(labels, list) and labels and all(_int(v) for v in labels)):
            raise ValueError(f"data spec labels {labels!r} is not a list of ints")
        return cls(tuple(shape), str(dtype), tuple(labels))


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(value: object) -> bool:
    return _int(value) and int(value) > 0  # type: ignore[call-overload]


def prepare(x: np.ndarray, preprocessing: Mapping[str, object]) -> np.ndarray:
    """Raw examples to the model's float32 input, as the task's preprocessing says."""
    kind = preprocessing.get("kind")
    if kind == "rescale":
        return np.asarray(x, dtype=np.float32) / np.float32(preprocessing["divisor"])
    if kind == "standardize":
        mean = np.asarray(preprocessing["mean"], dtype=np.float64)
        scale = np.asarray(preprocessing["scale"], dtype=np.float64)
        return ((np.asarray(x, dtype=np.float64) - mean) / scale).astype(np.float32)
    raise ValueError(f"unknown preprocessing {kind!r} (rescale or standardize)")


def standardize_on(x: np.ndarray) -> Preprocessing:
    """Per-feature mean and scale of the creator's own split (constant features keep scale 1)."""
    scale = np.asarray(x, dtype=np.float64).std(axis=0)
    scale[scale == 0] = 1.0
    return {"kind": "standardize", "mean": x.mean(axis=0).tolist(), "scale": scale.tolist()}


@dataclass(frozen=True)
class Dataset:
    """A dataset contributors can load by name. ``load(cache_dir)`` returns the raw
    ``((x_train, y_train), (x_test, y_test))``; ``fit_preprocessing`` (None: ``preprocessing``
    as is) computes the preprocessing from the creator's held-out examples."""

    name: str
    description: str
    spec: DataSpec
    load: Callable[[Path | str | None], tuple[Split, Split]]
    preprocessing: Preprocessing = field(default_factory=dict, hash=False)
    fit_preprocessing: Callable[[np.ndarray], Preprocessing] | None = None


@dataclass(frozen=True)
class Workload:
    """A model, its data and the metric validators, reports and the UI show.

    name: the registry name (``workload:`` in a config; ``model.name`` is its alias).
    model: one line describing the model, for ``decentralml workloads``.
    build_model: ``learning_rate -> compiled keras.Model`` (sparse labels; logits or softmax).
    primary_metric: what validators (``min_accuracy``) read from the held-out metrics and
        what reports and the UI show: one of the higher-is-better metrics the evaluation
        computes (``decentralml.models.SCORES``), "accuracy" here.
    config: dotted config overrides ``--workload NAME`` applies so the built-in configs fit
        its data (a held-out split smaller than the dataset, a question about it).
    """

    name: str
    model: str
    dataset: Dataset
    build_model: Callable[[float], keras.Model]
    primary_metric: str = "accuracy"
    config: Mapping[str, object] = field(default_factory=dict, hash=False)
