"""Originality: copies and free-riders are not paid.

Contributors commit to their result (a digest bound to their account) on the marketplace before
the bytes are readable by anyone, so the commitment order says who had given weights first:
the earliest commitment wins and later identical or near-identical submissions are copies.
Bittensor's commit-reveal answers validators copying each other's weights the same way.

"Near" is measured on updates (``w - g``), relative to the earlier update's size: honest
contributors start from the same global weights but train on different examples in a different
order, so their updates differ by a large fraction of their length even on IID data (about
0.5–1.2 with the seed model, docs/security.md), while a copy with noise
added to dodge an exact-digest check stays within a few percent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from decentralml.validation.base import Candidate, RoundView

UNCHANGED_GLOBAL_FLOOR = 1e-6
"""An update shorter than this fraction of the global weights' norm is no update at all."""


def find_copies(
    candidates: Sequence[Candidate], view: RoundView, threshold: float
) -> dict[int, str]:
    """Reasons for every candidate that is unoriginal, keyed by submission id.

    ``candidates`` must be in commitment order (earliest first). A candidate is "unchanged
    global weights" when its update norm is at most ``threshold`` × the round's median update
    norm (or practically zero), and a "copy of submission N" when it has N's exact digest or its
    update is within ``threshold`` (relative L2 distance) of N's, N committed earlier."""
    if not candidates:
        return {}
    norms = [view.update_norm(c) for c in candidates]
    median = float(np.median(norms))
    floor = max(UNCHANGED_GLOBAL_FLOOR * view.global_norm(), threshold * median)
    reasons: dict[int, str] = {}
    for index, candidate in enumerate(candidates):
        if norms[index] <= floor:
            reasons[candidate.submission_id] = (
                f"unchanged global weights (update norm {norms[index]:.3g}, "
                f"round median {median:.3g})"
            )
            continue
        original = _earlier_original(candidates, index, norms, view, threshold)
        if original is not None:
            reasons[candidate.submission_id] = original
    return reasons


def _earlier_original(
    candidates: Sequence[Candidate],
    index: int,
    norms: Sequence[float],
    view: RoundView,
    threshold: float,
) -> str | None:
    candidate = candidates[index]
    digest = candidate.submission.result.sha256 if candidate.submission.result else ""
    update = view.update(candidate)
    for earlier_index in range(index):
        earlier = candidates[earlier_index]
        earlier_digest = earlier.submission.result.sha256 if earlier.submission.result else ""
        if digest and digest == earlier_digest:
            return f"copy of submission {earlier.submission_id} (identical bytes)"
        if norms[earlier_index] == 0:
            continue
        distance = float(np.linalg.norm(update - view.update(earlier))) / norms[earlier_index]
        if distance < threshold:
            return (
                f"copy of submission {earlier.submission_id} "
                f"(relative distance {distance:.4f} < {threshold})"
            )
    return None
