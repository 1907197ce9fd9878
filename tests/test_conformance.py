"""docs/chain-protocol.md as a spec: the conformance vectors, replayed by two readers.

``tests/conformance/vectors.json`` holds short chains (blocks of extrinsics with their remarks
and transfers) and the index expected after each block. Two readers must produce exactly that:

* the project's ``ChainIndexer`` (with its ``Ledger`` and ``rules``), fed the blocks through an
  in-memory stand-in for the four ``ChainClient`` reads it makes. The subject here is what the
  records mean; decoding real blocks (SCALE, events, batch_all) is ChainClient's, tested on a
  real chain in tests/test_chain_client.py. The stand-in keeps the calls ChainClient keeps,
  by ChainClient's own lists (``blocks.REMARK_CALLS``, ``TRANSFER_CALLS``, ``BATCH_ALL``);
* ``tests/conformance/minimal_reader.py``, written from the document alone (standard library
  only), as an outside implementer would.

No chain, no TensorFlow: the whole file runs in a few seconds.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from decentralml.chain import codec
from decentralml.chain.blocks import BATCH_ALL, REMARK_CALLS, TRANSFER_CALLS
from decentralml.chain.client import ChainExtrinsic, Item, Remark, Transfer, public_key_hex
from decentralml.marketplace.indexer import ChainIndexer, RecordOutcome
from tests.conformance import build_vectors, minimal_reader

CONFORMANCE = Path(__file__).with_name("conformance")
VECTORS = json.loads((CONFORMANCE / "vectors.json").read_text(encoding="utf-8"))
CASES = VECTORS["cases"]
ACCOUNTS: dict[str, str] = VECTORS["accounts"]
NAME_OF_KEY = {key: name for name, key in ACCOUNTS.items()}
KIND_NAMES = {"VerdictRecord": "Verdict"}
"""The index keeps the codec's class names; the spec calls a V record a Verdict."""


# --- the project's indexer over the vectors ---------------------------------------------------


class VectorChain:
    """What ChainIndexer reads of a ChainClient (genesis, finalized head, block hashes, a
    block's successful signed extrinsics), served from one case of the vectors."""

    def __init__(self, case: dict[str, Any]) -> None:
        self.blocks = {block["number"]: block for block in case["blocks"]}
        self.head = case["start_block"] - 1

    def genesis_hash(self) -> str:
        return "0x" + "ab" * 32

    def finalized_head_number(self) -> int:
        return self.head

    def block_hash(self, block_number: int) -> str:
        return f"0x{block_number:064x}"

    def block_extrinsics(self, block_number: int) -> list[ChainExtrinsic]:
        block = self.blocks.get(block_number, {"extrinsics": []})
        return [
            ChainExtrinsic(
                block_number, x["index"], ACCOUNTS[x["signer"]], tuple(_items(x["call"]))
            )
            for x in block["extrinsics"]
            if x["signer"] is not None and x["success"]  # ChainClient skips the others
        ]


def _items(call: dict[str, Any]) -> list[Item]:
    """The remarks and transfers ChainClient would hand back for this call."""
    name = tuple(call["call"].split("."))
    if name in REMARK_CALLS:
        return [Remark(_payload(call))]
    if name in TRANSFER_CALLS:
        dest = call["dest"]  # an account name; an object is another MultiAddress variant
        return [Transfer(ACCOUNTS[dest], int(call["value"]))] if isinstance(dest, str) else []
    if name == BATCH_ALL:
        return [item for inner in call["calls"] for item in _items(inner)]
    return []


def _payload(call: dict[str, Any]) -> bytes:
    if "remark_hex" in call:
        return bytes.fromhex(call["remark_hex"].removeprefix("0x"))
    return call["remark"].encode("utf-8")


def _name(address: str) -> str:
    return NAME_OF_KEY[public_key_hex(address)]


def _project_outcome(outcome: RecordOutcome, block: dict[str, Any]) -> dict[str, Any]:
    entity_id = outcome.entity_id
    if entity_id is None and not outcome.applied:
        entity_id = _named_id(block, outcome)  # SQLite keeps no id above 2^63 - 1
    row = {
        "position": [outcome.block_number, outcome.extrinsic_index, outcome.item_index],
        "kind": KIND_NAMES.get(outcome.kind, outcome.kind),
        "signer": _name(outcome.signer),
        "applied": outcome.applied,
        "id": entity_id,
        "amount": str(outcome.amount),
    }
    if not outcome.applied:
        row["refusal"] = outcome.error_type
    return row


