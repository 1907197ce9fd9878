"""Screening contributions before federation (NVFlare's ``accept`` before ``aggregate``).

The creator pays strangers, so every submission is hostile until checked. Three stages, each
decision recorded with its reason:

1. integrity (``screen``): the result is read only from the place the task assigns it in the
   creator's own storage (any other recorded location is refused without being touched),
   size-bounded, digest-checked, then its safetensors format, names, shapes, dtypes and finite
   values; a claimed number of examples above what the task allows is refused.
2. originality (``validation.originality``): a copy of an earlier-committed submission, or the
   round's global weights sent back (nearly) unchanged, is refused — under every policy,
   because paying for either is never what a creator means.
3. policy: AutoAccept, ManualAccept or CustomAccept decides on what remains.

A result the creator cannot read because its own storage is unavailable (after the store's
retries) gets no verdict: it is ``Deferred`` and stays PendingValidation, since rejecting it
would blame the contributor for the creator's fault. Copies are judged against earlier
commitments, so every result committed after a deferred one that passed integrity waits too.

Reasons are published on the marketplace, so they never describe the creator's machine: no
local paths, no digests or sizes of files the contributor did not write.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from decentralml.io.weights import Layout, check_against, decode_views, layout_bytes
from decentralml.protocol import layout
from decentralml.protocol.errors import (
    ArtifactMissing,
    ArtifactTooLarge,
    DigestMismatch,
    FetchRefused,
    IntegrityError,
    SourceUnreachable,
    StorageError,
    StorageUnavailable,
)
from decentralml.protocol.records import Submission, Verdict

Evaluator = Callable[[Mapping[str, np.ndarray]], dict]
Aggregator = Callable[[Sequence["Candidate"]], Mapping[str, np.ndarray]]
"""The round's configured aggregation rule over some of its candidates (their weights and
allowed example counts): what round-level checks judge, so a check of the aggregate judges
the aggregate the round will really produce (FedAvg's, a median's, FedAdam's...)."""


@dataclass
class Candidate:
    """One submission whose weights passed integrity, as a policy sees it.

    ``weight`` is the influence the creator allows it in averaging: its claimed number of
    examples, capped (``allowed_weights``); never the raw claim."""

    submission: Submission
    tensors: Mapping[str, np.ndarray]
    evaluate: Evaluator | None
    """None when the caller has no held-out data (the seed API's validate_task_results)."""
    params: Mapping[str, object] = field(default_factory=dict)
    weight: int = 0
    value: float | None = None
    """Its value among the screened results (validation.value), measured before a reviewer
    decides on a task paying by value; None otherwise."""
    _metrics: dict | None = None

    @property
    def submission_id(self) -> int:
        return self.submission.submission_id

    @property
    def metric_name(self) -> str:
        """The workload's primary metric (``params["metric"]``, set by the creator's judge):
        what validators and the reviewer read from ``holdout_metrics``."""
        return str(self.params.get("metric", "accuracy"))

    @property
    def num_examples(self) -> int:
        """What the contributor claims; see ``weight`` for what it is allowed to count."""
        return self.submission.result.num_examples if self.submission.result else 0

    def holdout_metrics(self) -> dict:
        """Metrics of these weights on the creator's held-out split (computed once)."""
        if self._metrics is None:
            self._metrics = (self.evaluate or _needs_an_evaluator)(self.tensors)
        return self._metrics

    def recorded_metrics(self) -> dict | None:
        """The held-out metrics for the round's records, None without an evaluator: a policy
        that needs none (AutoAccept) must not fail for want of held-out data."""
        return None if self.evaluate is None else self.holdout_metrics()


def _needs_an_evaluator(_tensors: Mapping[str, np.ndarray]) -> dict:
    raise ValueError("this policy needs held-out metrics: pass evaluate= (an Evaluator)")


class RoundView:
    """What round-level checks share: the global weights and every candidate's update
    ``w - g`` as one flat float32 vector (computed once per candidate)."""

    def __init__(
        self,
        global_tensors: Mapping[str, np.ndarray],
        evaluate: Evaluator | None,
        aggregate: Aggregator | None = None,
    ) -> None:
        self.global_tensors = global_tensors
        self.evaluate: Evaluator = evaluate or _needs_an_evaluator
        self.aggregate = aggregate  # None: the example-weighted mean (FedAvg)
        self.names = sorted(global_tensors)
        self._flat_global: np.ndarray | None = None
        self._updates: dict[int, np.ndarray] = {}

    @property
    def _global_flat(self) -> np.ndarray:
        """Flattened only when a check needs it: per-candidate policies never pay for it."""
        if self._flat_global is None:
            self._flat_global = flatten(self.global_tensors, self.names)
        return self._flat_global

    def update(self, candidate: Candidate) -> np.ndarray:
        sid = candidate.submission_id
        if sid not in self._updates:
            self._updates[sid] = flatten(candidate.tensors, self.names) - self._global_flat
        return self._updates[sid]

    def update_norm(self, candidate: Candidate) -> float:
        return float(np.linalg.norm(self.update(candidate)))

    def global_norm(self) -> float:
        return float(np.linalg.norm(self._global_flat))

    def weights_from_update(self, update: np.ndarray) -> dict[str, np.ndarray]:
        """Global weights plus a flat update, back in the model's tensor shapes and dtypes."""
        flat = self._global_flat + update
        tensors, offset = {}, 0
        for name in self.names:
            reference = self.global_tensors[name]
            size = reference.size
            tensors[name] = flat[offset : offset + size].reshape(reference.shape)
            tensors[name] = tensors[name].astype(reference.dtype, copy=False)
            offset += size
        return tensors


def flatten(tensors: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    parts = [np.asarray(tensors[n], dtype=np.float32).ravel() for n in names]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


class Policy(Protocol):
    name: str
    shows_values: bool
    """A reviewer decides: on a task paying by value, each candidate's ``value`` is measured
    first, so the reviewer sees it (ManualAccept)."""

    def decide_round(self, candidates: Sequence[Candidate], view: RoundView) -> list[Verdict]:
        """One verdict per candidate, in the candidates' order."""


class PerCandidatePolicy:
    """A policy that judges each candidate on its own (AutoAccept, ManualAccept)."""

    name = "policy"
    shows_values = False

    def decide(self, candidate: Candidate) -> Verdict:
        raise NotImplementedError

    def decide_round(self, candidates: Sequence[Candidate], view: RoundView) -> list[Verdict]:
        return [self.decide(candidate) for candidate in candidates]


@dataclass(frozen=True)
class Deferred:
    """No verdict this time: the creator could not judge the submission for a reason on its
    own side (its storage unavailable). Nothing is recorded on the marketplace; the result
    stays PendingValidation and is judged when the creator reviews it again."""

    submission_id: int
    reason: str


@dataclass(frozen=True)
class ScreeningRules:
    """Limits every policy applies before it is asked.

    ``copy_threshold``: a submission whose update lies closer than this (relative L2 distance)
    to an earlier-committed one is a copy; one whose update norm is below this fraction of the
    round's median update norm is the global weights sent back. ``max_examples``: the most
    examples any contributor of the task can hold (None: unknown). ``examples_cap_multiple``:
    a claim counts at most this many times the round's median claim."""

    copy_threshold: float = 0.05
    max_examples: int | None = None
    examples_cap_multiple: float = 2.0


def screen(
    submission: Submission,
    fetch: Callable[[str, str], bytes],
    layout: Layout,
    expected_location: str,
    max_bytes: int,
    max_examples: int | None = None,
) -> dict[str, np.ndarray] | Verdict | Deferred:
    """Load and check one result from ``expected_location`` (derived by the creator, never
    taken from the record); a reject Verdict says why it cannot be used, Deferred that the
    creator's storage could not be read (``fetch`` retries first: see ArtifactStore.get).

    The result is read once and hashed by ``fetch``; its tensors are read-only views on those
    bytes (``decode_views``), checked here and averaged later without another copy."""
    refusal = refusal_before_reading(submission, expected_location, max_examples)
    if refusal is not None:
        return refusal
    result = submission.result
    assert result is not None  # refusal_before_reading refuses a submission without one
    try:
        data = fetch(expected_location, result.sha256)
        tensors = decode_views(data, max_bytes=max_bytes)
        check_against(tensors, layout)
    except ArtifactMissing:
        return reject(submission, "no result file is stored at the submission's location")
    except ArtifactTooLarge:
        return reject(submission, f"result file is over the {max_bytes}-byte limit")
    except DigestMismatch:
        return reject(submission, "stored result does not match its recorded sha256")
    except (FetchRefused, SourceUnreachable) as error:  # its own link: named, nothing of ours
        return reject(submission, f"result could not be pulled: {error}")
    except StorageUnavailable:
        # The creator's own storage failed, not the contributor: no verdict, no path named.
        return Deferred(submission.submission_id, "the creator's storage could not be read")
    except StorageError:
        return reject(submission, "result file could not be read")
    except IntegrityError as error:
        return reject(submission, str(error))
    return tensors


def refusal_before_reading(
    submission: Submission, expected_location: str, max_examples: int | None = None
) -> Verdict | None:
    """The refusal ``screen`` gives without reading anything (no result, a bad claim, a
    location other than the creator's), or None: ``screen`` would read this result."""
    result = submission.result
    if result is None:
        return Verdict(submission.submission_id, False, "no result was sent")
    if result.num_examples <= 0:
        return reject(submission, f"num_examples must be positive, got {result.num_examples}")
    if max_examples is not None and result.num_examples > max_examples:
        return reject(
            submission,
            f"claims {result.num_examples} examples; no contributor of this task holds more "
            f"than {max_examples}",
        )
    if result.result_path != expected_location:
        return reject(
            submission,
            "result_path is neither the location this task assigns to the submission "
            f"({layout.RESULT_PLACE.replace('<id>', str(submission.submission_id))}) nor a "
            "link this creator pulls results from; it was not read",
        )
    return None


RESULT_HEADER_ALLOWANCE = 64 * 1024
"""Bytes allowed beyond the raw tensors for the safetensors header and our metadata."""


def result_size_limit(layout: Layout, ceiling: int) -> int:
    """No honest result is bigger than the model's tensors plus a header: refuse anything
    larger before downloading it, and never more than the configured ceiling."""
    return min(ceiling, layout_bytes(layout) + RESULT_HEADER_ALLOWANCE)


def allowed_weights(
    claims: Sequence[int], cap_multiple: float, max_examples: int | None
) -> list[int]:
    """Each claim capped at ``cap_multiple`` × the round's lower median claim (and at
    ``max_examples``): a self-reported count cannot buy more influence than a few honest
    shards' worth. The lower median (the middle claim, the smaller of two) is one of the
    claims, so liars who are not a majority cannot move it."""
    if not claims:
        return []
    lower_median = sorted(claims)[(len(claims) - 1) // 2]
    cap = cap_multiple * float(lower_median)
    if max_examples is not None:
        cap = min(cap, max_examples)
    return [max(1, min(claim, math.floor(cap))) for claim in claims]


@dataclass(frozen=True)
class Decision:
    """What the review made of one submission: a ``verdict`` (with the weights of an accepted
    ``candidate``), or none yet (``deferred``) — exactly one of the two.

    ``holdout`` (held-out metrics) and ``counted`` (examples allowed to count) are set for
    every submission that passed integrity, accepted or not: the creator's report shows them."""

    verdict: Verdict | None = None
    candidate: Candidate | None = None
    deferred: Deferred | None = None
    holdout: Mapping[str, object] | None = None
    counted: int | None = None

    def __post_init__(self) -> None:
        if (self.verdict is None) == (self.deferred is None):
            raise ValueError("a Decision holds a verdict or a deferral, exactly one")

    @property
    def submission_id(self) -> int:
        decided = self.verdict or self.deferred
        assert decided is not None
        return decided.submission_id

    @property
    def accepted(self) -> bool:
        return self.verdict is not None and self.verdict.accept and self.candidate is not None


def commitment_order(submission: Submission) -> tuple[float, int]:
    """Earlier commitments first; submissions without one (older records) after, by id."""
    order = submission.commit_order
    return (math.inf if order is None else order, submission.submission_id)


def reject(submission: Submission, reason: str) -> Verdict:
    return Verdict(submission.submission_id, False, reason)
