"""Crashes and unknown outcomes on a real local chain (docs/chain-protocol.md).

A creator killed after submitting its settlement and before the block, then restarted, must
neither pay twice nor hang; a write not included by its deadline raises ChainOutcomeUnknown
and a later call reconciles; the retry policy retries unknown outcomes, never refusals.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prefect.states import Completed, Failed
from substrateinterface import Keypair

from decentralml.chain.client import INCLUSION_TIMEOUT, ChainClient, ChainOutcomeUnknown, Receipt
from decentralml.marketplace.substrate import SubstrateMarketplace
from decentralml.protocol import errors
from decentralml.protocol.errors import (
    ChainError,
    InsufficientBalance,
    SourceUnreachable,
    StorageUnavailable,
    TaskFull,
)
from decentralml.protocol.records import ResultSubmissionStatus, Verdict
from tasks.policy import _retry_unless_permanent
from tests.chain_fixture import manual_blocks
from tests.test_marketplace_substrate import REWARD_POOL, open_round, spec_for

ROOT = Path(__file__).resolve().parent.parent
REWARD = REWARD_POOL // 3

SETTLE_SNIPPET = textwrap.dedent(
    """
    import json, sys
    from substrateinterface import Keypair
    from decentralml.protocol.records import Verdict
    from decentralml.marketplace.substrate import SubstrateMarketplace

    args = json.loads(sys.argv[1])
    creator = Keypair.create_from_mnemonic(args["mnemonic"], ss58_format=42)
    market = SubstrateMarketplace(args["url"], args["index"], args["start"])
    verdicts = [Verdict(sid, True, "ok") for sid in args["sids"]]
    print("settling", flush=True)
    print(market.settle(creator, verdicts), flush=True)
    """
)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not seen after {timeout}s")
        time.sleep(0.1)


@pytest.fixture
def round_of_two(
    chain_client: ChainClient, funded_keypair: Callable[..., Keypair], tmp_path: Path
) -> tuple[SubstrateMarketplace, dict[str, Keypair], list[int], int]:
    """A task with two results awaiting a verdict; the creator's index starts at ``start``."""
    start = chain_client.finalized_head_number() + 1
    people = {name: funded_keypair() for name in ("creator", "w0", "w1")}
    market = SubstrateMarketplace(chain_client, tmp_path / "setup.sqlite", start)
    _, sids = open_round(market, people)
    return market, people, sids, start


