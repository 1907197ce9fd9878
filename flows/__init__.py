"""Prefect flows: the creator's and the contributor's procedures, one screen each.

Importing the flows routes the core's ``decentralml`` logger into Prefect's run logs at INFO,
so its progress lines (slots taken, results in) and warnings (deadline reached, no result
accepted, a task left open) show in the UI (flows/logs.py)."""

from flows.logs import route_core_logs

route_core_logs()
