"""Building the calls the marketplace submits, and checking the signer can pay for them.

A pre-flight fee estimate catches an under-funded signer before any fee is spent.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from substrateinterface import Keypair

from decentralml.chain.blocks import TRANSFER_CALLS
from decentralml.chain.connection import Connection
from decentralml.chain.state import ChainState
from decentralml.chain.types import account_param, ref_time
from decentralml.protocol.errors import InsufficientBalance

FEE_CACHE_SECONDS = 60.0


class Calls:
    """Composes calls through ``connection`` and prices them against ``state``."""

    def __init__(self, connection: Connection, state: ChainState):
        self._read = connection.read
        self._substrate = connection.substrate
        self._state = state
        self._fee_cache: dict[tuple[tuple[str, ...], int], tuple[float, int]] = {}

    def remark_call(self, payload: bytes) -> Any:
        """``System.remark_with_event``: the record's bytes stay in the block body, and the
        Remarked event lets explorers show it."""
        return self._read(
            self._substrate.compose_call, "System", "remark_with_event", {"remark": bytes(payload)}
        )

    def transfer_call(self, dest: str, amount: int) -> Any:
        """``Balances.transfer_keep_alive``: a payment that can never reap the payer."""
        if amount <= 0:
            raise ValueError(f"transfer amount must be positive, got {amount}")
        params = {"dest": account_param(dest), "value": int(amount)}
        return self._read(self._substrate.compose_call, "Balances", "transfer_keep_alive", params)

    def one_call(self, calls: list[Any], batch: bool) -> Any:
        """The one call that carries ``calls``: the call itself, or ``Utility.batch_all`` of
        several (all or nothing) when ``batch``."""
        if not calls:
            raise ValueError("submit needs at least one call")
        if len(calls) == 1:
            return calls[0]
        if not batch:
            raise ValueError(
                f"{len(calls)} calls with batch=False: submit them one by one, or batch them"
            )
        return self._read(self._substrate.compose_call, "Utility", "batch_all", {"calls": calls})

    def estimate_fee(self, keypair: Keypair, call: Any, calls: Sequence[Any] = ()) -> int:
        """The fee ``call`` would cost now (``TransactionPaymentApi``, ~0.2 s on chopsticks).

        Given the ``calls`` it is made of, the estimate is cached for ``FEE_CACHE_SECONDS``
        per (call indexes, encoded length): the fee depends on weight and length, the same for
        the same calls and size (our remarks), and on a fee multiplier that moves slowly. It
        is a pre-flight estimate, not a promise."""
        key = (tuple(str(c.data)[:6] for c in calls), len(call.data)) if calls else None
        cached = self._fee_cache.get(key) if key else None
        if cached is not None and time.monotonic() - cached[0] < FEE_CACHE_SECONDS:
            return cached[1]
        info = self._read(self._substrate.get_payment_info, call, keypair)
        fee = int(info["partialFee"])
        if key:
            self._fee_cache[key] = (time.monotonic(), fee)
        return fee

    def weight_and_length(self, keypair: Keypair, calls: Sequence[Any]) -> tuple[int, int]:
        """The dispatch weight (reference time) and the signed length in bytes of ``calls``
        submitted as one extrinsic by ``keypair``: what the pool checks against the block's
        limits (``ChainState.extrinsic_limits``)."""
        call = self.one_call(list(calls), batch=True)

        def read() -> tuple[int, int]:
            info = self._substrate.get_payment_info(call, keypair)
            signed = self._substrate.create_signed_extrinsic(call, keypair, nonce=0)
            return ref_time(info["weight"]), len(signed.data)

        return self._read(read)

    def check_funds(self, keypair: Keypair, calls: Sequence[Any]) -> None:
        """Raise InsufficientBalance if ``submit(keypair, calls)`` could not be paid for."""
        call = self.one_call(list(calls), batch=True)
        account = self._state.account_data(keypair.ss58_address)
        self.check_account(keypair, call, calls, account)

    def check_account(
        self, keypair: Keypair, call: Any, calls: Sequence[Any], account: dict[str, int]
    ) -> None:
        """Refuse early, with numbers, when the signer cannot pay the fee plus its transfers
        and keep the existential deposit (fees and keep-alive transfers never reap)."""
        fee = self.estimate_fee(keypair, call, calls)
        transferred = _transferred(calls)
        keep = max(self._state.existential_deposit(), account["frozen"])
        needed = fee + transferred + keep
        if account["free"] < needed:
            raise InsufficientBalance(
                f"account {keypair.ss58_address} has {account['free']} free but needs {needed} "
                f"(fee ~{fee} + transfers {transferred} + {keep} that must stay): "
                "fund it (on the dev chain, transfer from //Alice) and retry"
            )


def _transferred(calls: Sequence[Any]) -> int:
    total = 0
    for call in calls:
        value = call.value
        if (value["call_module"], value["call_function"]) in TRANSFER_CALLS:
            total += int(value["call_args"]["value"])
    return total
