"""ManualAccept: the creator decides each result that passed screening.

Three routes to the creator's answers, all behind a Prefect-free seam:

- a decisions file (JSON or YAML) mapping submission ids to ``{"accept": bool, "reason": str}``
  (``decentralml review TASK --write FILE`` writes a template listing the pending ones):

      {"7": {"accept": true, "reason": "looks good"}, "8": {"accept": false, "reason": "late"}}

- the terminal (``prompt_decider``), only where there is one: with no TTY to ask, the
  creator is told to use the review command instead of the process blocking in ``input()``;
- a ``RoundDecider`` that sees the round's candidates at once: the Prefect UI form
  (flows/manual_review.py pauses the round's flow run once and builds the verdicts here, with
  ``verdicts_from_answers``).

What a reviewer sees of each candidate is ``summarize``: the same rows in the UI form, the
review command and the template.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from decentralml.protocol.errors import ConfigError, DecentralMLError
from decentralml.protocol.records import Verdict
from decentralml.validation.base import Candidate, PerCandidatePolicy, RoundView

Decider = Callable[[Candidate], Verdict]
RoundDecider = Callable[[Sequence[Candidate]], Mapping[int, Verdict]]
"""Verdicts for a whole round at once, keyed by submission id: one question per round."""
ManualDefault = Literal["reject", "accept"]

NO_REVIEWER = (
    "ManualAccept has no decisions file and no terminal to ask: list the pending submissions "
    "with `decentralml review TASK_ID --write decisions.yaml`, fill it in, then run "
    "`decentralml round TASK_ID --decisions decisions.yaml`"
)


class ReviewRefused(DecentralMLError):
    """A reviewer's answer that cannot be applied (an id that is not pending, one named twice)."""


class ManualAccept(PerCandidatePolicy):
    """Asks ``decider`` about each candidate, or ``round_decider`` about all of them at once."""

    name = "ManualAccept"
    shows_values = True

    def __init__(
        self, decider: Decider | None = None, *, round_decider: RoundDecider | None = None
    ) -> None:
        if (decider is None) == (round_decider is None):
            raise ValueError("ManualAccept takes a decider or a round_decider, exactly one")
        self._decider = decider
        self._round_decider = round_decider

    def decide(self, candidate: Candidate) -> Verdict:
        if self._decider is not None:
            return self._decider(candidate)
        return self._ask_round([candidate])[0]

    def decide_round(self, candidates: Sequence[Candidate], view: RoundView) -> list[Verdict]:
        if self._decider is not None:
            return super().decide_round(candidates, view)
        return self._ask_round(candidates)

    def _ask_round(self, candidates: Sequence[Candidate]) -> list[Verdict]:
        assert self._round_decider is not None
        verdicts = self._round_decider(candidates)
        return [verdicts[candidate.submission_id] for candidate in candidates]


# --- what a reviewer sees ---------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """One pending submission as a reviewer sees it (held-out metrics on the creator's split:
    the workload's primary metric ``metric_name`` and the loss)."""

    submission_id: int
    contributor: str
    examples: int
    counted: int
    local_metrics: dict[str, float]
    holdout_metric: float
    holdout_loss: float
    metric_name: str = "accuracy"
    value: float | None = None
    """Its value among the screened results, on a task paying by value (None otherwise):
    the held-out loss reduction it brings to the round's aggregate (validation.value)."""

    @property
    def shown_value(self) -> str:
        return "-" if self.value is None else f"{self.value:+.4f}"

    @property
    def notes(self) -> str:
        """What screening made of it: it passed, and how many examples its claim counts for."""
        if self.counted < self.examples:
            return f"passed screening; its claim counts as {self.counted} examples"
        return "passed screening"


