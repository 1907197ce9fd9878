"""Aggregation benchmark (issue 10, target 3): FedAvg against the memory bandwidth, the
seed's original method and Flower's formula; verified aggregation against sha256 alone; then
the cost of the robust rules (median, trimmed mean, Krum, Multi-Krum, norm clipping).

Run from the project root (about 2 minutes; also ``make bench``):

    .venv/bin/python bench/bench_aggregation.py

Every figure is a ratio to a baseline measured in the same run, on the same bytes, in turns
(baseline, ours, baseline, ours, ...) so that a shared machine's load hits both alike:

- FedAvg (``FedAvg().aggregate`` over N in-memory results, example-weighted) as % of a plain
  ``np.add(acc, x, out=acc)`` over the same N results (the memory bandwidth of the same
  traffic), for N = 10, 50, 100 results of the seed model (Flatten · Dense(128) · Dense(10),
  0.39 MB) and N = 10 of a 10 M-parameter model (Dense 3000·3000 + 3000·333, 40 MB);
- extra memory: the tracemalloc peak of FedAvg over inputs already in memory, in models;
- streaming memory: FedAvg and Average over 5 and 50 results of a 4 MB model made one at a
  time (as the creator loads them), the tracemalloc peak beyond what producing the stream
  costs, in models: the accumulator that becomes the output, about one model (bound: under
  1.25), whatever the number of results; the control is the same 50 results kept in a list;
- precision: max |FedAvg − float64 reference| (the reference computed from stacked inputs);
- speed-up against the original method, as the seed did it: the results' weights set into N
  Keras models (built beforehand, not timed), then ``tf.reduce_mean`` per layer over their
  stacked ``trainable_variables`` (also reported: the reduce alone, models already loaded);
  and against Flower's ``aggregate`` formula
  (flwr/server/strategy/aggregate.py, Apache-2.0, re-stated in ``flower_aggregate``): flwr
  1.42 itself cannot share this venv (it would downgrade protobuf 7 to 6, fastapi, starlette,
  uvicorn, typer and rich under Prefect and TensorFlow), so its three-line formula is run;
- verified aggregation of 100 seed-model results written to files first
  (``validation.streaming.aggregate_verified`` through the project's ``ArtifactStore``: read,
  sha256, decode as views, layout and finite checks, accumulate) as % of the throughput of
  sha256 alone over the same bytes already in memory, and of reading + hashing them
  (``ArtifactStore.get`` with the digest).

The last line is one JSON object with every figure and ratio.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from functools import reduce
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from decentralml.io.storage import ArtifactStore
from decentralml.io.weights import encode, layout_bytes, layout_of
from decentralml.protocol.records import ResultSubmissionStatus, Submission, TaskResult
from decentralml.simulation.streaming import aggregate_verified
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
from decentralml.validation.base import RESULT_HEADER_ALLOWANCE

SEED_SIZES = (10, 50, 100)
BIG_N = 10
BIG_SHAPES = {"000.kernel": (3000, 3000), "001.bias": (3000,), "002.kernel": (3000, 333),
              "003.bias": (333,)}  # fmt: skip
VERIFIED_N = 100
# 4 MB, the seed's MLP with a wider hidden layer (784·1270 float32): large enough that a model
# stands out of the interpreter's own allocations in the traced peak.
STREAM_SHAPES = {"000.kernel": (784, 1270), "001.bias": (1270,), "002.kernel": (1270, 10),
                 "003.bias": (10,)}  # fmt: skip
STREAM_SIZES = (5, 50)
REPEATS = 7
SLOW_REPEATS = 3
ROBUST_REPEATS = 3
ROBUST: dict[str, Strategy] = {
    "median": Median(),
    "trimmed_mean": TrimmedMean(0.2),
    "krum": Krum(byzantine=1),
    "multi_krum": MultiKrum(byzantine=1),
    "clip+fedavg": NormClipped(FedAvg(), 2.0),
}
MB = 1024 * 1024
Weights = dict[str, np.ndarray]


def median_ms(run: Callable[[], object], repeats: int = REPEATS) -> float:
    run()  # warm-up (imports, TensorFlow traces, first-touch of buffers)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def interleaved_ms(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median ms of each run, measured in turns (a, b, c, a, b, c, ...): on a shared machine the
    load changes within seconds, and turns give every run the same share of it."""
    for run in runs.values():
        run()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1000 for name, t in times.items()}


