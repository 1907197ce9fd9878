"""Many simulated contributors on a distributed engine (docs/simulation.md).

The creator's training flow runs in this process; every simulated contributor's agent is a
Prefect task of one light flow run, ``<run>-contributors`` (flow ``simulated-contributors``),
that runs on a background thread meanwhile. Its task runner places each agent in a process of
its own (Prefect's ProcessPoolTaskRunner, ``simulation.runner: processes``), on a Dask worker
(prefect-dask's DaskTaskRunner: a LocalCluster, or any scheduler by ``simulation.address``),
or on Prefect's thread pool (``threads``).

An agent task receives only picklable inputs, the config and its shard index, and builds its
Contributor (marketplace connection, storage, key) where it runs, as a contributor's own
machine would: a worker on another host needs the marketplace and storage the config names
(a chain URL, S3), this project importable, and the MNIST cache. Every agent holds one worker
thread (or process) until the last round, so the runner needs one per contributor. Agents in
other processes share the embedded marketplace's SQLite file (each write one ``BEGIN
IMMEDIATE`` transaction, WAL: decentralml.marketplace.ledger) and the file store, as
contributors on other machines do.
"""

from __future__ import annotations

import contextvars
import logging
import multiprocessing
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

from prefect import Flow, flow, tags, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from decentralml.contributor import Contributor
from decentralml.protocol.errors import ConfigError
from decentralml.runtime.backends import (
    contributor_keypair,
    contributor_marketplace,
    open_marketplace,
    open_store,
)
from decentralml.runtime.config import RunConfig, SimulationConfig
from decentralml.simulation.attacks import Attack, attacked, attacker_outcome
from flows.contributor import ContributionReceipt, run_agent
from tasks.contributor import SIMULATED_STEPS
from tasks.policy import untagged_tasks

CONNECT_TIMEOUT_SECONDS = 10
log = logging.getLogger(__name__)


@runtime_checkable  # Prefect builds a parameter schema from the hints: isinstance must work
class StopSignal(Protocol):
    """What an agent needs of its stop flag: a threading.Event, a multiprocessing Manager's
    Event that reaches agents in other processes, or a distributed.Event that reaches agents
    on every Dask worker."""

    def is_set(self) -> bool: ...

    def set(self) -> None: ...

    def wait(self, timeout: float | None = None) -> bool: ...


def attacker_indices(config: RunConfig) -> set[int]:
    """The simulated attackers are the demo's last ``attack.attackers`` contributors."""
    return set(range(config.contributors - config.attack.attackers, config.contributors))


def simulated_contributor(config: RunConfig, shard_index: int) -> Contributor:
    """The contributor with this shard, built where its agent runs: dev key by shard, its own
    marketplace connection and store."""
    market = open_marketplace(contributor_marketplace(config.marketplace, shard_index))
    return Contributor(
        market,
        open_store(config.storage),
        contributor_keypair(config.marketplace, shard_index, market),
        shard_index,
        config.data.cache_dir,
        config.contributor,
    )


# The attacker's tampering as a task of its own, so the UI shows what the attacker did.
tamper_task = task(name="simulated-attack", cache_policy=NO_CACHE)(attacker_outcome)


def simulated_steps(config: RunConfig, shard_index: int, contributor: Contributor):
    """The procedure's steps for this shard: the configured attack around ``train`` if it is
    one of the last ``attack.attackers``, else the honest steps."""
    attack = Attack.from_config(config.attack) if shard_index in attacker_indices(config) else None
    return attacked(SIMULATED_STEPS, attack, contributor, tamper_task)


@task(name="contributor-agent", task_run_name="agent-{shard_index}", cache_policy=NO_CACHE)
def contributor_agent(
    config: RunConfig, shard_index: int, first_task_id: int, stop: StopSignal
) -> list[ContributionReceipt]:
    """One simulated contributor's agent: every round's task from ``first_task_id`` on, until
    ``config.rounds`` tasks were seen or ``stop`` is set. Each task is one task run nested
    under this one (flows.contributor.simulated_contribution), not a flow run: a round would
    wait for the slowest of N flow-run starts."""
    contributor = simulated_contributor(config, shard_index)
    steps = simulated_steps(config, shard_index, contributor)
    return run_agent(
        contributor, config.poll_seconds, first_task_id, stop, config.rounds, True, steps
    )


