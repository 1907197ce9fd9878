"""What only the Substrate marketplace does, on a real local chain (chopsticks running the
Asset Hub runtime): fees and extrinsics, records written raw that the index must ignore, chain
order, the index's restarts and rebuilds, lost connections.

Every behaviour both backends share (tasks, slots, commit-reveal, verdicts, settlement, close,
expiry, retries, races for slots, the dev faucet) is in the contract suite,
tests/marketplace_contract/, which runs against this backend too.

Every test indexes from the head at its start, so its ids start at 0 and other tests' records
are invisible; accounts are fresh and funded per test, so tests share one chain. Records that
the API would refuse are written raw (ChainClient) to prove the INDEXER ignores them too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from substrateinterface import Keypair

from decentralml.chain import codec
from decentralml.chain.client import ChainClient, ChainOutcomeUnknown, Receipt, public_key_hex
from decentralml.marketplace.books import Discrepancy
from decentralml.marketplace.indexer import ChainIndexer
from decentralml.marketplace.ledger import Ledger
from decentralml.marketplace.substrate import SubstrateMarketplace
from decentralml.protocol.accounts import canonical_address
from decentralml.protocol.commitment import result_commitment
from decentralml.protocol.errors import (
    AlreadyCommitted,
    ChainError,
    ConfigError,
    InsufficientBalance,
    InvalidTaskSpec,
    TaskFull,
)
from decentralml.protocol.records import (
    ResultSubmissionStatus,
    TaskResult,
    TaskSpec,
    TaskStatus,
    ValidationStrategy,
    Verdict,
)
from tests.chain_fixture import fund, in_one_block
from tests.helpers import commit_and_send

pytestmark = pytest.mark.integration

REWARD_POOL = 3 * 10**12  # 3 units; 1 unit per accepted result with 3 slots


def result_for(n: int) -> TaskResult:
    return TaskResult(f"file:///r/{n}.safetensors", f"{n:064x}", 100 + n, {"accuracy": 0.9})


def commitment_of(worker: Keypair, n: int) -> str:
    """``worker``'s commitment to ``result_for(n)``."""
    return result_commitment(worker.ss58_address, result_for(n).sha256)


MarketFactory = Callable[..., SubstrateMarketplace]


@pytest.fixture
def start(chain_client: ChainClient) -> int:
    """The first block this test indexes: everything earlier belongs to other tests."""
    return chain_client.finalized_head_number() + 1


@pytest.fixture
def market_at(chain_client: ChainClient, tmp_path: Path, start: int) -> MarketFactory:
    """``market_at(name="a", client=None)``: a marketplace with its own index file."""

    def make(name: str = "a", client: ChainClient | None = None) -> SubstrateMarketplace:
        return SubstrateMarketplace(client or chain_client, tmp_path / f"{name}.sqlite", start)

    return make


@pytest.fixture
def people(funded_keypair: Callable[..., Keypair]) -> dict[str, Keypair]:
    return {name: funded_keypair() for name in ("creator", "w0", "w1", "w2", "w3", "stranger")}


def spec_for(market: SubstrateMarketplace, slots: int = 3, expires_in: int = 200) -> TaskSpec:
    return TaskSpec(
        question="train on your shard",
        pays_amount=REWARD_POOL // 3 * slots,
        max_assignments=slots,
        expiration_block=market.current_block() + expires_in,
        validation_strategy=ValidationStrategy.ManualAccept,
        round_number=1,
    )


def raw(client: ChainClient, signer: Keypair, *records: codec.Record, pay: int = 0,
        to: str = "") -> Receipt:  # fmt: skip
    """Write records directly, bypassing the marketplace's own checks."""
    calls = [client.remark_call(codec.encode(record)) for record in records]
    if pay:
        calls.append(client.transfer_call(to, pay))
    return client.submit(signer, calls)


def open_round(market: SubstrateMarketplace, people: dict[str, Keypair], workers: int = 2,
               slots: int = 3) -> tuple[int, list[int]]:  # fmt: skip
    """A task with ``workers`` assignments and their results sent."""
    task_id = market.create_task(people["creator"], spec_for(market, slots))
    sids = []
    for i in range(workers):
        sid = market.assign_task(people[f"w{i}"], task_id)
        commit_and_send(market, people[f"w{i}"], sid, result_for(sid))
        sids.append(sid)
    return task_id, sids


