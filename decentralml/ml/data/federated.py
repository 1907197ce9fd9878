"""Who sees which examples: the creator's held-out split and each contributor's shard.

The creator keeps ``holdout_examples`` training examples for validating results
(CustomAccept); contributors partition the rest, so validation never scores a contributor on
its own data. With a shared slice (``data.shared_slice``, Zhao et al. 2018) the first
``shared_slice`` examples of the held-out split go to every contributor with the task, and
the creator validates on the rest only: the held-out gate must not judge on data the
contributors trained on. The test set is only used for the reported metric. The dataset is
the task's ``source`` (a dataset of decentralml.ml.data.datasets; MNIST when absent) and
examples reach the model through the task's ``preprocessing`` (MNIST: x / 255).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from decentralml.ml.data.base import DataSettings, prepare
from decentralml.ml.data.datasets import dataset, task_preprocessing
from decentralml.ml.data.partition import partition_indices

Split = tuple[NDArray[np.float32], NDArray[np.integer]]


def holdout_and_pool(num_examples: int, holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint index sets (holdout, pool) from one seeded permutation."""
    order = _order(num_examples, holdout, seed)
    return np.sort(order[:holdout]), np.sort(order[holdout:])


def slice_and_validation(
    num_examples: int, holdout: int, shared: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint index sets (shared slice, validation) that together are ``holdout_and_pool``'s
    holdout: the slice is the first ``shared`` of the same permutation, so it is a random
    sample of the held-out split and the pool (the contributors' shards) does not move."""
    if not 0 <= shared < max(holdout, 1):
        raise ValueError(f"shared_slice={shared} must be in [0, holdout_examples={holdout})")
    order = _order(num_examples, holdout, seed)
    return np.sort(order[:shared]), np.sort(order[shared:holdout])


def _order(num_examples: int, holdout: int, seed: int) -> np.ndarray:
    if not 0 <= holdout < num_examples:
        raise ValueError(f"holdout_examples={holdout} must be in [0, {num_examples})")
    return np.random.default_rng(seed).permutation(num_examples)


def _raw(source: str, cache_dir: Path | str | None):
    return dataset(source).load(cache_dir)


def _prepare(x: np.ndarray, source: str, preprocessing: Mapping[str, object] | None) -> np.ndarray:
    """Model input: the given preprocessing, else the dataset's default (MNIST: x / 255)."""
    return prepare(x, task_preprocessing(source, preprocessing))


def contributor_shard(data: DataSettings, index: int, cache_dir: Path | str | None = None) -> Split:
    """Contributor ``index``'s examples under the task's data settings (task.json "data")."""
    (x_train, y_train), _ = _raw(data.source, cache_dir)
    parts = _partitions(data, y_train)
    if not 0 <= index < len(parts):
        raise ValueError(f"index={index} is out of range for num_partitions={len(parts)}")
    chosen = parts[index]
    return _prepare(x_train[chosen], data.source, data.preprocessing), y_train[chosen]


def largest_shard(data: DataSettings, cache_dir: Path | str | None = None) -> int:
    """The most examples any contributor holds under the task's data settings: the creator
    provides the shards, so a claim above this is a lie (validation.screen refuses it)."""
    (_, y_train), _ = _raw(data.source, cache_dir)
    return max(len(part) for part in _partitions(data, y_train))


def _partitions(data: DataSettings, y_train: np.ndarray) -> list[np.ndarray]:
    """Every contributor's training indices: the pool left after the creator's holdout,
    partitioned as the task says."""
    _, pool = holdout_and_pool(len(y_train), data.holdout_examples, data.seed)
    parts = partition_indices(
        y_train[pool],
        data.num_partitions,
        data.partition,
        data.seed,
        classes_per_partition=data.classes_per_contributor,
        alpha=data.alpha,
    )
    return [pool[part] for part in parts]


def creator_holdout(
    holdout_examples: int,
    seed: int,
    cache_dir: Path | str | None = None,
    source: str = "mnist",
    preprocessing: Mapping[str, object] | None = None,
    shared_slice: int = 0,
) -> Split:
    """What the creator validates on: its held-out split less the shared slice."""
    (x_train, y_train), _ = _raw(source, cache_dir)
    _, kept = slice_and_validation(len(y_train), holdout_examples, shared_slice, seed)
    return _prepare(x_train[kept], source, preprocessing), y_train[kept]


def shared_slice_examples(
    holdout_examples: int,
    shared_slice: int,
    seed: int,
    cache_dir: Path | str | None = None,
    source: str = "mnist",
) -> Split:
    """The shared slice, raw as the dataset ships it (the package carries data, and each
    contributor applies the task's preprocessing, as to its own data)."""
    (x_train, y_train), _ = _raw(source, cache_dir)
    chosen, _ = slice_and_validation(len(y_train), holdout_examples, shared_slice, seed)
    return x_train[chosen], y_train[chosen]


def test_split(
    cache_dir: Path | str | None = None,
    source: str = "mnist",
    preprocessing: Mapping[str, object] | None = None,
) -> Split:
    _, (x_test, y_test) = _raw(source, cache_dir)
    return _prepare(x_test, source, preprocessing), y_test
