"""The whole story on one machine: one creator and N contributors, concurrently.

The creator's training flow runs in the main thread; each simulated contributor is an agent
thread that watches the marketplace and runs the contributor flow for every new task, as a
contributor's flow agent would on its own machine.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

from substrateinterface import Keypair

from decentralml.config import RunConfig
from decentralml.contributor import find_open_task
from decentralml.errors import TaskFull, TaskNotOpen
from decentralml.marketplace.base import Marketplace
from decentralml.runtime import contributor_keypair, fund_dev_accounts
from decentralml.session import open_session
from decentralml.storage import ArtifactStore
from flows.contributor import Contribution, contribute
from flows.creator import RoundReport, train


def contributor_agent(
    market: Marketplace,
    store: ArtifactStore,
    worker: Keypair,
    index: int,
    config: RunConfig,
    first_task_id: int,
    stop: threading.Event,
) -> list[Contribution]:
    """Contribute to each new task (id >= first_task_id) until `rounds` were seen or `stop`."""
    seen: set[int] = set(range(first_task_id))
    contributions: list[Contribution] = []
    while len(seen) - first_task_id < config.rounds and not stop.is_set():
        task = find_open_task(market, worker, seen)
        if task is None:
            stop.wait(config.poll_seconds)
            continue
        seen.add(task.task_id)
        try:
            contributions.append(contribute(market, store, worker, task, index, config))
        except (TaskFull, TaskNotOpen):
            continue  # the slots went to faster contributors; wait for the next round
    return contributions


def run_demo(
    config: RunConfig, on_round: Callable[[RoundReport], None] | None = None, decider=None
) -> dict:
    """Run creator and contributors; return the summary (accuracy per round, payments)."""
    started = time.perf_counter()
    session = open_session(config)
    market = session.creator.market
    workers = [contributor_keypair(config.marketplace, i) for i in range(config.contributors)]
    fund_dev_accounts(market, config, [session.creator.keypair])
    before = {w.ss58_address: market.balance(w.ss58_address) for w in workers}
    first_task_id = len(market.list_tasks(open_only=False))
    stop = threading.Event()
    with ThreadPoolExecutor(
        max_workers=config.contributors, thread_name_prefix="contributor"
    ) as pool:
        agents = [
            pool.submit(
                contributor_agent,
                market,
                session.creator.store,
                worker,
                i,
                config,
                first_task_id,
                stop,
            )
            for i, worker in enumerate(workers)
        ]
        try:
            reports = train(config, session=session, decider=decider)
        finally:
            stop.set()
        for agent in agents:
            agent.result()
    if on_round:
        for report in reports:
            on_round(report)
    return summarize(session, reports, before, time.perf_counter() - started)


def summarize(session, reports: list[RoundReport], before: dict[str, int], seconds: float) -> dict:
    market = session.creator.market
    paid: dict[str, int] = defaultdict(int)
    for report in reports:
        for submission_id, amount in report.payments.items():
            paid[market.get_submission(submission_id).worker] += amount
    return {
        "final_accuracy": reports[-1].accuracy if reports else None,
        "wall_seconds": round(seconds, 1),
        "rounds": [
            {
                "round": r.round_number,
                "task_id": r.task_id,
                "accuracy": r.accuracy,
                "loss": r.loss,
                "accepted": r.accepted,
                "rejected": r.rejected,
                "refund": r.refund,
            }
            for r in reports
        ],
        "payments": [
            {
                "contributor": address,
                "amount": amount,
                "balance_change": market.balance(address) - before.get(address, 0),
            }
            for address, amount in sorted(paid.items())
        ],
        "reports": [asdict(r) for r in reports],
    }
