"""Keys are never guessed (issue: "a forgotten key signs with a public one").

A stranger who ran ``decentralml contribute`` against a chain without
DECENTRALML_CONTRIBUTOR_URI signed silently as //Bob, a publicly known key: its rewards were
anyone's. Dev keys now sign only on a dev marketplace: the embedded ledger, or the chain whose
genesis hash the config declares (runtime.backends.dev_problem); anywhere else a missing key
is one line naming the variable, exit 2.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from decentralml.marketplace.substrate import SubstrateMarketplace
from decentralml.protocol.accounts import contributor_dev_keypair
from decentralml.protocol.errors import ConfigError
from decentralml.runtime.backends import contributor_keypair, creator_keypair, dev_problem
from decentralml.runtime.config import MarketplaceConfig, load_config
from decentralml_cli import main
from tests.helpers import ROOT

CHOPSTICKS_GENESIS = "0x" + "45" * 32
KEY_VARIABLES = ("DECENTRALML_CONTRIBUTOR_URI", "DECENTRALML_CREATOR_URI")


@pytest.fixture(autouse=True)
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_the_embedded_ledger_is_a_dev_marketplace() -> None:
    config = MarketplaceConfig()
    assert dev_problem(config) is None
    assert contributor_keypair(config, 2).ss58_address == contributor_dev_keypair(2).ss58_address


def test_dev_accounts_off_means_a_key_is_required() -> None:
    config = MarketplaceConfig(dev_accounts=False)
    with pytest.raises(ConfigError, match=r"set DECENTRALML_CREATOR_URI .*dev_accounts is false"):
        creator_keypair(config)


@pytest.mark.integration
def test_on_an_undeclared_chain_no_dev_key_signs(chain_url: str, tmp_path: Path) -> None:
    config = MarketplaceConfig(
        backend="substrate", url=chain_url, index_path=str(tmp_path / "index.sqlite")
    )
    market = SubstrateMarketplace(config.url, config.index_path)
    for make in (
        lambda: contributor_keypair(config, 0, market),
        lambda: creator_keypair(config, market),
    ):
        with pytest.raises(ConfigError, match="is not declared") as refused:
            make()
        assert "DECENTRALML_" in str(refused.value)
    wrong = config.model_copy(update={"dev_genesis_hash": "0x" + "12" * 32})
    with pytest.raises(ConfigError, match=f"genesis {CHOPSTICKS_GENESIS}\\) is not the dev chain"):
        contributor_keypair(wrong, 0, market)
    declared = config.model_copy(update={"dev_genesis_hash": CHOPSTICKS_GENESIS})
    assert contributor_keypair(declared, 0, market).ss58_address == (
        contributor_dev_keypair(0).ss58_address
    )


def test_the_shipped_chain_config_declares_the_projects_dev_chain() -> None:
    config = load_config(ROOT / "configs" / "mnist-substrate.yaml")
    assert config.marketplace.dev_genesis_hash == CHOPSTICKS_GENESIS


@pytest.mark.integration
def test_a_stranger_without_a_key_is_one_line_and_exit_2(
    chain_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """No config file (a stranger's machine), the chain's URL, no key: refused before the
    agent starts, naming the variable."""
    monkeypatch.chdir(tmp_path)
    assert main(["contribute", "--marketplace", chain_url, "--max-tasks", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "DECENTRALML_CONTRIBUTOR_URI: set it" in err, err
    assert "Traceback" not in err
