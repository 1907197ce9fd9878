"""Seed API: take a slot of a task and download its assets (decentralml/assign_task.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from decentralml.api.seed import as_keypair, as_marketplace
from decentralml.contributor import Contributor, assign, checked_inputs
from decentralml.io.storage import ArtifactStore


def assign_task(
    substrate: Any,
    sudoaccount: Any,
    passphrase: str | None,
    task_id: int,
    download_dir: str | Path | None = None,
) -> int:
    """Download and verify the contributor assets into ``download_dir`` (default
    ``task-<id>``) and check the task as the contributor procedure does before it pays
    (decentralml.contributor.procedure), then take a slot (once: a repeat returns the same
    submission id). The caller trains on its own data, checked when it trains."""
    market = as_marketplace(substrate)
    worker = as_keypair(sudoaccount, passphrase)
    task = market.get_task(task_id)
    contributor = Contributor(market, ArtifactStore(task.spec.assets_path), worker, None)
    workdir = Path(download_dir or f"task-{task_id}")
    workdir.mkdir(parents=True, exist_ok=True)
    checked_inputs(contributor, task, workdir)
    return assign(market, worker, task_id)
