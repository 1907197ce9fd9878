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
* Waiting for inclusion has a deadline. A submission is followed by polling the pool and the
  new blocks (not by a subscription, whose socket read has no timeout and which never reports
  an extrinsic the node silently drops), so it ends included, refused, dropped (seconds after
  leaving the pool) or unknown at ``inclusion_timeout``. Nonces come from the pool
  (``system_accountNextIndex``), so a restarted writer does not reuse the nonce of its own
  pending extrinsic; ``pending_extrinsics`` lets it find that extrinsic and wait for it.
* Records are read exactly. A failed extrinsic stays in its block, so only extrinsics with an
  ``ExtrinsicSuccess`` event count; remark bytes are recovered exactly (see ``_items``)
  and ``Utility.batch_all`` is flattened in order.

Accounts are compared by public key (``0x``-prefixed lowercase hex): the runtime spells
addresses with SS58 prefix 2 while this package writes prefix 42.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from scalecodec.base import ScaleBytes
from scalecodec.utils.ss58 import ss58_encode
from substrateinterface import ExtrinsicReceipt, Keypair, SubstrateInterface
from substrateinterface.exceptions import SubstrateRequestException
from websocket import WebSocketException

from decentralml.accounts import InvalidAddress, public_key_of
from decentralml.errors import ChainError, ChainOutcomeUnknown, InsufficientBalance

SS58_FORMAT = 42
FEE_CACHE_SECONDS = 60.0
INCLUSION_TIMEOUT = 60.0
"""Default seconds a submission may wait for its block (ten 6 s relay-chain slots) before its
outcome is reported unknown."""
DROP_GRACE_SECONDS = 4.0
"""How long an extrinsic may be out of the pool and in no block before it counts as dropped:
chopsticks takes the pool's extrinsics out while it builds a block (~0.5-2 s here)."""
_POLL_SECONDS = 0.25
_POOL_REFUSALS_UNKNOWN = frozenset({1012, 1013, 1014})
"""Pool refusals meaning another extrinsic with this nonce is pending or was just seen
(temporarily banned, already imported, priority too low): not a verdict on ours."""
_T = TypeVar("_T")

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (OSError, WebSocketException)
"""What a dropped or refused websocket raises (ConnectionRefusedError is an OSError)."""

_REMARK_CALLS = frozenset({("System", "remark"), ("System", "remark_with_event")})
_TRANSFER_CALLS = frozenset({("Balances", "transfer_keep_alive"), ("Balances", "transfer")})
_BATCH_ALL = ("Utility", "batch_all")

_SCALECODEC_LOCK = threading.RLock()
"""Held by every client of the process for each call into substrate-interface. scalecodec
attaches the RuntimeConfigurationObject that looks a type up to the decoder *class*, which
all interfaces share, so two interfaces decoding at once (a first metadata load in one thread,
any read in another) fail with 'Decoder class for "Compact<u32>" not found'. Calls are
short reads; waiting for a block takes the lock one read at a time."""


class ChainDispatchError(ChainError):
    """An extrinsic was included but failed: its fee was charged, none of its calls applied.
    Carries where it landed, so a caller can tell this failure from later records."""

    def __init__(self, message: str, *, error_name: str, block_number: int, extrinsic_index: int):
        super().__init__(message)
        self.error_name = error_name
        self.block_number = block_number
        self.extrinsic_index = extrinsic_index


class ChainInsufficientBalance(ChainDispatchError, InsufficientBalance):
    """The chain itself refused a transfer for lack of funds (module error
    Balances.InsufficientBalance): catchable as ChainError or as InsufficientBalance."""


__all__ = ["ChainOutcomeUnknown"]  # defined in decentralml.errors, re-exported here


@dataclass(frozen=True)
class Receipt:
    """Where a successful extrinsic landed and what it cost."""

    block_number: int
    block_hash: str
    extrinsic_index: int
    extrinsic_hash: str
    fee: int


