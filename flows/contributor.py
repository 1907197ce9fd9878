"""The model contributor's flows: one task (``contribute``, each step a Prefect task of the
one procedure in decentralml.contributor.procedure) and the agent that runs it for every new
task it is willing to take (``run_agent``, deployed as ``agent``).

check the record → download and verify → check settings and weights → assign (the first
fee) → load data → prepare the strategy's local steps → train → encode → commit → upload →
send the result → keep local state.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
from collections.abc import Callable

import prefect
from prefect import State, flow, get_run_logger, tags
from prefect.cache_policies import NO_CACHE
from prefect.states import Cancelled

from decentralml.contributor import (
    ContributionReceipt,
    Contributor,
    ContributorSteps,
    check_offer,
    contribute_once,
    filter_reason,
    find_open_task,
)
from decentralml.marketplace.base import Marketplace
from decentralml.protocol.errors import TaskFull, TaskNotOpen
from decentralml.protocol.records import Task
from decentralml.runtime.backends import contributor_keypair, open_marketplace, open_store
from decentralml.runtime.checks import CONTRIBUTE, check_config
from decentralml.runtime.config import RunConfig, load_contributor_config, marketplace_location
from decentralml.runtime.polling import Backoff
from decentralml.runtime.shutdown import STOP
from tasks.contributor import STEPS
from tasks.policy import outside_transactions, untagged_tasks

log = logging.getLogger(__name__)


Contribution = ContributionReceipt  # the name earlier versions used


def contribution_steps(
    contributor: Contributor,
    task: Task,
    stop: threading.Event | None = None,
    steps: ContributorSteps | None = None,
) -> ContributionReceipt | State:
    """One task, start to finish, in the run that calls it (a contributor flow run or a
    simulated contribution's task run), each step a Prefect task unless ``steps`` says
    otherwise. Once ``stop`` is set, a task that has not yet taken a slot ends Cancelled
    (nothing was paid); one that has is finished."""
    with untagged_tasks():  # the tags are the flow run's, not its steps' (tasks.policy)
        receipt = contribute_once(contributor, task, steps or STEPS, stop)
    if receipt is None:
        return Cancelled(message=f"task {task.task_id}: stopped before taking a slot")
    get_run_logger().info(
        "task %d: submission %d sent (%d examples, %s)",
        task.task_id, receipt.submission_id, receipt.num_examples, receipt.metrics,
    )  # fmt: skip
    return receipt


# A contributor's own agent: one flow run per task, its record in the UI.
contribute = flow(
    name="contributor",
    flow_run_name="contributor-{contributor.shard_index}-task-{task.task_id}",
    validate_parameters=False,
)(contribution_steps)

# A simulated contributor: the same steps as one task run nested under its agent's task run.
# A flow run per contribution costs a round seconds to start and the creator waits for the
# last one (docs/benchmarks.md); a task run is recorded from events, without that round trip.
simulated_contribution = prefect.task(
    name="contribution",
    task_run_name="contribution-{contributor.shard_index}-task-{task.task_id}",
    cache_policy=NO_CACHE,
)(contribution_steps)


def run_agent(
    contributor: Contributor,
    poll_seconds: float,
    first_task_id: int = 0,
    stop: threading.Event | None = None,
    max_tasks: int | None = None,
    simulated: bool = False,
    steps: ContributorSteps | None = None,
    where: str | None = None,
) -> list[ContributionReceipt]:
    """Watch the marketplace and contribute to each new task (id >= first_task_id), up to
    ``contributor.terms.max_concurrent_tasks`` at once, each in its own thread: a contributor
    flow run per task, or with ``simulated`` a task run (simulated_contribution), each
    running the procedure with ``steps`` (a simulated attacker's wrap ``train``).

    Ends after handling ``max_tasks`` tasks (worked on or skipped; None: no limit), after
    ``terms.idle_timeout_seconds`` with nothing to do, or once ``stop`` is set; it then waits
    for the tasks in progress (those not yet holding a slot drop out). A task the
    contributor's filters pass over (decentralml.contributor.filter_reason) is skipped with one
    info line; a task whose slots went to faster contributors is skipped silently; any other
    failure of one task (a stranger's bad task, a refused check, a bug) is one warning line.
    Every skipped task is remembered and never retried: tasks are published by anyone, so
    none may stop the agent. With no task to take it looks again after a delay that grows
    from min(0.2 s, ``poll_seconds``) to 4 × ``poll_seconds`` and starts over once it finds
    one (decentralml.runtime.polling); with ``where`` (the marketplace, for a person) it says
    so in one line when it first finds none, then once a minute.
    """
    stop = stop or threading.Event()
    terms = contributor.terms
    seen: set[int] = set(range(first_task_id))
    run_one = simulated_contribution if simulated else contribute
    workers = _Workers(contributor, stop, terms.max_concurrent_tasks, run_one, steps)
    backoff = Backoff.for_poll_seconds(poll_seconds)  # a quiet marketplace is polled less
    last_busy = time.monotonic()
    idle = _IdleNotice(where)
    while (max_tasks is None or len(seen) - first_task_id < max_tasks) and not stop.is_set():
        workers.reap()
        if workers.busy:
            last_busy = time.monotonic()
        if workers.full:
            stop.wait(min(poll_seconds, 0.2))
            continue
        task = find_open_task(contributor.market, contributor.keypair, seen)
        if task is None:
            idle.tick(workers.busy)
            if _idle_too_long(last_busy, terms.idle_timeout_seconds, workers.busy):
                log.info("no task for %s s: the agent stops", terms.idle_timeout_seconds)
                break
            stop.wait(backoff.next_delay())
            continue
        backoff.reset()  # a task now: the next one may follow soon
        idle.reset()
        seen.add(task.task_id)  # remembered: a skipped task is not tried again
        reason = filter_reason(task, terms)
        if reason:  # the contributor's own filters: a quiet skip, not a warning
            log.info("skipping task %d: filtered: %s", task.task_id, reason)
            continue
        try:
            # The cheap checks first, here too: a spam task costs no flow run, no download.
            check_offer(contributor.market, task, terms, contributor.keypair.ss58_address)
        except Exception as error:
            log.warning("skipping task %d: %s", task.task_id, _one_line(error))
            continue
        workers.start(task)
        last_busy = time.monotonic()
    return workers.finish()


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else '(no message)'}"


class _IdleNotice:
    """A stranger pointed at an empty or mistyped marketplace sees where the agent looks: one
    line when it first finds nothing to take, then one every ``every`` seconds."""

    def __init__(self, where: str | None, every: float = 60.0) -> None:
        self.where, self.every = where, every
        self.since: float | None = None
        self.said: float | None = None

    def tick(self, busy: int) -> None:
        now = time.monotonic()
        if self.where is None or busy:
            return
        self.since = now if self.since is None else self.since
        if self.said is None or now - self.said >= self.every:
            log.info(
                "no open task with a free slot at %s; still looking (%.0f s so far)",
                self.where, now - self.since,
            )  # fmt: skip
            self.said = now

    def reset(self) -> None:
        self.since = self.said = None


def _idle_too_long(last_busy: float, timeout: float | None, busy: int) -> bool:
    return timeout is not None and not busy and time.monotonic() - last_busy >= timeout


class _Workers:
    """The tasks in progress, one contributor flow run (or simulated contribution's task run)
    per thread.

    Each thread runs it in a copy of the agent's context, so Prefect links a task's run
    to the agent's run. Flow runs are created one at a time (``_one_creation``): Prefect
    numbers a subflow's tracking task run with a per-run counter it reads and bumps without a
    lock, and two threads that got the same number would share one tracking task run; the
    second then reattaches to the first's flow run or ends up unlinked. Once a run is
    running, the next may be created: the tasks still run at once.
    Threads are daemons: after a second signal the process exits
    without waiting for them. A KeyboardInterrupt or SystemExit in a task is re-raised in
    the agent's thread; anything else fails that task only."""

    def __init__(
        self,
        contributor: Contributor,
        stop: threading.Event,
        limit: int,
        run_one: Callable,
        steps: ContributorSteps | None,
    ) -> None:
        self.contributor, self.stop, self.limit = contributor, stop, limit
        # contribute (a flow) or simulated_contribution (a task, created without that race)
        self.run_one = run_one
        self._one_creation = threading.Lock()
        self._holding = threading.local()  # whether this thread holds _one_creation
        if isinstance(run_one, prefect.Flow):
            self.run_one = run_one.with_options(on_running=[self._created])
        self.steps = steps
        self.threads: list[threading.Thread] = []
        self.contributions: list[ContributionReceipt] = []
        self.fatal: list[BaseException] = []

    @property
    def busy(self) -> int:
        return len(self.threads)

    @property
    def full(self) -> bool:
        return len(self.threads) >= self.limit

    def start(self, task: Task) -> None:
        context = contextvars.copy_context()
        thread = threading.Thread(
            target=context.run,
            args=(self._work, task),
            name=f"contributor-task-{task.task_id}",
            daemon=True,
        )
        self.threads.append(thread)
        thread.start()

    def _created(self, *_: object) -> None:
        """Let the next flow run be created (the on_running hook, and after any end)."""
        if getattr(self._holding, "lock", False):
            self._holding.lock = False
            self._one_creation.release()

    def _work(self, task: Task) -> None:
        try:
            flow_run = isinstance(self.run_one, prefect.Flow)  # a task run: no tags (tasks.policy)
            tagged = tags("decentralml", "role:contributor") if flow_run else untagged_tasks()
            with tagged, outside_transactions():  # the agent's task run keeps no contribution
                if flow_run:
                    self._one_creation.acquire()
                    self._holding.lock = True
                try:
                    state = self.run_one(
                        self.contributor, task, self.stop, self.steps, return_state=True
                    )
                finally:
                    self._created()
            if state.is_completed():
                self.contributions.append(state.result())
            elif state.is_cancelled():
                log.info("dropping task %d: stopped before taking a slot", task.task_id)
            else:
                self._failed(task, state.result(raise_on_failure=False))
        except Exception as error:  # the engine itself, e.g. the Prefect API gave up: this task
            self._failed(task, error)
        except BaseException as error:  # handed to the agent's thread
            self.fatal.append(error)

    def _failed(self, task: Task, error: object) -> None:
        if isinstance(error, TaskFull | TaskNotOpen):
            return  # the slots went to faster contributors, or the task ended
        if isinstance(error, KeyboardInterrupt | SystemExit):
            raise error
        reason = _one_line(error) if isinstance(error, BaseException) else str(error)
        log.warning("skipping task %d: %s", task.task_id, reason)

    def reap(self) -> None:
        self.threads = [thread for thread in self.threads if thread.is_alive()]
        if self.fatal:
            raise self.fatal[0]

    def finish(self) -> list[ContributionReceipt]:
        """Wait for the tasks in progress; their contributions, in the order they finished."""
        for thread in self.threads:
            while thread.is_alive():
                thread.join(timeout=0.5)  # short waits: a second signal is handled promptly
        self.reap()
        return self.contributions


def open_contributor(
    config: RunConfig,
    shard_index: int,
    market: Marketplace | None = None,
    local_data: str | None = None,
) -> Contributor:
    """A contributor from config: key from the environment (dev key by shard in dev mode);
    ``local_data``: its own data file instead of the creator-provided shard."""
    market = market or open_marketplace(config.marketplace)
    return Contributor(
        market,
        open_store(config.storage),
        contributor_keypair(config.marketplace, _dev_index(config, shard_index), market),
        shard_index,
        config.data.cache_dir,
        config.contributor,
        local_data=local_data,
    )


@flow(name="contributor-agent", flow_run_name="agent-{shard_index}")
def agent(
    config_path: str = "configs/mnist.yaml",
    shard_index: int = 0,
    max_tasks: int | None = None,
    marketplace: str | None = None,
    data_path: str | None = None,
) -> int | State:
    """Deployment entry point: a contributor's long-running agent (see prefect.yaml). It works
    on every open task with a free slot, oldest first, including tasks published before it
    started. ``config_path`` "" means no config file (the defaults); ``marketplace`` (or
    $DECENTRALML_MARKETPLACE_URL) is a chain URL or an embedded marketplace's path;
    ``data_path`` its own data file (.npz x/y or .csv with a label column), checked against
    each task's data spec, instead of the creator-provided shard. Its key comes from the
    environment variable the config names.

    SIGTERM or SIGINT stops it cleanly (decentralml.runtime.shutdown): the run ends Cancelled."""
    config = load_contributor_config(config_path or None, marketplace)
    config = check_config(config, CONTRIBUTE, source=config_path or "no config file")
    contributor = open_contributor(config, shard_index, local_data=data_path)
    with STOP.on_signals():
        where = marketplace_location(config.marketplace)
        done = run_agent(contributor, config.poll_seconds, 0, STOP.event, max_tasks, where=where)
    if STOP.requested:
        return Cancelled(message=f"stopped by {STOP.signal_name} after {len(done)} task(s)")
    return len(done)


def _dev_index(config: RunConfig, shard_index: int) -> int | None:
    """The key from the environment when set; else (dev mode) the shard's dev account."""
    return None if os.environ.get(config.marketplace.contributor_key_env) else shard_index
