"""The core's log records in Prefect's run logs.

What ``PREFECT_LOGGING_EXTRA_LOGGERS=decentralml`` does, made independent of import order:
Prefect reads that setting once, when ``prefect`` is first imported, so setting it later (or
in a process a worker starts) silently does nothing. Records logged outside any flow or task
run (a contributor agent's loop) stay on the console only."""

from __future__ import annotations

import logging

from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler

CORE_LOGGER = "decentralml"


class RunLogHandler(APILogHandler):
    """Prefect's API log handler, quiet outside a run instead of warning on every record."""

    def emit(self, record: logging.LogRecord) -> None:
        if FlowRunContext.get() is None and TaskRunContext.get() is None:
            return
        super().emit(record)


def route_core_logs(name: str = CORE_LOGGER) -> None:
    """Send ``name``'s records (WARNING and up, the root level) to the current run's logs
    as well; idempotent."""
    logger = logging.getLogger(name)
    if not any(isinstance(handler, APILogHandler) for handler in logger.handlers):
        logger.addHandler(RunLogHandler())
