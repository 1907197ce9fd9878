"""Publishing the creator's reports as keyed Prefect artifacts (builders in
decentralml.creator.report). A key is reused by every rerun of the same run and round, and the
training's chart and summary keep one key per run: the UI's artifact history shows them change.

Reports are best effort: they are written after a round is settled and paid, so an artifact
the Prefect API refuses (once its client's own retries ran out) is one warning line, never a
failed round."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from prefect import task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from decentralml.creator import WaitStatus
from decentralml.creator.report import (
    RoundReport,
    artifact_key,
    chart_markdown,
    metric_name,
    metrics_chart_png,
    progress_description,
    round_summary,
    training_summary,
)
from tasks.policy import LOCAL_TASK

NO_RESULTS_ROW = {"submission": None, "verdict": "no results", "reason": "", "paid": 0}
log = logging.getLogger(__name__)


@contextmanager
def best_effort(what: str) -> Iterator[None]:
    """Publishing ``what``: a failure (the Prefect API down or refusing) is logged, not raised."""
    try:
        yield
    except Exception as error:
        log.warning("%s not published: %s: %s", what, type(error).__name__, error)


@task(name="publish-round-report", **LOCAL_TASK)
def publish_round(run: str, report: RoundReport, rows: list[dict]) -> None:
    """The round's submissions table and its summary."""
    with best_effort(f"round {report.round_number} report"):
        _publish_round(run, report, rows)


def _publish_round(run: str, report: RoundReport, rows: list[dict]) -> None:
    round_key = ("round", report.round_number)
    create_table_artifact(
        key=artifact_key(run, *round_key, "submissions"),
        table=rows or [NO_RESULTS_ROW],
        description=f"Round {report.round_number} (task {report.task_id}): submissions, "
        f"held-out metrics, verdicts and payments; test {report.metric_name} "
        f"{report.metric:.4f}",
    )
    create_markdown_artifact(
        key=artifact_key(run, *round_key, "summary"),
        markdown=round_summary(report),
        description=f"Round {report.round_number} summary",
    )


@task(name="publish-training-report", **LOCAL_TASK)
def publish_training(run: str, reports: Sequence[RoundReport]) -> None:
    """The chart of the primary metric and the loss, and the training summary, republished
    after every round. The chart's key names no metric (``<run>-metric-chart``): one key
    whatever the workload measures."""
    with best_effort(f"training report after round {reports[-1].round_number}"):
        _publish_training(run, reports)


def _publish_training(run: str, reports: Sequence[RoundReport]) -> None:
    name = metric_name(reports)
    create_markdown_artifact(
        key=artifact_key(run, "metric-chart"),
        markdown=chart_markdown(run, metrics_chart_png(reports), name),
        description=f"Test {name} and loss after round {reports[-1].round_number}",
    )
    create_markdown_artifact(
        key=artifact_key(run, "training-summary"),
        markdown=training_summary(run, reports),
        description=f"Training {run} after round {reports[-1].round_number}",
    )


class WaitProgress:
    """``wait_for_results``'s ``on_poll``: a progress artifact of the round's results, with a
    table of each slot's contributor and what it sent (the description's markdown), created on
    the first poll and updated only when a slot's records change (not every poll)."""

    def __init__(self, run: str, round_number: int) -> None:
        self.key = artifact_key(run, "round", round_number, "progress")
        self._artifact_id = None
        self._shown: tuple | None = None

    def __call__(self, status: WaitStatus) -> None:
        shown = (status.assigned, status.results, status.slot_view)
        if shown == self._shown:
            return
        self._shown = shown
        with best_effort(f"{self.key} progress"):
            self._publish(status)

    def _publish(self, status: WaitStatus) -> None:
        progress, description = 100 * status.fraction, progress_description(status)
        if self._artifact_id is None:
            self._artifact_id = create_progress_artifact(
                progress, key=self.key, description=description
            )
        else:
            update_progress_artifact(self._artifact_id, progress, description=description)