def traced_peak(run: Callable[[], object]) -> int:
    """Bytes of the highest traced Python/numpy allocation during ``run``."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del result
    return peak


def seed_shapes() -> dict[str, tuple[int, ...]]:
    from decentralml.ml.models import build_model, model_tensors

    return {n: t.shape for n, t in model_tensors(build_model("mnist_mlp")).items()}


def results_of(shapes: dict[str, tuple[int, ...]], n: int, seed: int) -> list[Contribution]:
    """N float32 results around a common model, with example counts as contributors claim."""
    rng = np.random.default_rng(seed)
    base = {k: rng.standard_normal(s, dtype=np.float32) * 0.05 for k, s in shapes.items()}
    counts = rng.integers(100, 12_000, size=n)
    return [
        Contribution(
            {k: t + rng.standard_normal(t.shape, dtype=np.float32) * 0.01 for k, t in base.items()},
            int(c),
        )
        for c in counts
    ]


def plain_add(results: list[Contribution]) -> Weights:
    """The bandwidth baseline: np.add(acc, x, out=acc) over the same results, no weights."""
    first = results[0].tensors
    acc = {k: t.copy() for k, t in first.items()}
    for contribution in results[1:]:
        for k, a in acc.items():
            np.add(a, contribution.tensors[k], out=a)
    return acc


def flower_aggregate(results: list[tuple[list[np.ndarray], int]]) -> list[np.ndarray]:
    """Flower's ``aggregate`` (flwr/server/strategy/aggregate.py, Apache-2.0,
    https://github.com/adap/flower), its formula re-stated: each layer times its example count,
    summed with functools.reduce(np.add), divided by the total. Like ours, it sums in the
    inputs' dtype (float32 times a Python int stays float32)."""
    total = sum(count for _, count in results)
    scaled = [[layer * count for layer in weights] for weights, count in results]
    return [reduce(np.add, layers) / total for layers in zip(*scaled, strict=True)]


def float64_reference(results: list[Contribution]) -> Weights:
    w = np.array([c.num_examples for c in results], dtype=np.float64)
    w /= w.sum()
    return {
        k: np.tensordot(w, np.stack([c.tensors[k] for c in results]).astype(np.float64), 1)
        for k in results[0].tensors
    }


def keras_models(shapes: dict[str, tuple[int, ...]], n: int) -> list:
    """N Keras models of the results' architecture (built once, outside the timing)."""
    import keras

    kernels = [s for s in shapes.values() if len(s) == 2]
    return [
        keras.Sequential(
            [keras.Input((kernels[0][0],))] + [keras.layers.Dense(k[1]) for k in kernels]
        )
        for _ in range(n)
    ]


def load_into(models: list, results: list[Contribution]) -> list:
    """The seed's loading step: each result's weights set into its own Keras model."""
    for model, contribution in zip(models, results, strict=True):
        model.set_weights(list(contribution.tensors.values()))
    return models


def original_mean(models: list) -> list[np.ndarray]:
    """The seed's federate_contributors_model: tf.reduce_mean over the models' stacked
    trainable variables, layer by layer."""
    import tensorflow as tf

    layers = zip(*(m.trainable_variables for m in models), strict=True)
    # Keras 3 wraps each tf.Variable (the seed's Keras 2 exposed it): .value is that variable.
    return [tf.reduce_mean(tf.stack([v.value for v in layer]), axis=0).numpy() for layer in layers]