def summarize(candidate: Candidate) -> Summary:
    """Evaluates the candidate on the held-out split (once: the policy reuses the metrics)."""
    held_out = candidate.holdout_metrics()
    result = candidate.submission.result
    return Summary(
        submission_id=candidate.submission_id,
        contributor=candidate.submission.worker,
        examples=candidate.num_examples,
        counted=candidate.weight or candidate.num_examples,
        local_metrics=dict(result.metrics) if result else {},
        holdout_metric=float(held_out[candidate.metric_name]),
        holdout_loss=float(held_out["loss"]),
        metric_name=candidate.metric_name,
        value=candidate.value,
    )


def _local(metrics: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {_number(v)}" for k, v in sorted(metrics.items())) or "-"


def _number(value: float) -> str:
    return f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else str(value)


def _metric(summaries: Sequence[Summary]) -> str:
    """The primary metric the summaries share (one task, one workload)."""
    return summaries[0].metric_name if summaries else "accuracy"


def review_markdown(task_id: int, summaries: Sequence[Summary], default: ManualDefault) -> str:
    """The UI form's header: a table of every pending submission and how to answer; on a task
    paying by value, each result's value comes right after its contributor."""
    valued = _valued(summaries)
    value_header, value_rule = (" value |", "---:|") if valued else ("", "")
    lines = [
        f"### Task {task_id}: {len(summaries)} submission(s) await your decision",
        "",
        f"| submission | contributor |{value_header} examples | local metrics "
        f"| held-out {_metric(summaries)} | held-out loss | screening |",
        f"|---:|---|{value_rule}---:|---|---:|---:|---|",
    ]
    lines += [
        f"| {s.submission_id} | `{s.contributor}` |{f' {s.shown_value} |' if valued else ''} "
        f"{s.examples} | {_local(s.local_metrics)} | {s.holdout_metric:.4f} "
        f"| {s.holdout_loss:.4f} | {s.notes} |"
        for s in summaries
    ]
    lines += [
        "",
        "Add one decision per submission (its id, Accept on or off, a reason: it is published "
        f"with the verdict). A submission you do not mention is decided by the default: {default}.",
    ]
    if valued:
        lines += ["", VALUE_NOTE]
    return "\n".join(lines)


VALUE_NOTE = (
    "This task pays by value: *value* is how much each result lowers the held-out loss of the "
    "round's aggregate (its Shapley value among the results above). What an accepted result is "
    "paid is measured again among the results you accept; one whose value is below 0 beyond "
    "the estimate's noise is rejected."
)


def _valued(summaries: Sequence[Summary]) -> bool:
    return any(s.value is not None for s in summaries)


def review_text(summaries: Sequence[Summary]) -> str:
    """The same table for a terminal (``decentralml review``)."""
    name, valued = _metric(summaries), _valued(summaries)
    value = f" {'value':>8}" if valued else ""
    lines = [f"{'id':>4} {'examples':>8} {name:>8} {'loss':>7}{value}  contributor  local  notes"]
    lines += [
        f"{s.submission_id:>4} {s.examples:>8} {s.holdout_metric:>8.4f} {s.holdout_loss:>7.4f}"
        + (f" {s.shown_value:>8}" if valued else "")
        + f"  {s.contributor}  {_local(s.local_metrics)}  {s.notes}"
        for s in summaries
    ]
    return "\n".join(lines)


def decisions_template(task_id: int, summaries: Sequence[Summary]) -> str:
    """A decisions file to fill in: ``accept`` is left empty, so a file nobody edited is
    refused (``needs a boolean 'accept'``) rather than read as a decision."""
    lines = [
        f"# ManualAccept decisions for task {task_id}: set accept to true or false and give a",
        "# reason (published with the verdict), then run",
        f"#   decentralml round {task_id} --validation ManualAccept --decisions THIS_FILE",
    ]
    for s in summaries:
        lines += [
            f"# {s.contributor}: {s.examples} examples, held-out {s.metric_name} "
            f"{s.holdout_metric:.4f}, loss {s.holdout_loss:.4f}"
            + ("" if s.value is None else f", value {s.value:+.4f}")
            + f"; {s.notes}",
            f"{s.submission_id}:",
            "  accept:",
            '  reason: ""',
        ]
    return "\n".join(lines) + "\n"


# --- answers -> verdicts ----------------------------------------------------------------------


def default_verdict(submission_id: int, default: ManualDefault, why: str) -> Verdict:
    """The configured default, saying why it applied, e.g. ``no decision before the timeout
    (default: reject)``."""
    return Verdict(submission_id, default == "accept", f"{why} (default: {default})")


def verdicts_from_answers(
    answers: Iterable[tuple[int, bool, str]], pending: Iterable[int], default: ManualDefault
) -> dict[int, Verdict]:
    """A verdict for every pending submission from a reviewer's (id, accept, reason) answers.

    Refuses the whole answer when it names a submission that is not pending or names one
    twice: applying the rest would pay or reject on an answer the reviewer got wrong. A pending
    submission the answer does not mention gets ``default``."""
    waiting = sorted(set(pending))
    given: dict[int, Verdict] = {}
    for sid, accept, reason in answers:
        if sid not in waiting:
            listed = ", ".join(map(str, waiting))
            raise ReviewRefused(f"submission {sid} is not pending review (pending: {listed})")
        if sid in given:
            raise ReviewRefused(f"submission {sid} is decided twice")
        fallback = "accepted by the reviewer" if accept else "rejected by the reviewer"
        given[sid] = Verdict(sid, accept, reason.strip() or fallback)
    return {
        sid: given.get(sid) or default_verdict(sid, default, "not mentioned in the review")
        for sid in waiting
    }


# --- the decisions file and the terminal ------------------------------------------------------


def decisions_from_file(path: str | Path) -> Decider:
    """A decider reading the creator's verdicts from a file; a missing id is an error."""
    source = Path(path)
    decisions = _read_decisions(source)

    def decide(candidate: Candidate) -> Verdict:
        sid = candidate.submission.submission_id
        if sid not in decisions:
            raise ConfigError(f"{source} has no decision for submission {sid}; add it and rerun")
        accept, reason = decisions[sid]
        return Verdict(sid, accept, reason)

    return decide


def _read_decisions(source: Path) -> dict[int, tuple[bool, str]]:
    try:
        raw = (
            yaml.safe_load(source.read_text())
            if source.suffix in {".yaml", ".yml"}
            else json.loads(source.read_text())
        )
    except FileNotFoundError:
        raise ConfigError(f"decisions file {source} does not exist") from None
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"decisions file {source} cannot be parsed: {error}") from None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"decisions file {source} must map submission ids to decisions")
    decisions: dict[int, tuple[bool, str]] = {}
    for key, value in raw.items():
        if not isinstance(value, Mapping) or not isinstance(value.get("accept"), bool):
            raise ConfigError(f"{source}: decision for {key} needs a boolean 'accept'")
        try:
            sid = int(key)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: {key!r} is not a submission id (an integer)") from None
        reason = value.get("reason")
        decisions[sid] = (value["accept"], str(reason) if reason else "decided by the creator")
    return decisions


def terminal_decider() -> Decider:
    """The prompt, when stdin is a terminal; otherwise no one could answer ``input()`` and the
    process would block forever (under a worker, in CI): refuse with the review command."""
    if not sys.stdin or not sys.stdin.isatty():
        raise ConfigError(NO_REVIEWER)
    return prompt_decider()


def prompt_decider(ask: Callable[[str], str] = input) -> Decider:
    """Ask the creator at the terminal, showing the held-out metrics of the candidate."""

    def decide(candidate: Candidate) -> Verdict:
        sid = candidate.submission.submission_id
        metrics = candidate.holdout_metrics()
        summary = (
            f"submission {sid} by {candidate.submission.worker}: "
            f"{candidate.num_examples} examples, held-out {candidate.metric_name} "
            f"{metrics[candidate.metric_name]:.4f}"
        )
        answer = ask(f"{summary}\naccept? [y/n] ").strip().lower()
        accept = answer in {"y", "yes"}
        reason = ask("reason: ").strip() or (
            "accepted by the creator" if accept else "rejected by the creator"
        )
        return Verdict(sid, accept, reason)

    return decide
