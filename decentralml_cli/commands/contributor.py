"""The contributor's command, ``contribute``: an agent that works on new tasks as they appear,
on a machine that may not have the creator's config file."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from decentralml.protocol.errors import DecentralMLError
from decentralml.runtime.config import FILTER_ENV
from decentralml_cli.config import _contributor_config

AGENT_LOGGER = "flows.contributor"
"""The agent's own lines: each skipped task, each task dropped at a stop, an idle stop."""
RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")


def _local_data(args: argparse.Namespace) -> str | None:
    """``--data PATH`` read once now, so a missing or malformed file is one line before the
    agent starts (each task then checks it against its own data spec)."""
    if args.data is None:
        return None
    from decentralml.ml.workloads.local_data import read_local_data

    read_local_data(args.data)
    return str(args.data)


def _filters_for_the_agent(args: argparse.Namespace) -> None:
    """The agent flow reads the filters from the environment as FILTER_ENV spells them (it is
    also the deployment's entry point, configured by environment); the command line's are set
    there for it, so they win over the variables' own values."""
    for dotted, variable in FILTER_ENV.items():
        value = getattr(args, dotted.removeprefix("contributor."), None)
        if value is not None:
            os.environ[variable] = ",".join(value) if isinstance(value, list) else str(value)


class QuietRefusals(logging.Filter):
    """Prefect logs every failed task run and flow run at ERROR with a traceback. A stranger's
    task the contributor refuses (a DecentralMLError: a bad package, data of another shape, a
    slot gone) is no error of this machine: the agent says so in one line (``skipping task N:
    reason``), so the run's own ERROR lines go down to DEBUG, without their traceback (the run
    still ends Failed with the reason in its state). A bug (any other exception) keeps them."""

    def __init__(self) -> None:
        super().__init__()
        self.refused_runs: set[object] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        error = record.exc_info[1] if record.exc_info else None
        run = getattr(record, "task_run_id", None) or getattr(record, "flow_run_id", None)
        if isinstance(error, DecentralMLError):
            self.refused_runs.add(run)
        elif error is not None or run not in self.refused_runs:
            return True
        # as if logged at DEBUG ("Finished in state Failed" included): shown only at that level
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.exc_info = record.exc_text = None
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


@contextlib.contextmanager
def _agent_output() -> Iterator[None]:
    """The terminal shows one line per skipped task: the agent's info lines at Prefect's
    logging level (they propagate to the console Prefect gives the root logger, which shows
    only warnings of other loggers), and no ERROR lines for a refused task."""
    from prefect.settings import get_current_settings

    agent = logging.getLogger(AGENT_LOGGER)
    level = agent.level
    agent.setLevel(get_current_settings().logging.level)
    quiet = QuietRefusals()
    for name in RUN_LOGGERS:
        logging.getLogger(name).addFilter(quiet)
    try:
        yield
    finally:
        agent.setLevel(level)
        for name in RUN_LOGGERS:
            logging.getLogger(name).removeFilter(quiet)


def cmd_contribute(args: argparse.Namespace) -> int:
    _contributor_config(args)  # refused here, before the agent flow starts (it loads its own)
    data_path = _local_data(args)
    _filters_for_the_agent(args)
    if getattr(args, "own_process", False):
        from decentralml_cli.commands.server import prefect_for_an_agent

        prefect_for_an_agent()  # input checked: now the Prefect server, shared or temporary
    from prefect.exceptions import TerminationSignal

    from decentralml.runtime.shutdown import STOP

    with STOP.on_signals(), _agent_output():  # a signal now stops the agent cleanly
        from flows.contributor import agent

        path = args.config if args.config.exists() else ""
        try:
            state = agent(
                str(path), args.index, args.max_tasks, args.marketplace_at, data_path,
                return_state=True,
            )  # fmt: skip
        except TerminationSignal:
            # SIGTERM while Prefect set the run up: its own handler had the signal and re-sent
            # it to ours (STOP asked) before the agent's loop, so no task was in progress
            if not STOP.requested:
                raise
            print(f"stopped: by {STOP.signal_name} before the agent started", file=sys.stderr)
            return STOP.exit_status
    if state.is_cancelled():
        print(f"stopped: {state.message}", file=sys.stderr)
        return STOP.exit_status
    print(f"contributed to {state.result()} task(s)")
    return 0
