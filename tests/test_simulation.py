"""Simulated contributors on Dask (flows/simulation.py): a real LocalCluster, a separately
started ``dask scheduler`` + ``dask worker``, and the one-line refusal of a bad address."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from decentralml.runtime.config import RunConfig, parse_config
from decentralml_cli import main
from tests.chain_fixture import free_port
from tests.helpers import ROOT, small_config, write_config

DASK = Path(sys.executable).parent / "dask"


def _simulation_config(tmp_path: Path, contributors: int, **simulation: object) -> RunConfig:
    data = small_config(
        tmp_path,
        contributors=contributors,
        **{"task.max_assignments": contributors, "data.holdout_examples": 1000},
    )
    data["simulation"] = {"runner": "dask"} | simulation
    return parse_config(data, "simulation-test")


def _assert_every_contributor_landed_and_was_judged(summary: dict, contributors: int) -> None:
    [round_one] = summary["rounds"]
    judged = set(round_one["accepted"]) | set(round_one["rejected"])
    rows = summary["submissions"]
    assert len(rows) == contributors and {r["submission"] for r in rows} == judged
    assert len({r["contributor"] for r in rows}) == contributors  # one each, none lost
    assert all(r["verdict"] == "accepted" and r["paid"] > 0 for r in rows), rows


def _runs_since(started: datetime) -> tuple[list, list, list[str]]:
    """The agent and contribution task runs and the states of the contributor flow runs
    created since ``started``, read back from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterStartTime,
        TaskRunFilter,
        TaskRunFilterName,
        TaskRunFilterStartTime,
    )

    def task_runs(client, prefix: str) -> list:
        return client.read_task_runs(
            task_run_filter=TaskRunFilter(
                name=TaskRunFilterName(like_=prefix),
                start_time=TaskRunFilterStartTime(after_=started),
            )
        )

    with get_client(sync_client=True) as client:
        agents, contributions = task_runs(client, "agent-"), task_runs(client, "contribution-")
        flows = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["contributor"])),
            flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=started)),
        )
    return agents, contributions, [f.state_name for f in flows]


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["dask", "threads", "processes"])
def test_a_local_cluster_runs_every_contributor_as_a_task(tmp_path, prefect_harness, runner):
    """dask: a real LocalCluster of 2 workers; threads: Prefect's thread pool; processes: a
    spawned process per agent (Prefect's process pool), reaching the test's Prefect server.
    Each contribution is a task run nested in its agent's task run, and no flow run (a
    flow run's start per contribution was most of a round's overhead). Every agent's task run
    belongs to the flow run ``<run>-contributors``, tagged with the run (issue 18: Dask agent
    task runs had no flow run)."""
    from flows.demo import run_demo

    started = datetime.now(UTC)
    summary = run_demo(_simulation_config(tmp_path, 3, runner=runner, n_workers=2))
    _assert_every_contributor_landed_and_was_judged(summary, 3)
    agents, contributions, contributor_flows = _runs_since(started)
    _assert_agents_ran_under_their_flow_run(agents)
    assert sorted((a.name, a.state_name) for a in agents) == [
        (f"agent-{i}", "Completed") for i in range(3)
    ]
    assert sorted((c.name, c.state_name) for c in contributions) == [
        (f"contribution-{i}-task-0", "Completed") for i in range(3)
    ]
    agent_of = {a.id: a.name for a in agents}
    parents = {c.name: {agent_of.get(p.id) for p in c.task_inputs["__parents__"]}
               for c in contributions}  # fmt: skip
    assert parents == {f"contribution-{i}-task-0": {f"agent-{i}"} for i in range(3)}
    assert contributor_flows == []  # a simulated contribution starts no flow run


def _assert_agents_ran_under_their_flow_run(agents: list) -> None:
    """One flow run holds every agent: ``<run>-contributors``, Completed, tagged with its run
    and role like the creator's runs."""
    from prefect.client.orchestration import get_client

    assert {a.flow_run_id for a in agents} != {None}
    [flow_run_id] = {a.flow_run_id for a in agents}
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
    [run] = [t.removeprefix("run:") for t in flow_run.tags if t.startswith("run:")]
    assert "-demo-" in run  # the demo's session names its run
    assert flow_run.name == f"{run}-contributors"
    assert {"decentralml", "role:contributor"} <= set(flow_run.tags)
    assert flow_run.state_name == "Completed"
    assert set(flow_run.parameters) == {"config", "first_task_id"}