@dataclass(frozen=True)
class Remark:
    payload: bytes


@dataclass(frozen=True)
class Transfer:
    dest: str
    """The recipient's public key, 0x hex."""
    amount: int


Item = Remark | Transfer


@dataclass(frozen=True)
class ChainExtrinsic:
    """A successful signed extrinsic's marketplace-relevant calls, in execution order
    (a ``batch_all`` is flattened; other calls are left out)."""

    block_number: int
    extrinsic_index: int
    signer: str
    """The signer's public key, 0x hex."""
    items: tuple[Item, ...]

    @property
    def remarks(self) -> tuple[bytes, ...]:
        return tuple(item.payload for item in self.items if isinstance(item, Remark))

    @property
    def transfers(self) -> tuple[Transfer, ...]:
        return tuple(item for item in self.items if isinstance(item, Transfer))


@dataclass(frozen=True)
class PendingExtrinsic:
    """A signed extrinsic waiting in the node's pool, decoded."""

    extrinsic_hash: str
    signer: str
    """The signer's public key, 0x hex."""
    nonce: int
    items: tuple[Item, ...]

    @property
    def remarks(self) -> tuple[bytes, ...]:
        return tuple(item.payload for item in self.items if isinstance(item, Remark))


class ChainRecord(NamedTuple):
    """One remark of a successful extrinsic, in chain order."""

    block_number: int
    extrinsic_index: int
    signer: str
    payload: bytes


def public_key_hex(address: str | Keypair) -> str:
    """The account's public key as 0x hex: the one spelling used for comparisons."""
    if isinstance(address, Keypair):
        return "0x" + address.public_key.hex()
    return "0x" + public_key_of(address).hex()


