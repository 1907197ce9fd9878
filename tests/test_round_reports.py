"""The UI tells the round's story: a real two-round training (TensorFlow on MNIST shards,
embedded marketplace, file storage, a real Prefect server) read back through the Prefect API.

Round 1: two honest contributors, both accepted. Round 2: both slots return the global
weights unchanged, both are rejected: the round is settled and reported, then ends Failed,
and so does the training, which still hands back both reports."""

from __future__ import annotations

import base64
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from decentralml.contributor import Contributor, assign, result_url
from decentralml.creator.report import short_address, underfilled_rounds
from decentralml.creator.session import open_session
from decentralml.io.weights import decode, encode
from decentralml.protocol.records import ResultSubmissionStatus, Task, TaskResult
from decentralml.runtime.backends import contributor_keypair
from flows.contributor import run_agent
from flows.creator import run_training
from tests.helpers import commit_and_send, write_config

pytestmark = [pytest.mark.slow, pytest.mark.integration]

RUN = "test-reports"
SLOTS, REWARD = 2, 100
UNDERFILLED = "no result accepted: 2 rejected, 0 deferred"


def _wait_for_task(market, task_id: int, timeout_s: float = 120) -> Task:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len(market.list_tasks(open_only=False)) > task_id:
            return market.get_task(task_id)
        time.sleep(0.2)
    raise TimeoutError(f"task {task_id} was never published")


def _send_global_back(market, store, worker, task: Task) -> None:
    """A lazy contributor: takes a slot and returns the task's global weights untrained."""
    submission_id = assign(market, worker, task.task_id)
    untrained = encode(decode(store.get(task.spec.global_weights_path)))
    artifact = store.put(result_url(task, submission_id), untrained)
    result = TaskResult(artifact.url, artifact.sha256, 500, {}, task.spec.global_weights_sha256)
    commit_and_send(market, worker, submission_id, result)


def _contributors(session, poll_seconds: float) -> None:
    """Round 1 (task 0): honest agents, one after the other. Round 2 (task 1): lazy ones."""
    market, store = session.creator.market, session.creator.store
    workers = [contributor_keypair(session.creator.config.marketplace, i) for i in range(SLOTS)]
    for index, worker in enumerate(workers):
        run_agent(Contributor(market, store, worker, index), poll_seconds, 0, None, max_tasks=1)
    task = _wait_for_task(market, 1)
    for worker in workers:
        _send_global_back(market, store, worker, task)


@pytest.fixture(scope="module")
def training(tmp_path_factory, prefect_harness):
    tmp_path = tmp_path_factory.mktemp("reports")
    _, config = write_config(
        tmp_path,
        **{
            "contributors": 10,  # small shards (5 500 examples): quick local training
            "rounds": 2,
            "task.max_assignments": SLOTS,
            "task.pays_amount": SLOTS * REWARD,
            "task.validation_strategy": "AutoAccept",
        },
    )
    session = open_session(config, run=RUN)
    with ThreadPoolExecutor(max_workers=1) as pool:
        contributors = pool.submit(_contributors, session, config.poll_seconds)
        reports = run_training(config, session)
        contributors.result()
    return {"reports": reports, "market": session.creator.market}


def _versions(client, key: str) -> list:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    return client.read_artifacts(
        artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
        sort=ArtifactSort.CREATED_DESC,
    )


def _latest(client, key: str):
    versions = _versions(client, key)
    assert versions, f"no artifact {key}"
    return versions[0]


def _rows(artifact) -> dict[int, dict]:
    data = artifact.data if isinstance(artifact.data, list) else json.loads(artifact.data)
    return {row["submission"]: row for row in data}


@pytest.fixture(scope="module")
def client(training):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        yield client


def test_training_returns_every_report_though_a_round_was_underfilled(training):
    first, second = training["reports"]
    assert len(first.accepted) == SLOTS and first.shortfall is None and first.metric > 0.8
    assert second.accepted == [] and second.shortfall == UNDERFILLED
    assert underfilled_rounds(training["reports"]) == [2]
    assert second.payments == dict.fromkeys(second.rejected, 0)
    assert second.refund == SLOTS * REWARD  # the money path is unchanged: all refunded
    assert training["market"].escrow_total() == 0


def test_submission_tables_match_the_marketplace(training, client):
    market = training["market"]
    for report in training["reports"]:
        table = _latest(client, f"{RUN}-round-{report.round_number}-submissions")
        assert table.type == "table"
        rows = _rows(table)
        assert set(rows) == {s.submission_id for s in market.list_task_results(report.task_id)}
        for sid, row in rows.items():
            submission = market.get_submission(sid)
            assert row["contributor"] == short_address(submission.worker)
            assert row["sha256"] == submission.result.sha256[:12]
            assert row["examples_claimed"] == submission.result.num_examples
            assert row["paid"] == submission.paid == report.payments[sid]
            assert row["verdict"] == submission.status.value.lower()
            assert row["reason"] == submission.reason
            assert 0 <= row["holdout_accuracy"] <= 1 and row["holdout_loss"] > 0
    accepted = _rows(_latest(client, f"{RUN}-round-1-submissions")).values()
    assert all(r["paid"] == REWARD and r["examples_counted"] == 5500 for r in accepted)
    assert all("accuracy" in r["local_metrics"] for r in accepted)
    rejected = _rows(_latest(client, f"{RUN}-round-2-submissions")).values()
    assert all("unchanged global weights" in r["reason"] for r in rejected)
    statuses = {market.get_submission(sid).status for sid in training["reports"][1].rejected}
    assert statuses == {ResultSubmissionStatus.Rejected}


