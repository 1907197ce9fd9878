"""A shared IID slice shipped with the task (Zhao et al. 2018, "Federated Learning with Non-IID
Data"): a few hundred examples of the creator's held-out split that every contributor adds to
its own shard, so that a contributor holding two classes still sees all of them and its local
model drifts less from the others.

The creator writes the slice into the contributor package as ``shared_slice.npz`` (arrays
``x`` and ``y``, raw as the dataset ships them). A contributor reads a stranger's file, so
reading is bounded and checked before anything is trained on: the zip's declared sizes must
fit the number of examples task.json announces, the arrays are read with
``allow_pickle=False`` (NEVER set it to true: an array file must not run code), the count must
match, and shape, dtype and labels must fit the task's data spec (the same checks as a
contributor's own data, decentralml.ml.data.local_data). Any mismatch is one line
(TaskRefused), before a slot is paid.
"""

from __future__ import annotations

import io
import math
import zipfile

import numpy as np

from decentralml.ml.data.base import DataSettings, DataSpec, Split, prepare
from decentralml.ml.data.datasets import task_preprocessing
from decentralml.ml.data.local_data import check_local_data
from decentralml.protocol.errors import DataError, TaskRefused

SLICE_FILE = "shared_slice.npz"
_ARRAYS = ("x.npy", "y.npy")
_HEADER_ALLOWANCE = 4096  # per array: the .npy header, padded to 64 bytes in practice
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # zip's earliest date: the same slice, the same bytes


def encode_slice(x: np.ndarray, y: np.ndarray) -> bytes:
    """The slice as an uncompressed .npz whose bytes depend on the arrays only (np.savez stamps
    the current time), so the package keeps the same sha256 for the same inputs."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, array in zip(_ARRAYS, (x, y), strict=True):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(name, _FIXED_TIME), member.getvalue())
    return buffer.getvalue()


def decode_slice(data: bytes, examples: int, spec: DataSpec) -> Split:
    """``(x, y)`` raw from a package's slice file, or TaskRefused (one line) when the file is
    not the ``examples`` examples of the task's spec it claims to be."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            _check_members(archive, _max_bytes(examples, spec))
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                x, y = arrays["x"], arrays["y"]
        if len(x) != examples:
            raise TaskRefused(
                f"task's shared slice refused: it holds {len(x)} examples, task.json says "
                f"{examples}"
            )
        return check_local_data(x, y, spec, SLICE_FILE)
    except DataError as error:
        raise TaskRefused(f"task's shared slice refused: {error}") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as error:
        unreadable = f"{SLICE_FILE} is unreadable: {error}"
        raise TaskRefused(f"task's shared slice refused: {unreadable}") from None


def read_slice(data: bytes, settings: DataSettings) -> Split:
    """The slice as model input: decoded and checked against the task's spec (a task without
    a spec cannot ship one), then preprocessed as the task says, like the shards."""
    announced = settings.shared_slice
    if announced is None or settings.spec is None:
        raise TaskRefused("task's shared slice refused: task.json announces no slice and spec")
    x, y = decode_slice(data, announced.examples, settings.spec)
    return prepare(x, task_preprocessing(settings.source, settings.preprocessing)), y


def _max_bytes(examples: int, spec: DataSpec) -> int:
    """The most one array of the announced slice can take: 8 bytes a value (float64/int64)."""
    return examples * math.prod(spec.input_shape) * 8 + _HEADER_ALLOWANCE


def _check_members(archive: zipfile.ZipFile, max_bytes: int) -> None:
    """Exactly x.npy and y.npy, each declaring no more than ``max_bytes``: zipfile never
    inflates a member past its declared size, so this bounds memory before anything is read."""
    names = sorted(info.filename for info in archive.infolist())
    if names != list(_ARRAYS):
        raise TaskRefused(
            f"task's shared slice refused: {SLICE_FILE} holds {names[:5]}, not x.npy and y.npy"
        )
    for info in archive.infolist():
        if info.file_size > max_bytes:
            raise TaskRefused(
                f"task's shared slice refused: {info.filename} declares {info.file_size} bytes, "
                f"more than the announced examples need ({max_bytes})"
            )


def with_slice(shard: Split, shared: Split | None) -> Split:
    """A contributor's training data: its shard (or own data), then the shared slice, both
    already preprocessed as the task says."""
    if shared is None:
        return shard
    return np.concatenate([shard[0], shared[0]]), np.concatenate([shard[1], shared[1]])
