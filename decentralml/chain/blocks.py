"""Decoding signed extrinsics, from blocks and from the pool, into marketplace items.

Records are read exactly. A failed extrinsic stays in its block, so only extrinsics with an
``ExtrinsicSuccess`` event count; remark bytes are recovered exactly (see
``ExtrinsicReader._items``) and ``Utility.batch_all`` is flattened in order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from scalecodec.base import ScaleBytes
from substrateinterface import Keypair

from decentralml.chain.connection import Connection
from decentralml.chain.scale import compact_decode, extrinsic_hash
from decentralml.chain.types import (
    ChainExtrinsic,
    ChainRecord,
    Item,
    PendingExtrinsic,
    Remark,
    Transfer,
    public_key_hex,
)
from decentralml.protocol.accounts import InvalidAddress
from decentralml.protocol.errors import ChainError

REMARK_CALLS = frozenset({("System", "remark"), ("System", "remark_with_event")})
TRANSFER_CALLS = frozenset({("Balances", "transfer_keep_alive"), ("Balances", "transfer")})
BATCH_ALL = ("Utility", "batch_all")


class ExtrinsicReader:
    """The successful signed extrinsics of blocks, and the signed extrinsics in the pool,
    decoded through ``connection`` (each read retried across a restart)."""

    def __init__(self, connection: Connection):
        self._connection = connection
        self._read = connection.read
        self._substrate = connection.substrate

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

    def pending_extrinsics(self, signer: str | Keypair | None = None) -> list[PendingExtrinsic]:
        """The signed extrinsics in the node's pool (``author_pendingExtrinsics``), decoded,
        in pool order; only ``signer``'s when given."""
        wanted = None if signer is None else public_key_hex(signer)
        encoded = self._connection.rpc("author_pendingExtrinsics", [])
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
            extrinsic_hash=extrinsic_hash(data),
            signer=signer,
            nonce=int(extrinsic.value.get("nonce", 0)),
            items=tuple(self._items(call_bytes)),
        )

    def _block_extrinsics(self, block_number: int) -> list[ChainExtrinsic]:
        block_hash = self._substrate.get_block_hash(block_number)
        if block_hash is None:
            raise ChainError(f"block {block_number} does not exist yet on {self._connection.url}")
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
        if key in REMARK_CALLS:
            length, offset = compact_decode(call_bytes, 2)
            yield Remark(call_bytes[offset : offset + length])
        elif key in TRANSFER_CALLS:
            transfer = _transfer(call.value["call_args"])
            if transfer is not None:
                yield transfer
        elif key == BATCH_ALL:
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
