"""What the creator shows of a training: rows, markdown and a chart, built from plain records.

The flows publish these as Prefect artifacts (tasks/reporting.py); building them here keeps
them testable without a server and keeps the core free of Prefect. Artifact keys are derived
from the run name so each round's artifacts, and the training's chart, form a history.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from decentralml.creator import RoundReview, WaitStatus
from decentralml.creator.progress import SlotProgress
from decentralml.protocol.records import Submission

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class RoundReport:
    """How one round ended: the new global model's test metrics and what each result got.

    ``metric`` is the value of the workload's primary metric ``metric_name`` (what validators
    read and the tables and chart show); ``metrics`` holds every scalar test metric evaluated,
    the primary one and ``loss`` included (``RoundReport.scored`` builds all three)."""

    round_number: int
    task_id: int
    metric_name: str
    metric: float
    loss: float
    metrics: dict[str, float] = field(default_factory=dict)
    accepted: list[int] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)
    deferred: dict[int, str] = field(default_factory=dict)
    payments: dict[int, int] = field(default_factory=dict)
    refund: int = 0
    task_open: bool = False
    """True while deferred results keep the task open (not closed, nothing refunded)."""
    shortfall: str | None = None
    """Why the round fell short of ``task.min_accepted_results`` (None: it did not)."""

    @property
    def paid(self) -> int:
        return sum(self.payments.values())

    def to_json(self) -> bytes:
        """The report as JSON, kept beside its round's files (``round.keep_report``): a later
        run of the training (a resumed one, the next chained round) charts every round."""
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RoundReport:
        raw = json.loads(data)
        for name in ("rejected", "deferred", "payments"):  # JSON keys are text
            raw[name] = {int(sid): value for sid, value in raw[name].items()}
        return cls(**raw)

    @classmethod
    def scored(
        cls,
        round_number: int,
        task_id: int,
        metric_name: str,
        evaluated: Mapping[str, object],
        **outcome: Any,
    ) -> RoundReport:
        """A report from the evaluation's output (``decentralml.ml.models.evaluate``): its float
        metrics are kept (not the example count, the per-class losses or the capped loss
        contribution value measures); ValueError names a primary metric the evaluation did not
        compute."""
        metrics = {
            name: value
            for name, value in evaluated.items()
            if isinstance(value, float) and name != "capped_loss"
        }
        if metric_name not in metrics:
            raise ValueError(
                f"the workload's primary metric {metric_name!r} is not among the evaluated "
                f"metrics ({', '.join(sorted(metrics))})"
            )
        return cls(
            round_number,
            task_id,
            metric_name,
            metrics[metric_name],
            metrics["loss"],
            metrics,
            **outcome,
        )


def round_row(report: RoundReport) -> dict[str, object]:
    """One round as a plain row (the CLI's table, ``--summary-json``): the primary metric by
    name, every test metric, and what was decided. ``accuracy`` stays a field of its own
    whenever it was evaluated, so readers of the earlier rows keep working."""
    legacy = {"accuracy": report.metrics["accuracy"]} if "accuracy" in report.metrics else {}
    return {
        "round": report.round_number,
        "task_id": report.task_id,
        "metric_name": report.metric_name,
        "metric": report.metric,
        "loss": report.loss,
        "metrics": dict(report.metrics),
        **legacy,
        "accepted": report.accepted,
        "rejected": report.rejected,
        "deferred": report.deferred,
        "refund": report.refund,
        "shortfall": report.shortfall,
    }


def artifact_key(run: str, *parts: object) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) from the run and ``parts``;
    ``artifact_key("MNIST_demo", "round", 2)`` is ``"mnist-demo-round-2"``."""
    text = "-".join(str(part) for part in (run, *parts))
    key = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if not key:
        raise ValueError(f"no artifact key can be made from {text!r}")
    return key


def short_address(address: str, head: int = 6, tail: int = 4) -> str:
    """An SS58 address cut to its ends: enough to tell contributors apart in a table."""
    return address if len(address) <= head + tail + 1 else f"{address[:head]}…{address[-tail:]}"


def _rounded(value: object, digits: int = 4) -> object:
    return round(value, digits) if isinstance(value, float) else value


def _local_metrics(submission: Submission) -> str:
    metrics = submission.result.metrics if submission.result else {}
    return ", ".join(f"{name} {_rounded(value)}" for name, value in sorted(metrics.items()))


def submission_rows(
    submissions: Sequence[Submission],
    review: RoundReview,
    payments: Mapping[int, int],
    metric_name: str,
) -> list[dict[str, object]]:
    """One row per judged submission, in id order: who sent what, what the creator measured
    (``holdout_<metric_name>``: the workload's primary metric, and ``holdout_loss``) and
    decided, its measured value (a task paying by value; else None), and what it paid. A
    result that never passed integrity has no held-out metrics and counts no examples.
    Who, verdict, value, paid and reason come first: the columns a reviewer reads, on screen
    in Prefect's table at 1600 px (after the measurements they were cut off)."""
    decided = {v.submission_id: ("accepted" if v.accept else "rejected", v.reason)
               for v in review.verdicts}  # fmt: skip
    decided.update({d.submission_id: ("deferred", d.reason) for d in review.deferred})
    values = {v.submission_id: v.value for v in review.verdicts if v.value is not None}
    rows = []
    for submission in sorted(submissions, key=lambda s: s.submission_id):
        sid = submission.submission_id
        if sid not in decided:
            continue
        verdict, reason = decided[sid]
        result, holdout = submission.result, review.holdout.get(sid, {})
        rows.append(
            {
                "submission": sid,
                "contributor": short_address(submission.worker),
                "verdict": verdict,
                "value": _rounded(values.get(sid)),
                "paid": payments.get(sid, 0),
                "reason": reason,
                f"holdout_{metric_name}": _rounded(holdout.get(metric_name)),
                "holdout_loss": _rounded(holdout.get("loss")),
                "examples_claimed": result.num_examples if result else None,
                "examples_counted": review.counted.get(sid),
                "local_metrics": _local_metrics(submission),
                "sha256": result.sha256[:12] if result else None,
            }
        )
    return rows


def round_summary(report: RoundReport) -> str:
    """The round in a few markdown lines: the model it produced and where the money went."""
    lines = [
        f"# Round {report.round_number} (task {report.task_id})",
        "",
        f"| test {report.metric_name} | test loss | accepted | rejected | deferred | paid | "
        "refund |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {report.metric:.4f} | {report.loss:.4f} | {len(report.accepted)} | "
        f"{len(report.rejected)} | {len(report.deferred)} | {report.paid} | {report.refund} |",
    ]
    if report.shortfall:
        lines += ["", f"**Round failed: {report.shortfall}.**"]
    if report.task_open:
        lines += [
            "",
            f"The task stays open: submissions {sorted(report.deferred)} await a verdict "
            "(nothing refunded yet).",
        ]
    return "\n".join(lines) + "\n"


def training_summary(run: str, reports: Sequence[RoundReport]) -> str:
    """The training so far as markdown: one line per round and the totals."""
    name = metric_name(reports)
    lines = [
        f"# Training {run}",
        "",
        f"| round | task | {name} | loss | accepted | rejected | deferred | paid | refund | "
        "state |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in reports:
        state = f"failed: {r.shortfall}" if r.shortfall else "completed"
        lines.append(
            f"| {r.round_number} | {r.task_id} | {r.metric:.4f} | {r.loss:.4f} | "
            f"{len(r.accepted)} | {len(r.rejected)} | {len(r.deferred)} | {r.paid} | "
            f"{r.refund} | {state} |"
        )
    paid = sum(r.paid for r in reports)
    refund = sum(r.refund for r in reports)
    lines += ["", f"Rounds: {len(reports)}; paid {paid}, refunded {refund}."]
    if reports:
        lines.append(f"Final test {name} {reports[-1].metric:.4f}.")
    failed = underfilled_rounds(reports)
    if failed:
        lines.append(f"**Underfilled rounds: {', '.join(map(str, failed))}.**")
    return "\n".join(lines) + "\n"


def metric_name(reports: Sequence[RoundReport]) -> str:
    """The primary metric the reports share (one workload per training): the name tables and
    the chart are labelled with; "metric" before the first round."""
    return reports[-1].metric_name if reports else "metric"


def underfilled_rounds(reports: Sequence[RoundReport]) -> list[int]:
    return [r.round_number for r in reports if r.shortfall]


def metrics_chart_png(reports: Sequence[RoundReport]) -> bytes:
    """``metrics_chart`` as a PNG (a Figure without pyplot renders with Agg: no display)."""
    buffer = io.BytesIO()
    metrics_chart(reports).savefig(buffer, format="png")
    return buffer.getvalue()


def metrics_chart(reports: Sequence[RoundReport]) -> Figure:
    """The primary metric (left axis, labelled with its name) and the loss (right axis) on
    the test split per round."""
    from matplotlib.figure import Figure

    rounds = [r.round_number for r in reports]
    figure = Figure(figsize=(6, 3.2), dpi=100)
    metric_axes = figure.add_subplot()
    metric_axes.plot(rounds, [r.metric for r in reports], "o-", color="tab:blue")
    metric_axes.set_xlabel("round")
    metric_axes.set_ylabel(f"test {metric_name(reports)}", color="tab:blue")
    metric_axes.set_xticks(rounds)
    loss_axes = metric_axes.twinx()
    loss_axes.plot(rounds, [r.loss for r in reports], "s--", color="tab:red")
    loss_axes.set_ylabel("test loss", color="tab:red")
    figure.tight_layout()
    return figure


def chart_markdown(run: str, png: bytes, metric: str) -> str:
    """The chart of ``metric`` as markdown with the PNG inline (a data URL): the Prefect UI
    shows it without any file server."""
    url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return f"# Training {run}: test {metric} and loss per round\n\n![{metric} and loss]({url})\n"


def progress_description(status: WaitStatus, now: datetime | None = None) -> str:
    """Slots filled, results in, and the deadline as a wall-clock time, then each slot's
    contributor and what it sent (``slots_table``): the text stays true between updates,
    which come only when a slot's records change."""
    deadline = (now or datetime.now(UTC)) + timedelta(seconds=status.seconds_left)
    headline = (
        f"Task {status.task_id}: slots filled {status.assigned}/{status.slots}, "
        f"results in {status.results}/{status.slots}; the creator waits until "
        f"{deadline:%H:%M:%S} UTC, the task expires in {status.blocks_left} blocks"
    )
    return f"{headline}\n\n{slots_table(status.slot_view)}" if status.slot_view else headline


def slots_table(slots: Sequence[SlotProgress]) -> str:
    """The slots as a markdown table (who, since which block, the digests it committed to and
    sent; the free slots, which have no identity, as one row), then one line naming the slow
    contributors and one counting the free slots: a task of 800 slots is not 800 rows."""
    lines = [
        "| slot | submission | contributor | state | assigned at block | committed | result |",
        "|---:|---:|---|---|---:|---|---|",
    ]
    taken = [s for s in slots if s.submission_id is not None]
    free = [s.slot for s in slots if s.submission_id is None]
    rows = [_slot_cells(s) for s in taken]
    if free:
        numbers = str(free[0]) if len(free) == 1 else f"{free[0]}–{free[-1]}"
        rows.append([numbers, None, None, "free", None, None, None])
    lines += ["| " + " | ".join("—" if c is None else str(c) for c in row) + " |" for row in rows]
    slow = [f"{short_address(s.worker)} (submission {s.submission_id})" for s in slots if s.slow]
    if slow:
        lines += ["", f"Slow: {', '.join(slow)}: assigned, no result yet, while a contributor "
                  "assigned no earlier has sent its own."]  # fmt: skip
    lines += ["", f"Free slots: {len(free)}."]
    return "\n".join(lines) + "\n"


def _slot_cells(slot: SlotProgress) -> list[object]:
    """A slot's row; None where the slot has no such record yet."""
    return [
        slot.slot,
        slot.submission_id,
        short_address(slot.worker) if slot.worker else None,
        f"{slot.state}, **slow**" if slot.slow else slot.state,
        slot.assigned_block,
        slot.commitment[:12] or None,
        slot.result_sha256[:12] or None,
    ]
