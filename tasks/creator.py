"""The creator's steps as Prefect tasks (core logic in decentralml.creator and
decentralml.creator.session); the order they run in is decentralml.creator.round's."""

from __future__ import annotations

from prefect import task

from decentralml import creator as core
from decentralml.creator import session
from decentralml.creator.round import CreatorSteps, keep_report, kept_reports
from tasks.policy import IO_TASK, LOCAL_TASK, POLL_TASK

wait_for_results = task(name="wait-for-results", **POLL_TASK)(core.wait_for_results)
results_in = task(name="check-results-in", **IO_TASK)(core.results_in)
open_creator = task(name="open-creator", **LOCAL_TASK)(session.open_creator)
"""The marketplace, storage and key without the model or data: what the round's waker opens."""

# The session's steps: opening it (marketplace, data splits, the compiled model), reading a
# resumed training's weights back from storage, and adopting a round's new global weights,
# which scores them on the test split (CPU: not retried).
open_session = task(name="open-creator-session", **LOCAL_TASK)(session.open_session)

STEPS = CreatorSteps(
    upload_global=task(name="upload-global-weights", **IO_TASK)(core.upload_global),
    upload_assets=task(name="upload-contributor-assets", **IO_TASK)(core.upload_assets),
    create_round_task=task(name="create-task", **IO_TASK)(core.create_round_task),
    read_task=task(name="read-task", **IO_TASK)(core.read_task),
    pending_results=task(name="list-pending-results", **IO_TASK)(core.pending_results),
    review=task(name="review-and-aggregate", **LOCAL_TASK)(core.review),
    evaluate_global=task(name="evaluate-global-weights", **LOCAL_TASK)(
        session.CreatorSession.set_global
    ),
    checkpoint=task(name="checkpoint-global", **IO_TASK)(core.checkpoint),
    settle_and_close=task(name="settle-and-close", **IO_TASK)(core.settle_and_close),
    settle_overdue=task(name="pay-overdue-results", **IO_TASK)(core.settle_overdue),
    find_progress=task(name="find-progress", **IO_TASK)(core.find_progress),
    resume=task(name="resume-training", **IO_TASK)(session.CreatorSession.resume),
    keep_report=task(name="keep-round-report", **IO_TASK)(keep_report),
    kept_reports=task(name="read-kept-reports", **IO_TASK)(kept_reports),
)
"""The round engine's steps, each a Prefect task: what the creator flows run."""
