"""Weights exchange in safetensors: the only thing a contributor sends and the creator reads.

safetensors holds raw tensors and a JSON header, nothing executable, so the creator never runs
contributor code (the seed loaded whole SavedModels; Keras 3 can't even save those). Every
candidate is checked against the creator's own model before it is used: same names, shapes and
dtypes, finite values, bounded size.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from safetensors.numpy import save as _st_save

from decentralml.protocol.errors import IntegrityError

if TYPE_CHECKING:
    import keras

Buffer = bytes | bytearray | memoryview
"""What decode_views reads: bytes from the store, or any buffer over them."""

_METADATA_KEY = "decentralml"
_ORDER_KEY = "decentralml.order"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str


Layout = tuple[TensorSpec, ...]


def weight_name(index: int, variable: keras.Variable) -> str:
    """The stable name of ``model.weights[index]`` in every tensor file: Keras variable paths
    carry per-process counters ("dense_3/kernel"), so two processes building the same model
    disagree on them; position plus the variable's own name ("000.kernel") does not."""
    return f"{index:03d}.{variable.name}"


def layout_of(tensors: Mapping[str, np.ndarray]) -> Layout:
    return tuple(
        TensorSpec(n, tuple(int(d) for d in t.shape), str(t.dtype)) for n, t in tensors.items()
    )


def layout_bytes(layout: Layout) -> int:
    return sum(int(np.prod(spec.shape)) * np.dtype(spec.dtype).itemsize for spec in layout)


def encode(
    tensors: Mapping[str, np.ndarray], metadata: Mapping[str, object] | None = None
) -> bytes:
    """Serialize tensors (and JSON metadata) to safetensors bytes."""
    header = {
        _METADATA_KEY: json.dumps(dict(metadata or {}), sort_keys=True),
        _ORDER_KEY: json.dumps(list(tensors)),
    }
    # ascontiguousarray makes 0-d arrays 1-d: give every tensor its own shape back.
    arrays = {name: np.ascontiguousarray(t).reshape(np.shape(t)) for name, t in tensors.items()}
    return _st_save(arrays, metadata=header)


