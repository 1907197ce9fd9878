"""Signing and sending one extrinsic, and following the chain until it is in a block.

Submissions are NOT retried with new bytes: a lost connection leaves their outcome unknown, so
the caller must read back before resubmitting (``ChainOutcomeUnknown``). A submission is
followed by polling the pool and the new blocks (not by a subscription, whose socket read has
no timeout and which never reports an extrinsic the node silently drops). The chain decides
how it ends, never a grace period: included (it is in a block), refused (the pool said so),
or its nonce used by another extrinsic in a block this wait has read (it can never land).
Only ``inclusion_timeout`` ends a wait without an answer (unknown).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

from substrateinterface import ExtrinsicReceipt, Keypair
from substrateinterface.exceptions import SubstrateRequestException

from decentralml.chain import scale
from decentralml.chain.calls import Calls
from decentralml.chain.connection import CONNECTION_ERRORS, Connection
from decentralml.chain.dispatch import failed, refused
from decentralml.chain.state import ChainState
from decentralml.chain.types import Receipt
from decentralml.protocol.errors import ChainError, ChainOutcomeUnknown

INCLUSION_TIMEOUT = 60.0
"""Default seconds a submission may wait for its block (ten 6 s relay-chain slots) before its
outcome is reported unknown."""
_POLL_SECONDS = 0.25


class Submitter:
    """Submits through ``connection``. A submission holds the process-wide lock while it
    picks its nonce, signs and sends; waiting for inclusion takes it one read at a time, so
    other threads and clients can use the chain meanwhile."""

    def __init__(self, connection: Connection, state: ChainState, calls: Calls):
        self._connection = connection
        self._read = connection.read
        self._substrate = connection.substrate
        self._state = state
        self._calls = calls

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
        call = self._calls.one_call(list(calls), batch)
        with self._connection.lock:
            if preflight:
                account = self._state.account_data(keypair.ss58_address)
                self._calls.check_account(keypair, call, calls, account)
            if nonce is None:
                # The pool's count, not the state's: a restarted writer whose earlier
                # extrinsic is still pending must not reuse its nonce (the node would keep
                # one of the two and drop the other without a word).
                nonce = self._state.next_nonce(keypair.ss58_address)
            head = self._state.best_head_number()
            extrinsic = self._read(
                self._substrate.create_signed_extrinsic, call, keypair, nonce=nonce
            )
            extrinsic_hash = "0x" + extrinsic.extrinsic_hash.hex()
            signed = str(extrinsic.data)
            try:
                self._substrate.rpc_request("author_submitExtrinsic", [signed])
            except SubstrateRequestException as exc:
                raise refused(exc, keypair, extrinsic_hash, nonce) from None
            except CONNECTION_ERRORS:
                # It may or may not have reached the pool: sending the same bytes again is
                # safe (at most one copy lands), and the wait below finds out.
                self._connection.reconnect()
                self._send_again(signed)
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
        """Follow the chain until the extrinsic ``extrinsic_hash`` (``signer``'s, with
        ``nonce``) is in a block after ``after_block``, and return its checked receipt.

        Each round reads, in this order, the pool, the signer's state nonce and the head, then
        scans the blocks not yet scanned up to that head. Raises ChainOutcomeUnknown as soon
        as its nonce is used by an extrinsic in the scanned blocks that is not this one (it
        can never land), and at ``timeout`` while it is in no block. Out of the pool and in
        no block is not "dropped": chopsticks takes extrinsics out of its pool into a queue
        of blocks to build, where under load they waited for several blocks (a 4 s grace once
        called 16+ landed writes dropped, and sending the same bytes again from here only
        queued more blocks). A node that really dropped it leaves the nonce unused: at the
        deadline the write path reads back and sends it again with that nonce."""
        deadline = time.monotonic() + timeout
        scanned = after_block
        try:
            while True:
                in_pool = extrinsic_hash in self._pool_hashes()
                state_nonce = self._state.account_nonce(signer)
                head = self._state.best_head_number()
                found, scanned = self._scan(extrinsic_hash, scanned, head)
                if found is not None:
                    break
                if not in_pool and scanned >= head and state_nonce > nonce:
                    raise ChainOutcomeUnknown(
                        f"extrinsic {extrinsic_hash} of {signer} was dropped: its nonce "
                        f"{nonce} was used by another extrinsic of the same signer",
                        extrinsic_hash=extrinsic_hash,
                        nonce=nonce,
                    )
                if time.monotonic() >= deadline:
                    where = "still pending" if in_pool else "not in the pool"
                    raise ChainOutcomeUnknown(
                        f"extrinsic {extrinsic_hash} of {signer} was not included within "
                        f"{timeout:.0f}s ({where} of {self._connection.url}): it may land "
                        "later; read the chain back before submitting it again",
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

    def _send_again(self, signed: str) -> None:
        """Send the same signed bytes again after a lost connection: the pool takes them, or
        answers that it has them or that their nonce is used (the wait's reads tell which)."""
        # refused (already known, stale) or unreachable: the reads decide
        with contextlib.suppress(ChainError, SubstrateRequestException):
            self._connection.rpc("author_submitExtrinsic", [signed])

    def _pool_hashes(self) -> set[str]:
        pool = self._connection.rpc("author_pendingExtrinsics", [])
        return {scale.extrinsic_hash(data) for data in pool}

    def _scan(self, extrinsic_hash: str, scanned: int, head: int) -> tuple[Any | None, int]:
        """The receipt of ``extrinsic_hash`` if it is in blocks scanned+1..head, else None,
        and the last block read: a block whose hash the node does not serve yet (just built)
        is read again next time, so no block is ever skipped. Blocks are asked for by number
        only (never a remembered hash: see block_hash)."""
        for number in range(scanned + 1, head + 1):
            block_hash = self._state.block_hash(number)
            if block_hash is None:
                return None, number - 1
            block = self._connection.rpc("chain_getBlock", [block_hash])["block"]
            for index, data in enumerate(block["extrinsics"]):
                if scale.extrinsic_hash(data) == extrinsic_hash:
                    receipt = ExtrinsicReceipt(
                        substrate=self._substrate,
                        extrinsic_hash=extrinsic_hash,
                        block_hash=block_hash,
                        block_number=number,
                        extrinsic_idx=index,
                    )
                    return receipt, number
        return None, max(scanned, head)

    def _checked(self, receipt: Any) -> Receipt:
        def read() -> tuple[bool, Any, int, int]:
            ok = bool(receipt.is_success)
            number = int(self._substrate.get_block_number(receipt.block_hash))
            return ok, receipt.error_message, number, int(receipt.total_fee_amount or 0)

        ok, error, number, fee = self._read(read)
        if not ok:
            raise failed(self._substrate, receipt, error, number)
        return Receipt(
            block_number=number,
            block_hash=str(receipt.block_hash),
            extrinsic_index=int(receipt.extrinsic_idx),
            extrinsic_hash=str(receipt.extrinsic_hash),
            fee=fee,
        )
