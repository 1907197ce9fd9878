"""The shared IID slice shipped with the task (decentralml/ml/data/shared_slice.py): the creator
takes it out of its held-out split and packages it, a contributor checks it as untrusted input
and trains on it beside its shard; one slow demo round with the slice on a non-IID split."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from decentralml.contributor import TaskInputs, check_inputs, training_data
from decentralml.creator import shared_slice_files, task_settings
from decentralml.io.packaging import build_package, unpack_package
from decentralml.ml.data.federated import (
    contributor_shard,
    creator_holdout,
    holdout_and_pool,
    shared_slice_examples,
    slice_and_validation,
)
from decentralml.ml.data.shared_slice import SLICE_FILE, decode_slice, encode_slice
from decentralml.ml.models import build_model, model_tensors
from decentralml.ml.task_settings import TaskSettings
from decentralml.ml.workloads.base import DataSpec
from decentralml.protocol.errors import ConfigError, TaskRefused
from decentralml.runtime.backends import DEFAULT_ASSETS
from decentralml.runtime.config import RunConfig, parse_config

SPEC = DataSpec((28, 28), "uint8", tuple(range(10)))
SLICE = 500


def _config(partition: str = "shards-disjoint", shared: int = SLICE) -> RunConfig:
    return parse_config(
        {"contributors": 10, "data": {"partition": partition, "shared_slice": shared}}
    )


def _inputs(config: RunConfig, files: dict[str, bytes] | None = None) -> TaskInputs:
    settings = task_settings(config).dump()
    tensors = model_tensors(build_model("mnist_mlp"))
    data = shared_slice_files(config) if files is None else files
    return TaskInputs(settings, tensors, Path("."), data)


def test_the_slice_is_part_of_the_holdout_and_the_validation_split_is_the_rest() -> None:
    held, pool = holdout_and_pool(60_000, 5_000, 42)
    shared, validation = slice_and_validation(60_000, 5_000, SLICE, 42)
    assert len(shared) == SLICE and len(validation) == 5_000 - SLICE
    assert not set(shared) & set(validation)
    assert np.array_equal(np.sort(np.concatenate([shared, validation])), held)
    assert np.array_equal(holdout_and_pool(60_000, 5_000, 42)[1], pool)  # shards do not move


def test_the_creator_never_validates_on_the_slice() -> None:
    x_slice, _ = shared_slice_examples(5_000, SLICE, 42)
    x_val, _ = creator_holdout(5_000, 42, shared_slice=SLICE)
    x_all, _ = creator_holdout(5_000, 42)
    assert len(x_val) == 5_000 - SLICE and len(x_all) == 5_000
    rows = {row.tobytes() for row in (x_slice / 255.0).astype(np.float32)}
    assert not rows & {row.tobytes() for row in x_val}
    assert len(rows & {row.tobytes() for row in x_all}) == len(rows)


def test_a_slice_the_holdout_cannot_spare_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config({"data": {"holdout_examples": 500, "shared_slice": 500}})
    assert "shared_slice 500 must be smaller than holdout_examples 500" in str(refused.value)


def test_the_slice_file_is_the_same_bytes_for_the_same_slice() -> None:
    x = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    y = np.array([3, 7])
    data = encode_slice(x, y)
    assert data == encode_slice(x.copy(), y.copy())  # no timestamp: same package sha256
    decoded_x, decoded_y = decode_slice(data, 2, SPEC)
    assert np.array_equal(decoded_x, x) and decoded_y.tolist() == [3, 7]


def test_a_contributor_with_two_classes_trains_on_all_ten_through_the_slice() -> None:
    """The contributor's data assembly: shard (2 classes) + the package's slice (all 10)."""
    config = _config()
    inputs = _inputs(config)
    check_inputs(inputs, 3)
    data = inputs.settings.data
    shard_x, shard_y = contributor_shard(data, 3)
    x, y = training_data(data, 3, None, None, inputs.shared_slice)
    assert len(set(shard_y.tolist())) == 2
    assert len(y) == len(shard_y) + SLICE and x.shape[1:] == shard_x.shape[1:]
    assert set(y.tolist()) == set(range(10))  # labels outside its own two classes
    assert np.array_equal(x[: len(shard_x)], shard_x)  # the shard first, unchanged
    assert float(x.max()) <= 1.0  # the slice preprocessed as the task says (x / 255)


def test_a_contributor_with_its_own_data_also_gets_the_slice(tmp_path: Path) -> None:
    own = tmp_path / "own.npz"
    np.savez(own, x=np.full((40, 28, 28), 255, np.uint8), y=np.array([4, 6] * 20))
    inputs = _inputs(_config())
    check_inputs(inputs, 0, str(own))
    x, y = training_data(inputs.settings.data, 0, None, str(own), inputs.shared_slice)
    assert len(y) == 40 + SLICE and set(y[:40].tolist()) == {4, 6}
    assert set(y.tolist()) == set(range(10)) and np.all(x[:40] == 1.0)


def test_a_task_without_a_slice_trains_on_the_shard_alone() -> None:
    inputs = _inputs(_config(shared=0))
    assert inputs.settings.data.shared_slice is None and inputs.data_files == {}
    _, y = training_data(inputs.settings.data, 0, None, None, inputs.shared_slice)
    assert len(y) == len(contributor_shard(inputs.settings.data, 0)[1])


def test_the_package_carries_the_slice_and_the_contributor_finds_it(tmp_path: Path) -> None:
    config = _config()
    package = build_package(
        DEFAULT_ASSETS, task_settings(config).dump(), data_files=shared_slice_files(config)
    )
    raw = unpack_package(package, tmp_path)
    assert raw["data"]["shared_slice"] == {"file": SLICE_FILE, "examples": SLICE}
    inputs = TaskInputs(raw, {}, tmp_path, {SLICE_FILE: (tmp_path / SLICE_FILE).read_bytes()})
    x, y = inputs.shared_slice or (None, None)
    assert x is not None and y is not None and len(y) == SLICE


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return buffer.getvalue()


GOOD_X = np.zeros((SLICE, 28, 28), np.uint8)
GOOD_Y = np.arange(SLICE) % 10


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (encode_slice(GOOD_X[:10], GOOD_Y[:10]), "it holds 10 examples, task.json says 500"),
        (encode_slice(GOOD_X, GOOD_Y + 5), "labels [10, 11, 12, 13, 14] are not in"),
        (encode_slice(GOOD_X[:, :14], GOOD_Y), "examples have shape (14, 28), the task needs"),
        (b"not a zip at all", "shared_slice.npz is unreadable"),
        (_zip({"x.npy": _npy(GOOD_X), "y.npy": _npy(GOOD_Y), "z.npy": b""}), "not x.npy and y.npy"),
        (
            _zip({"x.npy": _npy(np.array([object()] * SLICE)), "y.npy": _npy(GOOD_Y)}),
            "unreadable: Object arrays cannot be loaded when allow_pickle=False",
        ),
        (
            _zip({"x.npy": _npy(np.zeros((SLICE, 28, 28 * 9))), "y.npy": _npy(GOOD_Y)}),
            "more than the announced examples need",
        ),
    ],
    ids=["count", "labels", "shape", "garbage", "extra-member", "pickle", "oversized"],
)
def test_a_bad_slice_is_refused_in_one_line_before_a_slot(data: bytes, problem: str) -> None:
    inputs = _inputs(_config(), {SLICE_FILE: data})
    with pytest.raises(TaskRefused) as refused:
        check_inputs(inputs, 0)
    message = str(refused.value)
    assert problem in message and message.startswith("task's shared slice refused")
    assert len(message.splitlines()) == 1


def test_an_announced_slice_missing_from_the_package_is_refused() -> None:
    with pytest.raises(TaskRefused, match=r"the package has no shared_slice\.npz"):
        check_inputs(_inputs(_config(), {}), 0)


@pytest.mark.parametrize(
    ("announced", "problem"),
    [
        ({"file": "../up.npz", "examples": 5}, "file '../up.npz' is not a plain .npz file name"),
        ({"file": "slice.npz", "examples": 0}, "examples 0 is not 1..20000 examples"),
        ({"file": "slice.npz", "examples": 5, "run": "x"}, "['run'] are not known"),
    ],
)
def test_task_settings_bound_the_announced_slice(announced: dict, problem: str) -> None:
    raw = task_settings(_config()).dump()
    raw["data"] = {**raw["data"], "shared_slice": announced}  # type: ignore[dict-item]
    with pytest.raises(TaskRefused) as refused:
        TaskSettings.parse(raw)
    assert problem in str(refused.value) and len(str(refused.value).splitlines()) == 1


@pytest.mark.slow
@pytest.mark.integration
def test_a_demo_round_on_shards_trains_every_contributor_on_the_slice(
    tmp_path: Path, prefect_harness
) -> None:
    """A real round (Prefect, embedded marketplace, file storage, real TF on MNIST): every
    contributor reports its shard plus the slice as examples, and every result is accepted
    (the screening's cap on claimed examples counts the slice too)."""
    from decentralml.runtime.backends import open_marketplace
    from flows.demo import run_demo
    from tests.helpers import small_config

    contributors = 3
    overrides = {
        "task.max_assignments": contributors,
        "data.partition": "shards",
        "data.holdout_examples": 1000,
        "data.shared_slice": 200,
    }
    config = parse_config(small_config(tmp_path, contributors=contributors, **overrides))
    summary = run_demo(config)
    data = task_settings(config).data
    rows = summary["submissions"]
    assert len(rows) == contributors and all(r["verdict"] == "accepted" for r in rows), rows
    market = open_marketplace(config.marketplace)
    claimed = sorted(market.get_submission(r["submission"]).result.num_examples for r in rows)
    shard_sizes = sorted(len(contributor_shard(data, i)[1]) + 200 for i in range(contributors))
    assert claimed == shard_sizes
