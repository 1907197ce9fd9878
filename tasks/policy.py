"""Shared Prefect task settings: which steps retry, and on what; which runs carry tags; which
runs stand in no enclosing transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from prefect.cache_policies import NO_CACHE
from prefect.context import TagsContext
from prefect.transactions import BaseTransaction

from decentralml.io.storage import Retries
from decentralml.protocol.errors import (
    ArtifactMissing,
    ArtifactTooLarge,
    ChainOutcomeUnknown,
    ConfigError,
    DigestMismatch,
    IntegrityError,
    MarketplaceError,
    SourceUnreachable,
    StorageCredentialsError,
    StorageUnavailable,
    TaskRefused,
)

# Rule violations are answers, not glitches: retrying "task full" or "not the assignee" only
# repeats the refusal, and a file that is missing, over its size limit or has the same wrong
# digest on two reads (the store reads a damaged file twice) stays so, and so do credentials the
# storage refused (or none at all) until someone sets them. Everything else (an unknown chain
# outcome, a dropped connection to the marketplace) is retried here with backoff.
PERMANENT_ERRORS = (
    MarketplaceError,
    IntegrityError,
    ConfigError,
    TaskRefused,
    ArtifactMissing,
    ArtifactTooLarge,
    DigestMismatch,
    StorageCredentialsError,
)

# Not answers, though they subclass one: an unknown chain outcome (lost connection, inclusion
# deadline, dropped from the pool) says nothing about the rules. It stays a ChainError for
# callers that catch those, and is retried here explicitly; the retry is safe because the
# marketplace reads the chain and the pool back before it sends anything again.
TRANSIENT_ERRORS = (ChainOutcomeUnknown,)

# Transient, but already retried by the layer that raised them, as often as its configuration
# says (storage.retry_attempts / retry_delays): the store (StorageUnavailable) and a pull of a
# hosted result (SourceUnreachable). Retrying the step again would multiply the attempts (4
# tries of a write in each of 4 task runs made 16) and stretch an outage's wait past what the
# configuration promises; the round's review defers such a result instead (never a rejection).
# The chain's reads reconnect in decentralml.chain.connection and give up as a ChainError.
RETRIED_BELOW = (StorageUnavailable, SourceUnreachable)

STEP_RETRIES = Retries()
"""The step-level retries of a Prefect task, for what no layer below retries: the core's
default policy (attempts and delays in one place, decentralml.io.storage)."""


def _retry_unless_permanent(task, task_run, state) -> bool:
    try:
        state.result()
    except TRANSIENT_ERRORS:
        return True
    except (*PERMANENT_ERRORS, *RETRIED_BELOW):
        return False
    except Exception:
        return True
    return True


IO_TASK = {
    "retries": STEP_RETRIES.attempts - 1,
    "retry_delay_seconds": list(STEP_RETRIES.delays),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": _retry_unless_permanent,
    "cache_policy": NO_CACHE,
}
"""For marketplace and storage steps (storage failures are the store's to retry: see
RETRIED_BELOW). NO_CACHE: arguments hold connections and arrays that
Prefect would otherwise try to hash on every call."""

LOCAL_TASK = {"cache_policy": NO_CACHE}
"""For CPU-bound local steps (training, evaluation): a failure there is not transient."""

POLL_TASK = {"cache_policy": NO_CACHE}
"""For a step that waits on the marketplace with its own back-off (wait-for-results): each
poll is cheap and repeated by the step itself, so the task is not retried."""


def untagged_tasks() -> AbstractContextManager:
    """Task runs started inside carry none of the tags around them: the ``tags(...)`` around a
    flow call are for its flow run (the UI's and the tests' filters), not its task runs.

    Prefect gives a task run every tag of the context it is called in, and before a task run
    with tags starts, its engine asks the API for a lease on a ``tag:<name>`` concurrency
    limit, even when none is configured: one blocking call per task run, serialized per tag
    set, which cost a 10-contributor round tens of seconds (docs/benchmarks.md, issue 20).
    A subflow called inside its own ``tags(...)`` is still tagged."""
    return TagsContext(current_tags=set())


@contextmanager
def outside_transactions() -> Iterator[None]:
    """Task runs started inside are not nested in the caller's transaction: each commits and
    lets go of its result when it ends.

    Prefect stages every task run's result in the task's transaction and, when the task run
    ends inside another task run, hands that transaction (result included) to the enclosing
    one, which keeps it until it commits (prefect/transactions.py, ``Transaction.reset``). A
    simulated contributor's agent is one task run for the whole training, so every
    contribution's shard and weights stayed alive until the end: ~170 MB a round with 10
    contributors (docs/benchmarks.md, issue 20). Nothing here uses transactions' rollback."""
    token = BaseTransaction.__var__.set(None)  # the context var Prefect reads the parent from
    try:
        yield
    finally:
        BaseTransaction.__var__.reset(token)
