"""The whole demo with the marketplace on a real Substrate runtime (chopsticks), and the
contributor's check of a creator's standing (rewards are not escrowed on chain)."""

from __future__ import annotations

import pytest

from decentralml.marketplace.substrate import SubstrateMarketplace
from decentralml.protocol.accounts import canonical_address
from decentralml.protocol.errors import CreatorCannotPay
from decentralml.protocol.records import TaskSpec
from decentralml.runtime.config import parse_config
from flows.demo import run_demo
from tests.helpers import small_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROUNDS, CONTRIBUTORS, REWARD = 2, 3, 10**12


@pytest.fixture(scope="module")
def chain_demo(chain_url, tmp_path_factory, prefect_harness):
    tmp_path = tmp_path_factory.mktemp("substrate-demo")
    data = small_config(
        tmp_path,
        rounds=ROUNDS,
        contributors=CONTRIBUTORS,
        **{
            "marketplace.backend": "substrate",
            "marketplace.url": chain_url,
            "marketplace.dev_genesis_hash": "0x" + "45" * 32,  # chopsticks: dev keys sign
            "marketplace.index_path": str(tmp_path / "index.sqlite"),
            "marketplace.dev_funds": 10**15,
            "task.max_assignments": CONTRIBUTORS,
            "task.pays_amount": CONTRIBUTORS * REWARD,
            "task.expiry_blocks": 10_000,
        },
    )
    return run_demo(parse_config(data, "substrate-demo"))


def test_demo_trains_and_accepts_every_result(chain_demo):
    assert len(chain_demo["rounds"]) == ROUNDS
    assert all(len(r["accepted"]) == CONTRIBUTORS for r in chain_demo["rounds"])
    assert chain_demo["final_accuracy"] > 0.9


def test_payments_are_balances_transfer_events_of_exactly_the_reward(chain_demo):
    payments = chain_demo["payments"]
    assert len(payments) == CONTRIBUTORS
    for payment in payments:
        assert payment["amount"] == ROUNDS * REWARD
        assert payment["received_on_chain"] == ROUNDS * REWARD  # from Transfer events
        # Their balance rose by exactly the reward, less the fees they paid for their own
        # extrinsics (assign + result per round), also read from the chain's events.
        assert payment["fees_paid"] > 0
        assert payment["balance_change"] == ROUNDS * REWARD - payment["fees_paid"]


def test_every_creator_transfer_is_explained_by_a_verdict_and_the_books_balance(chain_demo):
    assert chain_demo["payments_check"] == {
        "unexplained_transfers": [], "missing_payments": [], "unbalanced_tasks": [],
    }  # fmt: skip


def test_creator_sends_two_extrinsics_per_round(chain_demo):
    assert chain_demo["creator_extrinsics"] == 2 * ROUNDS  # create_task + one settlement


def test_contributor_refuses_a_creator_who_cannot_pay(chain_client, funded_keypair, tmp_path):
    creator, worker = funded_keypair(), funded_keypair()
    market = SubstrateMarketplace(chain_client, tmp_path / "index.sqlite")
    spec = TaskSpec("q", 3 * REWARD, 3, market.current_block() + 1000)
    task_id = market.create_task(creator, spec)
    standing = market.creator_standing(creator.ss58_address)
    assert standing.outstanding == 3 * REWARD and standing.covered

    chain_client.rpc(  # the creator empties its account after announcing the reward
        "dev_setStorage",
        [
            {
                "System": {
                    "Account": [
                        [[creator.ss58_address], {"providers": 1, "data": {"free": REWARD}}]
                    ]
                }
            }
        ],
    )
    before = len(market.list_task_results(task_id))
    with pytest.raises(CreatorCannotPay, match="owes"):
        market.assign_task(worker, task_id)
    assert len(market.list_task_results(task_id)) == before  # nothing written, no fee spent
    assert canonical_address(worker.ss58_address) not in {
        s.worker for s in market.list_task_results(task_id)
    }