@contextmanager
def simulated_contributors(
    config: RunConfig,
    first_task_id: int,
    run: str,
    prefect_api_started: Callable[[], None] | None = None,
) -> Iterator[None]:
    """Every contributor's agent runs on the configured task runner, under the flow run
    ``<run>-contributors`` on a background thread, while the body runs (the creator's training
    flow, in this thread); then the agents are stopped and awaited, and one that failed raises
    here.

    The agents have a flow of their own, not the creator's: prefect-dask and Prefect's process
    pool ship the parent flow's parameters with every task, and the creator's are its model,
    data and callbacks; this one's are the config and a task id (the stop flag is its
    closure). ``prefect_api_started``: the wait of a start_prefect_api the caller began
    earlier."""
    (prefect_api_started or start_prefect_api())()
    with contributor_runner(config.simulation, config.contributors) as (runner, stop):
        agents = contributors_flow(stop).with_options(
            task_runner=runner, flow_run_name=f"{run}-contributors"
        )
        background = _FlowThread(agents, run, config, first_task_id)
        try:
            yield
        finally:
            stop.set()
            background.join()
        background.result()


def contributors_flow(stop: StopSignal) -> Flow:
    """The flow that holds the agents: one agent task per contributor, each until ``stop``
    or its last round; the first agent that failed fails the flow run, once all ended."""

    @flow(name="simulated-contributors")
    def simulated_contributors_flow(config: RunConfig, first_task_id: int) -> None:
        with untagged_tasks():  # the flow run's tags are not its agents' (tasks.policy)
            agents = [
                contributor_agent.submit(config, index, first_task_id, stop)
                for index in range(config.contributors)
            ]
        wait(agents)
        for agent in agents:
            agent.result()

    return simulated_contributors_flow


class _FlowThread:
    """``agents(config, first_task_id)`` on a daemon thread, in a copy of the caller's
    context (a test's Prefect server is a context setting), tagged like the creator's runs,
    with the Prefect API of this process named explicitly: agents in other processes must
    reach this server, not each start a temporary one of their own."""

    def __init__(self, agents: Flow, run: str, config: RunConfig, first_task_id: int) -> None:
        self.failed: list[BaseException] = []
        context = contextvars.copy_context()

        def body() -> None:
            try:
                with (
                    temporary_settings(updates={PREFECT_API_URL: prefect_api_url()}),
                    tags("decentralml", f"run:{run}", "role:contributor"),
                ):
                    agents(config, first_task_id)
            except BaseException as error:  # handed to the caller after the round
                self.failed.append(error)

        self.thread = threading.Thread(
            target=context.run, args=(body,), name="simulated-contributors", daemon=True
        )
        self.thread.start()

    def join(self) -> None:
        while self.thread.is_alive():
            self.thread.join(timeout=0.5)  # short waits: a signal is handled promptly

    def result(self) -> None:
        if self.failed:
            raise self.failed[0]


def prefect_api_url() -> str:
    """The API this process talks to: PREFECT_API_URL, or the temporary server Prefect's
    ephemeral mode started here (start_prefect_api starts it)."""
    from prefect.server.api.server import SubprocessASGIServer

    return PREFECT_API_URL.value() or SubprocessASGIServer().api_url


def start_prefect_api() -> Callable[[], None]:
    """Start reaching Prefect's API in the background; the returned call waits until it
    answers (and raises what stopped it).

    In Prefect's ephemeral mode (no PREFECT_API_URL) the first client starts the temporary
    server: started here, once, it boots (10-45 s on 2 cores with a cold PREFECT_HOME) while
    the caller builds the creator's model and loads its data. Agents starting together on
    worker threads would each start one, and all but one fail ("Server process did not
    start")."""
    from prefect.client.orchestration import get_client

    failed: list[BaseException] = []

    def healthcheck() -> None:
        try:
            with get_client(sync_client=True) as client:
                client.api_healthcheck()
        except BaseException as error:  # handed to the waiting caller
            failed.append(error)

    thread = threading.Thread(target=healthcheck, name="prefect-api-start", daemon=True)
    thread.start()

    def wait() -> None:
        thread.join()
        if failed:
            raise failed[0]

    return wait