def read_metadata(data: bytes) -> dict[str, object]:
    """The JSON metadata from a safetensors header, without touching tensor data."""
    metadata = _parse_header(data).get("__metadata__", {})
    raw = metadata.get(_METADATA_KEY, "{}") if isinstance(metadata, dict) else None
    if not isinstance(raw, str):
        raise IntegrityError("metadata must be a JSON string in the safetensors header")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as error:
        raise IntegrityError(f"metadata is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise IntegrityError("metadata must be a JSON object")
    return value


def decode(data: bytes, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """Parse safetensors bytes into writable arrays of their own; truncated or malformed input
    raises IntegrityError (see ``decode_views``, which this copies)."""
    return {name: view.copy() for name, view in decode_views(data, max_bytes).items()}


def decode_views(data: Buffer, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """Parse safetensors bytes into read-only numpy views on ``data``: no tensor byte is copied.

    The creator reads each result once into memory, hashes it, and checks and averages these
    views (safetensors' own numpy loader copies every tensor). The header is held to
    safetensors' rules (its ``Metadata::validate``): known dtype, a shape whose size matches
    its byte range, ranges contiguous from 0 and covering the data exactly. A view keeps
    ``data`` alive, and is read-only, so no strategy can change a result in place.
    """
    size = memoryview(data).nbytes
    if max_bytes is not None and size > max_bytes:
        raise IntegrityError(f"weights file is {size} bytes, over the {max_bytes}-byte limit")
    header = _parse_header(data)
    _check_covered(header, data)
    (length,) = struct.unpack("<Q", data[:8])
    entries = _tensor_entries(header, size - 8 - length)
    views = {
        name: np.frombuffer(data, dtype, count=count, offset=8 + length + begin).reshape(shape)
        for name, (dtype, shape, count, begin) in entries.items()
    }
    # Keep the encoder's order (the header's JSON object order is the file's, by offset).
    return {name: views[name] for name in _encoded_order(header, views)}


_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
    "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}  # fmt: skip
"""safetensors dtypes numpy holds (little-endian, as the format stores them)."""


def _tensor_entries(
    header: dict, data_length: int
) -> dict[str, tuple[np.dtype, tuple[int, ...], int, int]]:
    """Each tensor's (dtype, shape, element count, start offset), after safetensors' checks."""
    entries, ranges = {}, []
    for name, entry in header.items():
        if name == "__metadata__":
            if entry is not None and not (
                isinstance(entry, dict) and all(isinstance(v, str) for v in entry.values())
            ):
                raise _invalid("__metadata__ must map names to strings")
            continue
        dtype_name, shape = entry.get("dtype"), entry.get("shape")
        if not isinstance(dtype_name, str) or dtype_name not in _DTYPES:
            raise _invalid(f"tensor {name!r} has dtype {dtype_name!r}, not one numpy holds")
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
            raise _invalid(f"tensor {name!r} has shape {shape!r}, not a list of sizes")
        dtype = np.dtype(_DTYPES[dtype_name])
        begin, end = entry["data_offsets"]  # checked by _check_covered
        count = math.prod(shape)
        if end < begin or count * dtype.itemsize != end - begin:
            raise _invalid(f"tensor {name!r}: shape {shape} does not fill bytes {begin}..{end}")
        entries[name] = (dtype, tuple(shape), count, begin)
        ranges.append((begin, end, name))
    position = 0
    for begin, end, name in sorted(ranges):
        if begin != position:
            raise _invalid(f"tensor {name!r} starts at byte {begin}, not {position}")
        position = end
    if position != data_length:
        raise _invalid(f"tensors cover {position} bytes of {data_length}")
    return entries


def _invalid(why: str) -> IntegrityError:
    return IntegrityError(f"weights file is not valid safetensors: {why}")


def _encoded_order(header: dict, loaded: Mapping[str, np.ndarray]) -> list[str]:
    try:
        order = json.loads(header["__metadata__"][_ORDER_KEY])
    except (KeyError, TypeError, json.JSONDecodeError):
        order = None
    if not isinstance(order, list) or sorted(map(str, order)) != sorted(loaded):
        order = [name for name in header if name in loaded]  # the file's own (offset) order
    return order


def _parse_header(data: bytes) -> dict:
    if len(data) < 8:
        raise IntegrityError(f"weights file is truncated: {len(data)} bytes, no header")
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8:
        raise IntegrityError(
            f"weights file is truncated: header claims {length} bytes, {len(data) - 8} present"
        )
    try:
        header = json.loads(bytes(data[8 : 8 + length]))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise IntegrityError("weights file header is not JSON: not a safetensors file") from None
    if not isinstance(header, dict):
        raise IntegrityError("weights file header is not a JSON object")
    return header


def _check_covered(header: dict, data: bytes) -> None:
    """Name truncation plainly: safetensors itself only says "file not fully covered"."""
    (length,) = struct.unpack("<Q", data[:8])
    ends = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(type(o) is int and o >= 0 for o in offsets)
        ):
            raise IntegrityError(
                f"weights file header gives tensor {name!r} no valid data_offsets: "
                "not a safetensors file"
            )
        ends.append(offsets[1])
    needed = max(ends, default=0)
    present = len(data) - 8 - length
    if present < needed:
        raise IntegrityError(
            f"weights file is truncated: header describes {needed} bytes of tensors, "
            f"{present} present"
        )


def check_against(tensors: Mapping[str, np.ndarray], expected: Layout) -> None:
    """Refuse weights that do not fit the creator's model, naming the first mismatch."""
    expected_names = [spec.name for spec in expected]
    missing = [n for n in expected_names if n not in tensors]
    extra = [n for n in tensors if n not in set(expected_names)]
    if missing or extra:
        raise IntegrityError(
            f"tensor names differ from the model: missing {missing}, extra {extra}"
        )
    for spec in expected:
        tensor = tensors[spec.name]
        if tuple(tensor.shape) != spec.shape:
            raise IntegrityError(
                f"tensor {spec.name} has shape {tuple(tensor.shape)}, the model needs {spec.shape}"
            )
        if tensor.dtype != np.dtype(spec.dtype):  # a dtype's str() costs more than this
            raise IntegrityError(
                f"tensor {spec.name} has dtype {tensor.dtype}, the model needs {spec.dtype}"
            )
        if not all_finite(tensor):
            raise IntegrityError(f"tensor {spec.name} contains NaN or infinite values")


def all_finite(tensor: np.ndarray) -> bool:
    """Whether every value is finite, in one read and without a mask: a NaN or an infinity
    makes the sum NaN or infinite, so a finite sum proves them all finite (half the time of
    ``isfinite(tensor).all()``, which writes a boolean per value). A non-finite sum may also
    be finite values overflowing: only then is every value checked."""
    if tensor.dtype.kind not in "fc":
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(tensor.sum()):
            return True
    return bool(np.isfinite(tensor).all())
