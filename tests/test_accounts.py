"""Actors are substrate-interface keypairs; an account is its public key, whatever the SS58
spelling. No backend involved (the contract suite checks that every backend treats two
spellings of one key as one account)."""

from __future__ import annotations

import pytest
from substrateinterface import Keypair

from decentralml.protocol.accounts import (
    InvalidAddress,
    canonical_address,
    contributor_dev_keypair,
    dev_keypair,
    keypair_from_env,
    keypair_from_uri,
    public_key_of,
    same_account,
)
from decentralml.protocol.errors import ConfigError

ALICE = dev_keypair("Alice")
BOB, CHARLIE = contributor_dev_keypair(0), contributor_dev_keypair(1)


def reencoded(keypair: Keypair, ss58_format: int) -> Keypair:
    """The same key, spelled with another SS58 prefix."""
    return Keypair(public_key=keypair.public_key, ss58_format=ss58_format)


def test_keypair_from_env_names_the_missing_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DML_TEST_SECRET", raising=False)
    with pytest.raises(ConfigError, match="DML_TEST_SECRET"):
        keypair_from_env("DML_TEST_SECRET")
    monkeypatch.setenv("DML_TEST_SECRET", "//Alice")
    assert keypair_from_env("DML_TEST_SECRET").ss58_address == ALICE.ss58_address


def test_invalid_secret_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DML_TEST_SECRET", "zebra secretword banana")
    with pytest.raises(ConfigError, match="DML_TEST_SECRET") as info:
        keypair_from_env("DML_TEST_SECRET")
    assert "secretword" not in str(info.value)


def test_keypairs_from_mnemonic_and_seed() -> None:
    mnemonic = Keypair.generate_mnemonic()
    assert (
        keypair_from_uri(mnemonic).public_key == Keypair.create_from_mnemonic(mnemonic).public_key
    )
    seed = "0x" + "11" * 32
    assert keypair_from_uri(seed).public_key == Keypair.create_from_seed(seed).public_key
    assert keypair_from_uri("//Alice").ss58_address.startswith("5")  # prefix 42


def test_contributor_dev_keys_are_distinct_and_deterministic() -> None:
    addresses = [contributor_dev_keypair(i).ss58_address for i in range(8)]
    assert len(set(addresses)) == 8
    assert ALICE.ss58_address not in addresses
    assert addresses[0] == keypair_from_uri("//Bob").ss58_address
    assert addresses[4] == keypair_from_uri("//Ferdie").ss58_address
    assert addresses[5] == keypair_from_uri("//Contributor5").ss58_address
    assert addresses == [contributor_dev_keypair(i).ss58_address for i in range(8)]


def test_addresses_compare_by_public_key() -> None:
    kusama = reencoded(BOB, 2).ss58_address
    assert kusama != BOB.ss58_address
    assert same_account(kusama, BOB.ss58_address)
    assert same_account("0x" + BOB.public_key.hex(), kusama)
    assert not same_account(BOB.ss58_address, CHARLIE.ss58_address)
    assert public_key_of(kusama) == BOB.public_key
    assert canonical_address(kusama) == BOB.ss58_address
    with pytest.raises(InvalidAddress):
        public_key_of("not-an-address")
