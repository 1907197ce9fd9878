"""Marketplace cost of one round on a Substrate chain vs the embedded marketplace, same run.

Command (from the project root; starts and stops its own chopsticks chain):

    .venv/bin/python bench/bench_chain.py [--contributors 3 10] [--rounds 2]

A round here is the marketplace traffic only (no training): the creator creates the task,
every contributor assigns, commits to its result and sends it, the creator settles all
verdicts and closes the task in one unit. Printed per backend: seconds per round, extrinsics
per round by role (from the chain's own events) and the chain/embedded time ratio. Creator
extrinsics per round must be <= 2 (task + one batched settlement); the script exits 1 if not.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from substrateinterface import Keypair

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from decentralml.marketplace.base import Marketplace  # noqa: E402
from decentralml.marketplace.embedded import EmbeddedMarketplace  # noqa: E402
from decentralml.marketplace.substrate import SubstrateMarketplace  # noqa: E402
from decentralml.protocol.commitment import result_commitment  # noqa: E402
from decentralml.protocol.records import TaskResult, TaskSpec, Verdict  # noqa: E402

REWARD = 10**12
FUNDS = 10**16


def start_chain(workdir: Path) -> tuple[int, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = subprocess.run(
        ["bash", str(ROOT / "chain" / "start.sh"), "--port", str(port),
         "--log", str(workdir / "chain.log")],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    return int(done.stdout.strip().splitlines()[-1]), f"ws://127.0.0.1:{port}"


def one_round(market: Marketplace, creator: Keypair, workers: list[Keypair]) -> float:
    started = time.perf_counter()
    n = len(workers)
    spec = TaskSpec("bench", n * REWARD, n, market.current_block() + 10_000)
    task_id = market.create_task(creator, spec)
    sids = [market.assign_task(worker, task_id) for worker in workers]
    for sid, worker in zip(sids, workers, strict=True):
        result = TaskResult(f"memory://r/{sid}", "ab" * 32, 100)
        market.commit_result(worker, sid, result_commitment(worker.ss58_address, result.sha256))
        market.send_task_result(worker, sid, result)
    verdicts = [Verdict(sid, i % 2 == 0, "bench") for i, sid in enumerate(sids)]
    market.settle(creator, verdicts, close_task_id=task_id)
    return time.perf_counter() - started


def measure(market: Marketplace, creator: Keypair, workers: list[Keypair], rounds: int) -> float:
    for account in [creator, *workers]:
        market.fund(account.ss58_address, FUNDS)
    return sum(one_round(market, creator, workers) for _ in range(rounds)) / rounds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contributors", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-chain-") as scratch:
        workdir = Path(scratch)
        pid, url = start_chain(workdir)
        try:
            print(
                f"{'N':>3} {'embedded s/round':>17} {'chain s/round':>14} {'ratio':>7} "
                f"{'creator ext/round':>18} {'contributor ext/round':>22}"
            )
            for n in args.contributors:
                creator = Keypair.create_from_mnemonic(Keypair.generate_mnemonic())
                workers = [
                    Keypair.create_from_mnemonic(Keypair.generate_mnemonic()) for _ in range(n)
                ]
                embedded = EmbeddedMarketplace(workdir / f"embedded-{n}.sqlite")
                base = measure(embedded, creator, workers, args.rounds)
                chain = SubstrateMarketplace(url, workdir / f"index-{n}.sqlite")
                first = chain.current_block() + 1
                seconds = measure(chain, creator, workers, args.rounds)
                evidence = chain.audit(first)
                creator_ext = evidence.extrinsics[chain_address(creator)] / args.rounds
                worker_ext = (
                    sum(evidence.extrinsics[chain_address(w)] for w in workers) / args.rounds
                )
                ok &= creator_ext <= 2
                print(
                    f"{n:>3} {base:>17.3f} {seconds:>14.2f} {seconds / base:>6.0f}x "
                    f"{creator_ext:>18.1f} {worker_ext:>22.1f}"
                )
        finally:
            os.kill(pid, signal.SIGTERM)
    print("creator extrinsics per round <= 2:", "yes" if ok else "NO")
    return 0 if ok else 1


def chain_address(keypair: Keypair) -> str:
    from decentralml.protocol.accounts import canonical_address

    return canonical_address(keypair.ss58_address)


if __name__ == "__main__":
    sys.exit(main())
