"""Seed API: list a task's submissions and their results (never built in DecentralML)."""

from __future__ import annotations

from typing import Any

from decentralml.api.seed import as_marketplace
from decentralml.protocol.records import Submission


def list_task_results(substrate: Any, task_id: int) -> list[Submission]:
    return as_marketplace(substrate).list_task_results(task_id)
