"""Turn a RunConfig into live parts: marketplace, storage, keys. The only place that knows
which backend a config name means, so flows and CLI never branch on it."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from substrateinterface import Keypair

from decentralml.io.storage import ArtifactStore
from decentralml.marketplace.base import DevFaucet, HasGenesis, Marketplace
from decentralml.protocol.accounts import contributor_dev_keypair, dev_keypair, keypair_from_env
from decentralml.protocol.errors import ConfigError
from decentralml.runtime.config import MarketplaceConfig, RunConfig, StorageConfig
from decentralml.runtime.resources import contributor_assets

PROJECT_ROOT = Path(__file__).resolve().parents[2]
"""The source checkout when running from one; an installed package's site-packages, which
has no pyproject.toml (packaging.project_wheel then builds no wheel)."""
DEFAULT_ASSETS = contributor_assets()


def open_marketplace(config: MarketplaceConfig) -> Marketplace:
    """The configured backend. Its SQLite file failing to open is the config's problem (a
    folder where the file should be, a file that is not SQLite, no write access): a
    ConfigError naming the field, never a bare sqlite3 traceback."""
    with _sqlite_file(*marketplace_file(config)):
        if config.backend == "embedded":
            from decentralml.marketplace.embedded import EmbeddedMarketplace

            return EmbeddedMarketplace(
                config.path,
                block_time_seconds=config.block_time_seconds,
                review_grace_blocks=config.review_grace_blocks,
            )
        from decentralml.marketplace.substrate import SubstrateMarketplace

        return SubstrateMarketplace(config.url, config.index_path, start_block=config.start_block)


def marketplace_file(config: MarketplaceConfig) -> tuple[str, str]:
    """The config field naming the backend's own SQLite file, and the file: the embedded
    marketplace's ledger, or the Substrate backend's index of the chain."""
    if config.backend == "embedded":
        return "marketplace.path", config.path
    return "marketplace.index_path", config.index_path


@contextmanager
def _sqlite_file(field: str, path: str) -> Iterator[None]:
    """Only the folder and SQLite's own errors: a node that refuses the connection (also an
    OSError) is not the file's fault."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"{field}: folder of {path} cannot be created: {error}") from None
    try:
        yield
    except sqlite3.Error as error:
        raise ConfigError(f"{field}: {path} cannot be opened as a SQLite file: {error}") from None


def open_store(config: StorageConfig) -> ArtifactStore:
    return ArtifactStore(config.url, endpoint_url=config.endpoint_url, retries=config.retries())


def dev_problem(config: MarketplaceConfig, market: Marketplace | None = None) -> str | None:
    """Why a public dev key must not sign on this marketplace, or None: it may.

    A dev key's secret is public (//Alice, //Bob...): whatever it earns anyone can take. It is
    used only where tokens are worthless: the embedded marketplace (a local ledger whose dev
    faucet mints them) or a chain whose genesis hash the config declares as its dev chain
    (``marketplace.dev_genesis_hash``); ``market`` is that chain, asked for its genesis."""
    if not config.dev_accounts:
        return "marketplace.dev_accounts is false"
    if config.backend == "embedded":
        return None
    if not config.dev_genesis_hash:
        return (
            f"dev accounts sign only on a chain the config declares a dev chain "
            f"(marketplace.dev_genesis_hash), and {config.url} is not declared"
        )
    genesis = market.genesis_hash() if isinstance(market, HasGenesis) else None
    if genesis != config.dev_genesis_hash:
        return (
            f"the chain at {config.url} (genesis {genesis or 'unknown'}) is not the dev chain "
            f"the config declares (marketplace.dev_genesis_hash {config.dev_genesis_hash})"
        )
    return None


def creator_keypair(config: MarketplaceConfig, market: Marketplace | None = None) -> Keypair:
    """The creator's key from the environment; //Alice only on a dev marketplace."""
    if os.environ.get(config.creator_key_env):
        return keypair_from_env(config.creator_key_env)
    problem = dev_problem(config, market)
    if problem is None:
        return dev_keypair("Alice")
    raise ConfigError(
        f"set {config.creator_key_env} to the creator's secret URI or mnemonic ({problem})"
    )


def contributor_keypair(
    config: MarketplaceConfig, index: int | None = None, market: Marketplace | None = None
) -> Keypair:
    """A contributor's key: from the environment, or a dev key by simulation index on a dev
    marketplace (``dev_problem``)."""
    if index is None and os.environ.get(config.contributor_key_env):
        return keypair_from_env(config.contributor_key_env)
    problem = dev_problem(config, market)
    if problem is None:
        return contributor_dev_keypair(index or 0)
    raise ConfigError(
        f"set {config.contributor_key_env} to the contributor's secret URI or mnemonic ({problem})"
    )


def fund_dev_accounts(market: Marketplace, config: RunConfig, keypairs: list[Keypair]) -> None:
    """Give dev accounts tokens on a dev marketplace (one with a DevFaucet) if they are short."""
    if not isinstance(market, DevFaucet) or not config.marketplace.dev_accounts:
        return
    for keypair in keypairs:
        shortfall = config.marketplace.dev_funds - market.balance(keypair.ss58_address)
        if shortfall > 0:
            market.fund(keypair.ss58_address, shortfall)


def contributor_marketplace(config: MarketplaceConfig, index: int) -> MarketplaceConfig:
    """Simulated contributor ``index``'s view of the marketplace config. On a chain each
    contributor keeps its own index of it, as on its own machine; the embedded ledger is one
    shared SQLite file by design."""
    if config.backend == "embedded":
        return config
    path = Path(config.index_path)
    own = path.with_name(f"{path.stem}-contributor-{index}{path.suffix}")
    return config.model_copy(update={"index_path": str(own)})
