"""decentralml.io.weights: the safetensors exchange format and the checks against the model.

The seed model's real weights (``build_model("mnist_mlp")``) are the main fixture; small
hand-made tensors cover dtypes and edge cases. Every refusal is an IntegrityError whose message
names what is wrong (truncation, the tensor, the size limit).
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from decentralml.io.weights import (
    TensorSpec,
    all_finite,
    check_against,
    decode,
    encode,
    layout_bytes,
    layout_of,
    read_metadata,
)
from decentralml.protocol.errors import IntegrityError

SEED_LAYOUT = (
    TensorSpec("000.kernel", (784, 128), "float32"),
    TensorSpec("001.bias", (128,), "float32"),
    TensorSpec("002.kernel", (128, 10), "float32"),
    TensorSpec("003.bias", (10,), "float32"),
)


@pytest.fixture(scope="module")
def seed_tensors() -> dict[str, np.ndarray]:
    """The seed model's freshly initialised weights, by their stable names."""
    from decentralml.ml.models import build_model, model_tensors

    tensors = model_tensors(build_model("mnist_mlp"))
    # Glorot-initialised kernels are random, zero biases are not: make every tensor distinctive
    # so that a value mix-up between tensors cannot go unnoticed.
    rng = np.random.default_rng(0)
    return {
        name: (t + rng.normal(0, 0.01, t.shape)).astype(t.dtype) if "bias" in name else t
        for name, t in tensors.items()
    }


@pytest.fixture(scope="module")
def seed_bytes(seed_tensors: dict[str, np.ndarray]) -> bytes:
    return encode(seed_tensors, {"num_examples": 5000})


def _header_length(data: bytes) -> int:
    return struct.unpack("<Q", data[:8])[0]


