"""A simulated contributor's agent is one task run for the whole training, and each of its
contributions a task run inside it: what a contribution's steps returned (its shard, its
weights) must be freed when the contribution ends, not kept until the agent ends (issue 20:
~170 MB a round with 10 contributors). Real Prefect task runs on the session's test server."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from types import SimpleNamespace

import numpy as np
import pytest
from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.contributor import _Workers

pytestmark = pytest.mark.integration


@task(name="load-shard", cache_policy=NO_CACHE)
def load_shard() -> np.ndarray:
    return np.ones((100, 28, 28), dtype=np.float32)


def test_a_contributions_step_results_are_freed_while_its_agent_still_runs(prefect_harness):
    shards: list[weakref.ref] = []

    @task(name="contribution", cache_policy=NO_CACHE)
    def contribution(contributor, offer, stop, steps) -> int:
        shard = load_shard()  # a step: a task run inside the contribution's task run
        shards.append(weakref.ref(shard))
        return offer.task_id

    @task(name="agent", cache_policy=NO_CACHE)
    def agent() -> list[bool]:
        workers = _Workers(None, threading.Event(), 2, contribution, None)
        for task_id in range(3):
            workers.start(SimpleNamespace(task_id=task_id))
        assert sorted(workers.finish()) == [0, 1, 2]
        # Prefect's background workers let go of a finished run's last state in a moment;
        # before the fix the agent's transaction held every shard until the agent ended.
        deadline = time.monotonic() + 30
        while any(shard() is not None for shard in shards) and time.monotonic() < deadline:
            gc.collect()
            time.sleep(0.1)
        return [shard() is None for shard in shards]  # while the agent's task run runs

    assert agent() == [True, True, True]