def fedavg_row(label: str, shapes: dict[str, tuple[int, ...]], n: int) -> dict[str, object]:
    results = results_of(shapes, n, seed=n)
    model_bytes = sum(t.nbytes for t in results[0].tensors.values())

    def fedavg() -> Weights:
        return FedAvg().aggregate(1, {}, results)

    flower_input = [(list(c.tensors.values()), c.num_examples) for c in results]
    models = keras_models(shapes, n)
    fast = interleaved_ms(
        {
            "add": lambda: plain_add(results),
            "fedavg": fedavg,
            "flower": lambda: flower_aggregate(flower_input),
        },
        REPEATS,
    )
    add_ms, fedavg_ms, flower_ms = fast["add"], fast["fedavg"], fast["flower"]
    slow = interleaved_ms(
        {
            "original": lambda: original_mean(load_into(models, results)),
            "reduce": lambda: original_mean(models),
        },
        SLOW_REPEATS,
    )
    original_ms, reduce_only_ms = slow["original"], slow["reduce"]
    fedavg()  # imports done: the peak below is the aggregation's own
    extra_models = traced_peak(fedavg) / model_bytes

    ours, reference = fedavg(), float64_reference(results)
    error = max(float(np.max(np.abs(ours[k] - reference[k]))) for k in reference)
    scale = max(float(np.max(np.abs(reference[k]))) for k in reference)
    average = Average().aggregate(1, {}, results)
    tf_mean = original_mean(models)
    tf_diff = max(
        float(np.max(np.abs(average[k] - t))) for k, t in zip(average, tf_mean, strict=True)
    )
    flower = flower_aggregate(flower_input)
    flower_diff = max(float(np.max(np.abs(ours[k] - f))) for k, f in zip(ours, flower, strict=True))
    models.clear()  # free the Keras models before the next size
    return {
        "model": label,
        "n": n,
        "model_mb": model_bytes / MB,
        "add_ms": add_ms,
        "add_gb_s": n * model_bytes / add_ms / 1e6,
        "fedavg_ms": fedavg_ms,
        "fedavg_pct_of_add": 100 * add_ms / fedavg_ms,
        "extra_memory_models": extra_models,
        "max_abs_error": error,
        "max_rel_error": error / scale,
        "original_ms": original_ms,
        "speedup_vs_original": original_ms / fedavg_ms,
        "original_reduce_only_ms": reduce_only_ms,
        "speedup_vs_original_reduce_only": reduce_only_ms / fedavg_ms,
        "flower_ms": flower_ms,
        "speedup_vs_flower": flower_ms / fedavg_ms,
        "average_vs_original_max_diff": tf_diff,
        "fedavg_vs_flower_max_diff": flower_diff,
    }


