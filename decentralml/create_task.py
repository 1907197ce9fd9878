"""Seed API: create a model-contributor task (decentralml/create_task.py in DecentralML)."""

from __future__ import annotations

from typing import Any

from decentralml.api.seed import as_keypair, as_marketplace, drop_credentials
from decentralml.io.storage import ArtifactStore, sha256_hex
from decentralml.protocol.records import TaskSpec, TaskType, ValidationStrategy


def create_task_model_contributor(
    expiration_block: int,
    substrate: Any,
    sudoaccount: Any,
    passphrase: str | None,
    task_type: TaskType | str,
    question: str,
    pays_amount: int,
    max_assignments: int,
    validation_strategy: ValidationStrategy | str,
    model_contributor_script_path: str,
    model_contributor_script_storage_type: Any = None,
    model_contributor_script_storage_credentials: Any = None,
    *,
    assets_sha256: str | None = None,
    global_weights_path: str = "",
    global_weights_sha256: str = "",
    round_number: int = 0,
) -> int:
    """Escrow ``pays_amount`` and open a task; returns the task id.

    ``model_contributor_script_path`` is the URL of the packaged contributor assets; their
    sha256 is computed from the file when not given, and recorded with the task.
    """
    drop_credentials(model_contributor_script_storage_credentials, "script storage")
    if assets_sha256 is None:
        assets_sha256 = sha256_hex(
            ArtifactStore(model_contributor_script_path).get(model_contributor_script_path)
        )
    spec = TaskSpec(
        question=question,
        pays_amount=int(pays_amount),
        max_assignments=int(max_assignments),
        expiration_block=int(expiration_block),
        validation_strategy=ValidationStrategy(validation_strategy),
        task_type=TaskType(task_type),
        assets_path=model_contributor_script_path,
        assets_sha256=assets_sha256,
        global_weights_path=global_weights_path,
        global_weights_sha256=global_weights_sha256,
        round_number=round_number,
    )
    return as_marketplace(substrate).create_task(as_keypair(sudoaccount, passphrase), spec)