def _with_header(header: object, payload: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + payload


# --- round trip ----------------------------------------------------------------------------


def test_seed_model_layout_is_the_seed_architecture(seed_tensors: dict[str, np.ndarray]) -> None:
    assert layout_of(seed_tensors) == SEED_LAYOUT
    assert layout_bytes(SEED_LAYOUT) == (784 * 128 + 128 + 128 * 10 + 10) * 4 == 407_080


def test_seed_weights_round_trip_exactly(seed_tensors: dict[str, np.ndarray]) -> None:
    data = encode(seed_tensors)
    decoded = decode(data)
    assert sorted(decoded) == sorted(seed_tensors)
    for name, tensor in seed_tensors.items():
        assert decoded[name].dtype == tensor.dtype
        assert decoded[name].shape == tensor.shape
        assert decoded[name].tobytes() == tensor.tobytes()  # bit-exact, not merely close
    # Tensor data plus a small JSON header: nothing else is stored.
    assert layout_bytes(SEED_LAYOUT) < len(data) < layout_bytes(SEED_LAYOUT) + 1024


def test_round_trip_keeps_every_dtype_and_value_bit_exact() -> None:
    rng = np.random.default_rng(1)
    tensors = {
        "a.f16": rng.standard_normal((3, 5)).astype(np.float16),
        "b.f32": rng.standard_normal((4,)).astype(np.float32),
        "c.f64": np.array([np.pi, -0.0, 1e-300], dtype=np.float64),
        "d.i64": np.array([[-(2**62), 2**62]], dtype=np.int64),
        "e.u8": np.arange(256, dtype=np.uint8).reshape(16, 16),
        "g.empty": np.zeros((0, 3), dtype=np.float32),
    }
    decoded = decode(encode(tensors))
    assert sorted(decoded) == sorted(tensors)
    for name, tensor in tensors.items():
        assert decoded[name].dtype == tensor.dtype, name
        assert decoded[name].shape == tensor.shape, name
        assert decoded[name].tobytes() == tensor.tobytes(), name


def test_non_contiguous_input_is_encoded_by_value() -> None:
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    decoded = decode(encode({"t": base.T}))  # a transposed view
    np.testing.assert_array_equal(decoded["t"], base.T)
    assert decoded["t"].shape == (4, 3)


def test_scalar_tensor_keeps_its_shape() -> None:
    decoded = decode(encode({"step": np.array(7.5, dtype=np.float32)}))
    assert decoded["step"].shape == ()
    assert decoded["step"].item() == 7.5


@pytest.mark.parametrize("case", ["seed", "mixed-dtypes"])
def test_round_trip_keeps_the_encoders_order(
    seed_tensors: dict[str, np.ndarray], case: str
) -> None:
    tensors = (
        seed_tensors
        if case == "seed"
        else {
            "zeta": np.arange(6, dtype=np.int64),
            "alpha": np.ones(3, dtype=np.float16),
            "mid": np.zeros(2, dtype=np.float32),
        }
    )
    data = encode(tensors)
    # Twenty decodes: a random order matches by chance with probability (1/24)^20 at most.
    orders = {tuple(decode(data)) for _ in range(20)}
    assert orders == {tuple(tensors)}


# --- metadata ------------------------------------------------------------------------------


def test_metadata_round_trips_as_json(seed_tensors: dict[str, np.ndarray]) -> None:
    metadata = {
        "num_examples": 5000,
        "metrics": {"accuracy": 0.9132, "loss": 0.31},
        "base": "ab" * 32,
        "note": "ünïcode ✓",
    }
    data = encode(seed_tensors, metadata)
    assert read_metadata(data) == metadata
    assert sorted(decode(data)) == sorted(seed_tensors)  # metadata does not become a tensor


def test_metadata_defaults_to_an_empty_object(seed_tensors: dict[str, np.ndarray]) -> None:
    assert read_metadata(encode(seed_tensors)) == {}
    assert read_metadata(encode(seed_tensors, None)) == {}


def test_metadata_is_read_from_the_header_alone(seed_bytes: bytes) -> None:
    header_only = seed_bytes[: 8 + _header_length(seed_bytes)]
    assert read_metadata(header_only) == {"num_examples": 5000}
    with pytest.raises(IntegrityError, match="truncated"):
        decode(header_only)


@pytest.mark.parametrize(
    ("raw", "message"),
    [("{not json", "metadata is not valid JSON"), ("[1, 2]", "metadata must be a JSON object")],
)
def test_metadata_that_is_not_a_json_object_is_refused(raw: str, message: str) -> None:
    data = _with_header({"__metadata__": {"decentralml": raw}})
    with pytest.raises(IntegrityError, match=message):
        read_metadata(data)


@pytest.mark.parametrize("header", [{"__metadata__": "x"}, {"__metadata__": {"decentralml": 5}}])
def test_metadata_of_a_malformed_header_is_an_integrity_error(header: dict) -> None:
    with pytest.raises(IntegrityError):
        read_metadata(_with_header(header))


# --- truncation and garbage ----------------------------------------------------------------


def _cut_points(data: bytes) -> dict[str, int]:
    header_end = 8 + _header_length(data)
    return {
        "empty": 0,
        "inside the length prefix": 5,
        "length prefix only": 8,
        "inside the header": 8 + _header_length(data) // 2,
        "one byte short of the header": header_end - 1,
        "header without data": header_end,
        "inside the first tensor": header_end + 100,
        "inside the last tensor": len(data) - 20,
        "last byte missing": len(data) - 1,
    }


@pytest.mark.parametrize(
    "where",
    [
        "empty",
        "inside the length prefix",
        "length prefix only",
        "inside the header",
        "one byte short of the header",
    ],
)
def test_truncation_in_the_header_says_truncated(seed_bytes: bytes, where: str) -> None:
    cut = seed_bytes[: _cut_points(seed_bytes)[where]]
    with pytest.raises(IntegrityError, match="weights file is truncated"):
        decode(cut)
    with pytest.raises(IntegrityError, match="weights file is truncated"):
        read_metadata(cut)


@pytest.mark.parametrize(
    "where",
    [
        "header without data",
        "inside the first tensor",
        "inside the last tensor",
        "last byte missing",
    ],
)
def test_truncation_in_the_data_is_refused(seed_bytes: bytes, where: str) -> None:
    cut = seed_bytes[: _cut_points(seed_bytes)[where]]
    with pytest.raises(IntegrityError, match=r"truncated|not valid safetensors"):
        decode(cut)


def test_trailing_bytes_are_refused(seed_bytes: bytes) -> None:
    with pytest.raises(IntegrityError, match="not valid safetensors"):
        decode(seed_bytes + b"\x00" * 16)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "truncated"),  # huge claimed length
        (struct.pack("<Q", 2**63) + b"{}", "truncated"),
        (struct.pack("<Q", 9) + b"not json!", "not JSON"),
        (struct.pack("<Q", 2) + b"\xff\xfe", "not JSON"),
        (_with_header([1, 2, 3]), "not a JSON object"),
        (_with_header("just a string"), "not a JSON object"),
        (
            _with_header({"w": {"dtype": "NOPE", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
            "not valid safetensors",
        ),
        (
            _with_header({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4),
            "not valid safetensors",
        ),
    ],
    ids=[
        "png",
        "length-2^63",
        "not-json",
        "not-utf8",
        "json-list",
        "json-string",
        "unknown-dtype",
        "shape-vs-offsets",
    ],
)
def test_garbage_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(IntegrityError, match=message):
        decode(data)


@pytest.mark.parametrize("offsets", [5, ["x", "y"], [0]])
def test_malformed_data_offsets_are_an_integrity_error(offsets: object) -> None:
    data = _with_header({"w": {"dtype": "F32", "shape": [1], "data_offsets": offsets}}, b"\0" * 4)
    with pytest.raises(IntegrityError):
        decode(data)


# --- size limit ----------------------------------------------------------------------------


def test_max_bytes_refuses_anything_larger(seed_bytes: bytes) -> None:
    size = len(seed_bytes)
    with pytest.raises(IntegrityError, match=f"is {size} bytes, over the {size - 1}-byte limit"):
        decode(seed_bytes, max_bytes=size - 1)
    assert sorted(decode(seed_bytes, max_bytes=size)) == [s.name for s in SEED_LAYOUT]


def test_max_bytes_is_checked_before_parsing() -> None:
    with pytest.raises(IntegrityError, match="over the 10-byte limit"):
        decode(b"x" * 11, max_bytes=10)


# --- check_against -------------------------------------------------------------------------


def test_the_seed_weights_fit_their_own_layout(seed_tensors: dict[str, np.ndarray]) -> None:
    check_against(decode(encode(seed_tensors)), SEED_LAYOUT)  # no exception


def test_order_of_names_does_not_matter(seed_tensors: dict[str, np.ndarray]) -> None:
    check_against(dict(reversed(list(seed_tensors.items()))), SEED_LAYOUT)


def _mutated(tensors: dict[str, np.ndarray], name: str, value: np.ndarray) -> dict:
    copy = dict(tensors)
    copy[name] = value
    return copy


def test_wrong_shape_names_the_tensor(seed_tensors: dict[str, np.ndarray]) -> None:
    bad = _mutated(seed_tensors, "002.kernel", np.zeros((128, 9), dtype=np.float32))
    with pytest.raises(IntegrityError) as error:
        check_against(bad, SEED_LAYOUT)
    assert str(error.value) == "tensor 002.kernel has shape (128, 9), the model needs (128, 10)"


def test_transposed_kernel_is_a_wrong_shape(seed_tensors: dict[str, np.ndarray]) -> None:
    bad = _mutated(seed_tensors, "000.kernel", seed_tensors["000.kernel"].T)
    with pytest.raises(IntegrityError, match=r"tensor 000\.kernel has shape \(128, 784\)"):
        check_against(bad, SEED_LAYOUT)


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32])
def test_wrong_dtype_names_the_tensor(seed_tensors: dict[str, np.ndarray], dtype: type) -> None:
    bad = _mutated(seed_tensors, "001.bias", seed_tensors["001.bias"].astype(dtype))
    with pytest.raises(IntegrityError) as error:
        check_against(bad, SEED_LAYOUT)
    expected = f"tensor 001.bias has dtype {np.dtype(dtype)}, the model needs float32"
    assert str(error.value) == expected


