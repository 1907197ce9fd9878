"""ManualAccept in the Prefect UI: the round's flow run waits for a form (paused or suspended).

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

Run from a deployment, the run *suspends* instead (``suspend_for_answer``): its process exits and
frees the worker (and the deployment's concurrency slot) while the reviewer thinks; the Resume
button reschedules the run, which starts again from the top. That rerun is the training's own
resume (flows/creator.py): it reads the open round back from the marketplace and storage, so
nothing is trained, packaged, published or paid again, and its review asks the same question
under the same pause key, which Prefect answers at once with the stored form input. A refused
answer suspends again under the next key. Nobody to hold a clock, so the timeout is Prefect's:
an automation (``timeout_resumer``, flows/suspension.py: the mechanism the round's wait for
results uses too) reschedules a run still suspended after
``task.manual_timeout_seconds``; its rerun finds no answer and applies ``task.manual_default``,
as a local run does.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from uuid import UUID

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.input.run_input import keyset_from_paused_state
from prefect.states import Running
from pydantic import BaseModel, Field, ValidationError

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
from flows.suspension import deployment_root, leave_suspended, propose_suspension, suspended

POLL = 2  # seconds between checks for a Resume
TIMED_OUT = "no decision before the timeout"


class SubmissionDecision(BaseModel):
    submission_id: int = Field(description="the id in the table above")
    accept: bool = Field(description="on: accept and pay it; off: reject it")
    reason: str = Field("", description="published on the marketplace with the verdict")


class ReviewInput(RunInput):
    """The Resume form. ``decisions`` is required: resuming needs an answer."""

    decisions: list[SubmissionDecision]


Ask = Callable[[type[ReviewInput], int], ReviewInput | None]
"""One question to the reviewer (the form, the attempt): the answer, or None past the timeout."""


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
        root = deployment_root()
        ask = self._pausing() if root is None else self._suspending(root, task_id, pending)
        refusal = ""
        for attempt in itertools.count(1):
            answer = ask(ReviewInput.with_initial_data(description=refusal + table), attempt)
            if answer is None:
                break
            rows = [(d.submission_id, d.accept, d.reason) for d in answer.decisions]
            try:
                return verdicts_from_answers(rows, pending, self.default)
            except ReviewRefused as refused:
                get_run_logger().warning("review refused: %s; asking again", refused)
                refusal = f"**Your last answer was refused: {refused}. Nothing was applied.**\n\n"
        return self._timed_out(task_id, pending)

    def _pausing(self) -> Ask:
        """A local run's question: pause for the time left of ``timeout_seconds`` (None once
        it is over)."""
        deadline = time.monotonic() + self.timeout_seconds

        def ask(form: type[ReviewInput], attempt: int) -> ReviewInput | None:
            if (left := round(deadline - time.monotonic())) <= 0:
                return None
            try:
                return pause_flow_run(wait_for_input=form, timeout=left, poll_interval=POLL)
            except FlowPauseTimeout:
                return None

        return ask

    def _suspending(self, root: UUID, task_id: int, pending: Sequence[int]) -> Ask:
        """A deployment run's question: every one has its own pause key (the task, the
        submissions asked about, the attempt), so a rerun replays the answers given so far,
        in order, and suspends at the first one nobody has answered yet."""
        asked = "-".join(map(str, pending))

        def ask(form: type[ReviewInput], attempt: int) -> ReviewInput | None:
            key = f"review-task-{task_id}-{asked}-{attempt}"
            return suspend_for_answer(root, form, key, self.timeout_seconds)

        return ask

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


def suspend_for_answer(
    root: UUID, form: type[ReviewInput], key: str, timeout: int
) -> ReviewInput | None:
    """The answer to the question ``key``; None if the timeout passed without one; or suspend
    ``root`` for it (``RunSuspended``).

    Prefect's ``suspend_flow_run`` with the same form, written out because in Prefect 3.9.1 it
    refuses to run inside a task and, given another run's id, saves and loads the form on the
    current run (here the round's subflow) instead of the suspended one. The rest is its own
    protocol (flows/suspension.py): the server refuses a pause key that already fired (the run
    was resumed: the answer is stored under the key's response), and the suspension request
    makes the engine exit at its next step without touching the Suspended state. The timeout
    is Prefect's too: an automation (``timeout_resumer``) reschedules the run if nobody resumes
    it in time; the server's own expiry (a little later) is only the backstop if automations
    are off."""
    proposed = suspended(key, timeout)
    keyset = keyset_from_paused_state(proposed)
    proposed.state_details.run_input_keyset = keyset
    state = propose_suspension(root, proposed, timeout, TIMED_OUT)
    if state.is_running():  # this key fired on an earlier attempt: answered, or timed out
        try:
            return form.load(keyset, flow_run_id=root)
        except ValidationError:  # no answer stored: the resumer rescheduled the run
            return None
    form.save(keyset, flow_run_id=root)
    leave_suspended(root, state, f"waiting for the reviewer ({key}, at most {timeout} s)")
    return None  # not reached: leave_suspended raises
