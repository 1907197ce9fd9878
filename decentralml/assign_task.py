"""Seed API: take a slot of a task and download its assets (decentralml/assign_task.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from decentralml.contributor import assign, fetch_inputs
from decentralml.seed_api import as_keypair, as_marketplace
from decentralml.storage import ArtifactStore


def assign_task(
    substrate: Any,
    sudoaccount: Any,
    passphrase: str | None,
    task_id: int,
    download_dir: str | Path | None = None,
) -> int:
    """Assign the task to the caller (once: a repeat returns the same submission id), then
    download and verify the contributor assets into ``download_dir`` (default ``task-<id>``)."""
    market = as_marketplace(substrate)
    submission_id = assign(market, as_keypair(sudoaccount, passphrase), task_id)
    task = market.get_task(task_id)
    store = ArtifactStore(task.spec.assets_path)
    fetch_inputs(store, task, Path(download_dir or f"task-{task_id}"))
    return submission_id