def _named_id(block: dict[str, Any], outcome: RecordOutcome) -> int | None:
    (extrinsic,) = [x for x in block["extrinsics"] if x["index"] == outcome.extrinsic_index]
    item = _items(extrinsic["call"])[outcome.item_index]
    assert isinstance(item, Remark)
    record = codec.decode(item.payload)
    if isinstance(record, codec.Assign | codec.Close):
        return record.task_id
    if isinstance(record, codec.Commit | codec.Result | codec.VerdictRecord):
        return record.submission_id
    return None


def _project_index(indexer: ChainIndexer) -> dict[str, list[dict[str, Any]]]:
    ledger = indexer.ledger
    tasks = ledger.list_tasks(open_only=False)
    submissions = sorted(
        (s for task in tasks for s in ledger.list_task_results(task.task_id)),
        key=lambda s: s.submission_id,
    )
    return {
        "tasks": [
            {
                "id": t.task_id,
                "creator": _name(t.creator),
                "pays_amount": str(t.spec.pays_amount),
                "status": t.status.value,
                "assigned": t.assigned,
                "paid": str(t.paid),
                "refunded": str(t.refunded),
            }
            for t in tasks
        ],
        "submissions": [
            {
                "id": s.submission_id,
                "task_id": s.task_id,
                "worker": _name(s.worker),
                "status": s.status.value,
                "commit_order": s.commit_order,
                "paid": str(s.paid),
            }
            for s in submissions
        ],
    }


def replay_with_project(case: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    """Sync the project's indexer block by block; after each, its outcomes and index."""
    chain = VectorChain(case)
    indexer = ChainIndexer(chain, path, start_block=case["start_block"])  # type: ignore[arg-type]
    replayed = []
    for block in case["blocks"]:
        chain.head = block["number"]
        assert indexer.sync() == block["number"]
        outcomes = [o for o in indexer.all_outcomes() if o.block_number == block["number"]]
        replayed.append(
            {
                "number": block["number"],
                "outcomes": [_project_outcome(o, block) for o in outcomes],
                "index": _project_index(indexer),
            }
        )
    return replayed


# --- the tests --------------------------------------------------------------------------------


def _expected(case: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: block[k] for k in ("number", "outcomes", "index")} for block in case["blocks"]]


def _assert_blocks(case: dict[str, Any], replayed: list[dict[str, Any]]) -> None:
    """Block by block, so a failure names the first block that differs."""
    for want, got in zip(_expected(case), replayed, strict=True):
        assert got == want, f"case {case['name']}, block {want['number']}"


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_the_project_indexer_derives_the_expected_index(
    case: dict[str, Any], tmp_path: Path
) -> None:
    _assert_blocks(case, replay_with_project(case, tmp_path / "index.sqlite"))


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_a_reader_written_from_the_spec_derives_the_expected_index(case: dict[str, Any]) -> None:
    _assert_blocks(case, minimal_reader.replay_case(case, ACCOUNTS))


def test_the_vectors_are_what_build_vectors_writes() -> None:
    """vectors.json is generated: edit build_vectors.py, then run it."""
    assert (CONFORMANCE / "vectors.json").read_text(encoding="utf-8") == build_vectors.render()


def test_the_vectors_cover_every_kind_refusal_and_status() -> None:
    blocks = [block for case in CASES for block in case["blocks"]]
    outcomes = [outcome for block in blocks for outcome in block["outcomes"]]
    assert {o["kind"] for o in outcomes} == set(minimal_reader.KINDS.values())
    assert {o["refusal"] for o in outcomes if not o["applied"]} == set(minimal_reader.REFUSALS)
    tasks = [row for block in blocks for row in block["index"]["tasks"]]
    assert {row["status"] for row in tasks} == {"Created", "InProgress", "Completed", "Withdrawn"}
    submissions = [row for block in blocks for row in block["index"]["submissions"]]
    assert {row["status"] for row in submissions} == {
        "Assigned",
        "PendingValidation",
        "Accepted",
        "Rejected",
    }
    assert any(int(o["amount"]) > 2**53 for o in outcomes)
    assert any((o["id"] or 0) > 2**53 for o in outcomes)


def test_the_minimal_reader_uses_only_the_standard_library() -> None:
    """Written from the document alone: nothing of decentralml, nothing installed."""
    tree = ast.parse((CONFORMANCE / "minimal_reader.py").read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}