def test_round_summaries_say_how_each_round_ended(training, client):
    first = _latest(client, f"{RUN}-round-1-summary")
    assert first.type == "markdown" and f"| {2 * REWARD} | 0 |" in first.data
    assert "failed" not in first.data
    second = _latest(client, f"{RUN}-round-2-summary").data
    assert f"| 0 | 2 | 0 | 0 | {SLOTS * REWARD} |" in second
    assert f"Round failed: {UNDERFILLED}" in second


def test_training_chart_is_a_png_kept_as_a_history(training, client):
    versions = _versions(client, f"{RUN}-metric-chart")
    assert len(versions) == 2  # one version per round, under one key
    [encoded] = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", versions[0].data)
    assert base64.b64decode(encoded).startswith(b"\x89PNG\r\n\x1a\n")
    summary = _latest(client, f"{RUN}-training-summary").data
    assert "Underfilled rounds: 2." in summary and summary.count("\n| ") == 3


def _task_run_names(client, flow_run_name: str) -> list[str]:
    """The task runs of the flow run so named, by task name (Prefect appends "-<3 hex>")."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterName

    [run] = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[flow_run_name]))
    )
    task_runs = client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
    )
    return sorted(task_run.name.rsplit("-", 1)[0] for task_run in task_runs)


def test_evaluation_and_every_read_are_task_runs_of_the_round(training, client):
    """The round's flow body only narrates: scoring the new global weights on the test split,
    reading the task back and the resumed training's weights each show as a task run."""
    for report in training["reports"]:
        names = _task_run_names(client, f"{RUN}-round-{report.round_number}-task-{report.task_id}")
        assert names.count("evaluate-global-weights") == 1, names
        assert names.count("read-task") == 1 and "review-and-aggregate" in names, names
    assert "resume-training" in _task_run_names(client, f"{RUN}-train")


def test_progress_while_waiting_ends_with_every_result_in(training, client):
    progress = _latest(client, f"{RUN}-round-1-progress")
    assert progress.type == "progress" and float(progress.data) == 100
    assert f"results in {SLOTS}/{SLOTS}" in progress.description


def test_progress_shows_each_slot_from_the_marketplace_records(training, client):
    """The creator sees who took each slot, when (the block), and the digests it committed
    to and sent, as the marketplace recorded them (the artifact is updated in place: its last
    state is read)."""
    market = training["market"]
    description = _latest(client, f"{RUN}-round-1-progress").description
    rows = [line for line in description.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| slot | submission | contributor | state |")
    for number, s in enumerate(market.list_task_results(0), start=1):
        assert rows[number] == (
            f"| {number} | {s.submission_id} | {short_address(s.worker)} | result in | "
            f"{s.assigned_block} | {s.commitment[:12]} | {s.result.sha256[:12]} |"
        )
    assert "Free slots: 0." in description and "Slow:" not in description


def _runs(client, *tags: str) -> dict:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=tags)))
    return {run.name: run for run in runs}


def test_runs_are_named_and_tagged_by_run_round_task_and_role(training, client):
    runs = _runs(client, f"run:{RUN}", "role:creator")
    assert set(runs) == {
        f"{RUN}-train",
        f"{RUN}-publish-round-1",
        f"{RUN}-round-1-task-0",
        f"{RUN}-publish-round-2",
        f"{RUN}-round-2-task-1",
    }
    assert all("decentralml" in run.tags for run in runs.values())
    contributors = _runs(client, "decentralml", "role:contributor")
    assert {"contributor-0-task-0", "contributor-1-task-0"} <= set(contributors)


def test_task_runs_carry_no_tags_so_none_waits_for_a_concurrency_lease(training, client):
    """Prefect asks its API for a ``tag:<name>`` concurrency lease before every task run that
    has tags, limit or not (issue 20: 30 % of a creator's time): the run and role tags are on
    the flow runs only. A subflow's tracking task run keeps them: it never runs the engine."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_runs = {**_runs(client, f"run:{RUN}"), **_runs(client, "role:contributor")}
    assert len(flow_runs) >= 7 and all("decentralml" in run.tags for run in flow_runs.values())
    ids = [run.id for run in flow_runs.values()]
    task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
    trackers = {run.parent_task_run_id for run in flow_runs.values()}
    steps = [run for run in task_runs if run.id not in trackers]
    assert len(steps) > 20
    tagged = sorted((run.name, run.tags) for run in steps if run.tags)
    assert tagged == []


def test_underfilled_round_and_training_end_failed_naming_why(training, client):
    runs = _runs(client, f"run:{RUN}")
    assert runs[f"{RUN}-round-1-task-0"].state.is_completed()
    round_two = runs[f"{RUN}-round-2-task-1"].state
    assert round_two.is_failed() and round_two.message == f"round 2: {UNDERFILLED}"
    train = runs[f"{RUN}-train"].state
    assert train.is_failed() and train.message.startswith("underfilled rounds 2 (round 2: no")


def _core_logs(client, flow_run_name: str) -> list:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    run = _runs(client, f"run:{RUN}")[flow_run_name]
    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id]))
    deadline = time.monotonic() + 15  # logs reach the server in batches
    while True:
        logs = client.read_logs(log_filter=log_filter)
        core = [log for log in logs if log.name.startswith("decentralml.creator")]
        if core or time.monotonic() > deadline:
            return core
        time.sleep(0.5)


def test_core_warnings_and_progress_lines_reach_the_run_logs(training, client):
    core = _core_logs(client, f"{RUN}-round-2-task-1")
    assert any("no result accepted; the global model stays" in log.message for log in core)
    waiting = [log for log in _core_logs(client, f"{RUN}-round-1-task-0") if log.level == 20]
    assert any(
        re.fullmatch(
            r"task 0: \d/2 slots taken, \d results in; waiting up to \d+ s more", log.message
        )
        for log in waiting
    ), [log.message for log in waiting]
