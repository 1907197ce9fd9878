"""A small, checked client for the marketplace's chain: submit extrinsics, read records back.

Three things substrate-interface leaves to the caller are done here once:

* Failures are errors. Every receipt is checked (``is_success``); a dispatch error becomes a
  ``ChainError`` whose message names the pallet error (``Balances.InsufficientBalance``), and a
  transaction refused before inclusion for lack of funds (RPC code 1010) becomes
  ``InsufficientBalance``. A pre-flight fee estimate catches an under-funded signer before any
  fee is spent.
* Reads survive a chain restart: connection errors are retried with back-off for a while.
  Submissions are NOT retried: a lost connection leaves their outcome unknown, so the caller
  must read back before resubmitting (``ChainOutcomeUnknown``).
* Inclusion is decided by the chain, with a deadline. A submission is followed by polling the
  pool and the new blocks (not by a subscription, whose socket read has no timeout and which
  never reports an extrinsic the node silently drops), so it ends included, refused, dropped
  (its nonce used by another extrinsic) or unknown at ``inclusion_timeout``, never by a
  grace period after it left the pool. Nonces come from the pool
  (``system_accountNextIndex``), so a restarted writer does not reuse the nonce of its own
  pending extrinsic; ``pending_extrinsics`` lets it find that extrinsic and wait for it.
* Records are read exactly. A failed extrinsic stays in its block, so only extrinsics with an
  ``ExtrinsicSuccess`` event count; remark bytes are recovered exactly (see ``blocks``)
  and ``Utility.batch_all`` is flattened in order.

Accounts are compared by public key (``0x``-prefixed lowercase hex): the runtime spells
addresses with SS58 prefix 2 while this package writes prefix 42.

``ChainClient`` puts together the parts, one concern each: ``connection`` (the socket, the
process-wide lock, reconnecting reads), ``state`` (heads, nonces, balances, dev faucet),
``blocks`` (decoding extrinsics of blocks and the pool), ``calls`` (call building and fees),
``submit`` (sending and waiting for inclusion), ``dispatch`` (typed errors for refused and
failed extrinsics), ``scale`` (compact integers, extrinsic hashes) and ``types`` (what is
handed back). Their public names are re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

from substrateinterface import Keypair, SubstrateInterface

from decentralml.chain.blocks import ExtrinsicReader
from decentralml.chain.calls import FEE_CACHE_SECONDS, Calls
from decentralml.chain.connection import CONNECTION_ERRORS, SS58_FORMAT, Connection
from decentralml.chain.dispatch import ChainDispatchError, ChainInsufficientBalance
from decentralml.chain.scale import compact_decode, compact_encode
from decentralml.chain.state import ChainState
from decentralml.chain.submit import INCLUSION_TIMEOUT, Submitter
from decentralml.chain.types import (
    ChainExtrinsic,
    ChainRecord,
    Item,
    PendingExtrinsic,
    Receipt,
    Remark,
    Transfer,
    public_key_hex,
)
from decentralml.protocol.errors import ChainOutcomeUnknown

__all__ = [
    "CONNECTION_ERRORS",
    "FEE_CACHE_SECONDS",
    "INCLUSION_TIMEOUT",
    "SS58_FORMAT",
    "ChainClient",
    "ChainDispatchError",
    "ChainExtrinsic",
    "ChainInsufficientBalance",
    "ChainOutcomeUnknown",  # defined in decentralml.protocol.errors, re-exported here
    "ChainRecord",
    "Item",
    "PendingExtrinsic",
    "Receipt",
    "Remark",
    "Transfer",
    "compact_decode",
    "compact_encode",
    "public_key_hex",
]


class ChainClient:
    """One websocket connection to a node, used under the process-wide lock (neither the
    socket nor scalecodec is thread-safe; see ``connection``). A submission holds the lock
    while it picks its nonce, signs and sends; waiting for inclusion takes it one read at a
    time, so other threads and clients can use the chain meanwhile.

    Each method is its part's; the parts share this client's connection."""

    def __init__(self, url: str, *, connect_timeout: float = 30.0, retry_seconds: float = 20.0):
        self._connection = Connection(
            url, connect_timeout=connect_timeout, retry_seconds=retry_seconds
        )
        self._state = ChainState(self._connection)
        self._extrinsics = ExtrinsicReader(self._connection)
        self._calls = Calls(self._connection, self._state)
        self._submitter = Submitter(self._connection, self._state, self._calls)

    # --- connection ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self._connection.url

    @property
    def retry_seconds(self) -> float:
        """How long a read keeps reconnecting before it raises ChainError."""
        return self._connection.retry_seconds

    @retry_seconds.setter
    def retry_seconds(self, seconds: float) -> None:
        self._connection.retry_seconds = seconds

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> ChainClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def substrate(self) -> SubstrateInterface:
        """The underlying interface, for what this client does not wrap. Unlocked: use it
        alone in its process, or through ``locked()``."""
        return self._connection.substrate

    def locked(self) -> AbstractContextManager[SubstrateInterface]:
        return self._connection.locked()

    def rpc(self, method: str, params: list[Any]) -> Any:
        return self._connection.rpc(method, params)

    # --- chain state --------------------------------------------------------------------

    def genesis_hash(self) -> str:
        return self._state.genesis_hash()

    def block_hash(self, block_number: int) -> str | None:
        return self._state.block_hash(block_number)

    def finalized_head_number(self) -> int:
        return self._state.finalized_head_number()

    def best_head_number(self) -> int:
        return self._state.best_head_number()

    def next_nonce(self, address: str) -> int:
        return self._state.next_nonce(address)

    def chain_ss58_prefix(self) -> int:
        return self._state.chain_ss58_prefix()

    def account_nonce(self, address: str) -> int:
        return self._state.account_nonce(address)

    def free_balance(self, address: str) -> int:
        return self._state.free_balance(address)

    def existential_deposit(self) -> int:
        return self._state.existential_deposit()

    def extrinsic_limits(self) -> tuple[int, int, int]:
        return self._state.extrinsic_limits()

    def dev_fund(self, address: str, amount: int) -> int:
        return self._state.dev_fund(address, amount)

    # --- calls and fees -----------------------------------------------------------------

    def remark_call(self, payload: bytes) -> Any:
        return self._calls.remark_call(payload)

    def transfer_call(self, dest: str, amount: int) -> Any:
        return self._calls.transfer_call(dest, amount)

    def estimate_fee(self, keypair: Keypair, call: Any, calls: Sequence[Any] = ()) -> int:
        return self._calls.estimate_fee(keypair, call, calls)

    def check_funds(self, keypair: Keypair, calls: Sequence[Any]) -> None:
        self._calls.check_funds(keypair, calls)

    def weight_and_length(self, keypair: Keypair, calls: Sequence[Any]) -> tuple[int, int]:
        return self._calls.weight_and_length(keypair, calls)

    # --- submission ---------------------------------------------------------------------

    def submit(
        self,
        keypair: Keypair,
        calls: Sequence[Any],
        batch: bool = True,
        *,
        preflight: bool = True,
        nonce: int | None = None,
        inclusion_timeout: float = INCLUSION_TIMEOUT,
    ) -> Receipt:
        return self._submitter.submit(
            keypair,
            calls,
            batch,
            preflight=preflight,
            nonce=nonce,
            inclusion_timeout=inclusion_timeout,
        )

    def wait_for_inclusion(
        self,
        extrinsic_hash: str,
        signer: str,
        nonce: int,
        *,
        after_block: int,
        timeout: float = INCLUSION_TIMEOUT,
    ) -> Receipt:
        return self._submitter.wait_for_inclusion(
            extrinsic_hash, signer, nonce, after_block=after_block, timeout=timeout
        )

    # --- reading extrinsics -------------------------------------------------------------

    def pending_extrinsics(self, signer: str | Keypair | None = None) -> list[PendingExtrinsic]:
        return self._extrinsics.pending_extrinsics(signer)

    def iter_records(self, start_block: int, end_block: int) -> Iterator[ChainRecord]:
        return self._extrinsics.iter_records(start_block, end_block)

    def iter_extrinsics(self, start_block: int, end_block: int) -> Iterator[ChainExtrinsic]:
        return self._extrinsics.iter_extrinsics(start_block, end_block)

    def block_extrinsics(self, block_number: int) -> list[ChainExtrinsic]:
        return self._extrinsics.block_extrinsics(block_number)
