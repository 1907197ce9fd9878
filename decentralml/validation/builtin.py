"""Built-in CustomAccept validators, usable as ``decentralml.validation.builtin:<name>``."""

from __future__ import annotations

from decentralml.domain import Verdict
from decentralml.validation.base import Candidate


def min_accuracy(candidate: Candidate) -> Verdict:
    """Reject weights whose accuracy on the creator's held-out split is below the threshold.

    The threshold is ``task.min_accuracy`` from the config (passed in ``candidate.params``).
    """
    threshold = float(candidate.params.get("min_accuracy", 0.5))
    accuracy = float(candidate.holdout_metrics()["accuracy"])
    sid = candidate.submission.submission_id
    if accuracy < threshold:
        return Verdict(sid, False, f"held-out accuracy {accuracy:.4f} is below {threshold:.4f}")
    return Verdict(sid, True, f"held-out accuracy {accuracy:.4f} >= {threshold:.4f}")
