"""The whole story on one machine: one creator and N contributors, concurrently.

The creator's training flow runs in this process; each simulated contributor is an agent that
watches the marketplace and works on every new task with the contributor's steps, as a
contributor's agent would on its own machine, but as one task run per task rather than a flow
run. The agents run as Prefect tasks of their own flow run, ``<run>-contributors``, in
processes of their own, on Dask workers or on Prefect's thread pool (flows/simulation.py,
config section ``simulation``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict

from decentralml.creator.report import RoundReport, round_row
from decentralml.creator.session import open_session
from decentralml.marketplace import AuditsChain, ChargesFees
from decentralml.protocol.accounts import same_account
from decentralml.runtime.backends import contributor_keypair, fund_dev_accounts
from decentralml.runtime.config import RunConfig
from decentralml.simulation.attacks import backdoor_success_rate
from flows.creator import run_training
from flows.simulation import attacker_indices, simulated_contributors, start_prefect_api


def run_demo(
    config: RunConfig, on_round: Callable[[RoundReport], None] | None = None, decider=None
) -> dict:
    """Run creator and contributors; return the summary (the workload's primary metric and
    every test metric per round, verdicts, payments)."""
    started = time.perf_counter()
    prefect_api_started = start_prefect_api()  # boots while the creator's session opens
    session = open_session(config, run=f"{config.name}-demo-{time.strftime('%Y%m%d-%H%M%S')}")
    market = session.creator.market
    workers = [
        contributor_keypair(config.marketplace, i, market) for i in range(config.contributors)
    ]
    if isinstance(market, ChargesFees):  # contributors' writes cost fees too
        fund_dev_accounts(market, config, workers)
    before = {w.ss58_address: market.balance(w.ss58_address) for w in workers}
    first_task_id = len(market.list_tasks(open_only=False))
    first_block = market.current_block() + 1
    attackers = attacker_indices(config)
    run = session.creator.run
    with simulated_contributors(config, first_task_id, run, prefect_api_started):
        reports = run_training(config, session, decider, on_round)
    summary = summarize(session, reports, before, time.perf_counter() - started)
    roles = {
        w.ss58_address: (config.attack.kind if i in attackers else None)
        for i, w in enumerate(workers)
    }
    summary["submissions"] = submissions_by_role(market, reports, roles)
    x_test, y_test = session.test
    summary["attack"] = {
        "kind": config.attack.kind,
        "attackers": config.attack.attackers,
        "backdoor_success_rate": backdoor_success_rate(
            lambda x: session.model.predict(x, verbose=0, batch_size=1024), x_test, y_test
        ),
        "paid_to_attackers": sum(
            r["paid"] for r in summary["submissions"] if r["role"] != "honest"
        ),
        "honest_rejected": sum(
            r["verdict"] == "rejected" for r in summary["submissions"] if r["role"] == "honest"
        ),
    }
    if isinstance(market, AuditsChain):
        add_chain_evidence(summary, market.audit(first_block), session.creator.keypair.ss58_address)
        summary["payments_check"] = payments_check_row(market.check_payments(first_block))
    return summary


def submissions_by_role(
    market, reports: list[RoundReport], roles: dict[str, str | None]
) -> list[dict]:
    """Every judged submission with who sent it (honest, or the attack it simulated), its
    verdict and what it was paid: the evidence of what attacks cost the creator."""
    rows = []
    for report in reports:
        verdicts = {sid: ("accepted", "") for sid in report.accepted}
        verdicts.update({sid: ("rejected", why) for sid, why in report.rejected.items()})
        for sid, (verdict, reason) in sorted(verdicts.items()):
            worker = market.get_submission(sid).worker
            attack = next((kind for a, kind in roles.items() if same_account(a, worker)), None)
            rows.append(
                {
                    "round": report.round_number,
                    "submission": sid,
                    "contributor": worker,
                    "role": attack or "honest",
                    "verdict": verdict,
                    "reason": reason,
                    "paid": report.payments.get(sid, 0),
                }
            )
    return rows


def add_chain_evidence(summary: dict, evidence, creator: str) -> None:
    """On a chain, show the payments as the chain recorded them: Balances.Transfer events
    from the creator, and what each contributor paid in fees (balance_change = received - fees)."""
    for payment in summary["payments"]:
        payment["received_on_chain"] = evidence.received(creator, payment["contributor"])
        payment["fees_paid"] = evidence.fees.get(payment["contributor"], 0)
    summary["creator_extrinsics"] = evidence.extrinsics.get(creator, 0)
    summary["chain_blocks"] = evidence.blocks


def payments_check_row(check) -> dict:
    """The chain's money against the marketplace's verdicts, both ways: all lists empty when
    every creator transfer is explained by a verdict and every task's books balance."""
    return {
        "unexplained_transfers": [asdict(d) for d in check.unexplained],
        "missing_payments": [asdict(d) for d in check.missing],
        "unbalanced_tasks": [asdict(b) for b in check.unbalanced],
    }


def summarize(session, reports: list[RoundReport], before: dict[str, int], seconds: float) -> dict:
    market = session.creator.market
    paid: dict[str, int] = defaultdict(int)
    for report in reports:
        for submission_id, amount in report.payments.items():
            paid[market.get_submission(submission_id).worker] += amount
    final = reports[-1] if reports else None
    legacy = {"final_accuracy": final.metrics.get("accuracy") if final else None}
    return {
        "metric_name": final.metric_name if final else None,
        "final_metric": final.metric if final else None,
        **legacy,  # kept for readers of earlier summaries
        "wall_seconds": round(seconds, 1),
        "rounds": [round_row(r) for r in reports],
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
