"""Seed API: list tasks (never built in DecentralML)."""

from __future__ import annotations

from typing import Any

from decentralml.api.seed import as_marketplace
from decentralml.protocol.records import Task


def list_tasks(substrate: Any, open_only: bool = True) -> list[Task]:
    return as_marketplace(substrate).list_tasks(open_only=open_only)
