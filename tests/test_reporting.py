"""The creator's report builders: table rows, markdown, chart, keys (no Prefect needed)."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime

import pytest

from decentralml.creator import RoundReview, WaitStatus, shortfall
from decentralml.creator.progress import slot_progress
from decentralml.creator.report import (
    RoundReport,
    artifact_key,
    chart_markdown,
    metrics_chart_png,
    progress_description,
    round_summary,
    short_address,
    slots_table,
    submission_rows,
    training_summary,
)
from decentralml.protocol.records import (
    ResultSubmissionStatus,
    Submission,
    Task,
    TaskResult,
    TaskSpec,
    TaskStatus,
    Verdict,
)
from decentralml.validation import Deferred

ADDRESS = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _submission(sid: int, examples: int | None, metrics: dict | None = None) -> Submission:
    result = None
    if examples is not None:
        result = TaskResult(f"file:///r/{sid}", f"{sid:02d}" * 32, examples, metrics or {})
    status = ResultSubmissionStatus.PendingValidation
    return Submission(sid, 7, ADDRESS, status, 1, result)


def test_artifact_keys_are_what_prefect_accepts():
    assert artifact_key("mnist", "round", 2, "submissions") == "mnist-round-2-submissions"
    assert artifact_key("MNIST_demo 2026.11", "chart") == "mnist-demo-2026-11-chart"
    assert re.fullmatch(r"[a-z0-9-]+", artifact_key("--Été/run--", "x"))
    with pytest.raises(ValueError, match="no artifact key"):
        artifact_key("__", "")


def test_submission_rows_show_each_result_with_its_metrics_verdict_and_payment():
    submissions = [
        _submission(3, 1200, {"accuracy": 0.912345, "loss": 0.3}),
        _submission(1, 5000, {"loss": 0.25}),
        _submission(2, 800),
        _submission(4, 900),  # judged in no way this round: not in the table
    ]
    review = RoundReview(
        verdicts=[
            Verdict(1, True, "ok", amount=200, value=0.123456),  # a task paying by value
            Verdict(3, False, "update norm 9.1 > 3 x median"),
        ],
        deferred=[Deferred(2, "the creator's storage could not be read")],
        holdout={1: {"accuracy": 0.876543, "loss": 0.41}, 3: {"accuracy": 0.1, "loss": 2.3}},
        counted={1: 2400, 3: 1200},
    )
    rows = submission_rows(submissions, review, {1: 200, 3: 0}, "accuracy")
    assert [row["submission"] for row in rows] == [1, 2, 3]
    accepted, deferred, rejected = rows
    assert accepted == {
        "submission": 1,
        "contributor": "5FHneW…94ty",
        "sha256": "010101010101",
        "examples_claimed": 5000,
        "examples_counted": 2400,
        "local_metrics": "loss 0.25",
        "holdout_accuracy": 0.8765,
        "holdout_loss": 0.41,
        "value": 0.1235,
        "verdict": "accepted",
        "reason": "ok",
        "paid": 200,
    }
    # What a reviewer reads first (the table is cut at ~1600 px; issue 18 found these off it)
    assert list(accepted)[:6] == ["submission", "contributor", "verdict", "value", "paid", "reason"]
    assert rejected["verdict"] == "rejected" and rejected["reason"].startswith("update norm")
    assert rejected["local_metrics"] == "accuracy 0.9123, loss 0.3" and rejected["value"] is None
    assert deferred["verdict"] == "deferred" and deferred["holdout_accuracy"] is None
    assert deferred["examples_counted"] is None and deferred["paid"] == 0


def test_a_result_never_sent_has_an_empty_row_not_a_crash():
    review = RoundReview(verdicts=[Verdict(5, False, "no result was sent")])
    [row] = submission_rows([_submission(5, None)], review, {}, "accuracy")
    assert row["sha256"] is None and row["examples_claimed"] is None and row["paid"] == 0


def test_shortfall_names_why_a_round_is_underfilled():
    assert shortfall(1, 0, 0, 1) is None
    assert shortfall(0, 0, 0, 0) is None
    assert shortfall(0, 2, 0, 1) == "no result accepted: 2 rejected, 0 deferred"
    assert shortfall(1, 1, 1, 2) == (
        "1 result accepted, fewer than the 2 required: 1 rejected, 1 deferred"
    )


def _report(round_number: int, accuracy: float, shortfall_text: str | None = None) -> RoundReport:
    return RoundReport.scored(
        round_number,
        round_number - 1,
        "accuracy",
        {"accuracy": accuracy, "loss": 1 - accuracy, "examples": 10_000},
        accepted=[1, 2] if not shortfall_text else [],
        rejected={3: "copy"},
        payments={1: 100, 2: 100, 3: 0} if not shortfall_text else {3: 0},
        refund=100 if not shortfall_text else 300,
        shortfall=shortfall_text,
    )


def test_round_summary_gives_metrics_counts_money_and_the_failure():
    good = round_summary(_report(1, 0.9))
    assert "| 0.9000 | 0.1000 | 2 | 1 | 0 | 200 | 100 |" in good
    assert "failed" not in good
    bad = round_summary(_report(2, 0.5, "no result accepted: 1 rejected, 0 deferred"))
    assert "| 0.5000 | 0.5000 | 0 | 1 | 0 | 0 | 300 |" in bad
    assert "Round failed: no result accepted: 1 rejected, 0 deferred" in bad


def test_training_summary_lists_rounds_totals_and_underfilled_ones():
    text = training_summary("mnist", [_report(1, 0.9), _report(2, 0.8, "no result accepted")])
    assert text.count("\n| ") == 3  # header + 2 rounds
    assert "| 2 | 1 | 0.8000 | 0.2000 | 0 | 1 | 0 | 0 | 300 | failed: no result accepted |" in text
    assert "paid 200, refunded 400" in text and "Final test accuracy 0.8000" in text
    assert "Underfilled rounds: 2." in text


def test_chart_is_a_png_embedded_as_a_data_url():
    png = metrics_chart_png([_report(1, 0.6), _report(2, 0.8), _report(3, 0.9)])
    assert png.startswith(PNG_SIGNATURE) and len(png) > 5_000
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (600, 320)
    markdown = chart_markdown("mnist", png, "accuracy")
    [encoded] = re.findall(r"\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert base64.b64decode(encoded) == png


def test_progress_description_names_slots_results_and_deadline():
    status = WaitStatus(4, slots=5, assigned=3, results=2, seconds_left=90, blocks_left=120)
    now = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)
    assert progress_description(status, now) == (
        "Task 4: slots filled 3/5, results in 2/5; the creator waits until 10:01:30 UTC, "
        "the task expires in 120 blocks"
    )
    assert status.fraction == 0.4
    assert short_address("5Fab") == "5Fab"


def _slot(sid: int, worker: str, block: int, commitment: str = "", result: bool = False):
    sent = TaskResult(f"file:///r/{sid}", f"{sid:x}" * 64, 100) if result else None
    status = ResultSubmissionStatus.PendingValidation if sent else ResultSubmissionStatus.Assigned
    return Submission(sid, 4, worker, status, block, sent, commitment=commitment)


def test_each_slot_shows_who_took_it_what_it_sent_and_who_is_slow():
    """From the marketplace's records only: a slot taken at block 10 with nothing in while
    one taken at block 12 has sent its result is slow; one taken later (block 13) is not."""
    task = Task(4, ADDRESS, TaskSpec("q", 500, 5, 100), TaskStatus.InProgress, 1, assigned=4)
    submissions = [
        _slot(9, "5Delivered" + "x" * 38, 12, "c" * 64, result=True),
        _slot(7, "5SlowWorker" + "y" * 37, 10),
        _slot(8, "5Committed" + "z" * 38, 11, "d" * 64),
        _slot(10, "5LateComer" + "w" * 38, 13),
    ]
    slots = slot_progress(task, submissions)
    assert [(s.slot, s.submission_id, s.state, s.slow) for s in slots] == [
        (1, 7, "assigned", True),
        (2, 8, "committed", True),
        (3, 9, "result in", False),
        (4, 10, "assigned", False),  # took its slot after the result came: not behind yet
        (5, None, "free", False),
    ]
    status = WaitStatus(4, 5, 4, 1, seconds_left=90, blocks_left=80, slot_view=slots)
    now = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)
    lines = progress_description(status, now).splitlines()
    assert lines[:2] == [
        "Task 4: slots filled 4/5, results in 1/5; the creator waits until 10:01:30 UTC, "
        "the task expires in 80 blocks",
        "",
    ]
    assert lines[2:9] == [
        "| slot | submission | contributor | state | assigned at block | committed | result |",
        "|---:|---:|---|---|---:|---|---|",
        "| 1 | 7 | 5SlowW…yyyy | assigned, **slow** | 10 | — | — |",
        "| 2 | 8 | 5Commi…zzzz | committed, **slow** | 11 | dddddddddddd | — |",
        "| 3 | 9 | 5Deliv…xxxx | result in | 12 | cccccccccccc | 999999999999 |",
        "| 4 | 10 | 5LateC…wwww | assigned | 13 | — | — |",
        "| 5 | — | — | free | — | — | — |",  # one free slot: its number
    ]
    assert "Slow: 5SlowW…yyyy (submission 7), 5Commi…zzzz (submission 8)" in lines[10]
    assert lines[-1] == "Free slots: 1."


def test_free_slots_are_one_row_however_many():
    task = Task(4, ADDRESS, TaskSpec("q", 900, 900, 100), TaskStatus.Created, 1)
    slots = slot_progress(task, [_slot(1, ADDRESS, 3)])
    assert [s.state for s in slots] == ["assigned"] + ["free"] * 899
    table = slots_table(slots)
    assert "| 2–900 | — | — | free | — | — | — |" in table
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) == 3  # the header, the taken slot, the free ones
    assert "Free slots: 899." in table and "Slow" not in table
