"""Aggregation benchmark: our FedAvg / Average (numpy, in place) vs the seed's TensorFlow mean,
and the cost of the robust rules (median, trimmed mean, Krum, Multi-Krum, norm clipping).

Run from the project root:

    .venv/bin/python bench/bench_aggregation.py

The seed (DecentralML's model_creator.py) averaged each layer with
``tf.reduce_mean(<tuple of the clients' tensors>, axis=0)``; here that is written as
``tf.reduce_mean(tf.stack(layer), axis=0)`` per layer, on the same N weight lists of the seed
model (Flatten · Dense(128) · Dense(10), 407 kB) that our strategies get, in the same run.

Reported per N (10, 50, 100):
- median wall time of FedAvg (example-weighted), Average (unweighted) and the seed's mean;
- peak memory of the numpy path measured by tracemalloc (numpy allocations are traced);
- the peak-RSS increase of one call of each path, because tracemalloc does not see
  TensorFlow's allocator. psutil is not a dependency of the project, so this reads Linux's
  /proc/self/status (VmHWM, reset through /proc/self/clear_refs); each measurement runs in a
  fresh subprocess (inputs loaded, one warm-up call on N=2, glibc's free lists returned with
  malloc_trim) so that memory freed earlier and kept by malloc does not hide the growth.
  Without /proc the columns say "n/a";
- max |Average − seed mean| over all weights (must be <= 1e-6), and max |FedAvg − float64
  reference| as a correctness check.

A second table gives, per N, the median wall time (over ROBUST_REPEATS runs) and the
tracemalloc peak of each robust rule on the same inputs: they materialize the round and stack
one tensor at a time in float64; Krum's pairwise distances cost O(N² · model size).

The inputs are all in memory before timing starts (the seed needs them that way); the creator
itself streams contributions, which the memory test in tests/test_strategies.py covers.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from decentralml.strategies import (
    Average,
    Contribution,
    FedAvg,
    Krum,
    Median,
    MultiKrum,
    NormClipped,
    Strategy,
    TrimmedMean,
)

SIZES = (10, 50, 100)
REPEATS = 11
ROBUST_REPEATS = 3
ROBUST: dict[str, Strategy] = {
    "median": Median(),
    "trimmed_mean": TrimmedMean(0.2),
    "krum": Krum(byzantine=1),
    "multi_krum": MultiKrum(byzantine=1),
    "clip+fedavg": NormClipped(FedAvg(), 2.0),
}
MB = 1024 * 1024


def _status_kb(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        return False
    return True


def _return_free_memory_to_the_os() -> None:
    """glibc keeps freed blocks for reuse; without this a new peak can hide inside them."""
    name = ctypes.util.find_library("c")
    if name:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(name).malloc_trim(0)


def peak_rss_increase(run: Callable[[], object]) -> float | None:
    """MB the resident set grew above its level at the start of ``run`` (None: unmeasurable)."""
    _return_free_memory_to_the_os()
    if not _reset_peak_rss():
        return None
    before = _status_kb("VmRSS")
    result = run()
    peak = _status_kb("VmHWM")
    del result
    if before is None or peak is None:
        return None
    return max(peak - before, 0) / 1024


def traced_peak(run: Callable[[], object]) -> float:
    """MB of the highest traced Python/numpy allocation during ``run``."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del result
    return peak / MB


def median_ms(run: Callable[[], object], repeats: int = REPEATS) -> float:
    run()  # warm-up (TensorFlow traces and allocates on first use)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def seed_weight_lists(n: int) -> tuple[list[str], list[list[np.ndarray]], list[int]]:
    """N perturbed copies of the seed model's weights, as the seed's get_weights() lists.

    The round's global weights are the unperturbed ones: ``global_tensors(n)``."""
    from decentralml.models import build_model, model_tensors

    base = model_tensors(build_model("mnist_mlp"))
    rng = np.random.default_rng(n)
    lists = [
        [(t + rng.normal(0, 0.01, t.shape)).astype(np.float32) for t in base.values()]
        for _ in range(n)
    ]
    counts = [int(c) for c in rng.integers(100, 12_000, size=n)]
    return list(base), lists, counts


def global_tensors() -> dict[str, np.ndarray]:
    """The seed model's initial weights, from which seed_weight_lists perturbs its copies."""
    from decentralml.models import build_model, model_tensors

    return model_tensors(build_model("mnist_mlp"))


def contributions_of(
    names: list[str], lists: list[list[np.ndarray]], counts: list[int]
) -> list[Contribution]:
    return [
        Contribution(dict(zip(names, w, strict=True)), c)
        for w, c in zip(lists, counts, strict=True)
    ]


def seed_mean(lists: list[list[np.ndarray]]) -> list[np.ndarray]:
    """The seed's federate_contributors_model: a TensorFlow mean per layer."""
    import tensorflow as tf

    return [tf.reduce_mean(tf.stack(layer), axis=0).numpy() for layer in zip(*lists, strict=True)]


def fedavg_of(names: list[str], lists: list[list[np.ndarray]], counts: list[int]) -> dict:
    return FedAvg().aggregate(
        1,
        {},  # FedAvg does not read the global weights
        (
            Contribution(dict(zip(names, w, strict=True)), c)
            for w, c in zip(lists, counts, strict=True)
        ),
    )


