"""ManualAccept: the round pauses for a form in the Prefect UI; the CLI's non-interactive route.

The slow tests train two real contributors per task (TensorFlow on MNIST shards, 1 epoch)
and run the creator's round flow against Prefect's test server, which is a real server: a
uvicorn subprocess answering HTTP (the first test checks). A reviewer is played through the
API, as the UI's Resume button does it: find the Paused run, read the form, resume it with
``resume_flow_run(run_id, run_input=...)``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
import yaml

from decentralml.protocol.errors import ConfigError
from decentralml.protocol.records import ResultSubmissionStatus, Submission, TaskResult, Verdict
from decentralml.validation.manual import (
    NO_REVIEWER,
    ManualAccept,
    ReviewRefused,
    Summary,
    decisions_from_file,
    decisions_template,
    review_markdown,
    terminal_decider,
    verdicts_from_answers,
)
from tests.helpers import ROOT, write_config

TIMEOUT_REASON = "no decision before the timeout (default: reject)"


# --- the core, without Prefect ----------------------------------------------------------------


def test_answers_become_verdicts_and_the_unmentioned_get_the_default() -> None:
    verdicts = verdicts_from_answers([(3, True, "good"), (4, False, "")], [3, 4, 5], "reject")
    assert verdicts == {
        3: Verdict(3, True, "good"),
        4: Verdict(4, False, "rejected by the reviewer"),
        5: Verdict(5, False, "not mentioned in the review (default: reject)"),
    }
    assert verdicts_from_answers([], [7], "accept")[7].accept


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ([(9, True, "")], "submission 9 is not pending review (pending: 3, 4)"),
        ([(3, True, ""), (3, False, "")], "submission 3 is decided twice"),
    ],
)
def test_a_bad_answer_is_refused_as_a_whole(answers, message: str) -> None:
    with pytest.raises(ReviewRefused) as refused:
        verdicts_from_answers(answers, [3, 4], "reject")
    assert str(refused.value) == message


def _summary(sid: int, counted: int = 100) -> Summary:
    return Summary(sid, f"5Worker{sid}", 100, counted, {"accuracy": 0.9}, 0.8765, 0.4321)


def test_the_form_header_and_the_template_show_every_pending_submission(tmp_path) -> None:
    summaries = [_summary(3), _summary(4, counted=50)]
    table = review_markdown(12, summaries, "reject")
    assert "Task 12: 2 submission(s)" in table and "default: reject" in table
    rows = [line for line in table.splitlines() if line.startswith("| 3 ") or "| 4 |" in line]
    assert len(rows) == 2 and all("0.8765 | 0.4321" in row for row in rows)
    assert "claim counts as 50 examples" in rows[1]

    template = tmp_path / "decisions.yaml"
    template.write_text(decisions_template(12, summaries))
    with pytest.raises(ConfigError, match="decision for 3 needs a boolean 'accept'"):
        decisions_from_file(template)  # an unedited template decides nothing
    filled = template.read_text().replace("accept:\n", "accept: true\n", 1)
    template.write_text(filled.replace("accept:\n", "accept: false\n"))
    decide = decisions_from_file(template)
    assert decide(_candidate(3)).accept and not decide(_candidate(4)).accept


def _candidate(sid: int):
    from decentralml.validation.base import Candidate

    result = TaskResult("file:///r", "0" * 64, 100, {})
    submission = Submission(sid, 1, "5W", ResultSubmissionStatus.PendingValidation, 0, result)
    return Candidate(submission, {}, lambda tensors: {"accuracy": 0.5, "loss": 1.0})


def test_manual_accept_asks_a_round_decider_once_for_the_round() -> None:
    calls = []

    def decide_all(cs):
        calls.append([c.submission_id for c in cs])
        return {c.submission_id: Verdict(c.submission_id, c.submission_id == 1, "") for c in cs}

    policy = ManualAccept(round_decider=decide_all)
    verdicts = policy.decide_round([_candidate(1), _candidate(2)], None)
    assert calls == [[1, 2]] and [v.accept for v in verdicts] == [True, False]


def test_without_a_terminal_manual_accept_names_the_review_command(monkeypatch) -> None:
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # noqa: SIM115 (closed by pytest)
    with pytest.raises(ConfigError) as refused:
        terminal_decider()
    assert "decentralml review TASK_ID --write decisions.yaml" in str(refused.value)


def test_cli_round_without_decisions_or_terminal_exits_2_with_one_line(tmp_path) -> None:
    path, _ = write_config(tmp_path, **{"task.validation_strategy": "ManualAccept"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    done = subprocess.run(
        [sys.executable, "-m", "decentralml_cli", "round", "0", "--config", str(path)],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {NO_REVIEWER}"


# --- a real round, paused for the form -----------------------------------------------------------


@pytest.fixture(scope="module")
def rounds(tmp_path_factory, prefect_harness):
    """Three published tasks, each with two real results (shards 0 and 1), none judged."""
    from decentralml.contributor import Contributor
    from decentralml.creator.session import open_session
    from decentralml.runtime.backends import contributor_keypair, open_store
    from flows.contributor import contribute
    from flows.creator import publish

    tmp_path = tmp_path_factory.mktemp("manual")
    overrides = {
        "contributors": 20,  # small shards (~2 700 examples): quick training
        "task.max_assignments": 2,
        "task.pays_amount": 1000,
        "task.validation_strategy": "ManualAccept",
        "task.manual_timeout_seconds": 120,
        "data.holdout_examples": 2000,
    }
    path, config = write_config(tmp_path, **overrides)
    session = open_session(config, run="manual")
    market = session.creator.market
    tasks = {}
    for round_number in (1, 2, 3):
        task = market.get_task(publish(session, round_number))
        sent = [
            contribute(
                Contributor(
                    market,
                    open_store(config.storage),
                    contributor_keypair(config.marketplace, i),
                    i,
                ),
                task,
            )
            for i in (0, 1)
        ]
        tasks[round_number] = (task.task_id, [c.submission_id for c in sent])
    return {"path": path, "config": config, "session": session, "tmp": tmp_path, "tasks": tasks}


def _paused_run(name: str, after_pauses: int = 0, timeout: float = 120):
    """The flow run ``name`` once it is Paused for the (after_pauses + 1)-th time."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterName,
        FlowRunFilterState,
        FlowRunFilterStateName,
    )

    paused = FlowRunFilter(
        name=FlowRunFilterName(any_=[name]),
        state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Paused"])),
    )
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            for run in client.read_flow_runs(flow_run_filter=paused):
                keyset = run.state.state_details.run_input_keyset
                if keyset and keyset["response"] == f"paused-{after_pauses + 1}-response":
                    return run
            time.sleep(0.5)
    raise AssertionError(f"flow run {name} did not pause (pause {after_pauses + 1})")


