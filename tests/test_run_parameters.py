"""Deployment parameters without a server: run-level overrides on top of a config, and the
pull step that enters the worker's folder."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pytest

from decentralml.protocol.errors import ConfigError
from decentralml.runtime.config import load_config, run_overrides
from flows.creator import load_run_config
from flows.pull_steps import WORKDIR_VARIABLE, enter_workdir
from tests.helpers import write_config


def test_unset_parameters_leave_the_config_alone(tmp_path):
    path, config = write_config(tmp_path)
    assert run_overrides() == {}
    assert load_config(path, run_overrides()) == config


def test_parameters_override_the_config(tmp_path):
    path, config = write_config(tmp_path, rounds=3, contributors=5, **{"task.max_assignments": 5})
    run = load_config(path, run_overrides(1, 4, 2, "median", "trial"))
    assert (run.rounds, run.training.epochs, run.strategy.name, run.name) == (
        1,
        4,
        "median",
        "trial",
    )
    assert (run.contributors, run.task.max_assignments) == (2, 2)  # slots and partitions
    assert run.task.pays_amount == config.task.pays_amount


def test_a_bad_parameter_is_one_line_naming_the_field(tmp_path):
    path, _ = write_config(tmp_path)
    with pytest.raises(ConfigError) as refused:
        load_run_config(str(path), rounds=0)
    assert "rounds" in str(refused.value) and len(str(refused.value).splitlines()) == 1


def test_the_pull_step_enters_the_workers_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clone").mkdir()
    monkeypatch.setenv(WORKDIR_VARIABLE, str(tmp_path / "clone"))
    assert enter_workdir() == {"directory": str(tmp_path / "clone")}
    assert Path(os.getcwd()) == tmp_path / "clone"


def test_without_the_variable_the_pull_step_stays(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(WORKDIR_VARIABLE, raising=False)
    assert enter_workdir() == {"directory": str(tmp_path)}


def test_a_missing_workdir_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(WORKDIR_VARIABLE, str(tmp_path / "nowhere"))
    with pytest.raises(NotADirectoryError, match=WORKDIR_VARIABLE):
        enter_workdir()
    assert Path(os.getcwd()) == tmp_path


@pytest.mark.slow
def test_an_underfilled_deployment_run_fails_with_its_message(tmp_path, prefect_harness):
    """A deployment's training whose round got no result ended in Prefect's own TypeError
    ("Unexpected result for failed state: [...] list cannot be resolved into an exception"),
    not in the training's message: a team alerting on the run saw the wrong failure."""
    from flows.creator import train_from_config

    path, _ = write_config(
        tmp_path, rounds=1, contributors=1, round_timeout_seconds=0.5, poll_seconds=0.1
    )
    state = train_from_config(str(path), return_state=True)
    assert state.is_failed() and state.message.startswith("underfilled rounds 1 (round 1: no")
    [report] = state.result(raise_on_failure=False)
    assert report["accepted"] == [] and report["refund"] > 0


@pytest.mark.slow
def test_an_underfilled_next_round_run_fails_with_the_rounds_message(tmp_path, prefect_harness):
    """The scheduled/triggered one-round deployment failed in Prefect's own TypeError too
    ("Unexpected result for failed state"), not with the round's message."""
    from flows.scheduled import next_round_from_config

    path, _ = write_config(
        tmp_path, rounds=2, contributors=1, round_timeout_seconds=0.5, poll_seconds=0.1
    )
    state = next_round_from_config(str(path), return_state=True)
    assert state.is_failed() and state.message.startswith("round 1: no result accepted")
    report = state.result(raise_on_failure=False)
    assert report["round_number"] == 1 and report["accepted"] == [] and report["refund"] > 0


@pytest.mark.slow
def test_chained_rounds_are_named_by_round_and_chart_the_whole_training(tmp_path, prefect_harness):
    """Issue 18: every chained ``creator-next-round`` run was named
    ``next-round-of-<config>`` and none updated the training's chart or summary. Each is now
    named ``<run>-next-round-<n>``, and each republishes the chart and summary of every round
    so far, read back from the reports the rounds kept in storage."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    from decentralml.creator.report import RoundReport, artifact_key
    from decentralml.io.storage import ArtifactStore
    from flows.scheduled import next_round_from_config

    path, config = write_config(
        tmp_path, rounds=2, contributors=1, round_timeout_seconds=0.5, poll_seconds=0.1
    )
    run = f"chain-{uuid.uuid4().hex[:8]}"
    states = [next_round_from_config(str(path), run_name=run, return_state=True) for _ in "12"]
    with get_client(sync_client=True) as client:
        names = [client.read_flow_run(s.state_details.flow_run_id).name for s in states]
        [summary, *_] = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[artifact_key(run, "training-summary")])
            ),
            sort=ArtifactSort.CREATED_DESC,
        )
    assert names == [f"{run}-next-round-1", f"{run}-next-round-2"]
    rows = [line for line in summary.data.splitlines() if re.match(r"\| [12] \|", line)]
    assert [row.split("|")[1].strip() for row in rows] == ["1", "2"], summary.data

    store = ArtifactStore(config.storage.url)
    kept = [
        RoundReport.from_json(store.get(store.round_url(run, n, "report.json"))) for n in (1, 2)
    ]
    assert [r.round_number for r in kept] == [1, 2] and all(r.refund > 0 for r in kept)
