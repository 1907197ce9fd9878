"""The task record's model, epochs and storage endpoint: persisted by both marketplace backends,
and records written before those fields existed (an old SQLite file, an old chain remark) still
read, with the defaults."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

import pytest
from substrateinterface import Keypair

from decentralml.chain import codec
from decentralml.chain.client import ChainClient
from decentralml.marketplace.embedded import EmbeddedMarketplace
from decentralml.marketplace.substrate import SubstrateMarketplace
from decentralml.protocol.accounts import dev_keypair
from decentralml.protocol.errors import InvalidTaskSpec
from decentralml.protocol.records import TaskSpec

ALICE = dev_keypair("Alice")
SPEC = TaskSpec(
    question="train the MNIST model on your shard",
    pays_amount=300,
    max_assignments=3,
    expiration_block=10**6,
    assets_path="s3://bucket/runs/r/round-1/assets.tar.gz",
    assets_sha256="ab" * 32,
    global_weights_path="s3://bucket/runs/r/round-1/global.safetensors",
    global_weights_sha256="cd" * 32,
    round_number=1,
)
FILLED = dataclasses.replace(
    SPEC, model="mnist_mlp", epochs=2, storage_endpoint="http://127.0.0.1:8333"
)
NEW_COLUMNS = ("model", "epochs", "storage_endpoint")


def _market(path: Path) -> EmbeddedMarketplace:
    market = EmbeddedMarketplace(path, block_time_seconds=1e9)
    market.fund(ALICE.ss58_address, 10_000)
    return market


def test_the_embedded_ledger_keeps_the_new_fields(tmp_path: Path) -> None:
    market = _market(tmp_path / "m.sqlite")
    task_id = market.create_task(ALICE, FILLED)
    reopened = EmbeddedMarketplace(tmp_path / "m.sqlite", block_time_seconds=1e9)
    assert reopened.get_task(task_id).spec == FILLED


def test_a_ledger_file_from_before_the_new_fields_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    old_id = _market(path).create_task(ALICE, SPEC)
    with sqlite3.connect(path) as conn:  # the tasks table as older versions created it
        for column in NEW_COLUMNS:
            conn.execute(f"ALTER TABLE tasks DROP COLUMN {column}")
        assert not set(NEW_COLUMNS) & {r[1] for r in conn.execute("PRAGMA table_info(tasks)")}

    market = EmbeddedMarketplace(path, block_time_seconds=1e9)  # migrates on open
    old = market.get_task(old_id).spec
    assert (old.model, old.epochs, old.storage_endpoint) == ("", 0, "")
    assert old == SPEC
    new_id = market.create_task(ALICE, FILLED)
    assert market.get_task(new_id).spec == FILLED
    assert [t.task_id for t in market.list_tasks(open_only=True)] == [old_id, new_id]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochs": -1}, "epochs must be >= 0"),
        ({"storage_endpoint": "ftp://host"}, "not an http(s) URL without credentials"),
        ({"storage_endpoint": "http://KEY:SECRET@host:8333"}, "without credentials"),
    ],
)
def test_a_bad_endpoint_or_epochs_is_refused(tmp_path: Path, change: dict, message: str) -> None:
    market = _market(tmp_path / "m.sqlite")
    with pytest.raises(InvalidTaskSpec, match=message.replace("(", r"\(").replace(")", r"\)")):
        market.create_task(ALICE, dataclasses.replace(FILLED, **change))
    assert market.list_tasks(open_only=False) == []


def test_chain_records_carry_the_new_fields_and_old_ones_decode() -> None:
    filled = codec.encode(codec.TaskCreated(FILLED))
    assert codec.decode(filled) == codec.TaskCreated(FILLED)
    body = json.loads(filled[len(codec.PREFIX) + 1 :])
    assert (body["model"], body["epochs"], body["storage_endpoint"]) == (
        "mnist_mlp",
        2,
        "http://127.0.0.1:8333",
    )

    # A record written before the fields existed: exactly the documented v2 keys.
    old_body = {k: v for k, v in body.items() if k not in NEW_COLUMNS}
    old_payload = codec.PREFIX + b"T" + json.dumps(old_body).encode()
    assert codec.decode(old_payload) == codec.TaskCreated(SPEC)
    # ... and a spec at the defaults is still written that way, byte for byte.
    assert (
        codec.encode(codec.TaskCreated(SPEC))
        == codec.PREFIX
        + b"T"
        + json.dumps(old_body, sort_keys=True, separators=(",", ":")).encode()
    )


@pytest.mark.parametrize(
    "extra",
    [{"epochs": "2"}, {"epochs": True}, {"epochs": -1}, {"model": 7}, {"endpoint": "x"}],
)
def test_chain_records_with_a_bad_new_field_are_ignored(extra: dict) -> None:
    body = json.loads(codec.encode(codec.TaskCreated(SPEC))[len(codec.PREFIX) + 1 :])
    assert codec.decode(codec.PREFIX + b"T" + json.dumps({**body, **extra}).encode()) is None


@pytest.mark.integration
def test_the_chain_keeps_the_new_fields_and_reads_records_without_them(
    chain_client: ChainClient, funded_keypair, tmp_path: Path
) -> None:
    """On a real chain (chopsticks): a record with the fields and one written the old way
    (through the client, bypassing the marketplace) both index, and a fresh indexer replaying
    the chain derives the same records."""
    start = chain_client.finalized_head_number() + 1
    market = SubstrateMarketplace(chain_client, tmp_path / "a.sqlite", start)
    creator: Keypair = funded_keypair()
    expires = market.current_block() + 200
    filled = dataclasses.replace(FILLED, expiration_block=expires, pays_amount=3 * 10**10)
    old = dataclasses.replace(SPEC, expiration_block=expires, pays_amount=3 * 10**10)
    new_id = market.create_task(creator, filled)
    old_payload = codec.encode(codec.TaskCreated(old))
    assert b'"model"' not in old_payload and b'"storage_endpoint"' not in old_payload
    chain_client.submit(creator, [chain_client.remark_call(old_payload)])  # raises on failure

    fresh = SubstrateMarketplace(chain_client, tmp_path / "b.sqlite", start)
    for reader in (market, fresh):
        specs = {t.task_id: t.spec for t in reader.list_tasks(open_only=False)}
        assert specs[new_id] == filled
        [old_id] = set(specs) - {new_id}
        assert specs[old_id] == old and specs[old_id].storage_endpoint == ""