def test_the_processes_runner_has_a_process_per_agent_and_a_stop_that_crosses_them(tmp_path):
    """``simulation.runner: processes``: Prefect's process pool sized to the contributors, and
    a stop flag that survives cloudpickle into a spawned process and is seen there."""
    import multiprocessing

    import cloudpickle
    from prefect.task_runners import ProcessPoolTaskRunner

    from flows.simulation import contributor_runner

    config = _simulation_config(tmp_path, 3, runner="processes")
    assert config.simulation.runner == "processes"
    with contributor_runner(config.simulation, 3) as (runner, stop):
        assert isinstance(runner, ProcessPoolTaskRunner) and runner.duplicate()._max_workers == 3
        child = multiprocessing.get_context("spawn").Process(
            target=_set_from_a_pickle, args=(cloudpickle.dumps(stop),)
        )
        child.start()
        child.join(timeout=120)
        assert child.exitcode == 0
        assert stop.is_set()


def _set_from_a_pickle(pickled: bytes) -> None:
    import cloudpickle

    cloudpickle.loads(pickled).set()


class DaskProcess:
    """A ``dask scheduler`` or ``dask worker`` subprocess, stopped by its PID."""

    def __init__(self, args: list[str], cwd: Path, env: dict, log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [str(DASK), *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            if text in self.log.read_text():
                return
            time.sleep(0.2)
        raise TimeoutError(f"{text!r} not in {self.log}: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def dask_scheduler_and_worker(tmp_path: Path, prefect_harness) -> Iterator[str]:
    """A scheduler and one worker process (2 threads) on loopback. The worker reaches the
    test's Prefect server through PREFECT_API_URL, as a worker on another host would."""
    from prefect.settings import PREFECT_API_URL

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_API_URL": PREFECT_API_URL.value()}
    started = []
    try:
        scheduler = DaskProcess(
            ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            tmp_path,
            env,
            tmp_path / "scheduler.log",
        )
        started.append(scheduler)
        scheduler.wait_for("Scheduler at:")
        worker = DaskProcess(
            [
                "worker", address, "--nthreads", "2", "--nworkers", "1",
                "--no-dashboard", "--host", "127.0.0.1",
            ],
            tmp_path,
            env,
            tmp_path / "worker.log",
        )  # fmt: skip
        started.append(worker)
        worker.wait_for("Registered to:")
        yield address
    finally:
        for process in reversed(started):
            process.stop()


@pytest.mark.slow
@pytest.mark.integration
def test_a_round_runs_through_a_separately_started_dask_scheduler(
    tmp_path, dask_scheduler_and_worker
):
    from flows.demo import run_demo

    config = _simulation_config(tmp_path, 2, address=dask_scheduler_and_worker)
    summary = run_demo(config)
    _assert_every_contributor_landed_and_was_judged(summary, 2)
    worker_log = (tmp_path / "worker.log").read_text()
    assert "Error" not in worker_log, worker_log[-2000:]


def test_an_unreachable_scheduler_is_one_line_and_status_2(tmp_path, capsys):
    path, _ = write_config(tmp_path, **{"simulation.address": f"127.0.0.1:{free_port()}"})
    assert main(["demo", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert "simulation.address: no Dask scheduler answers at 127.0.0.1:" in err


@pytest.mark.parametrize(
    ("simulation", "message"),
    [
        ({"address": "not an address"}, "is not a Dask scheduler address"),
        ({"runner": "ray"}, "simulation.runner"),
        ({"n_workers": 0}, "simulation.n_workers"),
    ],
)
def test_bad_simulation_settings_name_the_field(tmp_path, capsys, simulation, message):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**small_config(tmp_path), "simulation": simulation}))
    assert main(["demo", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err


def test_an_external_cluster_short_of_threads_is_refused(tmp_path):
    """Each agent holds a worker thread until the last round: 3 contributors on 2 threads
    would leave one queued behind agents that never finish."""
    from distributed import LocalCluster

    from decentralml.protocol.errors import ConfigError
    from flows.simulation import contributor_runner

    config = _simulation_config(tmp_path, 3)
    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
    ) as cluster:
        at = config.simulation.model_copy(update={"address": cluster.scheduler_address})
        with (
            pytest.raises(ConfigError, match="2 worker threads for 3 contributors"),
            contributor_runner(at, 3),
        ):
            pass
