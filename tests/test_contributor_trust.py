"""A contributor trusts nothing a stranger publishes, and no task can stop its agent.

Real parts throughout: the embedded marketplace on SQLite, file storage in tmp_path, packages
built from the real contributor assets, the real contributor flow under a Prefect test server.
The only fault that is not a real hostile task is injected on purpose (an exception raised
by the contributor's storage for one task).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest

from decentralml.contributor import Contributor, assign
from decentralml.creator import task_settings
from decentralml.io.packaging import build_package
from decentralml.io.storage import ArtifactStore, sha256_hex
from decentralml.io.weights import encode
from decentralml.marketplace.embedded import EmbeddedMarketplace
from decentralml.protocol.accounts import contributor_dev_keypair, dev_keypair, same_account
from decentralml.protocol.errors import AlreadyAssigned
from decentralml.protocol.records import TaskSpec
from decentralml.runtime.backends import DEFAULT_ASSETS
from decentralml.runtime.config import ContributorConfig, RunConfig
from flows.contributor import run_agent

AGENT_LOG = "flows.contributor"


@pytest.fixture
def market(tmp_path: Path) -> EmbeddedMarketplace:
    return EmbeddedMarketplace(tmp_path / "marketplace.sqlite", block_time_seconds=6.0)


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore((tmp_path / "storage").as_uri())


def _publish(
    market: EmbeddedMarketplace,
    store: ArtifactStore,
    name: str,
    *,
    settings: dict | None = None,
    global_bytes: bytes | None = None,
    pays_amount: int = 1_000,
    max_assignments: int = 2,
    creator: str = "Alice",
    **spec_fields: object,
) -> int:
    """A task whose package and global weights really are in ``store`` under ``name``;
    ``spec_fields``: more TaskSpec fields (model, epochs, ...)."""
    keypair = dev_keypair(creator)
    market.fund(keypair.ss58_address, pays_amount)
    settings = settings or task_settings(RunConfig()).dump()
    package = build_package(DEFAULT_ASSETS, settings)
    assets = store.put(store.url_for(name, "assets.tar.gz"), package)
    weights = global_bytes or encode({"000.kernel": np.zeros((2, 2), np.float32)})
    global_weights = store.put(store.url_for(name, "global.safetensors"), weights)
    spec = TaskSpec(
        question=f"task {name}",
        pays_amount=pays_amount,
        max_assignments=max_assignments,
        expiration_block=market.current_block() + 100,
        assets_path=assets.url,
        assets_sha256=assets.sha256,
        global_weights_path=global_weights.url,
        global_weights_sha256=global_weights.sha256,
        **spec_fields,
    )
    return market.create_task(keypair, spec)


def _skips(caplog: pytest.LogCaptureFixture) -> dict[int, str]:
    """The agent's "skipping task N: reason" lines, by task id."""
    skips = {}
    for record in caplog.records:
        if record.name == AGENT_LOG and record.getMessage().startswith("skipping task "):
            head, reason = record.getMessage().removeprefix("skipping task ").split(": ", 1)
            assert "\n" not in reason
            skips[int(head)] = reason
    return skips


# --- cheap checks: no download, no slot ----------------------------------------------------


