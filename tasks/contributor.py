"""The contributor's steps as Prefect tasks (core logic in decentralml.contributor); the
procedure that runs them in order is decentralml.contributor.procedure."""

from __future__ import annotations

from dataclasses import replace

from prefect import task

from decentralml import contributor as core
from decentralml.contributor import PLAIN_STEPS, ContributorSteps
from tasks.policy import IO_TASK, LOCAL_TASK

find_open_task = task(name="list-tasks", **IO_TASK)(core.find_open_task)

STEPS = ContributorSteps(
    check_offer=task(name="check-task-record", **IO_TASK)(core.check_offer),
    fetch_inputs=task(name="download-and-verify-assets", **IO_TASK)(core.fetch_inputs),
    check_inputs=task(name="check-task-settings", **LOCAL_TASK)(core.check_inputs),
    assign=task(name="assign-task", **IO_TASK)(core.assign),
    load_data=task(name="load-training-data", **LOCAL_TASK)(core.training_data),
    prepare_local=task(name="prepare-local-steps", **LOCAL_TASK)(core.prepare_local),
    train=task(name="train-on-shard", **LOCAL_TASK)(core.train),
    encode_result=task(name="encode-result", **LOCAL_TASK)(core.encode_result),
    commit=task(name="commit-result", **IO_TASK)(core.commit),
    upload_result=task(name="upload-result", **IO_TASK)(core.upload_result),
    submit=task(name="send-task-result", **IO_TASK)(core.submit),
    finish_local=task(name="keep-local-state", **LOCAL_TASK)(core.finish_local),
)
"""The procedure's steps, each a Prefect task: what the contributor flow runs."""

SIMULATED_STEPS = replace(
    PLAIN_STEPS,
    check_offer=STEPS.check_offer,
    fetch_inputs=STEPS.fetch_inputs,
    assign=STEPS.assign,
    commit=STEPS.commit,
    upload_result=STEPS.upload_result,
    submit=STEPS.submit,
)
"""A simulated contribution's steps (one task run per contribution, flows.simulation): the
marketplace and storage steps stay Prefect tasks, retried as every such step is
(tasks.policy), and the local ones (checks, data, training, encoding) are plain calls inside
the contribution's task run, which logs them. Each task run costs the round orchestration
(state proposals and logs sent to the API), and the agents share one process and its 2 cores:
six fewer per contribution (docs/benchmarks.md, issue 20). A stranger's own agent keeps every
step a task (STEPS): one contribution, its steps in its own UI."""
