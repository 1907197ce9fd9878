"""A contributor's own images as ``--data PATH`` (PATH/<label>/*.png|jpg): read with Pillow
into the task's data spec, every kind of problem one line, no link followed out of PATH."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from decentralml.ml import workloads
from decentralml.ml.task_settings import DataSettings
from decentralml.ml.workloads import DataSpec
from decentralml.ml.workloads.local_data import load_local_data, read_local_data
from decentralml.protocol.errors import DataError
from decentralml_cli import main
from tests.helpers import write_config

MNIST_SPEC = workloads.get("mnist_mlp").dataset.spec
RGB_SPEC = DataSpec((6, 8, 3), "uint8", (0, 1))


def _pixels(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape).astype(np.uint8)


def _save(path: Path, pixels: np.ndarray) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


@pytest.fixture
def digits(tmp_path: Path) -> tuple[Path, np.ndarray, list[int]]:
    """Four 28x28 grayscale PNGs in folders 0 and 3 (and a hidden file to skip)."""
    root = tmp_path / "digits"
    images = [
        _save(root / folder / name, _pixels(seed, (28, 28)))
        for seed, (folder, name) in enumerate(
            [("0", "a.png"), ("0", "b.PNG"), ("3", "a.png"), ("3", "c.png")]
        )
    ]
    (root / "3" / ".DS_Store").write_bytes(b"\0\1")
    return root, np.stack(images), [0, 0, 3, 3]


def test_an_image_folder_is_read_as_the_task_spec_says(digits) -> None:
    root, images, labels = digits
    x, y = load_local_data(root, MNIST_SPEC)
    assert x.dtype == np.uint8 and x.shape == (4, 28, 28)
    assert np.array_equal(x, images) and y.tolist() == labels  # sorted, exact PNG pixels


def test_rgb_images_for_a_grayscale_task_become_grayscale_and_jpegs_are_read(tmp_path) -> None:
    root = tmp_path / "mixed"
    colour = _save(root / "1" / "colour.png", _pixels(1, (28, 28, 3)))
    _save(root / "2" / "photo.jpg", np.full((28, 28), 200, np.uint8))
    x, y = load_local_data(root, MNIST_SPEC)
    expected = np.asarray(Image.fromarray(colour).convert("L"))
    assert np.array_equal(x[0], expected) and y.tolist() == [1, 2]
    assert np.abs(x[1].astype(int) - 200).max() <= 2  # JPEG is lossy, but barely on a flat image


def test_a_colour_task_gets_rgb_and_a_channel_axis_is_kept(tmp_path) -> None:
    root = tmp_path / "colour"
    image = _save(root / "1" / "x.png", _pixels(2, (6, 8, 3)))  # 6 high, 8 wide
    x, _ = load_local_data(root, RGB_SPEC)
    assert x.shape == (1, 6, 8, 3) and np.array_equal(x[0], image)
    one_channel = DataSpec((6, 8, 1), "uint8", (0, 1))
    x, _ = load_local_data(root, one_channel)
    assert x.shape == (1, 6, 8, 1)


def test_the_task_preprocesses_folder_images_like_its_own_data(digits) -> None:
    root, images, _ = digits
    data = workloads.data_settings(workloads.get("mnist_mlp"), 10, 0, None)
    partitions = {"partition": "iid", "num_partitions": 1, "classes_per_contributor": 2}
    settings = {**data, **partitions, "alpha": 0.5, "seed": 0, "holdout_examples": 10}
    x, y = workloads.local_split(root, DataSettings.model_validate(settings))
    assert x.dtype == np.float32 and np.allclose(x, images / 255.0) and len(y) == 4


def test_a_link_inside_the_folder_is_followed(digits) -> None:
    root, images, _ = digits
    os.symlink(root / "0" / "a.png", root / "3" / "z.png")
    x, y = load_local_data(root, MNIST_SPEC)
    assert np.array_equal(x[-1], images[0]) and y.tolist() == [0, 0, 3, 3, 3]


def _break(root: Path, how: str) -> str:
    """Spoil the ``digits`` folder one way; return what the error must say."""
    outside = root.parent / "outside"
    if how == "text-file":
        (root / "3" / "notes.txt").write_text("hello")
        return "3/notes.txt is not a .png/.jpg/.jpeg image"
    if how == "fake-png":
        (root / "3" / "fake.png").write_text("not an image")
        return "3/fake.png cannot be read as an image: "
    if how == "unknown-class":
        _save(root / "12" / "a.png", _pixels(0, (28, 28)))
        return "class folder '12' is not one of the task's labels [0, 1, 2"
    if how == "named-class":
        _save(root / "cat" / "a.png", _pixels(0, (28, 28)))
        return "class folder 'cat' is not one of the task's labels"
    if how == "size":
        _save(root / "3" / "big.png", _pixels(0, (32, 30)))
        return "3/big.png is 30x32 pixels, the task needs 28x28 (images are not resized here"
    if how == "empty-class":
        (root / "5").mkdir()
        return "class folder 5 holds no images"
    if how == "top-level-file":
        _save(root / "a.png", _pixels(0, (28, 28)))
        return "a.png is a file at the top level; images go in one folder per class"
    if how == "nested":
        _save(root / "3" / "more" / "a.png", _pixels(0, (28, 28)))
        return "3/more is a folder"
    if how == "file-link-out":
        _save(outside / "secret.png", _pixels(0, (28, 28)))
        os.symlink(outside / "secret.png", root / "3" / "secret.png")
        return "3/secret.png links outside the folder"
    if how == "folder-link-out":
        _save(outside / "7" / "secret.png", _pixels(0, (28, 28)))
        os.symlink(outside / "7", root / "7")
        return "7 links outside the folder"
    raise AssertionError(how)


SPOILED = (
    *("text-file", "fake-png", "unknown-class", "named-class", "size", "empty-class"),
    *("top-level-file", "nested", "file-link-out", "folder-link-out"),
)


@pytest.mark.parametrize("how", SPOILED)
def test_each_kind_of_problem_is_one_line_naming_it(digits, how) -> None:
    root, _, _ = digits
    why = _break(root, how)
    with pytest.raises(DataError, match=f"^local data {root}: ") as refused:
        load_local_data(root, MNIST_SPEC)
    assert why in str(refused.value) and "\n" not in str(refused.value)


def test_an_empty_folder_and_a_table_task_are_refused(tmp_path, digits) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no class folders"):
        load_local_data(tmp_path / "empty", MNIST_SPEC)
    table = workloads.get("breast_cancer").dataset.spec
    with pytest.raises(DataError, match=r"examples have shape \(30,\), not an image"):
        load_local_data(digits[0], table)


def test_without_a_task_the_images_must_share_one_size(digits) -> None:
    """The CLI's first look, before any task: readable images of one size, numeric labels."""
    root, images, labels = digits
    x, y = read_local_data(root)
    assert np.array_equal(x, images) and y.tolist() == labels
    _save(root / "3" / "d.png", _pixels(0, (20, 28)))
    with pytest.raises(DataError, match=r"3/d\.png is 28x20 pixels, the others are 28x28"):
        read_local_data(root)


def test_contribute_with_a_broken_image_folder_exits_2_in_one_line(tmp_path, digits, capsys):
    root, _, _ = digits
    _break(root, "fake-png")
    path, _ = write_config(tmp_path)
    assert main(["contribute", "--config", str(path), "--data", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: local data {root}: 3/fake.png cannot be read as an image")
    assert err.count("\n") == 1