def test_300_spam_tasks_below_the_minimum_reward_are_skipped_unread(
    market: EmbeddedMarketplace, store: ArtifactStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The tester's spam: 300 valid tasks paying 1 planck each. Their assets do not exist, so
    a contributor that downloaded anything would log a StorageError, not the reward."""
    spammer = dev_keypair("Mallory")
    market.fund(spammer.ss58_address, 300)
    for n in range(300):
        spec = TaskSpec(
            question=f"spam {n}",
            pays_amount=1,
            max_assignments=1,
            expiration_block=market.current_block() + 100,
            assets_path=store.url_for("spam", f"{n}.tar.gz"),
            assets_sha256=sha256_hex(b"spam %d" % n),
            global_weights_path=store.url_for("spam", f"{n}.safetensors"),
            global_weights_sha256=sha256_hex(b"spam weights %d" % n),
        )
        market.create_task(spammer, spec)
    worker = contributor_dev_keypair(0)
    contributor = Contributor(
        market, store, worker, 0, terms=ContributorConfig(min_reward_per_result=1_000)
    )
    with caplog.at_level(logging.INFO, logger=AGENT_LOG):
        assert run_agent(contributor, poll_seconds=0.01, max_tasks=300) == []
    skips = _skips(caplog)
    assert sorted(skips) == list(range(300))
    assert set(skips.values()) == {
        "filtered: pays 1 per result, below min_reward_per_result 1000"
    }  # a filter's skip is an info line, not a warning: the task is fine, just not wanted
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert all(market.list_task_results(n) == [] for n in range(300))
    assert market.balance(worker.ss58_address) == 0
    assert not store.exists(store.url_for("spam"))


def test_a_task_without_digests_is_refused_before_downloading(
    market: EmbeddedMarketplace, store: ArtifactStore, caplog: pytest.LogCaptureFixture
) -> None:
    task_id = _publish(market, store, "plain")
    task = market.get_task(task_id)
    unverifiable = dataclasses.replace(task.spec, assets_sha256="", question="no digest")
    market.fund(dev_keypair("Alice").ss58_address, unverifiable.pays_amount)
    other = market.create_task(dev_keypair("Alice"), unverifiable)
    contributor = Contributor(market, store, contributor_dev_keypair(0), 0)
    with caplog.at_level(logging.WARNING, logger=AGENT_LOG):
        run_agent(contributor, poll_seconds=0.01, first_task_id=other, max_tasks=1)
    assert _skips(caplog) == {
        other: f"TaskRefused: task {other} records no valid assets_sha256: nothing to verify"
    }
    assert market.list_task_results(other) == []


def test_a_task_asking_more_reputation_than_the_worker_has_is_skipped_unopened(
    market: EmbeddedMarketplace, store: ArtifactStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 16: a task can ask ``min_reputation``; an agent whose account lacks it skips
    the task with one line, before any download or fee (the marketplace would refuse it)."""
    picky = _publish(market, store, "picky", min_reputation=3)
    worker = contributor_dev_keypair(0)
    contributor = Contributor(market, store, worker, 0)
    with caplog.at_level(logging.WARNING, logger=AGENT_LOG):
        assert run_agent(contributor, poll_seconds=0.01, first_task_id=picky, max_tasks=1) == []
    assert _skips(caplog) == {
        picky: f"TaskRefused: task {picky} asks a reputation of at least 3; this account has 0"
    }
    assert market.list_task_results(picky) == [] and market.balance(worker.ss58_address) == 0


# --- checks after the download, before the slot --------------------------------------------


class _FaultyStore(ArtifactStore):
    """The injected fault: reading anything under ``broken/`` raises an unexpected error."""

    def get(self, url: str, expected_sha256: str | None = None, max_bytes: int | None = None):
        if "/broken/" in url:
            raise RuntimeError("injected fault\nwith a second line")
        return super().get(url, expected_sha256, max_bytes)


@pytest.mark.slow
def test_bad_tasks_are_skipped_before_assigning_and_the_agent_keeps_working(
    market: EmbeddedMarketplace,
    store: ArtifactStore,
    caplog: pytest.LogCaptureFixture,
    prefect_harness,
) -> None:
    unknown_model = {**task_settings(RunConfig()).dump(), "model": "resnet_9000"}
    tasks = {
        "broken": _publish(market, store, "broken"),
        "unknown-model": _publish(market, store, "unknown-model", settings=unknown_model),
        "not-weights": _publish(market, store, "not-weights", global_bytes=b"\x10" + b"\x00" * 15),
        "huge-epochs": _publish(
            market,
            store,
            "huge-epochs",
            settings={**task_settings(RunConfig()).dump(), "epochs": 10**6},
        ),
    }
    worker = contributor_dev_keypair(0)
    contributor = Contributor(market, _FaultyStore(store.root_url), worker, 0)
    with caplog.at_level(logging.WARNING, logger=AGENT_LOG):
        assert run_agent(contributor, poll_seconds=0.01, max_tasks=len(tasks)) == []
    skips = _skips(caplog)
    assert skips[tasks["broken"]] == "RuntimeError: injected fault"
    assert skips[tasks["unknown-model"]].startswith(
        "TaskRefused: task settings refused: unknown model 'resnet_9000' (known: ["
    )
    assert skips[tasks["not-weights"]].startswith("IntegrityError: weights file")
    assert "epochs 1000000 is not 1..100" in skips[tasks["huge-epochs"]]
    assert sorted(skips) == sorted(tasks.values())  # every task handled, none stopped the agent
    for task_id in tasks.values():
        assert market.list_task_results(task_id) == [], task_id


@pytest.mark.slow
def test_keyboard_interrupt_still_stops_the_agent(
    market: EmbeddedMarketplace, store: ArtifactStore, prefect_harness
) -> None:
    class _Interrupting(ArtifactStore):
        def get(self, *args, **kwargs):
            raise KeyboardInterrupt

    _publish(market, store, "any")
    contributor = Contributor(market, _Interrupting(store.root_url), contributor_dev_keypair(0), 0)
    with pytest.raises(KeyboardInterrupt):
        run_agent(contributor, poll_seconds=0.01, max_tasks=1)


# --- the tester's replay, end to end --------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", ["embedded", pytest.param("substrate", marks=[pytest.mark.integration])]
)
def test_a_replayed_task_costs_no_slot_and_the_agent_contributes_to_the_next_one(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    prefect_harness,
    backend: str,
    request: pytest.FixtureRequest,
) -> None:
    """A third account replays the creator's task record, pointing at assets that do not exist
    on its side. The agent skips it without taking a slot (on a chain: without paying an
    assign fee), then trains for the next valid task."""
    from decentralml.creator.session import open_session
    from decentralml.runtime.backends import contributor_keypair
    from flows.creator import publish
    from tests.helpers import write_config

    overrides: dict[str, object] = {"contributors": 2, "task.max_assignments": 2}
    if backend == "substrate":
        overrides |= {
            "marketplace.backend": "substrate",
            "marketplace.url": request.getfixturevalue("chain_url"),
            "marketplace.dev_genesis_hash": "0x" + "45" * 32,  # chopsticks: dev keys sign
            "marketplace.index_path": str(tmp_path / "index.sqlite"),
            "marketplace.dev_funds": 10**15,
        }
    _, config = write_config(tmp_path, **overrides)
    session = open_session(config, run="replay")
    market, store = session.creator.market, session.creator.store
    original = market.get_task(publish(session, 1))
    replayer = dev_keypair("Mallory")
    market.fund(replayer.ss58_address, original.spec.pays_amount + 10**15)  # and fees
    replayed = market.create_task(
        replayer,
        dataclasses.replace(
            original.spec,
            assets_path=store.round_url("replayed", 1, "assets.tar.gz"),
            global_weights_path=store.round_url("replayed", 1, "global.safetensors"),
        ),
    )
    valid = publish(session, 2)
    worker = contributor_keypair(config.marketplace, 0, market)
    contributor = Contributor(market, store, worker, 0, config.data.cache_dir, config.contributor)
    with caplog.at_level(logging.WARNING, logger=AGENT_LOG):
        contributions = run_agent(contributor, 0.05, first_task_id=replayed, max_tasks=2)
    assert market.list_task_results(replayed) == []
    reason = _skips(caplog)[replayed]
    assert reason.startswith("ArtifactMissing: ") and reason.endswith("does not exist"), reason
    assert [c.task_id for c in contributions] == [valid]
    [submission] = market.list_task_results(valid)
    assert same_account(submission.worker, worker.ss58_address)
    assert submission.result is not None
    if backend == "substrate":  # no record of the worker's names the replayed task: no fee
        mine = [
            o for o in market.indexer.all_outcomes() if same_account(o.signer, worker.ss58_address)
        ]
        assert mine and all(o.entity_id != replayed for o in mine if o.kind == "Assign")