def _form(run) -> tuple[str, dict]:
    from prefect.input.run_input import read_flow_run_input

    keyset = run.state.state_details.run_input_keyset
    description = read_flow_run_input(keyset["description"], flow_run_id=run.id)
    schema = read_flow_run_input(keyset["schema"], flow_run_id=run.id)
    return description, schema


def _round_in_thread(session, round_number: int, task_id: int) -> tuple[threading.Thread, list]:
    from flows.creator import run_round

    out: list = []

    def target() -> None:
        out.append(run_round(session, round_number, task_id, return_state=True))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


@pytest.mark.slow
@pytest.mark.integration
def test_the_round_pauses_for_the_form_and_pays_exactly_the_approved(rounds) -> None:
    import httpx
    from prefect.flow_runs import resume_flow_run
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()  # the test server is a real one, over HTTP
    assert api.startswith("http://127.0.0.1:") and httpx.get(f"{api}/health").status_code == 200

    session, market = rounds["session"], rounds["session"].creator.market
    task_id, (good, bad) = rounds["tasks"][1]
    thread, out = _round_in_thread(session, 1, task_id)
    run = _paused_run(f"manual-round-1-task-{task_id}")
    description, schema = _form(run)
    assert f"Task {task_id}: 2 submission(s) await your decision" in description
    for sid in (good, bad):
        [row] = [line for line in description.splitlines() if line.startswith(f"| {sid} |")]
        accuracy = float(row.split("|")[5])
        assert 0.5 < accuracy <= 1.0, row  # held-out accuracy of a 1-epoch MNIST model
    assert schema["required"] == ["decisions"]

    # A wrong type is refused by the server: the run stays paused, nothing is decided.
    with pytest.raises(RuntimeError, match="Cannot resume this run"):
        resume_flow_run(run.id, run_input={"decisions": [{"submission_id": "x"}]})
    assert _paused_run(f"manual-round-1-task-{task_id}").id == run.id
    # An unknown id passes the schema but not the flow: refused, and the round pauses again.
    resume_flow_run(run.id, run_input={"decisions": [{"submission_id": 999, "accept": True}]})
    again = _paused_run(f"manual-round-1-task-{task_id}", after_pauses=1)
    refusal, _ = _form(again)
    assert "refused: submission 999 is not pending review" in refusal
    assert all(market.get_submission(s).status is ResultSubmissionStatus.PendingValidation
               for s in (good, bad))  # fmt: skip

    answer = [
        {"submission_id": good, "accept": True, "reason": "checked the curves"},
        {"submission_id": bad, "accept": False, "reason": "not from our data"},
    ]
    resume_flow_run(again.id, run_input={"decisions": answer})
    thread.join(timeout=120)
    [state] = out
    assert state.is_completed(), state
    report = state.result()
    assert report.accepted == [good] and report.rejected == {bad: "not from our data"}
    accepted, rejected = market.get_submission(good), market.get_submission(bad)
    assert accepted.status is ResultSubmissionStatus.Accepted and accepted.paid == 500
    assert rejected.status is ResultSubmissionStatus.Rejected and rejected.paid == 0
    assert rejected.reason == "not from our data"
    assert market.get_task(task_id).refunded == 500


