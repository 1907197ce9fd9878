"""Seed API: download, screen and judge a task's results (never built in DecentralML).

Returns one Verdict per result awaiting validation; nothing is paid here: pass the verdicts to
accept_task_results / reject_task_results (or Marketplace.settle) to record them.
"""

from __future__ import annotations

from typing import Any

from decentralml.domain import ResultSubmissionStatus, Verdict
from decentralml.seed_api import as_marketplace
from decentralml.storage import ArtifactStore
from decentralml.validation import AutoAccept, Candidate, Policy, screen
from decentralml.validation.base import Evaluator
from decentralml.weights import decode, layout_of


def validate_task_results(
    substrate: Any,
    task_id: int,
    policy: Policy | None = None,
    evaluate: Evaluator | None = None,
    max_bytes: int = 50_000_000,
    params: dict | None = None,
) -> list[Verdict]:
    """Screen every PendingValidation result against the task's own global weights layout,
    then apply ``policy`` (AutoAccept by default) to those that pass."""
    market = as_marketplace(substrate)
    task = market.get_task(task_id)
    store = ArtifactStore(task.spec.global_weights_path)
    layout = layout_of(
        decode(store.get(task.spec.global_weights_path, task.spec.global_weights_sha256))
    )
    policy = policy or AutoAccept()
    verdicts = []
    for submission in market.list_task_results(task_id):
        if submission.status is not ResultSubmissionStatus.PendingValidation:
            continue
        outcome = screen(
            submission,
            lambda url, digest: store.get(url, digest, max_bytes),
            layout,
            task.spec.global_weights_sha256,
            max_bytes,
        )
        if isinstance(outcome, Verdict):
            verdicts.append(outcome)
            continue
        candidate = Candidate(submission, outcome, evaluate or _no_evaluator, params or {})
        verdicts.append(policy.decide(candidate))
    return verdicts


def _no_evaluator(_tensors) -> dict:
    raise ValueError("this policy needs held-out metrics: pass evaluate= to validate_task_results")
