"""Verified aggregation as one stream (decentralml.simulation.streaming) and the zero-copy
decoding it rests on (weights.decode_views).

Results are real safetensors files in a file:// store, described by marketplace records; the
hostile ones are refused with the reasons the review's own ``screen`` gives and the mean of
the rest equals a float64 reference. The stream's memory (the result being checked, the next
one read ahead and the accumulator) is a benchmark figure: bench/bench_aggregation.py.
"""

from __future__ import annotations

import json
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from safetensors import SafetensorError
from safetensors.numpy import load as safetensors_load

from decentralml.io.storage import ArtifactStore, sha256_hex
from decentralml.io.weights import decode, decode_views, encode, layout_of
from decentralml.protocol.errors import IntegrityError
from decentralml.protocol.records import ResultSubmissionStatus, Submission, TaskResult, Verdict
from decentralml.simulation.streaming import aggregate_verified
from decentralml.strategies import Average, FedAvg
from decentralml.validation import screen
from decentralml.validation.base import ScreeningRules

SHAPES = {"000.kernel": (784, 160), "001.bias": (160,), "002.kernel": (160, 10), "003.bias": (10,)}
MODEL_BYTES = sum(int(np.prod(s)) * 4 for s in SHAPES.values())  # ~508 kB
MAX_BYTES = MODEL_BYTES + 64 * 1024


def _weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.normal(seed, 1.0, s).astype(np.float32) for n, s in SHAPES.items()}


class Results:
    """Results written to a file:// store, each with the record a contributor would send."""

    def __init__(self, root: Path) -> None:
        self.store = ArtifactStore(root.as_uri())
        self.submissions: list[Submission] = []
        self.layout = layout_of(_weights(0))

    def location(self, submission: Submission) -> str:
        return self.store.url_for(f"submission-{submission.submission_id}.safetensors")

    def add(self, data: bytes, num_examples: int, recorded_sha256: str | None = None) -> int:
        sid = len(self.submissions)
        url = self.store.url_for(f"submission-{sid}.safetensors")
        self.store.put(url, data)
        result = TaskResult(url, recorded_sha256 or sha256_hex(data), num_examples)
        self.submissions.append(
            Submission(sid, 0, f"w{sid}", ResultSubmissionStatus.PendingValidation, 0, result)
        )
        return sid

    def fetch(self, url: str, digest: str) -> bytes:
        return self.store.get(url, digest, MAX_BYTES)

    def aggregate(self, strategy=None, rules: ScreeningRules | None = None):
        return aggregate_verified(
            strategy or FedAvg(),
            1,
            {},
            self.submissions,
            self.fetch,
            self.location,
            self.layout,
            MAX_BYTES,
            rules,
        )