@pytest.mark.slow
@pytest.mark.integration
def test_without_an_answer_the_timeout_applies_the_default(rounds) -> None:
    from decentralml.creator.session import open_session
    from flows.creator import outcome, run_round

    config = rounds["config"]
    task = config.task.model_copy(update={"manual_timeout_seconds": 3})
    short = open_session(config.model_copy(update={"task": task}), run="manual")
    task_id, sids = rounds["tasks"][2]
    short.set_global(rounds["session"].global_tensors)
    started = time.monotonic()
    state = run_round(short, 2, task_id, return_state=True)
    assert time.monotonic() - started < 60
    # Resumed by the flow itself (not Failed "never resumed"), settled, then flagged: nothing
    # was accepted, fewer than task.min_accepted_results.
    assert state.is_failed() and "never resumed" not in state.message, state
    assert state.message.endswith("no result accepted: 2 rejected, 0 deferred"), state.message
    report = outcome(state)
    assert report.accepted == [] and report.rejected == dict.fromkeys(sids, TIMEOUT_REASON)
    market = short.creator.market
    for sid in sids:
        submission = market.get_submission(sid)
        assert submission.status is ResultSubmissionStatus.Rejected and submission.paid == 0
    assert market.get_task(task_id).refunded == 1000


@pytest.mark.slow
@pytest.mark.integration
def test_cli_review_lists_metrics_writes_a_template_and_round_settles_it(rounds, capsys) -> None:
    from decentralml_cli import main

    path, tmp = rounds["path"], rounds["tmp"]
    task_id, (first, second) = rounds["tasks"][3]
    template = tmp / "decisions.yaml"
    common = ["--config", str(path), "--run", "manual"]
    assert main(["review", str(task_id), *common, "--write", str(template)]) == 0
    listed = capsys.readouterr().out
    assert f"task {task_id}: 2 submission(s) await a decision" in listed
    for sid in (first, second):
        [row] = [line for line in listed.splitlines() if line.split()[:1] == [str(sid)]]
        examples, accuracy, loss = row.split()[1:4]
        assert int(examples) > 0 and 0.5 < float(accuracy) <= 1 and float(loss) > 0

    round_cmd = ["round", str(task_id), *common, "--decisions", str(template)]
    assert main(round_cmd) == 2  # unedited: every accept is empty
    assert "needs a boolean 'accept'" in capsys.readouterr().err
    decisions = yaml.safe_load(template.read_text())
    assert decisions == {sid: {"accept": None, "reason": ""} for sid in (first, second)}
    decisions[first] = {"accept": True, "reason": "by hand"}
    decisions[second] = {"accept": False, "reason": "by hand"}
    template.write_text(yaml.safe_dump(decisions))
    assert main(round_cmd) == 0
    market = rounds["session"].creator.market
    assert market.get_submission(first).status is ResultSubmissionStatus.Accepted
    assert market.get_submission(first).paid == 500
    assert market.get_submission(second).status is ResultSubmissionStatus.Rejected
