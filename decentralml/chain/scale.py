"""SCALE byte-level helpers: compact integers and extrinsic hashes, without a runtime.

The client slices remark bytes out of encoded calls itself (see ``blocks``), so it needs the
compact length prefix; hashing an extrinsic's encoding names it without decoding it.
"""

from __future__ import annotations

import hashlib


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


def extrinsic_hash(data: str | bytes) -> str:
    """An extrinsic's hash: blake2-256 of its encoding (length prefix included)."""
    raw = (
        bytes.fromhex(data[2:] if data.startswith("0x") else data)
        if isinstance(data, str)
        else data
    )
    return "0x" + hashlib.blake2b(raw, digest_size=32).hexdigest()