def statuses(market: SubstrateMarketplace, task_id: int) -> list[ResultSubmissionStatus]:
    return [s.status for s in market.list_task_results(task_id)]


# --- fees: what a backend without escrow charges --------------------------------------------


def test_a_settlement_is_one_extrinsic_costing_its_creator_the_rewards_and_one_fee(
    market_at: MarketFactory, people: dict[str, Keypair]
) -> None:
    market = market_at()
    creator = people["creator"]
    _, (s0, s1) = open_round(market, people)
    before = market.balance(creator.ss58_address)
    first = market.current_block() + 1
    paid = market.settle(creator, [Verdict(s0, True, "good"), Verdict(s1, False, "too weak")])
    reward = REWARD_POOL // 3
    assert paid == {s0: reward, s1: 0}
    spent = before - market.balance(creator.ss58_address)
    assert reward < spent < reward + 10**9  # the reward plus one extrinsic's fee
    chain = market.audit(first)
    assert chain.extrinsics[creator.ss58_address] == 1
    assert chain.received(creator.ss58_address, people["w0"].ss58_address) == reward
    assert chain.fees[creator.ss58_address] == spent - reward


def test_rewards_are_announced_and_a_creator_who_cannot_cover_them_is_refused_for_free(
    market_at: MarketFactory, chain_client: ChainClient
) -> None:
    """No escrow on chain: create_task takes only its fee, and refuses (before any fee) a
    creator whose balance does not cover its open promises and this one."""
    market = market_at()
    poor = Keypair.create_from_mnemonic(Keypair.generate_mnemonic())
    fund(chain_client, poor.ss58_address, 10**12)
    with pytest.raises(InsufficientBalance, match="promise"):
        market.create_task(poor, spec_for(market))  # promises 3 units
    assert market.balance(poor.ss58_address) == 10**12
    market.create_task(poor, spec_for(market, slots=1))  # promises 1 unit: covered
    assert 10**12 - 10**9 < market.balance(poor.ss58_address) < 10**12  # a fee, no escrow


# --- races and rules the indexer enforces ------------------------------------------------


def test_the_race_for_slots_is_decided_by_chain_order_within_one_block(
    market_at: MarketFactory,
    people: dict[str, Keypair],
    chain_client: ChainClient,
    chain_url: str,
) -> None:
    """Three contributors race for two slots in the SAME block: the first two in the block
    win, the third's record lands and is refused (how many win is in the contract suite)."""
    market = market_at()
    task_id = market.create_task(people["creator"], spec_for(market, slots=2))
    racers = [people[f"w{i}"] for i in range(3)]
    clients = [ChainClient(chain_url) for _ in racers]
    markets = [market_at(f"racer{i}", client) for i, client in enumerate(clients)]
    for racer_market in markets:
        racer_market.sync()  # load metadata and index before the block is held
    actions = [
        functools.partial(racer_market.assign_task, racer, task_id)
        for racer_market, racer in zip(markets, racers, strict=True)
    ]
    try:
        outcomes = in_one_block(chain_client, actions)
    finally:
        for client in clients:
            client.close()

    assert outcomes[0] == 0 and outcomes[1] == 1, outcomes
    assert isinstance(outcomes[2], TaskFull), outcomes  # landed, refused by the rules
    market.sync()
    assigns = [o for o in market.indexer.all_outcomes() if o.kind == "Assign"]
    assert len({o.block_number for o in assigns}) == 1 and len(assigns) == 3
    assert [o.applied for o in assigns] == [True, True, False]
    with pytest.raises(TaskFull):  # a late one is refused before writing
        market.assign_task(people["w3"], task_id)
    task = market.get_task(task_id)
    assert task.assigned == 2 and task.open_slots == 0
    workers = [s.worker for s in market.list_task_results(task_id)]
    assert workers == [racers[0].ss58_address, racers[1].ss58_address]