def verified_row(shapes: dict[str, tuple[int, ...]], n: int, folder: Path) -> dict[str, object]:
    """Verified aggregation of n results from files against sha256 over the same bytes."""
    store = ArtifactStore(folder.as_uri())
    results = results_of(shapes, n, seed=7)
    layout = layout_of(results[0].tensors)
    max_bytes = layout_bytes(layout) + RESULT_HEADER_ALLOWANCE
    submissions, payloads = [], []
    for i, contribution in enumerate(results):
        data = encode(contribution.tensors)
        stored = store.put(store.url_for(f"submission-{i}.safetensors"), data)
        result = TaskResult(stored.url, stored.sha256, contribution.num_examples)
        submissions.append(
            Submission(i, 0, f"w{i}", ResultSubmissionStatus.PendingValidation, 0, result)
        )
        payloads.append(data)
    del results
    total_bytes = sum(len(p) for p in payloads)

    def location(submission: Submission) -> str:
        return store.url_for(f"submission-{submission.submission_id}.safetensors")

    def fetch(url: str, digest: str) -> bytes:
        return store.get(url, digest, max_bytes)

    def verified() -> object:
        outcome = aggregate_verified(
            FedAvg(), 1, {}, submissions, fetch, location, layout, max_bytes
        )
        assert len(outcome.accepted) == n and outcome.new_global is not None
        return outcome

    measured = interleaved_ms(
        {
            "sha256": lambda: [hashlib.sha256(p).digest() for p in payloads],
            "read_sha256": lambda: [fetch(location(s), s.result.sha256) for s in submissions],
            "verified": verified,
        },
        REPEATS,
    )
    sha_ms, read_sha_ms, verified_ms = (
        measured["sha256"], measured["read_sha256"], measured["verified"]
    )  # fmt: skip
    model_bytes = layout_bytes(layout)
    verified()
    peak = traced_peak(verified)
    return {
        "n": n,
        "mb": total_bytes / MB,
        "sha256_ms": sha_ms,
        "sha256_gb_s": total_bytes / sha_ms / 1e6,
        "read_sha256_ms": read_sha_ms,
        "verified_ms": verified_ms,
        "verified_pct_of_sha256": 100 * sha_ms / verified_ms,
        "verified_pct_of_read_sha256": 100 * read_sha_ms / verified_ms,
        "memory_peak_models": peak / model_bytes,
    }


def stream_of(shapes: dict[str, tuple[int, ...]], n: int) -> Iterator[Contribution]:
    """N results made one at a time, as the creator loads them: the producer keeps none."""
    rng = np.random.default_rng(7)
    for i in range(n):
        tensors = {k: rng.standard_normal(s, dtype=np.float32) for k, s in shapes.items()}
        yield Contribution(tensors, num_examples=100 + i)


def stream_alone(shapes: dict[str, tuple[int, ...]], n: int) -> None:
    """The stream's own cost: each result made, then dropped before the next one is made."""
    for contribution in stream_of(shapes, n):
        del contribution


def streaming_row(shapes: dict[str, tuple[int, ...]]) -> dict[str, object]:
    """The traced peak of FedAvg and Average over a stream of results beyond the stream's own
    cost, in models, for each of STREAM_SIZES; and the control, the largest stream in a list.
    A rule that kept every result would show about N models here; folding each in as it
    comes, only the accumulator stays."""
    model_bytes = sum(int(np.prod(s)) * 4 for s in shapes.values())
    row: dict[str, object] = {"model_mb": model_bytes / MB}
    for strategy in (FedAvg(), Average()):
        strategy.aggregate(1, {}, stream_of(shapes, 2))  # imports (scipy's BLAS) are traced too
        for n in STREAM_SIZES:
            peak = traced_peak(lambda s=strategy, n=n: s.aggregate(1, {}, stream_of(shapes, n)))
            own = traced_peak(lambda n=n: stream_alone(shapes, n))
            row[f"{strategy.name}_extra_models_{n}"] = (peak - own) / model_bytes
    largest = max(STREAM_SIZES)
    row[f"list_of_{largest}_models"] = traced_peak(lambda: list(stream_of(shapes, largest))) / (
        model_bytes
    )
    return row


