"""Screening contributions before federation (NVFlare's ``accept`` before ``aggregate``).

Two stages, each decision recorded with its reason:
1. integrity (``screen``): digest, safetensors format, names/shapes/dtypes, finite values, and
   that the contributor started from this round's global weights. Every policy applies it.
2. policy: AutoAccept, ManualAccept or CustomAccept decides on what passed integrity.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from decentralml.domain import Submission, Verdict
from decentralml.errors import IntegrityError, StorageError
from decentralml.weights import Layout, check_against, decode, layout_bytes

Evaluator = Callable[[Mapping[str, np.ndarray]], dict]


@dataclass
class Candidate:
    """One submission whose weights passed integrity, as a policy sees it."""

    submission: Submission
    tensors: Mapping[str, np.ndarray]
    evaluate: Evaluator
    params: Mapping[str, object] = field(default_factory=dict)
    _metrics: dict | None = None

    @property
    def num_examples(self) -> int:
        return self.submission.result.num_examples if self.submission.result else 0

    def holdout_metrics(self) -> dict:
        """Metrics of these weights on the creator's held-out split (computed once)."""
        if self._metrics is None:
            self._metrics = self.evaluate(self.tensors)
        return self._metrics


class Policy(Protocol):
    name: str

    def decide(self, candidate: Candidate) -> Verdict: ...


def screen(
    submission: Submission,
    fetch: Callable[[str, str], bytes],
    layout: Layout,
    global_sha256: str,
    max_bytes: int,
) -> dict[str, np.ndarray] | Verdict:
    """Load and check one result; a reject Verdict says why it cannot be used."""
    result = submission.result
    if result is None:
        return Verdict(submission.submission_id, False, "no result was sent")
    if result.num_examples <= 0:
        return _reject(submission, f"num_examples must be positive, got {result.num_examples}")
    if global_sha256 and result.base_fingerprint != global_sha256:
        return _reject(submission, "trained from other weights than this round's global model")
    try:
        data = fetch(result.result_path, result.sha256)
        tensors = decode(data, max_bytes=max_bytes)
        check_against(tensors, layout)
    except (StorageError, IntegrityError) as error:
        return _reject(submission, str(error))
    return tensors


RESULT_HEADER_ALLOWANCE = 64 * 1024
"""Bytes allowed beyond the raw tensors for the safetensors header and our metadata."""


def result_size_limit(layout: Layout, ceiling: int) -> int:
    """No honest result is bigger than the model's tensors plus a header: refuse anything
    larger before downloading it, and never more than the configured ceiling."""
    return min(ceiling, layout_bytes(layout) + RESULT_HEADER_ALLOWANCE)


@dataclass(frozen=True)
class Judge:
    """Decides one submission: integrity screening, then the policy on what passed.

    Shared by the creator's round (which folds accepted weights into the strategy) and the
    seed's validate_task_results (which only reports verdicts)."""

    fetch: Callable[[str, str], bytes]
    layout: Layout
    global_sha256: str
    max_bytes: int
    policy: Policy
    evaluate: Evaluator
    params: Mapping[str, object] = field(default_factory=dict)

    def __call__(self, submission: Submission) -> tuple[Verdict, Mapping[str, np.ndarray] | None]:
        """The verdict, and the weights when they were accepted."""
        tensors = screen(submission, self.fetch, self.layout, self.global_sha256, self.max_bytes)
        if isinstance(tensors, Verdict):
            return tensors, None
        verdict = self.policy.decide(Candidate(submission, tensors, self.evaluate, self.params))
        return verdict, tensors if verdict.accept else None


def _reject(submission: Submission, reason: str) -> Verdict:
    return Verdict(submission.submission_id, False, reason)