def test_non_assignee_result_is_ignored(
    market_at: MarketFactory, people: dict[str, Keypair], chain_client: ChainClient
) -> None:
    market = market_at()
    task_id = market.create_task(people["creator"], spec_for(market))
    sid = market.assign_task(people["w0"], task_id)
    raw(chain_client, people["stranger"], codec.Result(sid, result_for(666)))
    submission = market.get_submission(sid)
    assert submission.status == ResultSubmissionStatus.Assigned and submission.result is None
    (refused,) = [o for o in market.indexer.all_outcomes() if not o.applied]
    assert (refused.kind, refused.error_type) == ("Result", "NotAssignee")
    commit_and_send(market, people["w0"], sid, result_for(sid))
    assert market.get_submission(sid).result == result_for(sid)


def test_a_commitment_and_a_result_are_one_applied_record_each(
    market_at: MarketFactory, people: dict[str, Keypair]
) -> None:
    market = market_at()
    w0 = people["w0"]
    task_id = market.create_task(people["creator"], spec_for(market))
    sid = market.assign_task(w0, task_id)
    commit_and_send(market, w0, sid, result_for(sid))
    outcomes = market.indexer.all_outcomes()
    assert [(o.kind, o.applied, o.entity_id) for o in outcomes[-2:]] == [
        ("Commit", True, sid), ("Result", True, sid),
    ]  # fmt: skip
    assert market.get_submission(sid).commit_order == 0


def test_results_written_raw_around_the_commitment_are_ignored_by_the_index(
    market_at: MarketFactory, people: dict[str, Keypair], chain_client: ChainClient
) -> None:
    """The API refuses a result without (or against) its commitment before any fee (contract
    suite); written anyway, the index ignores it."""
    market = market_at()
    w0 = people["w0"]
    task_id = market.create_task(people["creator"], spec_for(market))
    sid = market.assign_task(w0, task_id)
    before = (market.get_task(task_id), market.list_task_results(task_id))

    raw(chain_client, w0, codec.Result(sid, result_for(sid)))  # written anyway
    market.sync()
    assert (market.get_task(task_id), market.list_task_results(task_id)) == before
    (refused,) = [o for o in market.indexer.all_outcomes() if not o.applied]
    assert (refused.kind, refused.error_type) == ("Result", "NotCommitted")

    # A commitment to other bytes, then a reveal of these ones: refused too.
    raw(
        chain_client,
        w0,
        codec.Commit(sid, commitment_of(w0, 7)),
        codec.Result(sid, result_for(sid)),
    )
    market.sync()
    assert market.get_submission(sid).result is None
    assert market.indexer.all_outcomes()[-1].error_type == "InvalidResult"
    with pytest.raises(AlreadyCommitted):  # the commitment stands, and cannot be changed
        market.commit_result(w0, sid, commitment_of(w0, sid))
    raw(chain_client, w0, codec.Commit(sid, commitment_of(w0, sid)))
    market.sync()
    assert market.indexer.all_outcomes()[-1].error_type == "AlreadyCommitted"
    assert market.get_submission(sid).commitment == commitment_of(w0, 7)
    commit_and_send(market, w0, sid, result_for(7))  # the committed result is still welcome
    assert market.get_submission(sid).result == result_for(7)


def test_commit_order_follows_chain_order(
    market_at: MarketFactory,
    people: dict[str, Keypair],
    chain_client: ChainClient,
    chain_url: str,
) -> None:
    """Commitments are numbered across tasks in chain order: block, then extrinsic index."""
    market = market_at()
    creator = people["creator"]
    first = market.create_task(creator, spec_for(market))
    second = market.create_task(creator, spec_for(market))
    workers = [people[f"w{i}"] for i in range(4)]
    sids = [market.assign_task(w, first if i < 2 else second) for i, w in enumerate(workers)]
    market.commit_result(workers[3], sids[3], commitment_of(workers[3], 3))
    market.commit_result(workers[0], sids[0], commitment_of(workers[0], 0))
    clients = [ChainClient(chain_url) for _ in range(2)]
    racers = [market_at(f"racer{i}", client) for i, client in enumerate(clients)]
    for racer in racers:
        racer.sync()  # load metadata and index before the block is held
    same_block = [(2, racers[0]), (1, racers[1])]  # w2 enters the pool first
    try:
        outcomes = in_one_block(
            chain_client,
            [
                partial(racer.commit_result, workers[i], sids[i], commitment_of(workers[i], i))
                for i, racer in same_block
            ],
        )
    finally:
        for client in clients:
            client.close()
    assert outcomes == [None, None], outcomes
    orders = [market.get_submission(sid).commit_order for sid in sids]
    assert orders == [1, 3, 2, 0]
    commits = [o for o in market.indexer.all_outcomes() if o.kind == "Commit"]
    assert commits[2].block_number == commits[3].block_number
    assert commits[2].extrinsic_index < commits[3].extrinsic_index
    assert [o.entity_id for o in commits] == [sids[3], sids[0], sids[2], sids[1]]


