"""Seed API: commit to a trained result, upload it and record it
(decentralml/send_task_result.py).

``result_path`` is a local safetensors weights file (the contributor's ``save_model`` output).
Its commitment (decentralml.protocol.commitment) is recorded on the marketplace first, then it is
uploaded next to the task's global weights, then its record (path, sha256) is sent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from decentralml.api.seed import as_keypair, as_marketplace, drop_credentials
from decentralml.contributor import commit, result_url
from decentralml.io.storage import ArtifactStore, sha256_hex
from decentralml.io.weights import decode, read_metadata
from decentralml.protocol.records import TaskResult


def send_task_result(
    substrate: Any,
    keypair: Any,
    submission_id: int,
    result: str | dict | None,
    result_path: str | Path,
    result_storage_type: Any = None,
    result_storage_credentials: Any = None,
) -> TaskResult:
    """``result`` may carry ``num_examples`` and ``metrics`` (dict or JSON); otherwise they
    are read from the weights file's metadata."""
    drop_credentials(result_storage_credentials, "result storage")
    market = as_marketplace(substrate)
    worker = as_keypair(keypair)
    submission = market.get_submission(submission_id)
    task = market.get_task(submission.task_id)
    data = Path(result_path).read_bytes()
    decode(data)  # refuse to upload something that is not a weights file
    details = _details(result, read_metadata(data))
    commit(market, worker, submission_id, sha256_hex(data))
    url = result_url(task, submission_id)
    artifact = ArtifactStore(url).put(url, data)
    record = TaskResult(
        result_path=artifact.url,
        sha256=artifact.sha256,
        num_examples=int(details.get("num_examples", 0)),
        metrics={k: float(v) for k, v in dict(details.get("metrics", {})).items()},
        base_fingerprint=str(details.get("base", task.spec.global_weights_sha256)),
    )
    market.send_task_result(worker, submission_id, record)
    return record


def _details(result: str | dict | None, metadata: dict) -> dict:
    if isinstance(result, dict):
        return {**metadata, **result}
    if isinstance(result, str) and result.strip().startswith("{"):
        return {**metadata, **json.loads(result)}
    return metadata
