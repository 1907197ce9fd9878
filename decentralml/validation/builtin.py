"""Built-in CustomAccept validators, usable as ``decentralml.validation.builtin:<name>``."""

from __future__ import annotations

from decentralml.protocol.records import Verdict
from decentralml.validation.base import Candidate


def min_accuracy(candidate: Candidate) -> Verdict:
    """Reject weights whose primary metric on the creator's held-out split is below the
    threshold (higher is better).

    The threshold is ``task.min_accuracy`` from the config, the metric the workload's primary
    metric ("accuracy" for the built-ins), both passed in ``candidate.params``.
    """
    threshold = float(candidate.params.get("min_accuracy", 0.5))
    metric = candidate.metric_name
    value = float(candidate.holdout_metrics()[metric])
    sid = candidate.submission.submission_id
    if value < threshold:
        return Verdict(sid, False, f"held-out {metric} {value:.4f} is below {threshold:.4f}")
    return Verdict(sid, True, f"held-out {metric} {value:.4f} >= {threshold:.4f}")