def test_verdicts_count_only_from_the_creator_and_only_paid(
    market_at: MarketFactory, people: dict[str, Keypair], chain_client: ChainClient
) -> None:
    market = market_at()
    _, (s0, _) = open_round(market, people)
    worker = people["w0"].ss58_address
    reward = REWARD_POOL // 3
    accept = codec.VerdictRecord(s0, True, "")
    raw(chain_client, people["stranger"], accept, pay=reward, to=worker)  # not the creator
    raw(chain_client, people["creator"], accept)  # no payment
    raw(chain_client, people["creator"], accept, pay=reward - 1, to=worker)  # wrong amount
    assert market.get_submission(s0).status == ResultSubmissionStatus.PendingValidation
    refusals = [o.error_type for o in market.indexer.all_outcomes() if not o.applied]
    assert refusals == ["NotCreator", "UnpaidAccept", "UnpaidAccept"]
    assert market.accept(people["creator"], s0) == reward
    assert market.get_submission(s0).status == ResultSubmissionStatus.Accepted


def test_a_task_one_settlement_cannot_pay_is_refused_before_any_fee(
    market_at: MarketFactory, people: dict[str, Keypair]
) -> None:
    """Regression (bench/bench_chain_round.py): create_task took a task of 896 slots, whose
    round's one settlement extrinsic the pool refuses (exhaustsResources): its contributors
    could work and never be paid. The bound comes from the runtime's own limits."""
    market, creator = market_at(), people["creator"]
    capacity = market.settlement_capacity(creator)
    assert 876 <= capacity <= 895  # the bench: 876 with 4096-character reasons, 895 short
    before = market.balance(creator.ss58_address)
    with pytest.raises(InvalidTaskSpec, match=f"at most {capacity}: a round is settled by one"):
        market.create_task(creator, spec_for(market, slots=capacity + 1))
    assert market.balance(creator.ss58_address) == before  # nothing written, no fee
    assert market.list_tasks(open_only=False) == []


def test_the_audit_reports_every_creator_transfer_no_verdict_explains(
    market_at: MarketFactory, people: dict[str, Keypair], chain_client: ChainClient, start: int
) -> None:
    """Regression: only "accepted => paid once" was checked. A repeated accept (its record a
    no-op, its transfer not), an accept of the wrong amount (refused, but the money moved) and
    a stray payment are now each reported, and a clean round reports nothing."""
    market = market_at()
    task_id, (s0, s1) = open_round(market, people)
    creator, reward = people["creator"], REWARD_POOL // 3
    w0, w1 = people["w0"].ss58_address, people["w1"].ss58_address
    verdicts = [Verdict(s0, True, "ok"), Verdict(s1, True, "ok")]
    market.settle(creator, verdicts, close_task_id=task_id)
    clean = market.check_payments(start)
    assert clean.clean and len(clean.tasks) == 1 and clean.tasks[0].balanced
    raw(chain_client, creator, codec.VerdictRecord(s0, True, ""), pay=reward, to=w0)  # again
    raw(chain_client, creator, codec.VerdictRecord(s1, True, ""), pay=reward - 1, to=w1)
    chain_client.submit(creator, [chain_client.transfer_call(w1, 7)])  # a stray payment
    check = market.check_payments(start)
    me = canonical_address(creator.ss58_address)
    assert sorted(check.unexplained, key=lambda d: d.amount) == sorted(
        [
            Discrepancy(me, canonical_address(w0), reward),
            Discrepancy(me, canonical_address(w1), reward - 1 + 7),
        ],
        key=lambda d: d.amount,
    )
    assert check.missing == [] and check.unbalanced == []  # the index itself stayed right
    assert market.get_task(task_id).paid == 2 * reward


