"""Deterministic partitions of a training set among the contributors of a round.

Contributor ``i`` of ``n`` calls :func:`partition_for` with the same ``(labels, n, scheme, seed)``
as every other contributor and gets its own slice; the slices are disjoint and every contributor
computes the same split without talking to the others. Four schemes:

``"iid"``
    A seeded permutation cut into ``n`` parts whose sizes differ by at most one.
``"shards"``
    The pathological non-IID split of McMahan et al. 2017, "Communication-Efficient Learning of
    Deep Networks from Decentralized Data" (FedAvg, section 3): sort by label, cut into
    ``n * k`` shards, give each partition ``k`` shards picked at random. One difference: the
    shards are cut inside each class (equal within a class, so sizes differ by the class sizes)
    rather than across class boundaries, so a partition holds at most ``k`` classes (fewer when
    it draws two shards of one class). With 10 partitions and ``k = 2`` the random pairing gives
    many distinct class pairs, as in the paper.
``"shards-disjoint"``
    The harsher variant kept as a named case (the ``shards`` of earlier versions): the same
    class-wise shards dealt round-robin so that every partition holds exactly ``k`` distinct
    classes; with 10 partitions and ``k = 2`` on MNIST that is only 5 distinct class pairs,
    each held by two partitions. When ``n * k`` is smaller than the number of classes, both
    shard schemes give each partition ``ceil(C / n)`` or ``floor(C / n)`` whole classes so
    that all data is used.
``"dirichlet"``
    Per-class proportions drawn from Dirichlet(``alpha``), as in Hsu et al. 2019, "Measuring the
    Effects of Non-Identical Data Distribution for Federated Visual Classification", with the
    capacity cap and minimum-size resampling of Li et al. 2022 (NIID-Bench). Smaller ``alpha``
    means more skew. Every partition holds at least ``min_size`` examples.

Every partition is returned as sorted ``int64`` indices into ``labels``.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["SCHEMES", "label_histogram", "partition_for", "partition_indices"]

logger = logging.getLogger(__name__)

SCHEMES: tuple[str, ...] = ("iid", "shards", "shards-disjoint", "dirichlet")
"""The partition schemes :func:`partition_indices` knows."""

DEFAULT_CLASSES_PER_PARTITION = 2
DEFAULT_ALPHA = 0.5
DEFAULT_MIN_SIZE = 10
DEFAULT_MAX_ATTEMPTS = 100


def partition_indices(
    labels: ArrayLike,
    num_partitions: int,
    scheme: str,
    seed: int,
    *,
    classes_per_partition: int = DEFAULT_CLASSES_PER_PARTITION,
    alpha: float = DEFAULT_ALPHA,
    min_size: int = DEFAULT_MIN_SIZE,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> list[NDArray[np.int64]]:
    """Split the indices of ``labels`` into ``num_partitions`` disjoint, deterministic parts.

    Args:
        labels: 1-D array of non-negative integer class labels (e.g. MNIST ``y_train``).
        num_partitions: number of contributors ``n`` (>= 1, at most ``len(labels)``).
        scheme: one of :data:`SCHEMES` (``"iid"``, ``"shards"``, ``"shards-disjoint"``,
            ``"dirichlet"``).
        seed: integer seed; the same ``(labels, num_partitions, scheme, seed, options)`` always
            gives the same partitions.
        classes_per_partition: the shard schemes only: shards (and so at most classes) per
            partition ``k`` (default 2, at most the number of distinct labels).
        alpha: ``"dirichlet"`` only: concentration (> 0, default 0.5); smaller is more skewed.
        min_size: ``"dirichlet"`` only: smallest allowed partition (default 10).
        max_attempts: ``"dirichlet"`` only: draws tried before giving up (default 100).

    Returns:
        ``num_partitions`` sorted ``int64`` index arrays, pairwise disjoint, whose union is
        ``range(len(labels))`` for every scheme.

    Raises:
        ValueError: an argument is out of range, the scheme is unknown, or the data is too
            small for the request (the message says which and what to change).
    """
    y = _check_labels(labels)
    n = _check_int("num_partitions", num_partitions, minimum=1)
    if n > y.size:
        raise ValueError(
            f"num_partitions={n} is larger than the number of examples ({y.size}): "
            "every partition needs at least one example; use fewer partitions"
        )
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        raise ValueError(f"unknown partition scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    rng = np.random.default_rng(_check_int("seed", seed, minimum=0))

    if scheme == "iid":
        parts = _iid(y, n, rng)
    elif scheme in ("shards", "shards-disjoint"):
        k = _check_int("classes_per_partition", classes_per_partition, minimum=1)
        deal = _deal_random if scheme == "shards" else _deal_round_robin
        parts = deal(_class_shards(y, n, k, rng), n, rng)
    else:
        a = _check_alpha(alpha)
        m = _check_int("min_size", min_size, minimum=1)
        attempts = _check_int("max_attempts", max_attempts, minimum=1)
        parts = _dirichlet(y, n, a, m, attempts, rng)

    result = [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    empty = [i for i, p in enumerate(result) if p.size == 0]
    if empty:  # only reachable with tiny label sets; never silently hand out nothing
        raise ValueError(
            f"scheme {scheme!r} left partitions {empty} empty with {y.size} examples and "
            f"{n} partitions; use fewer partitions or more data"
        )
    return result


def partition_for(
    labels: ArrayLike,
    index: int,
    num_partitions: int,
    scheme: str,
    seed: int,
    **options: Any,
) -> NDArray[np.int64]:
    """The indices of partition ``index`` (0-based) of :func:`partition_indices`.

    ``options`` are passed on (``classes_per_partition``, ``alpha``, ``min_size``,
    ``max_attempts``). Raises ValueError when ``index`` is not in ``[0, num_partitions)``.
    """
    n = _check_int("num_partitions", num_partitions, minimum=1)
    i = _check_int("index", index, minimum=0)
    if i >= n:
        raise ValueError(f"index={i} is out of range for num_partitions={n}: use 0..{n - 1}")
    return partition_indices(labels, n, scheme, seed, **options)[i]


# --- schemes -------------------------------------------------------------------------------


def _iid(y: NDArray[np.int64], n: int, rng: np.random.Generator) -> list[NDArray[np.int64]]:
    return list(np.array_split(rng.permutation(y.size), n))


def _class_shards(
    y: NDArray[np.int64], n: int, k: int, rng: np.random.Generator
) -> list[NDArray[np.int64]]:
    """The ``max(n * k, C)`` shards, laid out class after class (classes in a seeded order),
    each class cut into at most ``n`` shards of equal size."""
    classes, counts = np.unique(y, return_counts=True)
    c = classes.size
    if k > c:
        raise ValueError(
            f"classes_per_partition={k} is more than the {c} classes present in the labels; "
            f"use at most {c}"
        )
    if n * k < c:
        logger.info(
            "shards: %d partitions x %d classes < %d classes; each partition gets %d-%d whole "
            "classes so that all data is used",
            n,
            k,
            c,
            c // n,
            -(-c // n),
        )
    shards_per_class = _shards_per_class(counts, total=max(n * k, c), cap=n)
    layout: list[NDArray[np.int64]] = []
    for ci in rng.permutation(c):
        members = np.flatnonzero(y == classes[ci])
        members = members[rng.permutation(members.size)]
        layout.extend(np.array_split(members, int(shards_per_class[ci])))
    return layout


def _deal_round_robin(
    layout: list[NDArray[np.int64]], n: int, rng: np.random.Generator
) -> list[NDArray[np.int64]]:
    """``shards-disjoint``: partition p gets layout positions p, p + n, p + 2n, ... A class
    occupies a run of at most n consecutive positions, so no partition gets a class twice."""
    owner = rng.permutation(n)  # which partition takes which round-robin seat
    parts: list[list[NDArray[np.int64]]] = [[] for _ in range(n)]
    for pos, shard in enumerate(layout):
        parts[owner[pos % n]].append(shard)
    return [np.concatenate(p) if p else np.empty(0, dtype=np.int64) for p in parts]


def _deal_random(
    layout: list[NDArray[np.int64]], n: int, rng: np.random.Generator
) -> list[NDArray[np.int64]]:
    """``shards``: McMahan et al.'s random pairing, the shards shuffled and dealt ``k`` each
    (when there are more shards than ``n * k``, the first partitions get one more)."""
    order = rng.permutation(len(layout))
    return [
        np.concatenate([layout[j] for j in order[p::n]])
        if order[p::n].size
        else np.empty(0, dtype=np.int64)
        for p in range(n)
    ]


def _shards_per_class(counts: NDArray[np.int64], *, total: int, cap: int) -> NDArray[np.int64]:
    """Shards per class: one each, the rest to the class whose shards are currently largest.

    At most ``cap`` (the number of partitions) and at most the class size, so that every shard
    is non-empty and no partition can receive a class twice. The sum is ``total`` when the data
    allows it.
    """
    limit = np.minimum(counts, cap)
    s = np.ones_like(counts)
    for _ in range(total - counts.size):
        room = s < limit
        if not room.any():
            break
        size = np.where(room, counts / s, -1.0)
        s[int(np.argmax(size))] += 1
    return s


def _dirichlet(
    y: NDArray[np.int64],
    n: int,
    alpha: float,
    min_size: int,
    max_attempts: int,
    rng: np.random.Generator,
) -> list[NDArray[np.int64]]:
    if n * min_size > y.size:
        raise ValueError(
            f"dirichlet: {n} partitions x min_size={min_size} needs {n * min_size} examples, "
            f"only {y.size} given; lower min_size or num_partitions"
        )
    classes = np.unique(y)
    members = [np.flatnonzero(y == cls) for cls in classes]
    capacity = y.size / n
    smallest = 0
    for attempt in range(1, max_attempts + 1):
        parts: list[list[int]] = [[] for _ in range(n)]
        for idx in members:
            idx = idx[rng.permutation(idx.size)]
            p = rng.dirichlet(np.full(n, alpha))
            # NIID-Bench cap: a partition already at its fair share takes no more of this class.
            sizes = np.fromiter((len(q) for q in parts), dtype=np.int64, count=n)
            p = p * (sizes < capacity)
            total = p.sum()
            p = p / total if total > 0 else np.full(n, 1.0 / n)
            cuts = (np.cumsum(p) * idx.size).astype(np.int64)[:-1]
            for q, chunk in zip(parts, np.split(idx, cuts), strict=True):
                q.extend(chunk.tolist())
        smallest = min(len(q) for q in parts)
        if smallest >= min_size:
            if attempt > 1:
                logger.debug("dirichlet: min_size=%d reached on attempt %d", min_size, attempt)
            return [np.asarray(q, dtype=np.int64) for q in parts]
    raise ValueError(
        f"dirichlet(alpha={alpha}) could not give all {n} partitions >= {min_size} examples in "
        f"{max_attempts} attempts (smallest last time: {smallest}); raise alpha, lower min_size "
        "or num_partitions, or allow more max_attempts"
    )


# --- argument checks -----------------------------------------------------------------------


def _check_labels(labels: ArrayLike) -> NDArray[np.int64]:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be a 1-D array of class ids, got shape {y.shape}")
    if y.size == 0:
        raise ValueError("labels is empty: there is nothing to partition")
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must hold integer class ids, got dtype {y.dtype}")
    if y.min() < 0:
        raise ValueError(f"labels must be non-negative class ids, found {int(y.min())}")
    return y.astype(np.int64, copy=False)


def _check_int(name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {int(value)}")
    return int(value)


def _check_alpha(alpha: object) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise ValueError(f"alpha must be a positive number, got {alpha!r}")
    a = float(alpha)
    if not np.isfinite(a) or a <= 0:
        raise ValueError(f"alpha must be > 0 (smaller means more skew), got {alpha!r}")
    return a


def label_histogram(
    labels: ArrayLike, parts: Sequence[ArrayLike], num_classes: int | None = None
) -> NDArray[np.int64]:
    """Counts per (partition, class): a ``(len(parts), num_classes)`` matrix, for reports."""
    y = _check_labels(labels)
    c = int(y.max()) + 1 if num_classes is None else num_classes
    return np.stack([np.bincount(y[np.asarray(p, dtype=np.int64)], minlength=c) for p in parts])
