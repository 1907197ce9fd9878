"""What the chain client hands back: receipts, decoded extrinsics and their items.

Accounts are compared by public key (``0x``-prefixed lowercase hex): the runtime spells
addresses with SS58 prefix 2 while this package writes prefix 42.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from substrateinterface import Keypair

from decentralml.protocol.accounts import public_key_of


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


def account_param(address: str) -> str:
    """An address as the 0x public key, accepted by compose_call whatever the SS58 prefix;
    raises InvalidAddress (a ValueError) for anything else."""
    return public_key_hex(address)


def ref_time(weight: Any) -> int:
    """A weight's reference time: the number itself on one-dimensional runtimes, the
    ``ref_time`` part on two-dimensional ones (time and proof size)."""
    return int(weight["ref_time"]) if isinstance(weight, dict) else int(weight)
