"""Reports speak the workload's primary metric: a workload measured by AUC (defined here, as a
creator would in its own module) gets tables, chart, CLI rows, summaries and the ManualAccept
reviewer's views labelled "auc", and no "accuracy" in them. Pure builders
(decentralml.creator.report, decentralml.validation.manual): no Prefect, no training."""

from __future__ import annotations

import re

import pytest

from decentralml.creator import RoundReview
from decentralml.creator.report import (
    RoundReport,
    chart_markdown,
    metrics_chart,
    round_row,
    round_summary,
    submission_rows,
    training_summary,
)
from decentralml.ml import workloads
from decentralml.ml.workloads.base import Workload
from decentralml.ml.workloads.breast_cancer import BREAST_CANCER
from decentralml.protocol.records import ResultSubmissionStatus, Submission, TaskResult, Verdict
from decentralml.validation.base import Candidate
from decentralml.validation.manual import (
    decisions_template,
    prompt_decider,
    review_markdown,
    review_text,
    summarize,
)
from decentralml_cli import print_round_table


def _build(learning_rate: float):
    """A tiny logistic model for the tumour table (never built here: the reports need only
    the workload's declared metric)."""
    import keras

    model = keras.Sequential([keras.Input(shape=(30,)), keras.layers.Dense(2)])
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


AUC_WORKLOAD = Workload(
    name="tumour_auc",
    model="logistic regression on the tumour table, ranked by AUC",
    dataset=BREAST_CANCER,
    build_model=_build,
    primary_metric="auc",
)
WORKLOAD_NAME = f"{__name__}:AUC_WORKLOAD"  # what `workload:` in a creator's config would say


def _evaluated(auc: float) -> dict[str, object]:
    """What an evaluation of this workload returns: scalar metrics, the example count and the
    per-class losses (only the scalar metrics belong in a report)."""
    return {"auc": auc, "accuracy": auc - 0.1, "loss": 1 - auc, "examples": 114,
            "class_loss": [0.2, 0.4]}  # fmt: skip


def _report(round_number: int, auc: float) -> RoundReport:
    metric = workloads.get(WORKLOAD_NAME).primary_metric  # as flows/creator.py reads it
    return RoundReport.scored(
        round_number, round_number - 1, metric, _evaluated(auc), accepted=[1], payments={1: 50}
    )


def test_the_report_carries_the_workloads_metric_and_every_scalar_metric():
    report = _report(1, 0.93)
    assert (report.metric_name, report.metric, report.loss) == ("auc", 0.93, 1 - 0.93)
    assert report.metrics == {"auc": 0.93, "accuracy": 0.93 - 0.1, "loss": 1 - 0.93}


def test_a_primary_metric_the_evaluation_did_not_compute_is_named():
    with pytest.raises(ValueError, match=r"primary metric 'auc' is not among .*\(accuracy, loss\)"):
        RoundReport.scored(1, 0, "auc", {"accuracy": 0.9, "loss": 0.3})


def test_round_and_training_summaries_are_headed_by_the_metric():
    reports = [_report(1, 0.81), _report(2, 0.93)]
    summary = round_summary(reports[1])
    assert "| test auc | test loss |" in summary and "| 0.9300 | 0.0700 |" in summary
    training = training_summary("tumours", reports)
    assert "| round | task | auc | loss |" in training
    assert "| 2 | 1 | 0.9300 | 0.0700 |" in training and "Final test auc 0.9300." in training
    assert "accuracy" not in summary + training


def test_the_chart_plots_the_metric_under_its_name():
    reports = [_report(1, 0.81), _report(2, 0.93)]
    figure = metrics_chart(reports)
    metric_axes, loss_axes = figure.axes
    assert metric_axes.get_ylabel() == "test auc" and loss_axes.get_ylabel() == "test loss"
    assert list(metric_axes.lines[0].get_ydata()) == [0.81, 0.93]
    markdown = chart_markdown("tumours", b"png", "auc")
    assert markdown.startswith("# Training tumours: test auc and loss per round")
    assert re.search(r"!\[auc and loss\]\(data:image/png;base64,", markdown)


def test_submission_rows_show_the_held_out_metric_by_name():
    result = TaskResult("file:///r/1", "ab" * 32, 300, {"loss": 0.2})
    submission = Submission(1, 0, "5" * 48, ResultSubmissionStatus.PendingValidation, 1, result)
    review = RoundReview(
        verdicts=[Verdict(1, True, "ok")], holdout={1: _evaluated(0.876543)}, counted={1: 300}
    )
    [row] = submission_rows([submission], review, {1: 50}, "auc")
    assert row["holdout_auc"] == 0.8765 and row["holdout_loss"] == 0.1235
    assert "holdout_accuracy" not in row


def test_cli_rows_and_table_name_the_metric_and_keep_accuracy_for_old_readers(capsys):
    row = round_row(_report(1, 0.93))
    assert (row["metric_name"], row["metric"], row["accuracy"]) == ("auc", 0.93, 0.93 - 0.1)
    assert row["metrics"] == _report(1, 0.93).metrics
    only_auc = RoundReport.scored(1, 0, "auc", {"auc": 0.9, "loss": 0.1})
    assert "accuracy" not in round_row(only_auc)  # no made-up accuracy
    print_round_table([row])
    header, line = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["round", "task", "auc"] and line.split()[:3] == [
        "1",
        "0",
        "0.9300",
    ]


def test_the_reviewer_sees_the_held_out_metric_by_name(tmp_path):
    """ManualAccept's form, terminal table, decisions template and prompt name the metric."""
    result = TaskResult("file:///r/4", "cd" * 32, 120, {})
    submission = Submission(4, 0, "5Worker4", ResultSubmissionStatus.PendingValidation, 1, result)
    params = {"metric": workloads.get(WORKLOAD_NAME).primary_metric}  # as make_judge sets it
    candidate = Candidate(submission, {}, lambda tensors: _evaluated(0.912345), params)
    summary = summarize(candidate)
    assert (summary.metric_name, summary.holdout_metric) == ("auc", 0.912345)
    form = review_markdown(0, [summary], "reject")
    assert "| held-out auc | held-out loss |" in form and "| 0.9123 | 0.0877 |" in form
    assert review_text([summary]).split()[:4] == ["id", "examples", "auc", "loss"]
    assert "held-out auc 0.9123, loss 0.0877" in decisions_template(0, [summary])
    prompts: list[str] = []
    prompt_decider(lambda text: prompts.append(text) or "y")(candidate)
    assert "held-out auc 0.9123" in prompts[0]
    assert "accuracy" not in form + review_text([summary]) + prompts[0]


def test_a_metric_the_evaluation_cannot_compute_is_refused_before_anything_runs(tmp_path, capsys):
    """Reports read the primary metric after the round has paid: a workload naming one the
    evaluation does not compute is one line at the config check, exit 2."""
    from decentralml_cli import main
    from tests.helpers import write_config

    path, _ = write_config(tmp_path, workload=WORKLOAD_NAME, **{"data.source": None})
    assert main(["train", "--config", str(path)]) == 2
    [error] = capsys.readouterr().err.strip().splitlines()
    assert f"workload: workload '{WORKLOAD_NAME}' names primary metric 'auc'" in error
    assert "does not compute (it computes: accuracy)" in error
