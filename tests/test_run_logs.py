"""What a round's Prefect logs hold (flows/logs.py), read back from a real Prefect server: the
core's INFO progress lines, a task run's retries and failures, and not the line every
completed task run adds. The round's wait runs on a real embedded marketplace; a contributor
takes a slot and sends its result while the creator sleeps (an injected clock: no waiting)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prefect import flow, task

from decentralml.marketplace.embedded import EmbeddedMarketplace
from decentralml.protocol.accounts import contributor_dev_keypair, dev_keypair
from decentralml.protocol.records import TaskResult, TaskSpec
from flows.logs import CORE_LOGGER
from tasks import creator as steps
from tasks.reporting import WaitProgress
from tests.helpers import ROOT, FakeClock, commit_and_send

attempts: list[int] = []


@task(name="flaky-step", retries=1, retry_delay_seconds=0)
def flaky_step() -> None:
    """Fails on its first attempt, as a storage write might."""
    attempts.append(1)
    if len(attempts) == 1:
        raise ConnectionError("the store dropped the connection")


class Contributor:
    """The creator's sleep: each one lets the contributor take one more step."""

    def __init__(self, market: EmbeddedMarketplace, task_id: int, clock: FakeClock) -> None:
        self.market, self.task_id, self.clock = market, task_id, clock
        self.worker = contributor_dev_keypair(0)
        self.sid: int | None = None

    def sleep(self, seconds: float) -> None:
        self.clock.sleep(seconds)
        if self.sid is None:
            self.sid = self.market.assign_task(self.worker, self.task_id)
        else:
            result = TaskResult(f"file:///r/{self.sid}", "ab" * 32, 100)
            commit_and_send(self.market, self.worker, self.sid, result)


@flow(name="test-waiting-round")
def waiting_round(market: EmbeddedMarketplace, task_id: int, contributor: Contributor) -> int:
    flaky_step()
    results = steps.wait_for_results(
        market, task_id, 60, 0.1, WaitProgress("test-logs", 1),
        clock=contributor.clock, sleep=contributor.sleep,
    )  # fmt: skip
    return len(results)


@pytest.fixture(scope="module")
def round_logs(tmp_path_factory, prefect_harness) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    tmp_path: Path = tmp_path_factory.mktemp("logs")
    market = EmbeddedMarketplace(tmp_path / "m.sqlite", block_time_seconds=1e9)
    creator = dev_keypair("Alice")
    market.fund(creator.ss58_address, 1_000)
    spec = TaskSpec(question="q", pays_amount=100, max_assignments=1, expiration_block=100)
    task_id = market.create_task(creator, spec)
    contributor = Contributor(market, task_id, FakeClock())
    with prefect_run_logs_at(logging.INFO):
        state = waiting_round(market, task_id, contributor, return_state=True)
    assert state.result() == 1
    APILogHandler().flush()  # blocks until the queued records are sent
    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        return client.read_logs(log_filter=log_filter)


@contextmanager
def prefect_run_logs_at(level: int) -> Iterator[None]:
    """Prefect's run loggers at ``level`` (Prefect's default PREFECT_LOGGING_LEVEL is INFO;
    the Makefile and the test sessions set WARNING, which drops its INFO lines before any
    filter of ours sees them)."""
    loggers = [logging.getLogger(name) for name in ("prefect.flow_runs", "prefect.task_runs")]
    before = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, old in zip(loggers, before, strict=True):
            logger.setLevel(old)


def test_the_cores_info_progress_lines_reach_the_round_logs(round_logs):
    core = [(r.level, r.message) for r in round_logs if r.name.startswith(CORE_LOGGER)]
    assert (logging.INFO, "task 0: 0/1 slots taken, 0 results in; waiting up to 60 s more") in core
    assert any("1/1 slots taken, 0 results in" in message for _, message in core)


def test_completed_task_runs_add_no_line_but_retries_and_failures_do(round_logs):
    task_runs = [r.message for r in round_logs if r.task_run_id is not None]
    assert not [m for m in task_runs if m.startswith("Finished in state Completed(")]
    messages = [r.message for r in round_logs]
    retried = [r for r in round_logs if "Retry 1/1 will start" in r.message]
    assert retried and "the store dropped the connection" in retried[0].message, messages
    # the flow run's own end stays: one line per run, not one per task run
    assert sum(m.startswith("Finished in state") for m in messages) == 1


CONSOLE_SCRIPT = """
import logging
import flows  # the first import of a flow module: before Prefect configured its logging
log = logging.getLogger("decentralml.creator.steps")
log.info("waiting, for the run logs")
log.warning("deadline reached, for the console too")
"""


@pytest.mark.parametrize(
    "root_level, shown", [(None, ["deadline"]), ("INFO", ["waiting", "deadline"])]
)
def test_the_console_shows_the_core_from_the_root_level_up(root_level, shown):
    """A CLI user at the default (WARNING) sees the core's warnings, not its INFO lines;
    ``PREFECT_LOGGING_ROOT_LEVEL=INFO`` shows them too. In a process of its own: which import
    configures Prefect's logging first is part of what is tested."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_LOGGING_")}
    if root_level:
        env["PREFECT_LOGGING_ROOT_LEVEL"] = root_level
    done = subprocess.run(
        [sys.executable, "-c", CONSOLE_SCRIPT], env=env, capture_output=True, text=True,
        timeout=120, cwd=ROOT, check=True,
    )  # fmt: skip
    lines = [line for line in done.stderr.splitlines() if "decentralml.creator.steps" in line]
    assert [line.rsplit(" - ", 1)[1].split()[0].rstrip(",") for line in lines] == shown, done.stderr
