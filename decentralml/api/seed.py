"""Shared plumbing of the seed-compatible functions (create_task.py, assign_task.py, ...).

The seed passes a ``substrate`` handle and an account URI plus passphrase. Here ``substrate``
may be any Marketplace (embedded or Substrate) or a raw ``SubstrateInterface``, and the account
a Keypair or a secret URI. Storage credentials are accepted for signature compatibility and
never stored: storage backends read credentials from the environment.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from substrateinterface import Keypair

from decentralml.marketplace.base import Marketplace
from decentralml.protocol.accounts import keypair_from_uri
from decentralml.runtime.backends import open_marketplace
from decentralml.runtime.config import MarketplaceConfig

log = logging.getLogger(__name__)

_CHAIN_MARKETS: dict[tuple[str, str], Marketplace] = {}
"""One Substrate marketplace per (chain URL, index): each seed call would otherwise open a
new connection and load the runtime metadata again (~1.2 s)."""


def as_marketplace(
    substrate: Any, index_path: str = ".decentralml/chain-index.sqlite"
) -> Marketplace:
    """A Marketplace as is; a SubstrateInterface wrapped in the Substrate backend."""
    if isinstance(substrate, Marketplace):
        return substrate
    from substrateinterface import SubstrateInterface

    if isinstance(substrate, SubstrateInterface):
        key = (substrate.url, str(Path(index_path).resolve()))
        if key not in _CHAIN_MARKETS:
            url = substrate.url
            config = MarketplaceConfig(backend="substrate", url=url, index_path=index_path)
            _CHAIN_MARKETS[key] = open_marketplace(config)  # the one place backends are built
        return _CHAIN_MARKETS[key]
    raise TypeError(f"expected a Marketplace or SubstrateInterface, got {type(substrate).__name__}")


def as_keypair(account: Keypair | str, passphrase: str | None = None) -> Keypair:
    """A Keypair as is; a URI (``//Alice`` or a mnemonic) with an optional ``///password``."""
    if isinstance(account, Keypair):
        return account
    uri = f"{account}///{passphrase}" if passphrase else account
    return keypair_from_uri(uri)


def drop_credentials(credentials: object, what: str) -> None:
    """The seed stored storage credentials on chain in plain text; we refuse to keep them."""
    if credentials:
        log.warning(
            "%s credentials were given and ignored: storage reads them from the environment", what
        )