@pytest.mark.integration
@pytest.mark.slow
def test_creator_killed_before_inclusion_neither_pays_twice_nor_hangs(
    chain_url: str, chain_client: ChainClient, round_of_two: tuple, tmp_path: Path
) -> None:
    market, people, (s0, s1), start = round_of_two
    creator = people["creator"]
    workers_before = [market.balance(people[w].ss58_address) for w in ("w0", "w1")]
    args = {"url": chain_url, "index": str(tmp_path / "crashed.sqlite"), "start": start,
            "mnemonic": creator.mnemonic, "sids": [s0, s1]}  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with manual_blocks(chain_client) as build_block:
        process = subprocess.Popen(
            [sys.executable, "-c", SETTLE_SNIPPET, json.dumps(args)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_until(lambda: chain_client.pending_extrinsics(creator), 60, "the settlement")
        finally:
            process.send_signal(signal.SIGKILL)  # by its own PID: the process we started
            process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL

        # The restarted creator: a new client, a fresh index, the same settle call.
        restarted = SubstrateMarketplace(
            ChainClient(chain_url), tmp_path / "restarted.sqlite", start, inclusion_timeout=30
        )
        restarted.sync()  # metadata and index loaded before the clock starts
        waiting = threading.Event()
        real_wait = restarted.client.wait_for_inclusion

        def wait_for_inclusion(*args: Any, **kwargs: Any) -> Receipt:
            waiting.set()
            return real_wait(*args, **kwargs)

        restarted.client.wait_for_inclusion = wait_for_inclusion  # type: ignore[method-assign]
        result: dict[str, object] = {}

        def settle_again() -> None:
            try:
                result["paid"] = restarted.settle(creator, [Verdict(s0, True, "ok"),
                                                            Verdict(s1, True, "ok")])  # fmt: skip
            except BaseException as exc:  # asserted below
                result["error"] = exc
            result["done"] = time.monotonic()

        thread = threading.Thread(target=settle_again)
        thread.start()
        assert waiting.wait(timeout=60), "the restarted creator never waited for the pending one"
        time.sleep(1.0)
        assert len(chain_client.pending_extrinsics(creator)) == 1  # it sent no duplicate
        built = time.monotonic()
        build_block()
        thread.join(timeout=60)
    try:
        assert not thread.is_alive(), "the restarted creator hangs"
        assert "error" not in result, result.get("error")
        returned_after = float(result["done"]) - built  # type: ignore[arg-type]
        print(f"restarted creator returned {returned_after:.1f}s after the block")
        assert returned_after < 15
        # The earlier (killed) process's extrinsic paid; its outcome is what the call returns.
        assert result["paid"] == {s0: REWARD, s1: REWARD}
        workers_after = [market.balance(people[w].ss58_address) for w in ("w0", "w1")]
        assert [a - b for a, b in zip(workers_after, workers_before, strict=True)] == [REWARD] * 2
        verdicts = [o for o in restarted.indexer.all_outcomes() if o.kind == "VerdictRecord"]
        assert {(o.block_number, o.extrinsic_index) for o in verdicts} == {
            (verdicts[0].block_number, verdicts[0].extrinsic_index)
        }  # exactly one settlement extrinsic
        assert len(verdicts) == 2 and all(o.applied for o in verdicts)
        assert chain_client.pending_extrinsics(creator) == []
        # A third run pays nothing.
        assert restarted.settle(creator, [Verdict(s0, True, "ok")]) == {s0: 0}
    finally:
        restarted.client.close()


@pytest.mark.integration
@pytest.mark.slow
def test_inclusion_deadline_raises_unknown_and_a_later_call_reconciles(
    chain_url: str, chain_client: ChainClient, round_of_two: tuple, tmp_path: Path
) -> None:
    market, people, (s0, _), start = round_of_two
    creator = people["creator"]
    creator_before = market.balance(creator.ss58_address)
    w0_before = market.balance(people["w0"].ss58_address)
    short = SubstrateMarketplace(
        ChainClient(chain_url), tmp_path / "short.sqlite", start, inclusion_timeout=3
    )
    try:
        with manual_blocks(chain_client) as build_block:
            began = time.monotonic()
            with pytest.raises(ChainOutcomeUnknown, match="still pending") as raised:
                short.settle(creator, [Verdict(s0, True, "ok")])
            assert time.monotonic() - began < 20  # the deadline (3 s) plus the read-back
            assert raised.value.pending
            assert isinstance(raised.value, ChainError)  # still catchable as before
            assert len(chain_client.pending_extrinsics(creator)) == 1
            build_block()
        # The later call finds the verdict on chain: nothing new is written or paid.
        assert short.settle(creator, [Verdict(s0, True, "ok")]) == {s0: 0}
        assert short.get_submission(s0).status == ResultSubmissionStatus.Accepted
        assert market.balance(people["w0"].ss58_address) - w0_before == REWARD
        verdicts = [o for o in short.indexer.all_outcomes() if o.kind == "VerdictRecord"]
        assert len(verdicts) == 1
        assert creator_before - market.balance(creator.ss58_address) < 2 * REWARD
    finally:
        short.client.close()


@pytest.mark.integration
def test_restarted_writer_takes_its_nonce_from_the_pool(
    chain_client: ChainClient, funded_keypair: Callable[..., Keypair]
) -> None:
    """``next_nonce`` counts the signer's pool extrinsics (the state's nonce does not)."""
    signer = funded_keypair()
    with manual_blocks(chain_client) as build_block:
        call = chain_client.remark_call(b"not a record")
        extrinsic = chain_client.substrate.create_signed_extrinsic(call, signer, nonce=0)
        chain_client.rpc("author_submitExtrinsic", [str(extrinsic.data)])
        assert chain_client.account_nonce(signer.ss58_address) == 0
        assert chain_client.next_nonce(signer.ss58_address) == 1
        (pending,) = chain_client.pending_extrinsics(signer)
        assert (pending.nonce, pending.remarks) == (0, (b"not a record",))
        build_block()


@pytest.mark.integration
def test_a_duplicate_nonce_surfaces_quickly_as_unknown(
    chain_client: ChainClient, funded_keypair: Callable[..., Keypair]
) -> None:
    """The node keeps one of two extrinsics with the same nonce and drops the other without
    a word: the dropped one's wait ends as soon as its nonce is used, not at the deadline."""
    signer = funded_keypair()
    with manual_blocks(chain_client) as build_block:
        first = chain_client.substrate.create_signed_extrinsic(
            chain_client.remark_call(b"first"), signer, nonce=0
        )
        chain_client.rpc("author_submitExtrinsic", [str(first.data)])
        outcome: dict[str, object] = {}

        def submit_duplicate() -> None:
            client = ChainClient(chain_client.url)
            try:
                client.submit(signer, [client.remark_call(b"second")], nonce=0)
            except BaseException as exc:  # asserted below
                outcome["error"] = exc
            finally:
                outcome["done"] = time.monotonic()
                client.close()

        thread = threading.Thread(target=submit_duplicate)
        thread.start()
        wait_until(lambda: len(chain_client.pending_extrinsics(signer)) == 2, 30, "duplicate")
        built = time.monotonic()
        build_block()
        thread.join(timeout=60)
    assert isinstance(outcome["error"], ChainOutcomeUnknown)
    assert "nonce 0 was used" in str(outcome["error"])
    assert float(outcome["done"]) - built < 5  # type: ignore[arg-type]


# --- inclusion decided by the chain, not a clock (issue 19) -----------------------------------


class _Clock:
    """The submitter's clock and sleep: time passes only when the waiter sleeps, so a test
    can let "minutes" pass between two blocks without waiting for them; past ``fake_for``
    seconds it runs at the real pace again (a real block then gets real time to be built)."""

    def __init__(self, fake_for: float = float("inf")) -> None:
        self.now, self.fake_for = 0.0, fake_for
        self.real_since: float | None = None

    def monotonic(self) -> float:
        if self.now < self.fake_for:
            return self.now
        if self.real_since is None:
            self.real_since = time.monotonic()
        return self.now + time.monotonic() - self.real_since

    def sleep(self, seconds: float) -> None:
        if self.now < self.fake_for:
            self.now += seconds
        else:
            time.sleep(seconds)


def _on_pool_reads(
    client: ChainClient, monkeypatch: pytest.MonkeyPatch, react, clock: _Clock | None = None
) -> None:
    """Call ``react(n, pool)`` on the submitter's n-th read of the pool (with what the node
    said); what it returns is what the submitter sees."""
    import decentralml.chain.submit as submit_module

    monkeypatch.setattr(submit_module, "time", clock or _Clock())
    submitter = client._submitter  # the fault is injected where the pool is read
    real = submitter._pool_hashes
    reads = iter(range(1, 10**6))
    monkeypatch.setattr(submitter, "_pool_hashes", lambda: react(next(reads), real()))


@pytest.mark.integration
def test_a_block_that_takes_long_to_build_is_waited_for_not_called_dropped(
    chain_url: str,
    chain_client: ChainClient,
    funded_keypair: Callable[..., Keypair],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression: on a loaded machine chopsticks took more than 4 s to build the block an
    extrinsic had left the pool for, and the wait declared it dropped (16+ writes raised for
    records that were on chain). Here the block is built 30 s (of the submitter's clock) after
    the extrinsic left the pool: the wait follows the chain and returns its receipt."""
    signer, client = funded_keypair(), ChainClient(chain_url)
    try:
        with manual_blocks(chain_client) as build_block:

            def building_for_30_seconds(read: int, pool: set[str]) -> set[str]:
                if read == 120:  # 120 reads x 0.25 s: the block is built now
                    build_block()
                return set()  # taken out of the pool while the block is built

            _on_pool_reads(client, monkeypatch, building_for_30_seconds)
            receipt = client.submit(signer, [client.remark_call(b"slow block")])
        assert receipt.block_number == chain_client.best_head_number()
        assert chain_client.account_nonce(signer.ss58_address) == 1
    finally:
        client.close()


@pytest.mark.integration
def test_a_write_the_node_dropped_without_a_word_lands_once_after_the_deadline(
    chain_url: str, funded_keypair: Callable[..., Keypair], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A node that accepts an extrinsic and then drops it (here: its first submission never
    reaches the pool) leaves the wait without a block to follow: it ends unknown at the
    deadline (of the submitter's clock), not "dropped" 4 s after it was missed, and the write
    path reads back, finds nothing and sends it again with the unused nonce: one task."""
    creator = funded_keypair()
    client = ChainClient(chain_url)
    real_request = client.substrate.rpc_request
    dropped: list[str] = []

    def drop_the_first_submission(method: str, params: list, *args: Any, **kwargs: Any) -> Any:
        if method == "author_submitExtrinsic" and not dropped:
            dropped.append(params[0])
            return {"jsonrpc": "2.0", "result": "0x", "id": 0}  # accepted, then lost
        return real_request(method, params, *args, **kwargs)

    monkeypatch.setattr(client.substrate, "rpc_request", drop_the_first_submission)
    reads: list[int] = []
    # Fake time up to the first wait's deadline; the sending again then waits in real time
    # for chopsticks to build its block (a CI run under load needed more than 240 fast polls).
    clock = _Clock(fake_for=INCLUSION_TIMEOUT + 1)
    _on_pool_reads(client, monkeypatch, lambda read, pool: reads.append(read) or pool, clock)
    market = SubstrateMarketplace(client, tmp_path / "index.sqlite", client.best_head_number() + 1)
    try:
        task_id = market.create_task(creator, spec_for(market))
        assert dropped and len(reads) >= INCLUSION_TIMEOUT / 0.25  # it waited to the deadline
        created = [o for o in market.indexer.all_outcomes() if o.kind == "TaskCreated"]
        assert [(o.entity_id, o.applied) for o in created] == [(task_id, True)]
        assert client.account_nonce(creator.ss58_address) == 1  # one extrinsic landed
    finally:
        client.close()


# --- the retry policy (unit level) ---------------------------------------------------------


def test_policy_retries_unknown_outcomes_and_not_refusals() -> None:
    retry = _retry_unless_permanent
    assert retry(None, None, Failed(data=ChainOutcomeUnknown("deadline passed"))) is True
    assert retry(None, None, Failed(data=ConnectionError("reset"))) is True
    assert retry(None, None, Failed(data=TaskFull("all slots taken"))) is False
    assert retry(None, None, Failed(data=InsufficientBalance("fund it"))) is False
    assert retry(None, None, Failed(data=ChainError("Balances.InsufficientBalance"))) is False
    assert retry(None, None, Completed()) is True
    # Retried by the layer that raised them (the store, the pull), never again on top.
    assert retry(None, None, Failed(data=StorageUnavailable("cannot write"))) is False
    assert retry(None, None, Failed(data=SourceUnreachable("no answer"))) is False


def test_unknown_outcome_is_still_a_chain_error() -> None:
    """Code that catches ChainError keeps catching it; only the policy tells them apart."""
    assert issubclass(ChainOutcomeUnknown, ChainError)
    assert ChainOutcomeUnknown is errors.ChainOutcomeUnknown