def _hostile(kind: str) -> bytes:
    good = encode(_weights(99))
    if kind == "truncated":
        return good[: len(good) // 2]
    if kind == "nan":
        weights = _weights(99)
        weights["001.bias"][3] = np.nan
        return encode(weights)
    if kind == "shape":
        weights = _weights(99)
        weights["001.bias"] = weights["001.bias"][:-1]
        return encode(weights)
    if kind == "not safetensors":
        return b"\x00" * 64
    raise AssertionError(kind)


HOSTILE = ["truncated", "nan", "shape", "not safetensors", "wrong digest"]


def test_the_stream_refuses_what_screen_refuses_and_averages_the_rest(tmp_path: Path) -> None:
    results = Results(tmp_path)
    honest = {results.add(encode(_weights(i)), 100 * (i + 1)): i for i in range(4)}
    hostile = {}
    for kind in HOSTILE:
        data = _hostile("nan") if kind == "wrong digest" else _hostile(kind)
        digest = "0" * 64 if kind == "wrong digest" else None
        hostile[results.add(data, 200, digest)] = kind
    honest[results.add(encode(_weights(7)), 300)] = 7  # after the hostile ones

    outcome = results.aggregate()

    assert sorted(outcome.accepted) == sorted(honest)
    assert outcome.deferred == []
    layout = layout_of(_weights(0))
    expected = {
        s.submission_id: screen(s, results.fetch, layout, results.location(s), MAX_BYTES)
        for s in results.submissions
        if s.submission_id in hostile
    }
    assert all(isinstance(v, Verdict) and not v.accept for v in expected.values())
    assert {v.submission_id: v.reason for v in outcome.refused} == {
        sid: v.reason for sid, v in expected.items()
    }
    assert "NaN" in expected[next(s for s, k in hostile.items() if k == "nan")].reason
    # FedAvg of the honest ones, weighted by their claims (all within 2x the lower median).
    counts = {sid: results.submissions[sid].result.num_examples for sid in honest}
    total = sum(counts.values())
    for name in SHAPES:
        reference = sum(
            counts[sid] / total * _weights(seed)[name].astype(np.float64)
            for sid, seed in honest.items()
        )
        np.testing.assert_allclose(outcome.new_global[name], reference, rtol=0, atol=2e-5)
        assert outcome.new_global[name].dtype == np.float32


def test_claims_are_capped_as_the_review_caps_them(tmp_path: Path) -> None:
    results = Results(tmp_path)
    for i, claim in enumerate([100, 100, 100, 1_000_000]):  # the last claims 10 000x more
        results.add(encode({n: np.full(s, float(i), np.float32) for n, s in SHAPES.items()}), claim)
    outcome = results.aggregate()
    # Capped at 2 x the lower median (100): weights 100, 100, 100, 200 -> (0+1+2+2*3)/5.
    np.testing.assert_allclose(outcome.new_global["003.bias"], np.full(10, 9 / 5), rtol=1e-6)


def test_nothing_passing_screening_leaves_no_new_weights(tmp_path: Path) -> None:
    results = Results(tmp_path)
    results.add(_hostile("nan"), 100)
    outcome = results.aggregate(Average())
    assert outcome.new_global is None
    reasons = [v.reason for v in outcome.refused]
    assert reasons == ["tensor 001.bias contains NaN or infinite values"]


def test_reading_ahead_reads_each_result_once_in_commitment_order(tmp_path: Path) -> None:
    """The next result is read while one is checked, yet reads stay what screen would do:
    once each, earliest commitment first, and never for a submission refused unread."""
    results = Results(tmp_path)
    for i in range(6):
        results.add(encode(_weights(i)), 100)
    elsewhere = results.add(encode(_weights(8)), 100)
    over_claim = results.add(encode(_weights(9)), 10_000)
    moved = TaskResult("file:///etc/hostname", results.submissions[elsewhere].result.sha256, 100)
    results.submissions[elsewhere] = replace(results.submissions[elsewhere], result=moved)
    commit_order = [5, 2, 7, 0, 4, 1, 3, 6]
    results.submissions = [
        replace(s, commit_order=order)
        for s, order in zip(results.submissions, commit_order, strict=True)
    ]
    read: list[str] = []
    real_fetch = results.fetch

    def counted(url: str, digest: str) -> bytes:
        read.append(url.rsplit("/", 1)[-1])
        return real_fetch(url, digest)

    results.fetch = counted  # type: ignore[method-assign]
    outcome = results.aggregate(rules=ScreeningRules(max_examples=1000))

    by_commitment = sorted(results.submissions, key=lambda s: s.commit_order)
    expected = [
        f"submission-{s.submission_id}.safetensors"
        for s in by_commitment
        if s.submission_id not in (elsewhere, over_claim)
    ]
    assert read == expected
    assert {v.submission_id for v in outcome.refused} == {elsewhere, over_claim}
    assert sorted(outcome.accepted) == list(range(6))


# --- decode_views ---------------------------------------------------------------------------


def test_views_share_the_bytes_read_and_are_read_only() -> None:
    data = encode(_weights(1), {"k": 1})
    views = decode_views(data)
    assert list(views) == list(SHAPES)
    buffer = np.frombuffer(data, np.uint8)
    for name, view in views.items():
        assert np.shares_memory(view, buffer), name
        assert not view.flags.writeable
        np.testing.assert_array_equal(view, _weights(1)[name])
    with pytest.raises(ValueError, match="read-only"):
        views["001.bias"] += 1
    copies = decode(data)  # decode gives arrays of their own
    assert all(c.flags.writeable and not np.shares_memory(c, buffer) for c in copies.values())


@pytest.mark.parametrize(
    ("header_edit", "message"),
    [
        ({"dtype": "BF16"}, "dtype 'BF16', not one numpy holds"),
        ({"shape": [160, 2]}, "does not fill bytes"),
        ({"shape": [-160]}, "not a list of sizes"),
    ],
)
def test_a_header_safetensors_refuses_is_refused_in_one_line(header_edit, message) -> None:
    data = encode(_weights(1))
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    header["001.bias"].update(header_edit)
    text = json.dumps(header).encode()
    edited = struct.pack("<Q", len(text)) + text + data[8 + length :]
    with pytest.raises(SafetensorError):  # the reference refuses it too
        safetensors_load(edited)
    with pytest.raises(IntegrityError, match=f"not valid safetensors: .*{message}"):
        decode_views(edited)


def test_gaps_and_overlaps_between_tensors_are_refused() -> None:
    data = encode({"a": np.zeros(4, np.float32), "b": np.ones(4, np.float32)})
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    header["b"]["data_offsets"] = header["a"]["data_offsets"]  # both on the first 16 bytes
    text = json.dumps(header).encode()
    with pytest.raises(IntegrityError, match="starts at byte 0, not 16"):
        decode_views(struct.pack("<Q", len(text)) + text + data[8 + length :])
