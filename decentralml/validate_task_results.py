"""Seed API: download, screen and judge a task's results (never built in DecentralML).

Returns one Verdict per result awaiting validation that could be judged; nothing is paid here:
pass the verdicts to accept_task_results / reject_task_results (or Marketplace.settle) to
record them. A result whose file could not be read because the storage is unavailable gets no
verdict (it is left out, still PendingValidation): call again later.
"""

from __future__ import annotations

import posixpath
from typing import Any

from decentralml.api.seed import as_marketplace
from decentralml.io.storage import ArtifactStore
from decentralml.io.weights import decode
from decentralml.protocol.records import ResultSubmissionStatus, Verdict
from decentralml.runtime.config import StorageConfig
from decentralml.validation import AutoAccept, Policy, ScreeningRules, task_judge
from decentralml.validation.base import Evaluator


def validate_task_results(
    substrate: Any,
    task_id: int,
    policy: Policy | None = None,
    evaluate: Evaluator | None = None,
    max_bytes: int | None = None,
    params: dict | None = None,
    rules: ScreeningRules | None = None,
) -> list[Verdict]:
    """Screen every PendingValidation result against the task's own global weights, check
    originality, then apply ``policy`` (AutoAccept by default) to those that pass. Each result
    is read only from the place the task assigns it (beside the task's global weights), capped
    at the model's size (see result_size_limit) unless ``max_bytes`` is given."""
    market = as_marketplace(substrate)
    task = market.get_task(task_id)
    store = ArtifactStore(posixpath.dirname(task.spec.global_weights_path))
    global_tensors = decode(
        store.get(task.spec.global_weights_path, task.spec.global_weights_sha256)
    )
    judge = task_judge(
        store,
        task,
        global_tensors,
        policy or AutoAccept(),
        evaluate=evaluate,
        max_result_bytes=max_bytes or StorageConfig().max_result_bytes,
        rules=rules or ScreeningRules(),
        params=params,
    )
    pending = ResultSubmissionStatus.PendingValidation
    decisions = judge.review(s for s in market.list_task_results(task_id) if s.status is pending)
    return [d.verdict for d in decisions if d.verdict is not None]