@contextmanager
def contributor_runner(
    config: SimulationConfig, contributors: int
) -> Iterator[tuple[TaskRunner, StopSignal]]:
    """The task runner for ``contributors`` agents and the flag that stops them all; a
    LocalCluster (or the manager process of a cross-process flag) started here is stopped on
    exit. The runner is not entered: the flow that runs on it enters a duplicate."""
    if config.runner == "threads":
        yield ThreadPoolTaskRunner(max_workers=contributors), threading.Event()
        return
    if config.runner == "processes":
        # Spawned processes (Prefect's choice: no fork of a process with threads and TF); a
        # Manager's Event is a proxy that pickles into them, unlike multiprocessing.Event.
        with multiprocessing.get_context("spawn").Manager() as manager:
            yield ProcessPoolTaskRunner(max_workers=contributors), manager.Event()
        return
    from distributed import Event
    from prefect_dask import DaskTaskRunner

    if (config.processes or config.address) and not PREFECT_API_URL.value():
        log.warning(
            "simulation: Dask worker processes without PREFECT_API_URL each start their own "
            "temporary Prefect server; set PREFECT_API_URL to a Prefect server that this "
            "process and the workers share"
        )
    with _dask_cluster(config, contributors) as (cluster, client):
        stop = Event(f"decentralml-stop-{uuid.uuid4().hex}", client=client)
        # by address: the flow's engine runs a duplicate, which keeps address= but not cluster=
        yield DaskTaskRunner(address=config.address or cluster.scheduler_address), stop


@contextmanager
def _dask_cluster(config: SimulationConfig, contributors: int) -> Iterator[tuple]:
    """(LocalCluster or None for an external scheduler, a client of it). An external
    scheduler is checked first: it must answer and have a worker thread per contributor."""
    import dask
    from distributed import Client, LocalCluster

    if config.address is None:
        # dask's own logging config shows its workers' INFO chatter: keep it to warnings
        logging.getLogger("distributed").setLevel(logging.WARNING)
        threads = config.threads_per_worker or -(-contributors // config.n_workers)
        with (
            # No worker profiler in a process that runs TensorFlow: its 10 ms sampler in the
            # event-loop thread set off garbage collection there, which freed a TensorFlow
            # graph (taking TF's graph lock while holding the GIL) while the creator's thread
            # held that lock building an op and waited for the GIL: a demo deadlocked at 0 %
            # CPU (py-spy --native; the outside tester saw it in 1 demo of 13).
            dask.config.set({"distributed.worker.profile.enabled": False}),
            LocalCluster(
                n_workers=config.n_workers,
                threads_per_worker=threads,
                processes=config.processes,
                dashboard_address=":0",
            ) as cluster,
            Client(cluster) as client,
        ):
            yield cluster, client
        return
    with _connect(config.address) as client:
        _require_threads(client, config.address, contributors)
        yield None, client


@contextmanager
def _connect(address: str) -> Iterator:
    from distributed import Client

    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_SECONDS)
    except (OSError, TimeoutError) as error:
        raise ConfigError(
            f"simulation.address: no Dask scheduler answers at {address} "
            f"within {CONNECT_TIMEOUT_SECONDS} s ({type(error).__name__}); start one with "
            "`dask scheduler` or set simulation.address to null for a LocalCluster"
        ) from None
    with client:
        yield client


def _require_threads(client, address: str, contributors: int) -> None:
    """Each agent holds a worker thread until the last round: with fewer threads, agents queue
    behind others that never finish, and their rounds wait out the timeout."""
    try:
        client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_SECONDS)
    except TimeoutError:
        raise ConfigError(
            f"simulation.address: the Dask scheduler at {address} has no workers; "
            f"start `dask worker {address}`"
        ) from None
    threads = sum(client.nthreads().values())
    if threads < contributors:
        raise ConfigError(
            f"simulation.address: the Dask cluster at {address} has {threads} worker threads "
            f"for {contributors} contributors; each agent needs its own "
            "(start more workers or raise --nthreads)"
        )