def measure_rss_in_child(path: str, n: int) -> None:
    """Child mode: print the peak-RSS growth (MB) of one call of ``path`` on N weight lists."""
    names, lists, counts = seed_weight_lists(n)
    small_names, small_lists, small_counts = seed_weight_lists(2)
    if path == "fedavg":
        fedavg_of(small_names, small_lists, small_counts)
        growth = peak_rss_increase(lambda: fedavg_of(names, lists, counts))
    else:
        seed_mean(small_lists)
        growth = peak_rss_increase(lambda: seed_mean(lists))
    print("n/a" if growth is None else f"{growth:.1f}")


def weighted_reference(lists: list[list[np.ndarray]], counts: list[int]) -> list[np.ndarray]:
    """Σ (n_k / n) w_k per layer in float64 from fully stacked inputs."""
    weights = np.array(counts, dtype=np.float64) / sum(counts)
    return [
        np.tensordot(weights, np.stack(layer).astype(np.float64), 1)
        for layer in zip(*lists, strict=True)
    ]


def rss_growth(path: str, n: int) -> str:
    out = subprocess.run(
        [sys.executable, __file__, "--rss", path, str(n)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return out.stdout.strip().splitlines()[-1]


def main() -> None:
    import tensorflow as tf

    header = (
        f"{'N':>4} {'FedAvg ms':>10} {'Average ms':>11} {'seed TF ms':>11} {'TF/FedAvg':>10} "
        f"{'numpy peak MB':>14} {'numpy dRSS MB':>14} {'TF dRSS MB':>11} "
        f"{'|Avg-TF|':>9} {'|FedAvg-ref|':>13}"
    )
    rss_note = "" if _reset_peak_rss() else " (peak RSS unavailable: no /proc/self/clear_refs)"
    print(f"numpy {np.__version__}, tensorflow {tf.__version__}, {REPEATS} runs, median{rss_note}")
    rows = []
    for n in SIZES:
        names, lists, counts = seed_weight_lists(n)
        model_mb = sum(t.nbytes for t in lists[0]) / MB

        def fedavg(names=names, lists=lists, counts=counts) -> dict[str, np.ndarray]:
            return fedavg_of(names, lists, counts)

        def average(names=names, lists=lists) -> dict[str, np.ndarray]:
            return Average().aggregate(
                1, {}, (Contribution(dict(zip(names, w, strict=True)), 1) for w in lists)
            )

        def seed(lists=lists) -> list[np.ndarray]:
            return seed_mean(lists)

        fedavg_ms, average_ms, seed_ms = median_ms(fedavg), median_ms(average), median_ms(seed)
        numpy_traced = traced_peak(fedavg)
        numpy_rss, tf_rss = rss_growth("fedavg", n), rss_growth("seed", n)

        ours, theirs = average(), seed()
        mean_diff = max(
            float(np.max(np.abs(ours[name].astype(np.float64) - t.astype(np.float64))))
            for name, t in zip(names, theirs, strict=True)
        )
        weighted = fedavg()
        fedavg_diff = max(
            float(np.max(np.abs(weighted[name] - reference)))
            for name, reference in zip(names, weighted_reference(lists, counts), strict=True)
        )
        if mean_diff > 1e-6:
            raise SystemExit(f"N={n}: Average and the seed's mean differ by {mean_diff:.2e} > 1e-6")

        rows.append(
            f"{n:>4} {fedavg_ms:>10.2f} {average_ms:>11.2f} {seed_ms:>11.2f} "
            f"{seed_ms / fedavg_ms:>9.1f}x {numpy_traced:>14.2f} {numpy_rss:>14} "
            f"{tf_rss:>11} {mean_diff:>9.1e} {fedavg_diff:>13.1e}"
        )
        inputs_mb = model_mb * n
        rows[-1] += f"   (model {model_mb:.2f} MB, inputs {inputs_mb:.0f} MB)"
    print(header)
    print("\n".join(rows))
    print(
        "numpy peak = tracemalloc peak of FedAvg over the already-loaded inputs (float64 "
        "accumulator + temporaries + output); dRSS = peak resident-set growth during one call, "
        "each in a fresh process (TensorFlow's allocations are invisible to tracemalloc)."
    )
    robust_table()


def robust_table() -> None:
    """Wall time and traced peak of each robust rule on the same inputs as above."""
    g = global_tensors()
    print(f"\nrobust rules: median of {ROBUST_REPEATS} runs, ms / tracemalloc peak MB")
    print(f"{'N':>4} " + " ".join(f"{name:>20}" for name in ROBUST))
    for n in SIZES:
        contributions = contributions_of(*seed_weight_lists(n))
        cells = []
        for strategy in ROBUST.values():

            def run(strategy=strategy, contributions=contributions) -> dict[str, np.ndarray]:
                return strategy.aggregate(1, g, contributions)

            ms = median_ms(run, ROBUST_REPEATS)
            cells.append(f"{ms:>9.1f} / {traced_peak(run):>6.2f} MB")
        print(f"{n:>4} " + " ".join(f"{cell:>20}" for cell in cells))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--rss":
        measure_rss_in_child(sys.argv[2], int(sys.argv[3]))
    else:
        main()
