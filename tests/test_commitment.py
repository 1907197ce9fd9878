"""decentralml.protocol.commitment: the digest that binds a result to the committing account."""

from __future__ import annotations

import hashlib

import pytest
from substrateinterface import Keypair

from decentralml.protocol.accounts import InvalidAddress, contributor_dev_keypair
from decentralml.protocol.commitment import COMMITMENT_DOMAIN, is_commitment, result_commitment
from decentralml.protocol.errors import InvalidResult

BOB, CHARLIE = contributor_dev_keypair(0), contributor_dev_keypair(1)
DIGEST = hashlib.sha256(b"weights").hexdigest()


def test_commitment_is_the_documented_sha256() -> None:
    expected = hashlib.sha256(COMMITMENT_DOMAIN + BOB.public_key + bytes.fromhex(DIGEST))
    assert COMMITMENT_DOMAIN == b"decentralml-commit-v1"
    assert result_commitment(BOB.ss58_address, DIGEST) == expected.hexdigest()
    assert is_commitment(result_commitment(BOB.ss58_address, DIGEST))


def test_any_ss58_prefix_gives_the_same_commitment() -> None:
    for prefix in (0, 2, 42):
        spelling = Keypair(public_key=BOB.public_key, ss58_format=prefix).ss58_address
        assert result_commitment(spelling, DIGEST) == result_commitment(BOB.ss58_address, DIGEST)
    assert result_commitment(BOB.ss58_address, DIGEST.upper()) == result_commitment(
        BOB.ss58_address, DIGEST
    )


def test_the_commitment_binds_the_account_and_the_digest() -> None:
    mine = result_commitment(BOB.ss58_address, DIGEST)
    assert result_commitment(CHARLIE.ss58_address, DIGEST) != mine
    assert result_commitment(BOB.ss58_address, "00" * 32) != mine


@pytest.mark.parametrize("bad", ["", "ab" * 31, "ab" * 33, "zz" * 32, "0x" + "ab" * 31, None])
def test_a_digest_that_is_not_64_hex_is_refused(bad: object) -> None:
    with pytest.raises(InvalidResult, match="64 hex"):
        result_commitment(BOB.ss58_address, bad)  # type: ignore[arg-type]


def test_an_address_that_is_not_an_account_is_refused() -> None:
    with pytest.raises(InvalidAddress):
        result_commitment("not an address", DIGEST)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("ab" * 32, True), ("AB" * 32, False), ("ab" * 31, False), ("ab" * 32 + "\n", False),
     ("g" * 64, False), (7, False)],
)  # fmt: skip
def test_is_commitment(value: object, expected: bool) -> None:
    assert is_commitment(value) is expected  # type: ignore[arg-type]