def test_missing_tensor_is_named(seed_tensors: dict[str, np.ndarray]) -> None:
    bad = {n: t for n, t in seed_tensors.items() if n != "003.bias"}
    with pytest.raises(IntegrityError) as error:
        check_against(bad, SEED_LAYOUT)
    assert str(error.value) == (
        "tensor names differ from the model: missing ['003.bias'], extra []"
    )


def test_extra_tensor_is_named(seed_tensors: dict[str, np.ndarray]) -> None:
    bad = _mutated(seed_tensors, "004.backdoor", np.zeros(1, dtype=np.float32))
    with pytest.raises(IntegrityError) as error:
        check_against(bad, SEED_LAYOUT)
    assert str(error.value) == (
        "tensor names differ from the model: missing [], extra ['004.backdoor']"
    )


def test_renamed_tensor_is_both_missing_and_extra(seed_tensors: dict[str, np.ndarray]) -> None:
    bad = {("dense_7/kernel" if n == "000.kernel" else n): t for n, t in seed_tensors.items()}
    with pytest.raises(
        IntegrityError, match=r"missing \['000\.kernel'\], extra \['dense_7/kernel'\]"
    ):
        check_against(bad, SEED_LAYOUT)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("name", ["000.kernel", "003.bias"])
def test_non_finite_values_name_the_tensor(
    seed_tensors: dict[str, np.ndarray], name: str, value: float
) -> None:
    poisoned = seed_tensors[name].copy()
    poisoned.flat[poisoned.size // 2] = value  # one bad value among many
    # It survives the file format unchanged, and the check refuses it.
    decoded = decode(encode(_mutated(seed_tensors, name, poisoned)))
    with pytest.raises(IntegrityError) as error:
        check_against(decoded, SEED_LAYOUT)
    assert str(error.value) == f"tensor {name} contains NaN or infinite values"


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_all_finite_agrees_with_isfinite_on_every_kind_of_value(dtype: str) -> None:
    biggest = np.finfo(dtype).max
    rng = np.random.default_rng(0)
    cases = {
        "finite": rng.standard_normal(1000),
        "nan": np.r_[rng.standard_normal(999), np.nan],
        "inf": np.r_[np.inf, rng.standard_normal(999)],
        "both infinities": np.r_[np.inf, -np.inf, np.zeros(998)],
        "finite but the sum overflows": np.full(1000, biggest),
        "overflowing with one nan": np.r_[np.full(999, biggest), np.nan],
    }
    for name, values in cases.items():
        tensor = values.astype(dtype)
        assert all_finite(tensor) == bool(np.isfinite(tensor).all()), name
    assert all_finite(np.arange(10, dtype=np.int64))
