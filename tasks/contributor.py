"""The contributor's steps as Prefect tasks (core logic in decentralml.contributor)."""

from __future__ import annotations

from prefect import task

from decentralml import contributor as core
from decentralml.attacks import attacker_outcome
from decentralml.training import train_contribution
from tasks.policy import IO_TASK, LOCAL_TASK

find_open_task = task(name="list-tasks", **IO_TASK)(core.find_open_task)
check_offer = task(name="check-task-record", **IO_TASK)(core.check_offer)
fetch_inputs = task(name="download-and-verify-assets", **IO_TASK)(core.fetch_inputs)
check_inputs = task(name="check-task-settings", **LOCAL_TASK)(core.check_inputs)
assign = task(name="assign-task", **IO_TASK)(core.assign)
train = task(name="train-on-shard", **LOCAL_TASK)(train_contribution)
encode_result = task(name="encode-result", **LOCAL_TASK)(core.encode_result)
commit = task(name="commit-result", **IO_TASK)(core.commit)
upload_result = task(name="upload-result", **IO_TASK)(core.upload_result)
submit = task(name="send-task-result", **IO_TASK)(core.submit)

load_shard = task(name="load-training-data", **LOCAL_TASK)(core.training_data)
read_drift_state = task(name="read-control-variates", **LOCAL_TASK)(core.drift_state)
keep_control_variate = task(name="keep-control-variate", **LOCAL_TASK)(core.update_control_variate)
attack = task(name="simulated-attack", **LOCAL_TASK)(attacker_outcome)
