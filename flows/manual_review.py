"""ManualAccept in the Prefect UI: the round's flow run pauses with a form.

The form's header is a markdown table of every submission that passed screening (contributor,
examples, local metrics, the workload's primary metric and the loss on the held-out split); the
reviewer adds one decision per submission (id, Accept, reason) and presses Resume. A submission
the answer does not mention gets ``task.manual_default``, and so does every one when no answer
comes within ``task.manual_timeout_seconds``. An answer naming a submission that is not
pending, or one twice, is refused as a whole: the refusal is logged and shown above the table,
and the run pauses again for the time left.

The pause happens inside the review task (``steps.review``, through ManualAccept's round
decider): Prefect 3.9.1's ``pause_flow_run`` works from a task running in the flow's process
(it reads the flow run's context, which a task run keeps), so screening, the pause and
federation stay one step, and the money path order of the round is unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.states import Running
from pydantic import BaseModel, Field

from decentralml.protocol.records import Verdict
from decentralml.runtime.config import TaskConfig
from decentralml.validation.base import Candidate
from decentralml.validation.manual import (
    ManualDefault,
    ReviewRefused,
    default_verdict,
    review_markdown,
    summarize,
    verdicts_from_answers,
)

POLL = 2  # seconds between checks for a Resume
TIMED_OUT = "no decision before the timeout"


class SubmissionDecision(BaseModel):
    submission_id: int = Field(description="the id in the table above")
    accept: bool = Field(description="on: accept and pay it; off: reject it")
    reason: str = Field("", description="published on the marketplace with the verdict")


class ReviewInput(RunInput):
    """The Resume form. ``decisions`` is required: resuming needs an answer."""

    decisions: list[SubmissionDecision]


class FormReview:
    """ManualAccept's round decider in a flow run: one pause per round. It remembers its
    answers, so a late result judged in the same round asks only about the new submission."""

    def __init__(self, timeout_seconds: int, default: ManualDefault) -> None:
        self.timeout_seconds = timeout_seconds
        self.default: ManualDefault = default
        self.decided: dict[int, Verdict] = {}

    @classmethod
    def for_task(cls, task: TaskConfig) -> FormReview:
        return cls(task.manual_timeout_seconds, task.manual_default)

    def __call__(self, candidates: Sequence[Candidate]) -> Mapping[int, Verdict]:
        new = [c for c in candidates if c.submission_id not in self.decided]
        if new:
            self.decided.update(self._ask(new))
        return {c.submission_id: self.decided[c.submission_id] for c in candidates}

    def _ask(self, candidates: Sequence[Candidate]) -> dict[int, Verdict]:
        task_id = candidates[0].submission.task_id
        pending = [c.submission_id for c in candidates]
        table = review_markdown(task_id, [summarize(c) for c in candidates], self.default)
        deadline = time.monotonic() + self.timeout_seconds
        refusal = ""
        while (left := round(deadline - time.monotonic())) > 0:
            form = ReviewInput.with_initial_data(description=refusal + table)
            try:
                answer = pause_flow_run(wait_for_input=form, timeout=left, poll_interval=POLL)
            except FlowPauseTimeout:
                break
            rows = [(d.submission_id, d.accept, d.reason) for d in answer.decisions]
            try:
                return verdicts_from_answers(rows, pending, self.default)
            except ReviewRefused as refused:
                get_run_logger().warning("review refused: %s; pausing again", refused)
                refusal = f"**Your last answer was refused: {refused}. Nothing was applied.**\n\n"
        return self._timed_out(task_id, pending)

    def _timed_out(self, task_id: int, pending: Sequence[int]) -> dict[int, Verdict]:
        message = f"{TIMED_OUT} (default: {self.default})"
        get_run_logger().warning("task %d: %s for submissions %s", task_id, message, pending)
        resume_after_timeout(message)
        return {sid: default_verdict(sid, self.default, TIMED_OUT) for sid in pending}


def resume_after_timeout(message: str) -> None:
    """Put the run back to Running: a pause that times out leaves it Paused on the server
    (and Prefect ends such a run Failed, "never resumed"), though the round goes on with the
    default. Forced, because the server refuses to resume a pause past its timeout."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(context.flow_run.id, Running(message=message), force=True)
