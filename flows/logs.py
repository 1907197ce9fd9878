"""The core's log records in Prefect's run logs, and the run logs kept to what they add.

What ``PREFECT_LOGGING_EXTRA_LOGGERS=decentralml`` does, made independent of import order, and
at INFO: Prefect reads that setting once, when ``prefect`` is first imported, so setting it
later (or in a process a worker starts) silently does nothing; and it leaves the logger at the
root level (WARNING), so the core's progress lines (``task 0: 1/2 slots taken, 0 results in;
waiting up to 880 s more``) never reached a round's logs. Records logged outside any flow or
task run (a contributor agent's loop) stay on the console only, and the console shows the
core's records from the root level up, as before: INFO for the run, not for the terminal.

A task run that completes logs ``Finished in state Completed()`` at INFO: 9 of a round's 11
log lines said only what the UI's task-run list already shows. Those lines are dropped; a
task run's failure (ERROR), its retries (``Retry 1/3 will start``) and every other record of
``prefect.task_runs`` are kept."""

from __future__ import annotations

import logging

from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.configuration import PROCESS_LOGGING_CONFIG, setup_logging
from prefect.logging.handlers import APILogHandler, PrefectConsoleHandler

CORE_LOGGER = "decentralml"
TASK_RUN_LOGGER = "prefect.task_runs"


class RunLogHandler(APILogHandler):
    """Prefect's API log handler, quiet outside a run instead of warning on every record."""

    def emit(self, record: logging.LogRecord) -> None:
        if FlowRunContext.get() is None and TaskRunContext.get() is None:
            return
        super().emit(record)


class ConsoleAtRootLevel(logging.Filter):
    """On Prefect's console handler: ``name``'s records below the root logger's level are not
    printed (they are enabled for the run logs only). The root level is read at each record,
    so ``PREFECT_LOGGING_ROOT_LEVEL=INFO`` shows them on the console too."""

    def filter(self, record: logging.LogRecord) -> bool:
        mine = record.name == self.name or record.name.startswith(self.name + ".")
        return not mine or record.levelno >= logging.getLogger().getEffectiveLevel()


class NoCompletedTaskRunLines(logging.Filter):
    """Drops a task run's ``Finished in state Completed(...)`` line, and only that one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno == logging.INFO
            and isinstance(record.msg, str)
            and record.msg.startswith("Finished in state Completed(")
        )


def route_core_logs(name: str = CORE_LOGGER, level: int = logging.INFO) -> None:
    """Send ``name``'s records from ``level`` up to the current run's logs (a level the
    logging config set on ``name`` is kept), keep Prefect's console at the root level for
    them, and drop completed task runs' lines; idempotent."""
    if not PROCESS_LOGGING_CONFIG:  # Prefect's console handler, made now (prefect.main would)
        setup_logging()  # later calls are incremental: they keep it and its filter
    logger = logging.getLogger(name)
    if logger.level == logging.NOTSET:
        logger.setLevel(level)
    if not any(isinstance(handler, APILogHandler) for handler in logger.handlers):
        logger.addHandler(RunLogHandler())
    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler):
            _add_once(handler, ConsoleAtRootLevel(name))
    _add_once(logging.getLogger(TASK_RUN_LOGGER), NoCompletedTaskRunLines())


def _add_once(target: logging.Handler | logging.Logger, new: logging.Filter) -> None:
    same = (f for f in target.filters if type(f) is type(new) and f.name == new.name)
    if next(same, None) is None:
        target.addFilter(new)
