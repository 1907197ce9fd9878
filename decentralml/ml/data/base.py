"""What a dataset is: the shape of one example, how examples become model input, and how the
raw splits are loaded.

Everything a contributor receives about data is data, never code: the dataset's name (a
built-in it can load, ``decentralml.ml.data.datasets``), the spec its own data must meet and the
preprocessing as numbers (a divisor, a mean and a scale). This module imports nothing else of
decentralml, so the task's wire format (``decentralml.ml.task_settings``) and the workloads can
both read these types without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

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


class SliceAnnouncement(Protocol):
    """What task.json says of the shared slice it ships: how many examples it holds."""

    @property
    def examples(self) -> int: ...


class DataSettings(Protocol):
    """What the data functions read of a task's data settings.

    ``decentralml.ml.task_settings.DataSettings`` (task.json's ``data``) is what callers pass; it
    is described here by its attributes because the wire format imports this package (for
    ``DataSpec`` and the partition schemes), so this package cannot import it back.
    """

    @property
    def source(self) -> str: ...
    @property
    def spec(self) -> DataSpec | None: ...
    @property
    def preprocessing(self) -> Mapping[str, object] | None: ...
    @property
    def partition(self) -> str: ...
    @property
    def num_partitions(self) -> int: ...
    @property
    def classes_per_contributor(self) -> int: ...
    @property
    def alpha(self) -> float: ...
    @property
    def seed(self) -> int: ...
    @property
    def holdout_examples(self) -> int: ...
    @property
    def shared_slice(self) -> SliceAnnouncement | None: ...