# --- a retried assignment --------------------------------------------------------------------


class _LandedThenRefused:
    """A marketplace where the assignment of an earlier attempt (its outcome unknown) lands
    just before this one's, which is refused: AlreadyAssigned for a slot the caller holds."""

    def __init__(self, market: EmbeddedMarketplace) -> None:
        self.market = market

    def __getattr__(self, name: str) -> object:
        return getattr(self.market, name)

    landed = True

    def assign_task(self, worker, task_id: int) -> int:
        if self.landed:
            self.market.assign_task(worker, task_id)
        raise AlreadyAssigned(f"{worker.ss58_address} already holds a slot of {task_id}")


def test_a_retried_assignment_returns_the_slot_an_earlier_attempt_took(
    market: EmbeddedMarketplace, store: ArtifactStore
) -> None:
    """Regression: a retried assign whose earlier attempt landed unseen raised AlreadyAssigned
    for the slot the caller held; the procedure's assign takes that as its answer."""
    task_id = _publish(market, store, "retried")
    worker = contributor_dev_keypair(0)
    sid = assign(_LandedThenRefused(market), worker, task_id)
    assert [s.submission_id for s in market.list_task_results(task_id)] == [sid]
    unfounded = _LandedThenRefused(market)
    unfounded.landed = False
    with pytest.raises(AlreadyAssigned):  # a refusal the marketplace does not bear out
        assign(unfounded, contributor_dev_keypair(1), task_id)
