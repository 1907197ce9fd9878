"""A contributor's own data (``decentralml contribute --data PATH``), checked against the
task's data spec before the contributor takes a slot.

Three formats: an ``.npz`` with arrays ``x`` and ``y`` (read with ``allow_pickle=False``: an
array file never runs code), a ``.csv`` with a header, a ``label`` column and the features
in the other columns (reshaped to the spec's input shape, so a CSV of 784 pixel columns fits
MNIST's 28x28), or a folder of images in one subfolder per label (``image_folder.py``).
The data is raw, as the task's dataset ships it (MNIST pixels 0..255, the breast-cancer
table's own units): the task's preprocessing is applied afterwards, as to the
creator-provided shards.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from decentralml.ml.data.base import DataSpec, Split
from decentralml.ml.data.image_folder import read_image_folder
from decentralml.protocol.errors import DataError

LABEL_COLUMN = "label"


def read_local_data(path: str | Path, spec: DataSpec | None = None) -> Split:
    """``(x, y)`` from the file or image folder, unchecked; DataError (one line) for a path
    that is neither. An image folder is read as ``spec`` says (grayscale or RGB, its size)."""
    source = Path(path)
    if not source.exists():
        raise DataError(f"local data {source} does not exist")
    if source.is_dir():
        return read_image_folder(source, spec)
    if not source.is_file():
        raise DataError(f"local data {source} is neither a file nor a folder")
    suffix = source.suffix.lower()
    if suffix == ".npz":
        return _read_npz(source)
    if suffix == ".csv":
        return _read_csv(source)
    raise DataError(
        f"local data {source} is neither .npz (x, y) nor .csv (with a label column) nor a "
        "folder of images (<label>/*.png)"
    )


def _read_npz(source: Path) -> Split:
    try:
        with np.load(source, allow_pickle=False) as arrays:
            missing = [key for key in ("x", "y") if key not in arrays.files]
            if missing:
                raise DataError(f"local data {source} lacks array(s) {missing} (needs x and y)")
            return arrays["x"], arrays["y"]
    except (OSError, ValueError) as error:
        raise DataError(f"local data {source} is not a readable .npz: {error}") from None


def _read_csv(source: Path) -> Split:
    try:
        header = source.read_text().splitlines()[0].split(",")
    except (OSError, UnicodeDecodeError, IndexError) as error:
        raise DataError(f"local data {source} has no readable header line: {error}") from None
    names = [name.strip() for name in header]
    if LABEL_COLUMN not in names:
        raise DataError(f"local data {source} has no {LABEL_COLUMN!r} column in {names}")
    try:
        table = np.loadtxt(source, delimiter=",", skiprows=1, ndmin=2, dtype=np.float64)
    except ValueError as error:
        raise DataError(f"local data {source} has a non-numeric value: {error}") from None
    label = names.index(LABEL_COLUMN)
    return np.delete(table, label, axis=1), table[:, label]


def check_local_data(x: np.ndarray, y: np.ndarray, spec: DataSpec, source: str) -> Split:
    """``(x, y)`` in the spec's shape and dtype, or DataError naming the first mismatch."""
    if x.ndim < 1 or len(x) == 0 or len(x) != len(y) or y.ndim != 1:
        raise DataError(
            f"local data {source}: x has shape {x.shape} and y {y.shape}; "
            "they need the same number (> 0) of examples and y one label per example"
        )
    shape = tuple(spec.input_shape)
    if x.shape[1:] != shape:
        if int(np.prod(x.shape[1:])) != int(np.prod(shape)):
            raise DataError(
                f"local data {source}: examples have shape {x.shape[1:]}, the task needs {shape}"
            )
        x = x.reshape((len(x), *shape))
    x = _as_dtype(x, np.dtype(spec.dtype), source)
    labels = _as_labels(y, source)
    unknown = sorted(set(np.unique(labels).tolist()) - set(spec.labels))
    if unknown:
        raise DataError(
            f"local data {source}: labels {unknown[:5]} are not in the task's label set "
            f"{list(spec.labels)}"
        )
    return x, labels


def _as_dtype(x: np.ndarray, dtype: np.dtype, source: str) -> np.ndarray:
    if not (np.issubdtype(x.dtype, np.number) and not np.issubdtype(x.dtype, np.complexfloating)):
        raise DataError(f"local data {source}: x has dtype {x.dtype}, the task needs {dtype}")
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        raise DataError(f"local data {source}: x holds NaN or infinite values")
    converted = x.astype(dtype)
    if np.issubdtype(dtype, np.floating):
        return converted  # rounding a real-valued feature to the task's precision is harmless
    if not np.array_equal(converted.astype(np.float64), x.astype(np.float64)):
        raise DataError(
            f"local data {source}: x ({x.dtype}) does not fit the task's dtype {dtype} "
            "without loss (wrong range or fractional values)"
        )
    return converted


def _as_labels(y: np.ndarray, source: str) -> np.ndarray:
    numeric = np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)
    if not numeric or not np.all(np.isfinite(y)) or not np.all(np.mod(y, 1) == 0):
        raise DataError(f"local data {source}: labels must be whole numbers (y has {y.dtype})")
    return y.astype(np.int64)


def load_local_data(path: str | Path, spec: DataSpec) -> Split:
    """Read and check: the raw ``(x, y)`` a contributor trains on."""
    x, y = read_local_data(path, spec)
    return check_local_data(x, y, spec, str(path))