def main() -> None:
    import tensorflow as tf

    print(f"numpy {np.__version__}, tensorflow {tf.__version__}; median of {REPEATS} runs "
          f"({SLOW_REPEATS} for the original method), measured in turns")  # fmt: skip
    seed = seed_shapes()
    rows = [fedavg_row("seed", seed, n) for n in SEED_SIZES]
    rows.append(fedavg_row("10M", BIG_SHAPES, BIG_N))
    print(
        f"{'model':>5} {'N':>4} {'add ms':>8} {'GB/s':>5} {'FedAvg ms':>9} {'% of add':>8} "
        f"{'extra mem':>9} {'max err':>8} {'orig TF ms':>10} {'x orig':>7} {'Flower ms':>9} "
        f"{'x Flower':>8} {'reduce ms':>9} {'x reduce':>8}"
    )
    for r in rows:
        print(
            f"{r['model']:>5} {r['n']:>4} {r['add_ms']:>8.2f} {r['add_gb_s']:>5.1f} "
            f"{r['fedavg_ms']:>9.2f} {r['fedavg_pct_of_add']:>7.0f}% "
            f"{r['extra_memory_models']:>7.2f} m {r['max_abs_error']:>8.1e} "
            f"{r['original_ms']:>10.1f} {r['speedup_vs_original']:>6.0f}x "
            f"{r['flower_ms']:>9.2f} {r['speedup_vs_flower']:>7.1f}x "
            f"{r['original_reduce_only_ms']:>9.1f} {r['speedup_vs_original_reduce_only']:>7.1f}x"
        )
    print(
        "extra mem = tracemalloc peak of FedAvg over inputs in memory, in models; max err = "
        "max |FedAvg - float64 reference|; orig = set_weights into N Keras models + "
        "tf.reduce_mean over their stacked trainable_variables; reduce = that mean alone."
    )
    with tempfile.TemporaryDirectory(prefix="bench-verified-") as folder:
        verified = verified_row(seed, VERIFIED_N, Path(folder))
    print(
        f"\nverified aggregation of {verified['n']} seed-model results from files "
        f"({verified['mb']:.0f} MB): sha256 alone {verified['sha256_ms']:.1f} ms "
        f"({verified['sha256_gb_s']:.2f} GB/s), read + sha256 {verified['read_sha256_ms']:.1f} "
        f"ms, verified {verified['verified_ms']:.1f} ms = "
        f"{verified['verified_pct_of_sha256']:.0f}% of sha256's throughput "
        f"({verified['verified_pct_of_read_sha256']:.0f}% of read + sha256); peak memory "
        f"{verified['memory_peak_models']:.2f} models"
    )
    streaming = streaming_row(STREAM_SHAPES)
    largest = max(STREAM_SIZES)
    extra = {
        name: " / ".join(f"{streaming[f'{name}_extra_models_{n}']:.2f}" for n in STREAM_SIZES)
        for name in ("fedavg", "average")
    }
    print(
        f"\nstreaming {' and '.join(map(str, STREAM_SIZES))} results of a "
        f"{streaming['model_mb']:.1f} MB model: extra memory beyond the stream's own, in models "
        f"(bound 1.25, the same for every N): fedavg {extra['fedavg']}, average "
        f"{extra['average']}; the control, {largest} results in a list: "
        f"{streaming[f'list_of_{largest}_models']:.1f} models"
    )
    robust = robust_table(seed)
    print(json.dumps({"bench": "aggregation", "fedavg": rows, "verified": verified,
                      "streaming": streaming, "robust_ms": robust}, default=float))  # fmt: skip


def robust_table(shapes: dict[str, tuple[int, ...]]) -> dict[str, dict[int, float]]:
    """Wall time and traced peak of each robust rule on seed-model results."""
    g = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
    print(f"\nrobust rules: median of {ROBUST_REPEATS} runs, ms / tracemalloc peak MB")
    print(f"{'N':>4} " + " ".join(f"{name:>20}" for name in ROBUST))
    times: dict[str, dict[int, float]] = {name: {} for name in ROBUST}
    for n in SEED_SIZES:
        contributions = results_of(shapes, n, seed=n)
        cells = []
        for name, strategy in ROBUST.items():

            def run(strategy=strategy, contributions=contributions) -> dict[str, np.ndarray]:
                return strategy.aggregate(1, g, contributions)

            ms = median_ms(run, ROBUST_REPEATS)
            times[name][n] = ms
            cells.append(f"{ms:>9.1f} / {traced_peak(run) / MB:>6.2f} MB")
        print(f"{n:>4} " + " ".join(f"{cell:>20}" for cell in cells))
    return times


if __name__ == "__main__":
    main()
