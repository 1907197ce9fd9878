"""One marketplace round on the dev chain with 10, 20 and 50 contributors, and the largest
round one task can take.

Command (from the project root; starts and stops its own chopsticks chain; ~3 min):

    .venv/bin/python bench/bench_chain_round.py [--contributors 10 20 50] [--block-time 6]
        [--block-mode Batch|Instant] [--clients shared|own] [--no-confirm] [--json FILE]

A round here is the marketplace protocol only (no training), through
``SubstrateMarketplace``: the creator creates a task with N slots; N contributors, each in its
own thread and all started together, assign, commit and send a result (a weights URL in the
layout's place, a sha256, metrics) through the contributor's own steps
(decentralml.contributor.steps); then the creator accepts all N in ONE ``settle`` (N verdict
remarks + N transfers + the Close record in one ``Utility.batch_all``). Every marketplace step
is retried on ``ChainOutcomeUnknown`` as the flows retry it (tasks/policy.py), and every such
unknown outcome is counted. Fresh random keypairs, funded with chopsticks' ``dev_setStorage``,
for every N.

Blocks. ``--block-time 6`` (the default): the chain runs in Manual mode and a ticker builds a
block every 6 s (Asset Hub's block time), so writes sent in between share a block as on a real
chain (finality is immediate here, unlike a parachain's). ``--block-time 0``: chopsticks builds
a block as soon as extrinsics arrive (``--block-mode``; Batch waits 100 ms for more), which
here means one block per extrinsic: the round then measures how fast chopsticks builds blocks.

Clients. ``--clients shared`` (the default): the N contributor threads share one
``SubstrateMarketplace`` (one connection, one index), as the demo's in-process agents do.
``own``: each has its own, as on its own machine. In one process the scalecodec lock
(decentralml.chain.connection) lets one chain read run at a time, so ``own`` makes N indexes
replay the same blocks one after another where N machines would replay them in parallel; one
shared index reads each block once, which is closer to the wall time of N machines. What a
party's own index costs is measured apart (a fresh index, below).

Printed per N, and in one JSON line (the last line; also written to ``--json``): extrinsics
and fees per party (from the chain's fee events, checked against balance differences net of
the rewards), the blocks from the task's block to the settlement's block (and how many of them
hold no marketplace extrinsic), the weight and length of the largest block and of the busiest
one (``System.BlockWeight`` read at a block's hash holds that block's total) against the
runtime's limits (``System.BlockWeights``, ``System.BlockLength``), the settlement extrinsic's
size and weight (its ``ExtrinsicSuccess`` dispatch info), the time from ``create_task`` to
``settle`` returning, and the indexer's read time (a fresh ``SubstrateMarketplace`` with a new
index file syncing the round's blocks, its metadata already loaded).

Then the largest round. A round is settled by ONE extrinsic whose weight grows by one verdict
remark + one transfer per accepted result. The weight of each part comes from the runtime's
fee API (``TransactionPaymentApi``) on settlements of the same shape at two sizes; with the
runtime's limits that gives the largest N each limit allows (extrinsic weight, block length,
``Utility.batched_calls_limit``), for the builtin judge's reasons and for reasons of the
record format's maximum length. Unless ``--no-confirm``, settlements of exactly that shape at
the largest N and at N + 1 are submitted the way ``SubstrateMarketplace.settle`` submits them
(``ChainClient.submit`` of the same calls), to show the first included and how the second
fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from scalecodec.utils.ss58 import ss58_encode
from substrateinterface import Keypair

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from decentralml.chain import codec  # noqa: E402
from decentralml.chain.client import ChainClient, public_key_hex  # noqa: E402
from decentralml.chain.types import ref_time  # noqa: E402
from decentralml.contributor import steps  # noqa: E402
from decentralml.io.storage import RETRY_DELAYS_SECONDS  # noqa: E402
from decentralml.marketplace.substrate import SubstrateMarketplace  # noqa: E402
from decentralml.protocol.accounts import canonical_address  # noqa: E402
from decentralml.protocol.errors import ChainOutcomeUnknown  # noqa: E402
from decentralml.protocol.layout import result_url  # noqa: E402
from decentralml.protocol.records import (  # noqa: E402
    ResultSubmissionStatus,
    TaskResult,
    TaskSpec,
    TaskStatus,
    ValidationStrategy,
    Verdict,
)

REWARD = 10**12  # 1 unit (12 decimals) per accepted result
CONTRIBUTOR_FUNDS = 10**15
CREATOR_SPARE = 10**15  # above the rewards, for fees
MICRO = 10**6  # fees are printed in micro-units (10^6 planck)
RUN_URL = "s3://decentralml-bench/runs/chain-round/round-1"
THRESHOLD = 0.8
MODEL_SIZES = (1, 101)  # settlements priced to split a settlement's weight into its parts
T = TypeVar("T")


# --- the chain ---------------------------------------------------------------------------------


def start_chain(workdir: Path, block_mode: str) -> tuple[int, str]:
    """chain/start.sh on a free port; returns (chopsticks' PID, ws URL)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = subprocess.run(
        ["bash", str(ROOT / "chain" / "start.sh"), "--port", str(port),
         "--block-mode", block_mode, "--log", str(workdir / "chain.log"),
         "--pidfile", str(workdir / "chain.pid"), "--timeout", "120"],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    return int(done.stdout.strip().splitlines()[-1]), f"ws://127.0.0.1:{port}"


def stop_chain(pid: int) -> None:
    """SIGTERM to the PID chain/start.sh printed (chopsticks itself), SIGKILL after 15 s."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


class BlockTicker:
    """On a Manual-mode chain, builds one block every ``seconds`` (``dev_newBlock``), as a
    real chain's block time does: what arrives in between shares a block."""

    def __init__(self, url: str, seconds: float) -> None:
        self.url, self.seconds = url, seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="block-ticker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        with ChainClient(self.url) as client:
            due = time.monotonic() + self.seconds
            while not self._stop.wait(max(0.0, due - time.monotonic())):
                client.rpc("dev_newBlock", [{"count": 1}])
                due += self.seconds


def new_keypair() -> Keypair:
    return Keypair.create_from_mnemonic(Keypair.generate_mnemonic(), ss58_format=42)


def fund_all(client: ChainClient, amounts: dict[str, int]) -> None:
    """Set every account's free balance in ONE dev_setStorage call (no block, no fee)."""
    entries = [
        [[address], {"providers": 1, "data": {"free": str(amount)}}]
        for address, amount in amounts.items()
    ]
    client.rpc("dev_setStorage", [{"System": {"Account": entries}}])


@dataclass(frozen=True)
class Limits:
    """The runtime's limits for a Normal-class extrinsic (all our extrinsics are Normal)."""

    max_block: int  # weight of a whole block, all classes
    normal_max_total: int  # weight of the block's Normal extrinsics, base_extrinsic included
    normal_max_extrinsic: int  # dispatch weight of one Normal extrinsic: the pool checks it
    base_extrinsic: int  # added to each extrinsic's dispatch weight in the block's total
    normal_max_length: int  # bytes of the block's Normal extrinsics
    batched_calls_limit: int  # calls in one Utility batch

    @classmethod
    def read(cls, client: ChainClient) -> Limits:
        """The extrinsic limits as the marketplace reads them (``ChainClient.extrinsic_limits``),
        and the block-wide totals only this bench's block table needs."""
        max_extrinsic, max_length, max_calls = client.extrinsic_limits()
        with client.locked() as substrate:
            weights = substrate.get_constant("System", "BlockWeights").value
        normal = weights["per_class"]["normal"]
        return cls(
            max_block=ref_time(weights["max_block"]),
            normal_max_total=ref_time(normal["max_total"]),
            normal_max_extrinsic=max_extrinsic,
            base_extrinsic=ref_time(normal["base_extrinsic"]),
            normal_max_length=max_length,
            batched_calls_limit=max_calls,
        )


@dataclass
class BlockRow:
    number: int
    normal_weight: int  # System.BlockWeight.normal: dispatch weights + base_extrinsic each
    total_weight: int  # all classes: the inherents and the block's own base weight too
    length: int  # bytes of all its extrinsics
    marketplace_extrinsics: int


def block_row(client: ChainClient, number: int) -> BlockRow:
    """One block's consumed weight (System.BlockWeight at its hash: reset when the next block
    starts, so it holds this block's total) and length (its extrinsics' encoded bytes)."""
    with client.locked() as substrate:
        block_hash = substrate.get_block_hash(number)
        used = substrate.query("System", "BlockWeight", block_hash=block_hash).value
    raw = client.rpc("chain_getBlock", [block_hash])["block"]["extrinsics"]
    return BlockRow(
        number=number,
        normal_weight=int(used["normal"]),
        total_weight=sum(int(v) for v in used.values()),
        length=sum(len(data) // 2 - 1 for data in raw),  # "0x" + hex of the encoding
        marketplace_extrinsics=len(client.block_extrinsics(number)),
    )


def extrinsic_facts(client: ChainClient, number: int, index: int) -> tuple[int, int]:
    """(encoded bytes, dispatch weight) of extrinsic ``index`` of block ``number``."""
    with client.locked() as substrate:
        block_hash = substrate.get_block_hash(number)
        events = substrate.get_events(block_hash=block_hash)
    raw = client.rpc("chain_getBlock", [block_hash])["block"]["extrinsics"]
    weight = next(
        int(event.value["attributes"]["dispatch_info"]["weight"])
        for event in events
        if event.value["extrinsic_idx"] == index
        and (event.value["module_id"], event.value["event_id"]) == ("System", "ExtrinsicSuccess")
    )
    return len(raw[index]) // 2 - 1, weight


# --- one round ---------------------------------------------------------------------------------


def task_spec(n: int, expiration_block: int) -> TaskSpec:
    return TaskSpec(
        question="Train mnist_mlp for one epoch on your shard and send the weights",
        pays_amount=n * REWARD,
        max_assignments=n,
        expiration_block=expiration_block,
        validation_strategy=ValidationStrategy.AutoAccept,
        assets_path=f"{RUN_URL}/assets.tar.gz",
        assets_sha256=hashlib.sha256(b"assets").hexdigest(),
        global_weights_path=f"{RUN_URL}/global.safetensors",
        global_weights_sha256=hashlib.sha256(b"global weights, round 1").hexdigest(),
        round_number=1,
        model="mnist_mlp",
        epochs=1,
        storage_endpoint="http://127.0.0.1:8333",
    )


def a_result(submission_id: int, spec: TaskSpec) -> TaskResult:
    """What a contributor sends after training: its weights' URL and digest, and metrics."""
    weights = os.urandom(64)  # stands for the safetensors file's bytes
    accuracy = 0.9 + (submission_id % 50) / 1000
    return TaskResult(
        result_path=result_url(spec.global_weights_path, submission_id),
        sha256=hashlib.sha256(weights).hexdigest(),
        num_examples=5500,
        metrics={"accuracy": accuracy, "loss": round(1.2 - accuracy, 4)},
        base_fingerprint=spec.global_weights_sha256,
    )


def a_verdict(submission_id: int, accuracy: float, reason_chars: int | None = None) -> Verdict:
    """An accept, worded as the builtin threshold judge words it (or a reason this long)."""
    reason = f"held-out accuracy {accuracy:.4f} >= {THRESHOLD:.4f}"
    return Verdict(submission_id, True, reason if reason_chars is None else "r" * reason_chars)


class Unknowns:
    """Every ChainOutcomeUnknown a step met (and retried), by step, from all threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seen: list[tuple[str, str]] = []

    def add(self, step: str, exc: Exception) -> None:
        with self._lock:
            self.seen.append((step, str(exc)))

    def by_step(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for step, _ in self.seen:
            counts[step] = counts.get(step, 0) + 1
        return counts


def flow_step(unknowns: Unknowns, step: str, fn: Callable[..., T], *args: Any) -> T:
    """Run a marketplace step as the flows run it (tasks/policy.py ``IO_TASK``, re-stated
    here so that the bench needs no Prefect): an unknown chain outcome is retried up to 3
    times after 0.5, 1 and 2 s (jitter 0.5); the retry is safe because the marketplace reads
    the chain back before it sends anything again. Anything else is raised at once."""
    for delay in (*RETRY_DELAYS_SECONDS, None):
        try:
            return fn(*args)
        except ChainOutcomeUnknown as exc:
            unknowns.add(step, exc)
            if delay is None:
                raise
            time.sleep(delay * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")


def contribute(
    market: SubstrateMarketplace,
    worker: Keypair,
    task_id: int,
    go: threading.Barrier,
    unknowns: Unknowns,
) -> tuple[int, float, float]:
    """One contributor's round through the contributor's own steps (decentralml.contributor
    .steps: ``assign`` returns the slot an unknown-outcome attempt took, ``commit``):
    (submission id, accuracy, seconds)."""
    go.wait()
    started = time.perf_counter()
    sid = flow_step(unknowns, "assign", steps.assign, market, worker, task_id)
    result = a_result(sid, market.get_task(task_id).spec)
    flow_step(unknowns, "commit", steps.commit, market, worker, sid, result.sha256)
    flow_step(unknowns, "result", market.send_task_result, worker, sid, result)
    return sid, result.metrics["accuracy"], time.perf_counter() - started


@dataclass
class RoundResult:
    contributors: int
    clients: str
    failures: list[str]
    settle_error: str
    seconds_create: float
    seconds_results: float  # task created .. every contributor's result sent
    seconds_settle: float
    seconds_total: float  # create_task called .. settle returned
    contributor_seconds_mean: float  # one contributor: assign + commit + send
    contributor_seconds_max: float
    blocks: int  # the task's block .. the settlement's block, inclusive
    empty_blocks: int  # of those, blocks without any marketplace extrinsic
    creator_extrinsics: int
    creator_fees: int  # from the chain's fee events
    creator_fees_by_balance: int  # balance before - after - rewards paid
    contributor_extrinsics: list[int]
    contributor_fees: list[int]
    contributor_fees_by_balance: list[int]  # balance before - after + reward received
    largest_block: BlockRow  # by Normal weight
    busiest_block: BlockRow  # by marketplace extrinsics (the first of the most)
    settlement_block: int
    settlement_bytes: int
    settlement_weight: int  # dispatch weight; base_extrinsic comes on top in the block
    settlement_fee: int
    indexer_blocks: int
    indexer_seconds: float
    indexer_check: str
    unknown_outcomes: dict[str, int]  # ChainOutcomeUnknown met (and retried) per step
    unknown_examples: list[tuple[str, str]]  # the last message per step


def one_round(url: str, workdir: Path, n: int, clients: str) -> RoundResult:
    creator, workers = new_keypair(), [new_keypair() for _ in range(n)]
    client = ChainClient(url)
    first = client.finalized_head_number() + 1
    creator_market = SubstrateMarketplace(client, workdir / f"creator-{n}.sqlite", first)
    funds = {creator.ss58_address: n * REWARD + CREATOR_SPARE}
    funds.update({w.ss58_address: CONTRIBUTOR_FUNDS for w in workers})
    fund_all(client, funds)
    if clients == "own":  # connections open and metadata loads before the clock starts
        markets = [
            SubstrateMarketplace(url, workdir / f"contributor-{n}-{i}.sqlite", first)
            for i in range(n)
        ]
        for market in markets:
            market.current_block()
    else:
        markets = [SubstrateMarketplace(url, workdir / f"contributors-{n}.sqlite", first)] * n
    try:
        return run_round(creator_market, markets, creator, workers, funds, first, clients)
    finally:
        for market in {id(m): m for m in markets}.values():
            market.client.close()
        client.close()


def run_round(
    creator_market: SubstrateMarketplace,
    markets: list[SubstrateMarketplace],
    creator: Keypair,
    workers: list[Keypair],
    funds: dict[str, int],
    first: int,
    clients: str,
) -> RoundResult:
    n, client = len(workers), creator_market.client
    go, unknowns = threading.Barrier(n + 1), Unknowns()
    started = time.perf_counter()
    spec = task_spec(n, creator_market.current_block() + 10_000)
    task_id = flow_step(unknowns, "create", creator_market.create_task, creator, spec)
    created = time.perf_counter()
    failures: list[str] = []
    sent: list[tuple[int, float, float]] = []
    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [
            pool.submit(contribute, market, worker, task_id, go, unknowns)
            for market, worker in zip(markets, workers, strict=True)
        ]
        go.wait()
        for worker, future in zip(workers, futures, strict=True):
            try:
                sent.append(future.result())
            except Exception as exc:  # a finding: reported with the contributor's address
                failures.append(f"{worker.ss58_address}: {type(exc).__name__}: {exc}")
    results_in = time.perf_counter()
    verdicts = [a_verdict(sid, accuracy) for sid, accuracy, _ in sent]
    settle_error = ""
    try:
        close = None if failures else task_id
        flow_step(unknowns, "settle", creator_market.settle, creator, verdicts, close)
    except Exception as exc:  # a finding: reported, and the chain is still measured
        settle_error = f"{type(exc).__name__}: {exc}"
    settled = time.perf_counter()

    last = client.finalized_head_number()
    evidence = creator_market.audit(first, last)
    rows = [block_row(client, number) for number in range(first, last + 1)]
    creator_key = public_key_hex(creator)
    mine = [
        extrinsic
        for row in rows
        if row.marketplace_extrinsics
        for extrinsic in client.block_extrinsics(row.number)
        if extrinsic.signer == creator_key
    ]
    task_block = mine[0].block_number
    settlement = mine[-1] if len(mine) > 1 else None  # None: settle failed (settle_error)
    end = settlement.block_number if settlement else last
    size, weight = (
        extrinsic_facts(client, settlement.block_number, settlement.extrinsic_index)
        if settlement
        else (0, 0)
    )
    in_round = [row for row in rows if task_block <= row.number <= end]

    def fees(keypair: Keypair) -> int:
        return evidence.fees[canonical_address(keypair.ss58_address)]

    def by_balance(keypair: Keypair, received: int) -> int:
        return funds[keypair.ss58_address] + received - client.free_balance(keypair.ss58_address)

    settlement_fees = creator_market.audit(end, end).fees if settlement else {}
    indexer_seconds, indexer_blocks, check = fresh_index(client.url, creator_market, task_id, n)
    took = [seconds for _, _, seconds in sent] or [0.0]
    return RoundResult(
        contributors=n,
        clients=clients,
        failures=failures,
        settle_error=settle_error,
        seconds_create=created - started,
        seconds_results=results_in - created,
        seconds_settle=settled - results_in,
        seconds_total=settled - started,
        contributor_seconds_mean=statistics.fmean(took),
        contributor_seconds_max=max(took),
        blocks=len(in_round),
        empty_blocks=sum(row.marketplace_extrinsics == 0 for row in in_round),
        creator_extrinsics=evidence.extrinsics[canonical_address(creator.ss58_address)],
        creator_fees=fees(creator),
        creator_fees_by_balance=by_balance(creator, -paid_by(evidence, creator)),
        contributor_extrinsics=[
            evidence.extrinsics[canonical_address(w.ss58_address)] for w in workers
        ],
        contributor_fees=[fees(w) for w in workers],
        contributor_fees_by_balance=[
            by_balance(w, evidence.received(creator.ss58_address, w.ss58_address)) for w in workers
        ],
        largest_block=max(rows, key=lambda row: row.normal_weight),
        busiest_block=max(rows, key=lambda row: row.marketplace_extrinsics),
        settlement_block=end if settlement else 0,
        settlement_bytes=size,
        settlement_weight=weight,
        settlement_fee=settlement_fees.get(canonical_address(creator.ss58_address), 0),
        indexer_blocks=indexer_blocks,
        indexer_seconds=indexer_seconds,
        indexer_check=check,
        unknown_outcomes=unknowns.by_step(),
        unknown_examples=sorted({step: text for step, text in unknowns.seen}.items()),
    )


def paid_by(evidence: Any, payer: Keypair) -> int:
    """What ``payer`` transferred, from the chain's Transfer events."""
    key = canonical_address(payer.ss58_address)
    return sum(amount for (sender, _), amount in evidence.transfers.items() if sender == key)


def fresh_index(
    url: str, creator_market: SubstrateMarketplace, task_id: int, n: int
) -> tuple[float, int, str]:
    """A new party's index of the round: (seconds of sync(), blocks read, what it derived)."""
    client = ChainClient(url)
    try:
        with client.locked() as substrate:
            substrate.init_runtime()  # the metadata load (~1 s, once per client): not timed
        path = Path(f"{creator_market.indexer.path}.fresh.sqlite")
        fresh = SubstrateMarketplace(client, path, creator_market.indexer.start_block)
        started = time.perf_counter()
        fresh.sync()
        seconds = time.perf_counter() - started
        task = fresh.get_task(task_id)
        subs = fresh.list_task_results(task_id)
        accepted = [s for s in subs if s.status is ResultSubmissionStatus.Accepted]
        ok = task.status is TaskStatus.Completed and len(accepted) == n
        ok = ok and all(s.paid == REWARD for s in accepted)
        check = "ok" if ok else f"task {task.status}, {len(accepted)}/{n} accepted and paid"
        return seconds, fresh.indexer.blocks_scanned, check
    except Exception as exc:  # a finding: what a new party could not read
        return float("nan"), 0, f"{type(exc).__name__}: {exc}"
    finally:
        client.close()


# --- the largest round -------------------------------------------------------------------------


def settlement_calls(
    client: ChainClient, count: int, reason_chars: int | None, dests: list[str]
) -> list[Any]:
    """The calls ``SubstrateMarketplace.settle`` sends to accept ``count`` results of one task
    and close it: per result its verdict remark and its payment, then the Close record.
    Submission ids are 6 digits, as on a marketplace with some history."""
    calls = []
    for i in range(count):
        verdict = a_verdict(100_000 + i, 0.9 + (i % 50) / 1000, reason_chars)
        record = codec.VerdictRecord(verdict.submission_id, True, verdict.reason)
        calls.append(client.remark_call(codec.encode(record)))
        calls.append(client.transfer_call(dests[i % len(dests)], REWARD))
    calls.append(client.remark_call(codec.encode(codec.Close(100_000))))
    return calls


def priced(client: ChainClient, payer: Keypair, calls: list[Any]) -> tuple[int, int]:
    """(dispatch weight, signed extrinsic bytes) of ``calls`` in one batch_all, priced as the
    marketplace prices a settlement (``ChainClient.weight_and_length``)."""
    return client.weight_and_length(payer, calls)


@dataclass
class Capacity:
    """How a settlement grows with its accepted results, and the largest N each limit allows."""

    reason_chars: int | None  # None: the builtin judge's reasons (~35 characters)
    remark_weight: int  # one verdict remark alone (System.remark_with_event)
    transfer_weight: int  # one payment alone (Balances.transfer_keep_alive)
    weight_per_accept: int
    weight_fixed: int  # batch_all's own weight and the Close record
    bytes_per_accept: int
    bytes_fixed: int
    by_weight: int  # the pool refuses an extrinsic above normal max_extrinsic
    by_length: int  # a block's Normal extrinsics take at most normal max length
    by_calls: int  # Utility.batched_calls_limit
    largest: int
    limited_by: str


def capacity(
    client: ChainClient, payer: Keypair, limits: Limits, reason_chars: int | None
) -> Capacity:
    dests = [ss58_encode(os.urandom(32), 42)]
    small, large = (priced(client, payer, settlement_calls(client, k, reason_chars, dests))
                    for k in MODEL_SIZES)  # fmt: skip
    span = MODEL_SIZES[1] - MODEL_SIZES[0]
    per_weight, per_bytes = (large[0] - small[0]) // span, (large[1] - small[1]) // span
    fixed_weight = small[0] - per_weight * MODEL_SIZES[0]
    fixed_bytes = small[1] - per_bytes * MODEL_SIZES[0]
    bounds = {
        "extrinsic weight": (limits.normal_max_extrinsic - fixed_weight) // per_weight,
        "block length": (limits.normal_max_length - fixed_bytes) // per_bytes,
        "batched calls": (limits.batched_calls_limit - 1) // 2,
    }
    limited_by = min(bounds, key=lambda name: bounds[name])
    remark, transfer = settlement_calls(client, 1, reason_chars, dests)[:2]
    with client.locked() as substrate:
        alone = [
            int(substrate.get_payment_info(call, payer)["weight"]) for call in (remark, transfer)
        ]
    return Capacity(
        reason_chars=reason_chars,
        remark_weight=alone[0],
        transfer_weight=alone[1],
        weight_per_accept=per_weight,
        weight_fixed=fixed_weight,
        bytes_per_accept=per_bytes,
        bytes_fixed=fixed_bytes,
        by_weight=bounds["extrinsic weight"],
        by_length=bounds["block length"],
        by_calls=bounds["batched calls"],
        largest=bounds[limited_by],
        limited_by=limited_by,
    )


def confirm(client: ChainClient, largest: int, workdir: Path) -> list[dict[str, Any]]:
    """First, whether ``create_task`` takes a task of ``largest + 1`` slots (a round it could
    not settle in one settlement). Then submit settlements of ``largest`` and ``largest + 1``
    accepts as settle does: one ChainClient.submit of its calls (batch_all), paying fresh
    accounts."""
    payer = new_keypair()
    fund_all(client, {payer.ss58_address: 3 * (largest + 1) * REWARD + CREATOR_SPARE})
    market = SubstrateMarketplace(
        client, workdir / "limit.sqlite", client.finalized_head_number() + 1
    )
    spec = task_spec(largest + 1, market.current_block() + 10_000)
    try:
        task = market.get_task(market.create_task(payer, spec))
        created = f"task {task.task_id} created, {task.spec.max_assignments} slots, {task.status}"
    except Exception as exc:  # would mean the marketplace refuses such a task up front
        created = f"{type(exc).__name__}: {exc}"
    outcomes: list[dict[str, Any]] = [
        {"create_task": largest + 1, "outcome": created},
        # What create_task enforces (4096-character reasons), beside this bench's breakdown.
        {"settlement_capacity": market.settlement_capacity(payer)},
    ]
    for count in (largest, largest + 1):
        dests = [ss58_encode(os.urandom(32), 42) for _ in range(count)]
        calls = settlement_calls(client, count, None, dests)
        weight, size = priced(client, payer, calls)
        outcome: dict[str, Any] = {"accepts": count, "priced_weight": weight, "bytes": size}
        started = time.perf_counter()
        try:
            receipt = client.submit(payer, calls)
        except Exception as exc:  # the finding: how the chain refuses it
            outcome["error"] = f"{type(exc).__name__}: {exc}"
        else:
            row = block_row(client, receipt.block_number)
            outcome.update(
                block=receipt.block_number,
                dispatch_weight=extrinsic_facts(
                    client, receipt.block_number, receipt.extrinsic_index
                )[1],
                block_normal_weight=row.normal_weight,
                block_total_weight=row.total_weight,
                fee=receipt.fee,
            )
        outcome["seconds"] = round(time.perf_counter() - started, 2)
        outcomes.append(outcome)
    return outcomes


# --- report ------------------------------------------------------------------------------------


def micro(planck: float) -> str:
    return f"{planck / MICRO:,.1f}"


def mega(weight: float) -> str:
    return f"{weight / 1e6:,.0f}"


def print_rounds(rounds: list[RoundResult], limits: Limits) -> None:
    print(
        f"\n{'N':>3} {'clients':>7} {'create s':>8} {'results s':>9} {'settle s':>8} "
        f"{'total s':>8} {'contrib s mean/max':>18} {'blocks':>6} {'empty':>5} "
        f"{'index s':>7} {'ms/block':>8}"
    )
    for r in rounds:
        print(
            f"{r.contributors:>3} {r.clients:>7} {r.seconds_create:>8.2f} "
            f"{r.seconds_results:>9.1f} {r.seconds_settle:>8.1f} {r.seconds_total:>8.1f} "
            f"{r.contributor_seconds_mean:>8.1f}/{r.contributor_seconds_max:<9.1f} "
            f"{r.blocks:>6} {r.empty_blocks:>5} {r.indexer_seconds:>7.2f} "
            f"{1000 * r.indexer_seconds / max(r.indexer_blocks, 1):>8.1f}"
        )
    print(
        f"\nfees in µ (10^6 planck); weights in 10^6 (10^12 = 1 s of reference time); "
        f"normal max_extrinsic {mega(limits.normal_max_extrinsic)}, "
        f"normal max_total {mega(limits.normal_max_total)}, max_block {mega(limits.max_block)}"
    )
    print(
        f"{'N':>3} {'creator ext':>11} {'creator fee':>11} {'settle fee':>10} "
        f"{'contrib ext':>11} {'contrib fee mean/max':>20} {'settle bytes':>12} "
        f"{'settle wt':>9} {'largest blk':>11} {'% normal':>8} {'% block':>7} {'blk bytes':>9}"
    )
    for r in rounds:
        fees = r.contributor_fees
        block = r.largest_block
        ext = sorted(set(r.contributor_extrinsics))
        print(
            f"{r.contributors:>3} {r.creator_extrinsics:>11} {micro(r.creator_fees):>11} "
            f"{micro(r.settlement_fee):>10} {'/'.join(map(str, ext)):>11} "
            f"{micro(statistics.fmean(fees)):>9}/{micro(max(fees)):<10} "
            f"{r.settlement_bytes:>12,} {mega(r.settlement_weight):>9} "
            f"{mega(block.normal_weight):>11} "
            f"{100 * block.normal_weight / limits.normal_max_total:>7.2f}% "
            f"{100 * block.total_weight / limits.max_block:>6.2f}% {block.length:>9,}"
        )
    for r in rounds:
        agree = (
            r.creator_fees == r.creator_fees_by_balance
            and r.contributor_fees == r.contributor_fees_by_balance
        )
        print(
            f"N={r.contributors}: fees from events {'=' if agree else '!='} balance differences; "
            f"fresh index: {r.indexer_check} ({r.indexer_blocks} blocks); "
            f"largest block #{r.largest_block.number} (settlement #{r.settlement_block})"
        )
        busy = r.busiest_block
        print(
            f"N={r.contributors}: busiest block #{busy.number}: {busy.marketplace_extrinsics} "
            f"marketplace extrinsics, Normal weight {mega(busy.normal_weight)} "
            f"({100 * busy.normal_weight / limits.normal_max_total:.2f}% of max_total), "
            f"{busy.length:,} B"
        )
        if r.unknown_outcomes:
            print(f"N={r.contributors}: unknown outcomes, retried: {r.unknown_outcomes}")
            for step, text in r.unknown_examples:
                print(f"    last at {step}: {text}")
        for failure in r.failures:
            print(f"N={r.contributors}: contributor failed: {failure}")
        if r.settle_error:
            print(f"N={r.contributors}: settle failed: {r.settle_error}")


def print_capacity(caps: list[Capacity], limits: Limits, checks: list[dict[str, Any]]) -> None:
    print("\nlargest round one task can take (one settlement extrinsic, all accepted):")
    for cap in caps:
        words = "builtin judge's reasons" if cap.reason_chars is None else (
            f"{cap.reason_chars}-character reasons")  # fmt: skip
        print(
            f"  {words}: per accept {mega(cap.weight_per_accept)} weight (remark "
            f"{mega(cap.remark_weight)} + transfer {mega(cap.transfer_weight)} + batch), "
            f"{cap.bytes_per_accept} bytes; fixed {mega(cap.weight_fixed)}, {cap.bytes_fixed} "
            f"bytes -> by extrinsic weight ({mega(limits.normal_max_extrinsic)}) "
            f"{cap.by_weight}, by block length ({limits.normal_max_length:,} B) "
            f"{cap.by_length}, by batched calls ({limits.batched_calls_limit}) {cap.by_calls}: "
            f"N <= {cap.largest}, limited by {cap.limited_by}"
        )
    for check in checks:
        if "create_task" in check:
            print(f"  create_task with {check['create_task']} slots: {check['outcome']}")
        elif "settlement_capacity" in check:
            print(f"  the marketplace's settlement_capacity: {check['settlement_capacity']}")
        elif "error" in check:
            print(
                f"  submitted {check['accepts']} accepts (priced {mega(check['priced_weight'])}, "
                f"{check['bytes']:,} B): {check['error']}"
            )
        else:
            print(
                f"  submitted {check['accepts']} accepts: included in block {check['block']}, "
                f"dispatch weight {mega(check['dispatch_weight'])} "
                f"({100 * check['dispatch_weight'] / limits.normal_max_extrinsic:.2f}% of "
                f"max_extrinsic), {check['bytes']:,} B, fee {micro(check['fee'])} µ, "
                f"{check['seconds']} s"
            )


# --- main --------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contributors", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument("--clients", choices=["shared", "own"], default="shared")
    parser.add_argument("--block-mode", choices=["Batch", "Instant"], default="Batch")
    parser.add_argument(
        "--block-time", type=float, default=6.0, help="seconds per block; 0: one per arrival"
    )
    parser.add_argument("--no-confirm", action="store_true", help="skip the limit's check")
    parser.add_argument("--json", type=Path, help="also write the JSON summary here")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-chain-round-") as scratch:
        workdir = Path(scratch)
        mode = "Manual" if args.block_time > 0 else args.block_mode
        pid, url = start_chain(workdir, mode)
        ticker = BlockTicker(url, args.block_time) if args.block_time > 0 else None
        try:
            if ticker:
                ticker.start()
            with ChainClient(url) as client:
                limits = Limits.read(client)
            rounds = []
            for n in args.contributors:
                rounds.append(one_round(url, workdir, n, args.clients))
                print(f"N={n}: {rounds[-1].seconds_total:.1f} s", flush=True)
            print_rounds(rounds, limits)
            with ChainClient(url) as client:
                payer = new_keypair()
                fund_all(client, {payer.ss58_address: CREATOR_SPARE})
                caps = [capacity(client, payer, limits, chars)
                        for chars in (None, codec.MAX_TEXT_CHARS)]  # fmt: skip
                checks = [] if args.no_confirm else confirm(client, caps[0].largest, workdir)
            print_capacity(caps, limits, checks)
        finally:
            if ticker:
                ticker.stop()
            stop_chain(pid)
    summary = {
        "bench": "chain_round",
        "command": " ".join([".venv/bin/python", "bench/bench_chain_round.py", *sys.argv[1:]]),
        "seconds": round(time.perf_counter() - started, 1),
        "limits": asdict(limits),
        "rounds": [asdict(r) for r in rounds],
        "capacity": [asdict(c) for c in caps],
        "confirm": checks,
    }
    line = json.dumps(summary)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(line + "\n")
    print(line)
    failed = any(r.failures or r.settle_error or r.indexer_check != "ok" for r in rounds)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
