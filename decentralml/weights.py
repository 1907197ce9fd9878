"""Weights exchange in safetensors: the only thing a contributor sends and the creator reads.

safetensors holds raw tensors and a JSON header, nothing executable, so the creator never runs
contributor code (the seed loaded whole SavedModels; Keras 3 can't even save those). Every
candidate is checked against the creator's own model before it is used: same names, shapes and
dtypes, finite values, bounded size.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from safetensors.numpy import load as _st_load
from safetensors.numpy import save as _st_save

from decentralml.errors import IntegrityError

_METADATA_KEY = "decentralml"
_ORDER_KEY = "decentralml.order"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str


Layout = tuple[TensorSpec, ...]


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
    """Parse safetensors bytes; truncated or malformed input raises IntegrityError."""
    if max_bytes is not None and len(data) > max_bytes:
        raise IntegrityError(f"weights file is {len(data)} bytes, over the {max_bytes}-byte limit")
    header = _parse_header(data)
    _check_covered(header, data)
    try:
        loaded = _st_load(data)
    except Exception as error:  # safetensors raises its own SafetensorError and others
        raise IntegrityError(f"weights file is not valid safetensors: {error}") from None
    # safetensors returns a HashMap's order, different on every call: restore the encoder's.
    return {name: loaded[name] for name in _encoded_order(header, loaded)}


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
        header = json.loads(data[8 : 8 + length])
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
        if str(tensor.dtype) != spec.dtype:
            raise IntegrityError(
                f"tensor {spec.name} has dtype {tensor.dtype}, the model needs {spec.dtype}"
            )
        if not np.all(np.isfinite(tensor)):
            raise IntegrityError(f"tensor {spec.name} contains NaN or infinite values")
