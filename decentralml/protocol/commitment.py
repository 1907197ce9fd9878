"""Commit-reveal of results: a digest of the result bound to the contributor's account.

Without it, a result record (path + sha256) is a claim anyone can copy: once a contributor's
weights are readable, another contributor can post the same bytes as its own. So a contributor
first COMMITS to its result on the marketplace, before its bytes are readable by anyone, then
uploads them, then reveals them with the result record, which must match the commitment.

The commitment binds the result's digest to the committing account's public key. A copier
cannot reuse someone else's commitment (it would not match the copier's own account), and it
cannot front-run one either: it only learns the bytes after their commitment is on record, and
its own commitment to them comes later in the marketplace's order. This is the commit-reveal
scheme Bittensor uses against weight copying (validators commit a hash of their weights and
reveal them only later, so a copier only ever sees stale weights). The earliest commitment to
given weights is the original; the marketplace records the order of commitments for that.

Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import re

from decentralml.protocol.accounts import public_key_of
from decentralml.protocol.errors import InvalidResult

COMMITMENT_DOMAIN = b"decentralml-commit-v1"
"""Domain separation: a commitment cannot be mistaken for any other sha256 in the system."""

_LOWER_HEX_64 = re.compile(r"[0-9a-f]{64}")
_HEX_64 = re.compile(r"[0-9a-fA-F]{64}")


def result_commitment(address: str, result_sha256: str) -> str:
    """The hex sha256 of ``b"decentralml-commit-v1" + public key of address + result digest``.

    Any SS58 spelling (any network prefix) of one account gives the same commitment. Raises
    InvalidResult if ``result_sha256`` is not 64 hex characters, and InvalidAddress if
    ``address`` is not an account."""
    if not isinstance(result_sha256, str) or not _HEX_64.fullmatch(result_sha256):
        raise InvalidResult(
            f"result sha256 must be 64 hex characters, got {result_sha256!r}; "
            "use the sha256 of the result file's bytes"
        )
    digest = bytes.fromhex(result_sha256)
    return hashlib.sha256(COMMITMENT_DOMAIN + public_key_of(address) + digest).hexdigest()


def is_commitment(value: str) -> bool:
    """Whether ``value`` has the form of a commitment: 64 lowercase hex characters."""
    return isinstance(value, str) and _LOWER_HEX_64.fullmatch(value) is not None
