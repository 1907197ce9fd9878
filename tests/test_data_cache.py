"""MNIST is read and checked once per process and file version (decentralml.ml.data.mnist).

A synthetic file with MNIST's exact shapes and label counts passes the loader's checks, so
these tests need neither the real data nor the network. Reads are counted by wrapping the
loader's own reader (it still reads the file).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from decentralml.ml.data import load_mnist
from decentralml.ml.data import mnist as mnist_mod


def _write_mnist_like(path: Path, pixel: int) -> None:
    """A valid Keras-layout mnist.npz whose pixels all equal ``pixel`` (written atomically, as
    the loader's own cache is, so the path gets a new inode)."""
    arrays = {
        "x_train": np.full((mnist_mod.TRAIN_SIZE, 28, 28), pixel, np.uint8),
        "y_train": np.repeat(np.arange(10, dtype=np.uint8), mnist_mod.TRAIN_LABEL_COUNTS),
        "x_test": np.full((mnist_mod.TEST_SIZE, 28, 28), pixel, np.uint8),
        "y_test": np.repeat(np.arange(10, dtype=np.uint8), mnist_mod.TEST_LABEL_COUNTS),
    }
    mnist_mod._write_npz_atomic(path, arrays)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(mnist_mod.MNIST_NPZ_ENV, raising=False)
    _write_mnist_like(tmp_path / mnist_mod.NPZ_NAME, pixel=7)
    return tmp_path


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every path the loader really reads from disk, in order."""
    seen: list[Path] = []
    real = mnist_mod._read_npz

    def counting(path: Path):
        seen.append(path)
        return real(path)

    monkeypatch.setattr(mnist_mod, "_read_npz", counting)
    return seen


def test_second_load_reuses_the_verified_arrays(cache: Path, reads: list[Path]) -> None:
    (x1, y1), (xt1, yt1) = load_mnist(cache)
    (x2, y2), (xt2, yt2) = load_mnist(cache)
    assert len(reads) == 1
    assert x2 is x1 and y2 is y1 and xt2 is xt1 and yt2 is yt1
    assert int(x1[0, 0, 0]) == 7


def test_shared_arrays_are_read_only(cache: Path) -> None:
    (x, y), _ = load_mnist(cache)
    assert not x.flags.writeable and not y.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        x[0, 0, 0] = 1
    (x_again, _), _ = load_mnist(cache)
    assert int(x_again[0, 0, 0]) == 7


def test_a_changed_file_is_read_again(cache: Path, reads: list[Path]) -> None:
    (x1, _), _ = load_mnist(cache)
    _write_mnist_like(cache / mnist_mod.NPZ_NAME, pixel=9)
    (x2, _), _ = load_mnist(cache)
    assert len(reads) == 2
    assert int(x1[0, 0, 0]) == 7 and int(x2[0, 0, 0]) == 9


def test_a_file_rewritten_in_place_with_a_new_mtime_is_read_again(
    cache: Path, reads: list[Path]
) -> None:
    load_mnist(cache)
    npz = cache / mnist_mod.NPZ_NAME
    stat = npz.stat()
    os.utime(npz, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    load_mnist(cache)
    assert len(reads) == 2


def test_threads_loading_together_read_the_file_once(cache: Path, reads: list[Path]) -> None:
    start = threading.Barrier(6)
    got: list[np.ndarray] = []

    def load() -> None:
        start.wait()
        (x, _), _ = load_mnist(cache)
        got.append(x)

    threads = [threading.Thread(target=load) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 6 and all(x is got[0] for x in got)
    assert len(reads) == 1


def test_the_explicit_file_is_remembered_too(
    cache: Path, reads: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(mnist_mod.MNIST_NPZ_ENV, str(cache / mnist_mod.NPZ_NAME))
    (x1, _), _ = load_mnist()
    (x2, _), _ = load_mnist()
    assert x2 is x1 and len(reads) == 1


def test_a_bad_file_is_not_remembered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    npz = tmp_path / mnist_mod.NPZ_NAME
    npz.write_bytes(b"not a zip")
    monkeypatch.setenv(mnist_mod.MNIST_NPZ_ENV, str(npz))
    with pytest.raises(mnist_mod.DataError, match="unreadable"):
        load_mnist()
    _write_mnist_like(npz, pixel=3)
    (x, _), _ = load_mnist()
    assert int(x[0, 0, 0]) == 3