class ChainClient:
    """One websocket connection to a node, used under the process-wide ``_SCALECODEC_LOCK``
    (neither the socket nor scalecodec is thread-safe). A submission holds the lock while it
    picks its nonce, signs and sends; waiting for inclusion takes it one read at a time, so
    other threads and clients can use the chain meanwhile."""

    def __init__(self, url: str, *, connect_timeout: float = 30.0, retry_seconds: float = 20.0):
        self.url = url
        self.retry_seconds = retry_seconds
        self._lock = _SCALECODEC_LOCK
        self._substrate = self._connect(url, connect_timeout)
        self._existential_deposit: int | None = None
        self._ss58_prefix: int | None = None
        self._fee_cache: dict[tuple[tuple[str, ...], int], tuple[float, int]] = {}

    # --- connection ---------------------------------------------------------------------

    @staticmethod
    def _connect(url: str, timeout: float) -> SubstrateInterface:
        """Retry while the node is still starting (connection refused), up to ``timeout``."""
        deadline = time.monotonic() + timeout
        delay = 0.2
        while True:
            try:
                with _SCALECODEC_LOCK:
                    return SubstrateInterface(url, ss58_format=SS58_FORMAT, auto_reconnect=True)
            except CONNECTION_ERRORS as exc:
                if time.monotonic() >= deadline:
                    raise ChainError(
                        f"cannot connect to the chain at {url} ({exc}); is it running? "
                        "Start a local one with `make chain`"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _read(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run a read under the lock, reconnecting on connection errors until retry_seconds.
        Reads are idempotent, so retrying them is always safe."""
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.2
        while True:
            try:
                with self._lock:
                    return fn(*args, **kwargs)
            except CONNECTION_ERRORS as exc:
                if time.monotonic() >= deadline:
                    raise ChainError(
                        f"lost the connection to the chain at {self.url} ({exc}) and could not "
                        f"reconnect within {self.retry_seconds:.0f}s; is it running?"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                self._reconnect()

    def _reconnect(self) -> None:
        try:
            with self._lock:
                self._substrate.connect_websocket()
        except CONNECTION_ERRORS:
            pass  # still down: the next attempt of _read retries

    def close(self) -> None:
        with self._lock:
            self._substrate.close()

    def __enter__(self) -> ChainClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def substrate(self) -> SubstrateInterface:
        """The underlying interface, for what this client does not wrap. Unlocked: use it
        alone in its process, or through ``locked()``."""
        return self._substrate

    @contextmanager
    def locked(self) -> Iterator[SubstrateInterface]:
        """The underlying interface under the process-wide lock, for a sequence of raw calls
        made while other threads may use the chain."""
        with self._lock:
            yield self._substrate

    def rpc(self, method: str, params: list[Any]) -> Any:
        """A raw JSON-RPC call (e.g. chopsticks' dev_newBlock); raises ChainError on error."""
        response = self._read(self._substrate.rpc_request, method, params)
        if "error" in response:
            raise ChainError(f"RPC {method} failed: {response['error']}")
        return response.get("result")

    # --- chain state --------------------------------------------------------------------

    def genesis_hash(self) -> str:
        return str(self._read(self._substrate.get_block_hash, 0))

    def block_hash(self, block_number: int) -> str | None:
        """The hash of block ``block_number`` on the current chain, None if not built yet.
        Asking by number is safe; never ask chopsticks about a hash from another chain."""
        result = self._read(self._substrate.get_block_hash, block_number)
        return None if result is None else str(result)

    def finalized_head_number(self) -> int:
        def read() -> int:
            head = self._substrate.get_chain_finalised_head()
            return int(self._substrate.get_block_header(block_hash=head)["header"]["number"])

        return self._read(read)

    def best_head_number(self) -> int:
        """The newest block's number (what inclusion is judged against)."""
        return int(self.rpc("chain_getHeader", [])["number"], 16)

    def next_nonce(self, address: str) -> int:
        """The nonce the signer's next extrinsic must use: the state's plus the signer's
        extrinsics in the pool (``system_accountNextIndex``). Chopsticks matches pool
        extrinsics by the address spelled in the chain's own SS58 prefix, so it is asked in
        that spelling (asked with prefix 42 it silently ignores the pool)."""
        spelled = ss58_encode(public_key_of(address), self.chain_ss58_prefix())
        return int(self.rpc("system_accountNextIndex", [spelled]))

    def chain_ss58_prefix(self) -> int:
        if self._ss58_prefix is None:
            constant = self._read(self._substrate.get_constant, "System", "SS58Prefix")
            self._ss58_prefix = int(constant.value) if constant is not None else SS58_FORMAT
        return self._ss58_prefix

    def pending_extrinsics(self, signer: str | Keypair | None = None) -> list[PendingExtrinsic]:
        """The signed extrinsics in the node's pool (``author_pendingExtrinsics``), decoded,
        in pool order; only ``signer``'s when given."""
        wanted = None if signer is None else public_key_hex(signer)
        encoded = self.rpc("author_pendingExtrinsics", [])
        return [
            pending
            for pending in self._read(lambda: [self._decode_pending(data) for data in encoded])
            if pending is not None and (wanted is None or pending.signer == wanted)
        ]

    def _decode_pending(self, data: str) -> PendingExtrinsic | None:
        self._substrate.init_runtime()
        extrinsic = self._substrate.runtime_config.create_scale_object(
            "Extrinsic", data=ScaleBytes(data), metadata=self._substrate.metadata
        )
        extrinsic.decode()
        signer = _signer(extrinsic.value)
        if signer is None:
            return None
        call_bytes = bytes(extrinsic.value_object["call"].get_used_bytes())
        return PendingExtrinsic(
            extrinsic_hash=_extrinsic_hash(data),
            signer=signer,
            nonce=int(extrinsic.value.get("nonce", 0)),
            items=tuple(self._items(call_bytes)),
        )

    def account_nonce(self, address: str) -> int:
        """The nonce in state: how many of the account's extrinsics are in blocks."""
        return self._account_data(address)["nonce"]

    def free_balance(self, address: str) -> int:
        return self._account_data(address)["free"]

    def _account_data(self, address: str) -> dict[str, int]:
        """free, frozen (what must stay) and nonce, from one 2 ms storage read."""
        account = self._read(self._substrate.query, "System", "Account", [_dest(address)])
        data = account.value["data"]
        frozen = max(int(data.get("misc_frozen", 0)), int(data.get("fee_frozen", 0)))
        return {
            "free": int(data["free"]),
            "frozen": int(data.get("frozen", frozen)),
            "nonce": int(account.value["nonce"]),
        }

    def existential_deposit(self) -> int:
        if self._existential_deposit is None:
            constant = self._read(self._substrate.get_constant, "Balances", "ExistentialDeposit")
            self._existential_deposit = int(constant.value)
        return self._existential_deposit

    def dev_fund(self, address: str, amount: int) -> int:
        """Add ``amount`` to an account's free balance by rewriting its storage (chopsticks'
        ``dev_setStorage``; nonce and other fields are kept). Dev chains only: a real node
        refuses, and then funds must be transferred. Returns the new free balance."""
        if amount <= 0:
            raise ValueError(f"amount must be positive, got {amount}")
        info = self._read(self._substrate.query, "System", "Account", [_dest(address)]).value
        free = int(info["data"]["free"]) + amount
        entry = {
            "nonce": int(info["nonce"]),
            "consumers": int(info["consumers"]),
            "providers": max(1, int(info["providers"])),
            "sufficients": int(info["sufficients"]),
            "data": {**{k: str(v) for k, v in info["data"].items()}, "free": str(free)},
        }
        try:
            self.rpc("dev_setStorage", [{"System": {"Account": [[[address], entry]]}}])
        except ChainError as exc:
            raise ChainError(
                f"cannot mint on {self.url}: dev_setStorage works only on a chopsticks dev "
                "chain; transfer funds from a funded account instead"
            ) from exc
        return free

    # --- calls --------------------------------------------------------------------------

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
        params = {"dest": _dest(dest), "value": int(amount)}
        return self._read(self._substrate.compose_call, "Balances", "transfer_keep_alive", params)

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
        """Sign and submit ``calls`` as ONE extrinsic and wait for its inclusion.

        One call goes directly; several go in ``Utility.batch_all`` (all or nothing, and
        cheaper than separate extrinsics). The nonce is the pool's next one unless given
        (resubmitting with the nonce of a lost attempt means at most one of them can land).
        Raises InsufficientBalance (before any fee is spent when ``preflight``), ChainError
        naming the pallet error if the extrinsic failed, and ChainOutcomeUnknown if the
        connection dropped, the extrinsic left the pool without being included, or it was
        not included within ``inclusion_timeout`` seconds."""
        call = self._one_call(list(calls), batch)
        with self._lock:
            if preflight:
                account = self._account_data(keypair.ss58_address)
                self._check_funds(keypair, call, calls, account)
            if nonce is None:
                # The pool's count, not the state's: a restarted writer whose earlier
                # extrinsic is still pending must not reuse its nonce (the node would keep
                # one of the two and drop the other without a word).
                nonce = self.next_nonce(keypair.ss58_address)
            head = self.best_head_number()
            extrinsic = self._read(
                self._substrate.create_signed_extrinsic, call, keypair, nonce=nonce
            )
            extrinsic_hash = "0x" + extrinsic.extrinsic_hash.hex()
            try:
                self._substrate.rpc_request("author_submitExtrinsic", [str(extrinsic.data)])
            except SubstrateRequestException as exc:
                raise _refused(exc, keypair, extrinsic_hash, nonce) from None
            except CONNECTION_ERRORS:
                # It may or may not have reached the pool: the wait below finds out.
                self._reconnect()
        return self.wait_for_inclusion(
            extrinsic_hash, keypair.ss58_address, nonce, after_block=head, timeout=inclusion_timeout
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
        """Wait until the extrinsic ``extrinsic_hash`` (``signer``'s, with ``nonce``) is in a
        block after ``after_block``, and return its checked receipt.

        Each round reads, in this order, the pool, the signer's state nonce and the head, then
        scans the new blocks: an extrinsic in no block up to that head and not in the pool
        has left the pool without being included. Raises ChainOutcomeUnknown at once when its
        nonce was used by another extrinsic (it can never land), after DROP_GRACE_SECONDS out
        of the pool otherwise, and after ``timeout`` while it is still pending."""
        deadline = time.monotonic() + timeout
        scanned = after_block
        out_of_pool_since: float | None = None
        try:
            while True:
                in_pool = extrinsic_hash in self._pool_hashes()
                state_nonce = self.account_nonce(signer)
                head = self.best_head_number()
                found = self._find_in_blocks(extrinsic_hash, scanned + 1, head)
                if found is not None:
                    break
                scanned = head
                now = time.monotonic()
                if in_pool:
                    out_of_pool_since = None
                elif state_nonce > nonce:
                    raise ChainOutcomeUnknown(
                        f"extrinsic {extrinsic_hash} of {signer} was dropped: its nonce "
                        f"{nonce} was used by another extrinsic of the same signer",
                        extrinsic_hash=extrinsic_hash,
                        nonce=nonce,
                    )
                elif out_of_pool_since is None:
                    out_of_pool_since = now
                elif now - out_of_pool_since >= DROP_GRACE_SECONDS:
                    raise ChainOutcomeUnknown(
                        f"extrinsic {extrinsic_hash} of {signer} left the pool of {self.url} "
                        "without being included (dropped, or never arrived)",
                        extrinsic_hash=extrinsic_hash,
                        nonce=nonce,
                    )
                if now >= deadline:
                    raise ChainOutcomeUnknown(
                        f"extrinsic {extrinsic_hash} of {signer} was not included within "
                        f"{timeout:.0f}s and is still pending: it may land later; read the "
                        "chain back before submitting it again",
                        extrinsic_hash=extrinsic_hash,
                        nonce=nonce,
                        pending=in_pool,
                    )
                time.sleep(_POLL_SECONDS)
        except ChainOutcomeUnknown:
            raise
        except ChainError as exc:  # the connection could not be restored while waiting
            raise ChainOutcomeUnknown(
                f"lost track of extrinsic {extrinsic_hash} of {signer}: {exc}",
                extrinsic_hash=extrinsic_hash,
                nonce=nonce,
            ) from exc
        return self._checked(found)

    def _pool_hashes(self) -> set[str]:
        return {_extrinsic_hash(data) for data in self.rpc("author_pendingExtrinsics", [])}

    def _find_in_blocks(self, extrinsic_hash: str, first: int, last: int) -> Any | None:
        """The receipt of ``extrinsic_hash`` if it is in blocks first..last, else None.
        Blocks are asked for by number only (never a remembered hash: see block_hash)."""
        for number in range(first, last + 1):
            block_hash = self.block_hash(number)
            if block_hash is None:
                return None
            block = self.rpc("chain_getBlock", [block_hash])["block"]
            for index, data in enumerate(block["extrinsics"]):
                if _extrinsic_hash(data) == extrinsic_hash:
                    return ExtrinsicReceipt(
                        substrate=self._substrate,
                        extrinsic_hash=extrinsic_hash,
                        block_hash=block_hash,
                        block_number=number,
                        extrinsic_idx=index,
                    )
        return None

    def _one_call(self, calls: list[Any], batch: bool) -> Any:
        if not calls:
            raise ValueError("submit needs at least one call")
        if len(calls) == 1:
            return calls[0]
        if not batch:
            raise ValueError(
                f"{len(calls)} calls with batch=False: submit them one by one, or batch them"
            )
        return self._read(self._substrate.compose_call, "Utility", "batch_all", {"calls": calls})

    def check_funds(self, keypair: Keypair, calls: Sequence[Any]) -> None:
        """Raise InsufficientBalance if ``submit(keypair, calls)`` could not be paid for."""
        call = self._one_call(list(calls), batch=True)
        account = self._account_data(keypair.ss58_address)
        self._check_funds(keypair, call, calls, account)

    def _check_funds(
        self, keypair: Keypair, call: Any, calls: Sequence[Any], account: dict[str, int]
    ) -> None:
        """Refuse early, with numbers, when the signer cannot pay the fee plus its transfers
        and keep the existential deposit (fees and keep-alive transfers never reap)."""
        fee = self.estimate_fee(keypair, call, calls)
        transferred = _transferred(calls)
        keep = max(self.existential_deposit(), account["frozen"])
        needed = fee + transferred + keep
        if account["free"] < needed:
            raise InsufficientBalance(
                f"account {keypair.ss58_address} has {account['free']} free but needs {needed} "
                f"(fee ~{fee} + transfers {transferred} + {keep} that must stay): "
                "fund it (on the dev chain, transfer from //Alice) and retry"
            )

    def _checked(self, receipt: Any) -> Receipt:
        def read() -> tuple[bool, Any, int, int]:
            ok = bool(receipt.is_success)
            number = int(self._substrate.get_block_number(receipt.block_hash))
            return ok, receipt.error_message, number, int(receipt.total_fee_amount or 0)

        ok, error, number, fee = self._read(read)
        if not ok:
            raise self._dispatch_error(receipt, error, number)
        return Receipt(
            block_number=number,
            block_hash=str(receipt.block_hash),
            extrinsic_index=int(receipt.extrinsic_idx),
            extrinsic_hash=str(receipt.extrinsic_hash),
            fee=fee,
        )

    def _dispatch_error(self, receipt: Any, error: Any, block_number: int) -> ChainDispatchError:
        name = error.get("name", "Unknown") if isinstance(error, dict) else str(error)
        docs = " ".join(error.get("docs", [])) if isinstance(error, dict) else ""
        pallet = self._failed_pallet(receipt)
        qualified = f"{pallet}.{name}" if pallet else name
        message = (
            f"extrinsic failed in block {block_number} (index {receipt.extrinsic_idx}): "
            f"{qualified}" + (f" ({docs})" if docs else "") + "; nothing of it was applied"
        )
        cls = ChainInsufficientBalance if name == "InsufficientBalance" else ChainDispatchError
        return cls(
            message,
            error_name=qualified,
            block_number=block_number,
            extrinsic_index=int(receipt.extrinsic_idx),
        )

    def _failed_pallet(self, receipt: Any) -> str:
        """The pallet that raised a module error, read from the ExtrinsicFailed event."""
        for event in receipt.triggered_events or []:
            value = event.value
            if (value["module_id"], value["event_id"]) != ("System", "ExtrinsicFailed"):
                continue
            dispatch_error = value["attributes"].get("dispatch_error", {})
            module = dispatch_error.get("Module") if isinstance(dispatch_error, dict) else None
            if isinstance(module, dict) and "index" in module:
                pallet = self._substrate.metadata.get_pallet_by_index(int(module["index"]))
                return str(pallet.name) if pallet is not None else ""
        return ""

    # --- reading records ----------------------------------------------------------------

    def iter_records(self, start_block: int, end_block: int) -> Iterator[ChainRecord]:
        """Every remark of every successful signed extrinsic in blocks start..end (inclusive),
        in chain order: (block, extrinsic index, signer public key, exact payload bytes)."""
        for extrinsic in self.iter_extrinsics(start_block, end_block):
            for payload in extrinsic.remarks:
                yield ChainRecord(
                    extrinsic.block_number, extrinsic.extrinsic_index, extrinsic.signer, payload
                )

    def iter_extrinsics(self, start_block: int, end_block: int) -> Iterator[ChainExtrinsic]:
        """The successful signed extrinsics with remarks or transfers in blocks start..end."""
        for number in range(start_block, end_block + 1):
            yield from self.block_extrinsics(number)

    def block_extrinsics(self, block_number: int) -> list[ChainExtrinsic]:
        return self._read(self._block_extrinsics, block_number)

    def _block_extrinsics(self, block_number: int) -> list[ChainExtrinsic]:
        block_hash = self._substrate.get_block_hash(block_number)
        if block_hash is None:
            raise ChainError(f"block {block_number} does not exist yet on {self.url}")
        block = self._substrate.get_block(block_hash=block_hash)  # also loads its runtime
        candidates = []
        for index, extrinsic in enumerate(block["extrinsics"]):
            signer = _signer(extrinsic.value)
            if signer is None:
                continue
            call_bytes = bytes(extrinsic.value_object["call"].get_used_bytes())
            items = tuple(self._items(call_bytes))
            if items:
                candidates.append((index, signer, items))
        if not candidates:
            return []  # most blocks: no events to fetch
        succeeded = self._succeeded_extrinsics(block_hash)
        return [
            ChainExtrinsic(block_number, index, signer, items)
            for index, signer, items in candidates
            if index in succeeded
        ]

    def _succeeded_extrinsics(self, block_hash: str) -> set[int]:
        """Indexes with an ExtrinsicSuccess event: a failed extrinsic stays in the body."""
        succeeded = set()
        for event in self._substrate.get_events(block_hash=block_hash):
            value = event.value
            if value["module_id"] == "System" and value["event_id"] == "ExtrinsicSuccess":
                succeeded.add(int(value["extrinsic_idx"]))
        return succeeded

    def _items(self, call_bytes: bytes) -> Iterator[Item]:
        """Remarks and transfers of one encoded call, flattening batch_all (atomic, so its
        items share the extrinsic's outcome). ``Utility.batch``/``force_batch`` can partly fail
        and are ignored, as are calls wrapped in proxy or multisig (another signer).

        Exact bytes come from slicing the encoding ourselves: scalecodec keeps decoded call
        arguments in shared metadata objects that the next decoded call overwrites (several
        remarks in one block would all read as the last one), and renders bytes as text or as
        0x-hex ambiguously. Its per-call ``value`` dicts and used-byte lengths are reliable."""
        call = self._decode_call(call_bytes)
        key = (call.value["call_module"], call.value["call_function"])
        if key in _REMARK_CALLS:
            length, offset = compact_decode(call_bytes, 2)
            yield Remark(call_bytes[offset : offset + length])
        elif key in _TRANSFER_CALLS:
            transfer = _transfer(call.value["call_args"])
            if transfer is not None:
                yield transfer
        elif key == _BATCH_ALL:
            count, offset = compact_decode(call_bytes, 2)
            for _ in range(count):
                inner = self._decode_call(call_bytes[offset:], exact=False)
                size = len(inner.get_used_bytes())
                yield from self._items(call_bytes[offset : offset + size])
                offset += size

    def _decode_call(self, data: bytes, exact: bool = True) -> Any:
        """A freshly decoded call; with ``exact``, ``data`` must be exactly one call."""
        call = self._substrate.runtime_config.create_scale_object(
            "Call", data=ScaleBytes(bytearray(data)), metadata=self._substrate.metadata
        )
        call.decode(check_remaining=exact)
        return call


# --- decoding helpers (pure functions over substrate-interface's decoded values) -------------


def _dest(address: str) -> str:
    """An address as the 0x public key, accepted by compose_call whatever the SS58 prefix;
    raises InvalidAddress (a ValueError) for anything else."""
    return public_key_hex(address)


def _transferred(calls: Sequence[Any]) -> int:
    total = 0
    for call in calls:
        value = call.value
        if (value["call_module"], value["call_function"]) in _TRANSFER_CALLS:
            total += int(value["call_args"]["value"])
    return total


def _signer(extrinsic: dict[str, Any]) -> str | None:
    """The signer's public key; None for inherents and signers we cannot name
    (MultiAddress::Index and the like)."""
    address = extrinsic.get("address")
    if not isinstance(address, str):
        return None
    try:
        return public_key_hex(address)
    except InvalidAddress:
        return None


def _transfer(call_args: list[dict[str, Any]]) -> Transfer | None:
    args = {arg["name"]: arg["value"] for arg in call_args}
    dest = args.get("dest")
    if not isinstance(dest, str):
        return None  # MultiAddress variants other than an account id pay nobody we know
    try:
        return Transfer(public_key_hex(dest), int(args["value"]))
    except InvalidAddress:
        return None


def compact_encode(n: int) -> bytes:
    """SCALE compact encoding of a non-negative integer."""
    if n < 0:
        raise ValueError("compact integers are non-negative")
    if n < 1 << 6:
        return bytes([n << 2])
    if n < 1 << 14:
        return ((n << 2) | 1).to_bytes(2, "little")
    if n < 1 << 30:
        return ((n << 2) | 2).to_bytes(4, "little")
    raw = n.to_bytes((n.bit_length() + 7) // 8, "little")
    return bytes([((len(raw) - 4) << 2) | 3]) + raw


def compact_decode(data: bytes, offset: int = 0) -> tuple[int, int]:
    """A SCALE compact integer at ``offset``: (value, offset just after it)."""
    mode = data[offset] & 0b11
    if mode == 0:
        return data[offset] >> 2, offset + 1
    if mode == 1:
        return int.from_bytes(data[offset : offset + 2], "little") >> 2, offset + 2
    if mode == 2:
        return int.from_bytes(data[offset : offset + 4], "little") >> 2, offset + 4
    size = (data[offset] >> 2) + 4
    return int.from_bytes(data[offset + 1 : offset + 1 + size], "little"), offset + 1 + size


def _extrinsic_hash(data: str | bytes) -> str:
    """An extrinsic's hash: blake2-256 of its encoding (length prefix included)."""
    raw = (
        bytes.fromhex(data[2:] if data.startswith("0x") else data)
        if isinstance(data, str)
        else data
    )
    return "0x" + hashlib.blake2b(raw, digest_size=32).hexdigest()


def _refused(
    exc: SubstrateRequestException, keypair: Keypair, extrinsic_hash: str, nonce: int
) -> ChainError | InsufficientBalance:
    """Map a transaction-pool refusal (before inclusion; no fee charged) to a typed error."""
    detail = exc.args[0] if exc.args else exc
    code = detail.get("code") if isinstance(detail, dict) else None
    message = str(detail.get("message", detail)) if isinstance(detail, dict) else str(detail)
    text = f"{message} {detail.get('data', '')}" if isinstance(detail, dict) else message
    if code == 1010 and "payment" in text.lower():
        return InsufficientBalance(
            f"the chain refused the transaction of {keypair.ss58_address}: it cannot pay the "
            "fee (1010 invalid payment); fund the account and retry"
        )
    if code == 1010 and "stale" in text.lower():
        return ChainOutcomeUnknown(
            f"nonce {nonce} of {keypair.ss58_address} is already used (1010 stale), perhaps by "
            "an earlier submission of the same records: read the chain back",
            extrinsic_hash=extrinsic_hash,
            nonce=nonce,
        )
    if code in _POOL_REFUSALS_UNKNOWN:
        return ChainOutcomeUnknown(
            f"the pool refused the transaction of {keypair.ss58_address} because another with "
            f"nonce {nonce} is pending or was just seen ({detail}); read the chain back",
            extrinsic_hash=extrinsic_hash,
            nonce=nonce,
            pending=True,
        )
    return ChainError(f"the chain refused the transaction of {keypair.ss58_address}: {detail}")
