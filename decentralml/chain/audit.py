"""What actually happened on chain between two blocks, read from events, not from our index.

Used to check the marketplace's claims independently: payments must appear as
``Balances.Transfer`` events from the creator, fees as ``TransactionPayment.TransactionFeePaid``,
and the creator's extrinsic count per round must stay at task + settlement.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from decentralml.chain.client import ChainClient
from decentralml.protocol.accounts import canonical_address


@dataclass
class ChainAudit:
    transfers: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    fees: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    extrinsics: Counter = field(default_factory=Counter)
    blocks: int = 0

    def received(self, sender: str, receiver: str) -> int:
        return self.transfers.get((canonical_address(sender), canonical_address(receiver)), 0)


def audit(client: ChainClient, start_block: int, end_block: int) -> ChainAudit:
    """Sum transfers by (from, to), fees by payer and signed extrinsics by signer."""
    result = ChainAudit()
    for number in range(start_block, end_block + 1):
        with client.locked() as substrate:
            block_hash = substrate.get_block_hash(number)
            events = substrate.get_events(block_hash=block_hash)
        by_extrinsic: dict[int, list[dict]] = defaultdict(list)
        for event in events:
            by_extrinsic[event.value.get("extrinsic_idx")].append(event.value)
        for extrinsic_events in by_extrinsic.values():
            _count_extrinsic(result, extrinsic_events)
        result.blocks += 1
    return result


def _count_extrinsic(result: ChainAudit, events: list[dict]) -> None:
    """One extrinsic's events. Its fee: TransactionFeePaid where the runtime emits it; older
    runtimes (like the dev chain's) show it as the first Balances.Withdraw of the signer,
    less any Deposit back to it (a refund of overestimated weight)."""
    payer, fee = None, 0
    for value in events:
        module, name, attributes = value["module_id"], value["event_id"], value["attributes"]
        if (module, name) == ("Balances", "Transfer"):
            key = (canonical_address(attributes["from"]), canonical_address(attributes["to"]))
            result.transfers[key] += int(attributes["amount"])
        elif (module, name) == ("TransactionPayment", "TransactionFeePaid"):
            payer = canonical_address(attributes["who"])
            fee = int(attributes["actual_fee"]) + int(attributes["tip"])
            break
        elif (module, name) == ("Balances", "Withdraw") and payer is None:
            payer, fee = canonical_address(attributes["who"]), int(attributes["amount"])
        elif (module, name) == ("Balances", "Deposit") and payer == _who(attributes):
            fee -= int(attributes["amount"])
    if payer is not None:
        result.fees[payer] += fee
        result.extrinsics[payer] += 1


def _who(attributes: dict) -> str:
    return canonical_address(attributes["who"])