def test_a_late_assignment_written_anyway_is_ignored(
    market_at: MarketFactory, people: dict[str, Keypair], chain_client: ChainClient
) -> None:
    market = market_at()
    task_id = market.create_task(people["creator"], spec_for(market, expires_in=4))
    market.assign_task(people["w0"], task_id)  # assigned, but never sends a result
    expiry = market.get_task(task_id).spec.expiration_block
    chain_client.rpc("dev_newBlock", [{"count": max(0, expiry - market.current_block())}])
    raw(chain_client, people["w1"], codec.Assign(task_id))  # refused by the API: TaskNotOpen
    market.sync()
    (late,) = [o for o in market.indexer.all_outcomes() if not o.applied]
    assert late.error_type == "TaskNotOpen"
    task = market.get_task(task_id)
    assert task.assigned == 1
    assert (task.status, task.paid, task.refunded) == (TaskStatus.Withdrawn, 0, REWARD_POOL)


def test_failed_payment_is_surfaced_and_records_nothing(
    market_at: MarketFactory,
    people: dict[str, Keypair],
    chain_client: ChainClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    market = market_at()
    creator = people["creator"]
    _, (s0, _) = open_round(market, people)
    fund(chain_client, creator.ss58_address, 10**11)  # the creator spent its money elsewhere
    with pytest.raises(InsufficientBalance, match="needs"):  # the pre-flight check
        market.accept(creator, s0)
    monkeypatch.setattr(market.client, "submit", partial(market.client.submit, preflight=False))
    with pytest.raises(ChainError, match="InsufficientBalance"):  # the chain's own refusal
        market.accept(creator, s0)
    assert market.get_submission(s0).status == ResultSubmissionStatus.PendingValidation
    assert [o.kind for o in market.indexer.all_outcomes()].count("VerdictRecord") == 0


# --- restarts and agreement ----------------------------------------------------------------


def test_creator_restarted_mid_round_pays_nothing_twice(
    market_at: MarketFactory, people: dict[str, Keypair], chain_client: ChainClient
) -> None:
    market = market_at()
    creator = people["creator"]
    _, (s0, s1) = open_round(market, people)
    verdicts = [Verdict(s0, True, "ok"), Verdict(s1, True, "ok")]
    # The settlement batch lands, then the creator process dies before reading it back.
    reward = REWARD_POOL // 3
    calls = []
    for sid, worker in ((s0, people["w0"]), (s1, people["w1"])):
        calls.append(chain_client.remark_call(codec.encode(codec.VerdictRecord(sid, True, "ok"))))
        calls.append(chain_client.transfer_call(worker.ss58_address, reward))
    chain_client.submit(creator, calls)
    before = market.balance(creator.ss58_address)

    restarted = market_at("a")  # a new process on the same index file
    assert restarted.settle(creator, verdicts) == {s0: 0, s1: 0}
    fresh = market_at("fresh")  # or on a brand new index: the chain is the truth
    assert fresh.settle(creator, verdicts) == {s0: 0, s1: 0}
    assert market.balance(creator.ss58_address) == before
    assert statuses(fresh, 0) == [ResultSubmissionStatus.Accepted] * 2


def test_indexer_restart_continues_incrementally(
    market_at: MarketFactory, people: dict[str, Keypair], chain_client: ChainClient
) -> None:
    market = market_at()
    task_id, _ = open_round(market, people, workers=1)
    last = market.sync()
    assert market.indexer.blocks_scanned == last - market.indexer.start_block + 1

    raw(chain_client, people["w1"], codec.Assign(task_id))
    chain_client.rpc("dev_newBlock", [{"count": 2}])
    restarted = market_at("a")  # same index file
    head = restarted.sync()
    assert restarted.indexer.blocks_scanned == head - last  # only the new blocks
    assert restarted.indexer.rebuilds == 0
    assert restarted.get_task(task_id).assigned == 2


def test_two_indexers_derive_the_same_state(
    market_at: MarketFactory, people: dict[str, Keypair], chain_client: ChainClient
) -> None:
    market = market_at()
    _, (s0, s1, _) = open_round(market, people, workers=3)
    raw(chain_client, people["stranger"], codec.Result(s0, result_for(1)))  # refused
    market.settle(people["creator"], [Verdict(s0, True, ""), Verdict(s1, False, "no")])
    other_task = market.create_task(people["stranger"], spec_for(market, slots=1))
    market.assign_task(people["w3"], other_task)
    market.close_task(people["stranger"], other_task)

    def state(m: SubstrateMarketplace) -> tuple[object, ...]:
        tasks = m.list_tasks(open_only=False)
        return (
            tasks,
            [m.list_task_results(t.task_id) for t in tasks],
            m.indexer.all_outcomes(),
        )

    first, second = market_at("b"), market_at("c")
    second.sync()
    assert state(first) == state(second) == state(market)
    assert len(state(market)[0]) == 2


def test_lost_connection_during_a_write_is_recovered(
    market_at: MarketFactory, people: dict[str, Keypair], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The extrinsic lands but the connection drops before its receipt: the marketplace
    finds its record on chain instead of failing (or writing it twice)."""
    market = market_at()
    task_id = market.create_task(people["creator"], spec_for(market))
    real_submit = market.client.submit

    def submit_then_drop(*args: object, **kwargs: object) -> Receipt:
        real_submit(*args, **kwargs)  # type: ignore[arg-type]
        raise ChainOutcomeUnknown("connection lost (simulated)")

    monkeypatch.setattr(market.client, "submit", submit_then_drop)
    assert market.assign_task(people["w0"], task_id) == 0
    assert market.get_task(task_id).assigned == 1


def test_chain_restart_rebuilds_the_index(
    start_chain: Callable[..., object], tmp_path: Path
) -> None:
    chain = start_chain()
    alice = Keypair.create_from_uri("//Alice")
    market = SubstrateMarketplace(chain.url, tmp_path / "index.sqlite")  # type: ignore[attr-defined]
    try:
        assert market.create_task(alice, spec_for(market)) == 0
        chain.stop()  # type: ignore[attr-defined]
        start_chain(port=chain.port)  # type: ignore[attr-defined]  # a new chain from genesis
        assert market.list_tasks(open_only=False) == []
        assert market.indexer.rebuilds == 1
        assert market.create_task(alice, spec_for(market)) == 0
    finally:
        market.client.close()


def test_index_refuses_a_foreign_file(chain_client: ChainClient, tmp_path: Path) -> None:
    path = tmp_path / "embedded.sqlite"
    Ledger(path).fund(Keypair.create_from_uri("//Alice").ss58_address, 10)
    with pytest.raises(ConfigError, match="not a chain index"):
        ChainIndexer(chain_client, path)


def test_public_keys_compare_across_prefixes(people: dict[str, Keypair]) -> None:
    kusama = Keypair(public_key=people["w0"].public_key, ss58_format=2).ss58_address
    assert public_key_hex(kusama) == public_key_hex(people["w0"])


def test_records_naming_ids_beyond_sqlite_are_refused_not_fatal(
    chain_client: ChainClient, people: dict[str, Keypair], market_at: MarketFactory
) -> None:
    """Anyone can post a record with a u64 id SQLite cannot hold: every indexer must refuse
    it as an unknown id and go on, or one remark would stop the whole marketplace."""
    huge = 2**64 - 1
    receipt = raw(
        chain_client,
        people["stranger"],
        codec.Assign(huge),
        codec.Commit(huge, "ab" * 32),
        codec.Result(huge, result_for(1)),
        codec.VerdictRecord(huge, True, "x"),
        codec.Close(huge),
        codec.Result(0, TaskResult("memory://x", "ab" * 32, huge)),
    )
    market = market_at()
    market.sync()
    refused = market.indexer.outcomes(receipt.block_number, receipt.extrinsic_index)
    assert not any(o.applied for o in refused)
    assert [o.error_type for o in refused] == [
        "UnknownTask", "UnknownSubmission", "UnknownSubmission", "UnknownSubmission",
        "UnknownTask", "InvalidResult",
    ]  # fmt: skip
    task_id, _ = open_round(market, people)  # and the marketplace still works
    assert market.get_task(task_id).assigned == 2
