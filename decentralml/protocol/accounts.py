"""Who is acting: substrate-interface keypairs, and addresses compared by their public key.

The same account has many SS58 spellings (one per network prefix: 42 generic Substrate, 2
Kusama, ...). Rules such as "one slot per contributor" must compare the key, not the string,
or a contributor gets a second slot by re-encoding its address. Addresses we produce use
prefix 42 (``SS58_FORMAT``).

Secrets are read from the environment or given as URIs and are never echoed in error messages.
"""

from __future__ import annotations

import os
import re

from scalecodec.utils.ss58 import ss58_decode, ss58_encode
from substrateinterface import Keypair

from decentralml.protocol.errors import ConfigError, DecentralMLError

SS58_FORMAT = 42
"""The generic Substrate prefix, used for every address this package produces or stores."""

CONTRIBUTOR_DEV_NAMES: tuple[str, ...] = ("Bob", "Charlie", "Dave", "Eve", "Ferdie")
"""Well-known dev accounts handed to simulated contributors 0..4 (Alice is the creator)."""

_HEX_SEED = re.compile(r"^0x[0-9a-fA-F]{64}$")


class InvalidAddress(DecentralMLError, ValueError):
    """A string is neither an SS58 address nor a 0x-prefixed 32-byte public key."""


def keypair_from_uri(uri: str) -> Keypair:
    """A keypair from a dev URI (``//Alice``), a mnemonic (optionally ``//derived``) or a
    ``0x`` 32-byte secret seed. The secret is not included in the error if it is invalid."""
    secret = uri.strip()
    if not secret:
        raise ValueError("empty secret URI; give //Alice, a mnemonic or a 0x secret seed")
    try:
        if _HEX_SEED.match(secret):
            return Keypair.create_from_seed(secret, ss58_format=SS58_FORMAT)
        return Keypair.create_from_uri(secret, ss58_format=SS58_FORMAT)
    except (ValueError, NotImplementedError, AttributeError):
        raise ValueError(
            "not a valid secret URI: expected //Name, a BIP39 mnemonic (optionally followed by "
            "//derivation), or 0x followed by 64 hex digits"
        ) from None


def keypair_from_env(var_name: str) -> Keypair:
    """The keypair whose secret URI or mnemonic is in environment variable ``var_name``.

    Secrets live in the environment so that they never enter config files, the marketplace
    or logs; the errors name the variable, not its value."""
    value = os.environ.get(var_name, "")
    if not value.strip():
        raise ConfigError(
            f"environment variable {var_name} is not set; set it to a secret URI "
            "(//Alice on a dev chain) or a 12/24-word mnemonic"
        )
    try:
        return keypair_from_uri(value)
    except ValueError:
        raise ConfigError(
            f"environment variable {var_name} does not hold a valid secret URI, mnemonic "
            "or 0x secret seed"
        ) from None


def dev_keypair(name: str) -> Keypair:
    """A well-known development keypair: ``dev_keypair("Alice")`` is ``//Alice``."""
    bare = name.lstrip("/")
    if not bare:
        raise ValueError("dev keypair name is empty; use e.g. 'Alice'")
    return keypair_from_uri(f"//{bare}")


def contributor_dev_keypair(index: int) -> Keypair:
    """Deterministic, distinct dev keys for simulated contributors: //Bob, //Charlie, //Dave,
    //Eve, //Ferdie for 0..4, then //Contributor5, //Contributor6, ... so any number of
    contributors can run without configuring secrets."""
    if index < 0:
        raise ValueError(f"contributor index must be >= 0, got {index}")
    if index < len(CONTRIBUTOR_DEV_NAMES):
        return dev_keypair(CONTRIBUTOR_DEV_NAMES[index])
    return dev_keypair(f"Contributor{index}")


def public_key_of(address: str) -> bytes:
    """The 32-byte public key behind an SS58 address of any prefix, or a 0x hex public key."""
    text = address.strip()
    try:
        key_hex = text[2:] if text.startswith("0x") else ss58_decode(text)
        key = bytes.fromhex(key_hex)
    except (ValueError, TypeError):
        raise InvalidAddress(
            f"{address!r} is not an SS58 address or 0x public key; use a keypair's ss58_address"
        ) from None
    if len(key) != 32:
        raise InvalidAddress(f"{address!r} does not hold a 32-byte account public key")
    return key


def canonical_address(address: str) -> str:
    """The one spelling we store for an account: its public key re-encoded with prefix 42."""
    return str(ss58_encode(public_key_of(address), SS58_FORMAT))


def same_account(a: str, b: str) -> bool:
    """Whether two addresses name the same account, whatever their SS58 prefixes."""
    return public_key_of(a) == public_key_of(b)
