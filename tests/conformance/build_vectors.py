"""Build ``vectors.json``: conformance vectors for docs/chain-protocol.md.

Each case is a short chain, replayed from scratch: blocks of extrinsics (signer, success,
calls: remarks with their payload as UTF-8 text or hex, transfers, batches), and after each
block the outcome of every well-formed record in it and the whole index expected after it.

The expectations are written by hand below, case by case, from the spec: every outcome next to
its record, every change of a task or submission right after its block. Nothing is computed
by the project's code (this module imports the standard library only); what is computed here
is bookkeeping: canonical JSON bodies, commitments (sha256) and the item index of each record.

Regenerate after editing: ``.venv/bin/python -m tests.conformance.build_vectors``;
tests/test_conformance.py checks vectors.json is what this module builds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).with_name("vectors.json")

ACCOUNTS = {  # the sr25519 dev accounts //Alice ... //Eve
    "alice": "0xd43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d",
    "bob": "0x8eaf04151687736326c9fea17e25fc5287613693c912909cb226aa4794f26a48",
    "charlie": "0x90b5ab205c6974c9ea841be688864633dc9ca8a357843eeacf2314649965fe22",
    "dave": "0x306721211d5404bd9da88e0204360a1a9ab8b87c66c1bc2fcdd37f3c2222cc20",
    "eve": "0xe659a7a1628cdd93febc04a4e0646ea20e9f5f0ce097d9a05290d4a9e054df4e",
}

KINDS = {
    "T": "TaskCreated",
    "A": "Assign",
    "H": "Commit",
    "R": "Result",
    "V": "Verdict",
    "C": "Close",
}
COUNTED_REMARKS = ("System.remark_with_event", "System.remark")
COUNTED_TRANSFERS = ("Balances.transfer_keep_alive", "Balances.transfer")

SHA_B = "b0" * 32  # bob's result
SHA_C = "c0" * 32  # charlie's
SHA_D = "d0" * 32  # dave's
SHA_E = "e0" * 32  # eve's
SHA_X = "ee" * 32  # another result
SHA_B2 = "b2" * 32
SHA_B3 = "b3" * 32
U64_MAX = 2**64 - 1
U128_MAX = 2**128 - 1
ABOVE_2_53 = 2**53 + 1  # 9007199254740993: a JavaScript Number reads 9007199254740992


# --- payloads (builders named after their kind letters) -----------------------------


def canonical(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def T(**fields: Any) -> str:
    body: dict[str, Any] = {
        "question": "Train the MNIST classifier on your shard",
        "pays_amount": 300,
        "max_assignments": 3,
        "expiration_block": 100,
        "validation_strategy": "AutoAccept",
        "task_type": "ModelContributor",
        "assets_path": "s3://bucket/task/assets.tar.gz",
        "assets_sha256": "aa" * 32,
        "global_weights_path": "s3://bucket/task/global.safetensors",
        "global_weights_sha256": "bb" * 32,
        "round_number": 0,
    }
    body.update(fields)
    return "dml2T" + canonical(body)


def A(task_id: int) -> str:
    return "dml2A" + canonical({"task_id": task_id})


def commitment(worker: str, sha256: str) -> str:
    key = bytes.fromhex(ACCOUNTS[worker][2:])
    return hashlib.sha256(b"decentralml-commit-v1" + key + bytes.fromhex(sha256)).hexdigest()


def H(submission_id: int, worker: str, sha256: str) -> str:
    body = {"submission_id": submission_id, "commitment": commitment(worker, sha256)}
    return "dml2H" + canonical(body)


def result_body(sha256: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "result_path": f"s3://bucket/task/results/{sha256[:4]}.safetensors",
        "sha256": sha256,
        "num_examples": 600,
        "metrics": {"accuracy": 0.91, "loss": 0.31},
        "base_fingerprint": "f00d",
    }
    body.update(fields)
    return body


def R(submission_id: int, sha256: str, **fields: Any) -> str:
    body = {"submission_id": submission_id, "result": result_body(sha256, **fields)}
    return "dml2R" + canonical(body)


def V(submission_id: int, accept: bool, reason: str = "", **optional: Any) -> str:
    body = {"submission_id": submission_id, "accept": accept, "reason": reason, **optional}
    return "dml2V" + canonical(body)


def C(task_id: int) -> str:
    return "dml2C" + canonical({"task_id": task_id})


# --- expectations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    applied: bool | None
    """None: malformed, so no outcome at all."""
    id: int | None = None
    amount: int = 0
    refusal: str | None = None
    why: str = ""


def ok(entity_id: int, amount: int = 0, why: str = "") -> Expect:
    return Expect(True, entity_id, amount, why=why)


def refused(refusal: str, entity_id: int | None, why: str = "") -> Expect:
    return Expect(False, entity_id, 0, refusal, why)


def ignored(why: str) -> Expect:
    return Expect(None, why=why)


# --- calls ----------------------------------------------------------------------------------


def remark(text: str, expect: Expect, call: str = "System.remark_with_event") -> dict[str, Any]:
    return {"call": call, "remark": text, "_expect": expect}


def remark_hex(data: bytes, expect: Expect) -> dict[str, Any]:
    return {"call": "System.remark_with_event", "remark_hex": "0x" + data.hex(), "_expect": expect}


def pay(dest: str | dict[str, int], value: int, call: str = "Balances.transfer_keep_alive"):
    return {"call": call, "dest": dest, "value": str(value)}


def batch_all(*calls: dict[str, Any]) -> dict[str, Any]:
    return {"call": "Utility.batch_all", "calls": list(calls)}


def wrapper(name: str, *calls: dict[str, Any]) -> dict[str, Any]:
    """A call whose inner calls readers must not read (batch, force_batch, proxy)."""
    return {"call": name, "calls": list(calls)}


@dataclass
class X:
    """One extrinsic: a signer (an account name, None for an unsigned one) and one call."""

    signer: str | None
    call: dict[str, Any]
    success: bool = True


def xt(signer: str | None, *calls: dict[str, Any], success: bool = True) -> X:
    """An extrinsic with one call, or a batch_all of several (how the project writes)."""
    return X(signer, calls[0] if len(calls) == 1 else batch_all(*calls), success)


# --- cases ----------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    about: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    tasks: dict[int, dict[str, Any]] = field(default_factory=dict)
    subs: dict[int, dict[str, Any]] = field(default_factory=dict)

    def block(self, number: int, *extrinsics: X) -> Case:
        """Block ``number`` with these extrinsics at indexes 1, 2, ... (0: the timestamp)."""
        self._snapshot()
        body, outcomes = [], []
        for index, extrinsic in enumerate(extrinsics, start=1):
            items: list[dict[str, Any]] = []
            call = _strip(extrinsic.call, items, counted=extrinsic.signer is not None)
            entry = {"index": index, "signer": extrinsic.signer, "success": extrinsic.success}
            body.append({**entry, "call": call})
            for item_index, (kind, expect, counted) in enumerate(items):
                counts = counted and extrinsic.success
                if expect.applied is None or not counts:
                    assert expect.applied is None, f"{self.name}: an unread record expects {expect}"
                    continue
                outcome: dict[str, Any] = {
                    "position": [number, index, item_index],
                    "kind": kind,
                    "signer": extrinsic.signer,
                    "applied": expect.applied,
                    "id": expect.id,
                    "amount": str(expect.amount),
                }
                if not expect.applied:
                    outcome["refusal"] = expect.refusal
                outcomes.append(outcome)
        self.blocks.append({"number": number, "extrinsics": body, "outcomes": outcomes})
        return self

    def task(self, task_id: int, **changes: Any) -> Case:
        """Create (with ``creator`` and ``pays_amount``) or change a task after this block."""
        task = self.tasks.setdefault(
            task_id,
            {"id": task_id, "status": "Created", "assigned": 0, "paid": "0", "refunded": "0"},
        )
        task.update({k: str(v) if k in AMOUNTS else v for k, v in changes.items()})
        return self

    def sub(self, submission_id: int, **changes: Any) -> Case:
        """Create (with ``task_id`` and ``worker``) or change a submission after this block."""
        sub = self.subs.setdefault(
            submission_id,
            {"id": submission_id, "status": "Assigned", "commit_order": None, "paid": "0"},
        )
        sub.update({k: str(v) if k in AMOUNTS else v for k, v in changes.items()})
        return self

    def _snapshot(self) -> None:
        if self.blocks and "index" not in self.blocks[-1]:
            self.blocks[-1]["index"] = {
                "tasks": [_ordered(TASK_KEYS, t) for _, t in sorted(self.tasks.items())],
                "submissions": [_ordered(SUB_KEYS, s) for _, s in sorted(self.subs.items())],
            }

    def to_json(self) -> dict[str, Any]:
        self._snapshot()
        return {"name": self.name, "about": self.about, "start_block": 1, "blocks": self.blocks}


AMOUNTS = ("pays_amount", "paid", "refunded")
TASK_KEYS = ("id", "creator", "pays_amount", "status", "assigned", "paid", "refunded")
SUB_KEYS = ("id", "task_id", "worker", "status", "commit_order", "paid")


def _ordered(keys: tuple[str, ...], row: dict[str, Any]) -> dict[str, Any]:
    assert set(row) == set(keys), row
    return {key: row[key] for key in keys}


def _strip(call: dict[str, Any], items: list, counted: bool) -> dict[str, Any]:
    """The call without its expectations; collects (kind, expectation, counted) of the
    remarks and counted transfers in item order, flattening batch_all only."""
    out = {k: v for k, v in call.items() if k not in ("_expect", "calls")}
    name = call["call"]
    if name in COUNTED_REMARKS or "remark" in call or "remark_hex" in call:
        expect = call["_expect"]
        if "why" not in out and expect.why:
            out["note"] = expect.why
        if name in COUNTED_REMARKS:
            text = call.get("remark") or bytes.fromhex(call["remark_hex"][2:]).decode("latin-1")
            kind = KINDS.get(text[4:5], "?")
            items.append((kind, expect, counted))
        return out
    if name in COUNTED_TRANSFERS and isinstance(call.get("dest"), str):
        items.append(("transfer", ignored("a payment"), counted))
    if "calls" in call:
        inner_counted = counted and name == "Utility.batch_all"
        inner: list = items if name == "Utility.batch_all" else []
        out["calls"] = [_strip(c, inner, inner_counted) for c in call["calls"]]
        if name != "Utility.batch_all":
            for _, expect, _ in inner:
                assert expect.applied is None, f"a record inside {name} expects {expect}"
    return out


def lifecycle() -> Case:
    c = Case(
        "lifecycle",
        "One per_result round: a task, two slots, commit, reveal, one accept paid in the "
        "verdict's batch_all, one reject, the close in the same batch (Completed), then no "
        "more assignments.",
    )
    c.block(1, xt("alice", remark(T(), ok(0))))
    c.task(0, creator="alice", pays_amount=300)
    c.block(2, xt("bob", remark(A(0), ok(0))), xt("charlie", remark(A(0), ok(1))))
    c.task(0, status="InProgress", assigned=2)
    c.sub(0, task_id=0, worker="bob").sub(1, task_id=0, worker="charlie")
    c.block(
        3,
        xt("bob", remark(H(0, "bob", SHA_B), ok(0))),
        xt("charlie", remark(H(1, "charlie", SHA_C), ok(1))),
    )
    c.sub(0, commit_order=0).sub(1, commit_order=1)
    c.block(
        4,
        xt("bob", remark(R(0, SHA_B), ok(0))),
        xt("charlie", remark(R(1, SHA_C, metrics={"accuracy": 0.1}), ok(1))),
    )
    c.sub(0, status="PendingValidation").sub(1, status="PendingValidation")
    c.block(
        5,
        xt(
            "alice",
            remark(V(0, True, "accuracy 0.91 >= 0.50"), ok(0, 100)),
            pay("bob", 100),
            remark(V(1, False, "accuracy 0.10 < 0.50"), ok(1)),
            remark(C(0), ok(0, 200, "the refund: 300 - 100")),
        ),
    )
    c.sub(0, status="Accepted", paid=100).sub(1, status="Rejected")
    c.task(0, status="Completed", paid=100, refunded=200)
    c.block(6, xt("dave", remark(A(0), refused("TaskNotOpen", 0, "the task is Completed"))))
    return c


def statuses() -> Case:
    c = Case(
        "statuses",
        "Every task status and transition: Created, InProgress, Withdrawn by a close, "
        "Completed at expiry (paid > 0), Withdrawn at expiry (paid 0, with or without a slot "
        "taken), and an expired task kept InProgress by a pending result until its verdict.",
    )
    c.block(
        1,
        xt("alice", remark(T(question="task A", expiration_block=10), ok(0))),
        xt("alice", remark(T(question="task B", expiration_block=10), ok(1))),
        xt("alice", remark(T(question="task C", expiration_block=10), ok(2))),
        xt("alice", remark(T(question="task D", expiration_block=10), ok(3))),
        xt("alice", remark(T(question="task E", expiration_block=10), ok(4))),
    )
    for task_id in range(5):
        c.task(task_id, creator="alice", pays_amount=300)
    c.block(
        2,
        xt("alice", remark(C(0), ok(0, 300, "nothing paid: Withdrawn, all refunded"))),
        xt("bob", remark(A(1), ok(0))),
        xt("charlie", remark(A(2), ok(1))),
        xt("bob", remark(A(3), ok(2))),
    )
    c.task(0, status="Withdrawn", refunded=300)
    for task_id in (1, 2, 3):
        c.task(task_id, status="InProgress", assigned=1)
    c.sub(0, task_id=1, worker="bob").sub(1, task_id=2, worker="charlie")
    c.sub(2, task_id=3, worker="bob")
    c.block(
        3,
        xt("bob", remark(H(0, "bob", SHA_B), ok(0)), remark(H(2, "bob", SHA_B2), ok(2))),
    )
    c.sub(0, commit_order=0).sub(2, commit_order=1)
    c.block(4, xt("bob", remark(R(0, SHA_B), ok(0)), remark(R(2, SHA_B2), ok(2))))
    c.sub(0, status="PendingValidation").sub(2, status="PendingValidation")
    c.block(5, xt("alice", remark(V(0, True), ok(0, 100)), pay("bob", 100)))
    c.sub(0, status="Accepted", paid=100).task(1, paid=100)
    c.block(9)
    c.block(
        10,
        xt(
            "charlie",
            remark(H(1, "charlie", SHA_C), refused("TaskNotOpen", 1, "block 10 is its expiry")),
        ),
    )
    c.task(1, status="Completed", refunded=200)  # expired having paid 100
    c.task(2, status="Withdrawn", refunded=300)  # expired, a slot taken, nothing paid
    c.task(4, status="Withdrawn", refunded=300)  # expired untouched
    # task 3 stays InProgress: submission 2 awaits a verdict
    c.block(11)
    c.block(12, xt("alice", remark(V(2, False, "loss went up"), ok(2))))
    c.sub(2, status="Rejected").task(3, status="Withdrawn", refunded=300)
    c.block(13, xt("alice", remark(C(1), ok(1, 0, "closing a finished task: a repeat"))))
    return c


def task_rules() -> Case:
    c = Case(
        "task_rules",
        "Every TaskCreated rule: a reward of at least one unit per slot, an expiry after the "
        "record's block, a non-blank question (Unicode White_Space), a storage endpoint "
        "without credentials, a known payment rule; a repeat names the same task.",
    )
    same = T(pays_amount=3, max_assignments=3, question="one unit per slot")
    spelled_out = T(
        pays_amount=3,
        max_assignments=3,
        question="one unit per slot",
        model="",
        epochs=0,
        storage_endpoint="",
        payment_rule="per_result",
    )
    bad = "InvalidTaskSpec"
    c.block(
        5,
        xt("alice", remark(T(pays_amount=0), refused(bad, None, "pays_amount 0"))),
        xt("alice", remark(T(max_assignments=0), refused(bad, None, "no slot"))),
        xt(
            "alice",
            remark(
                T(pays_amount=2, max_assignments=3),
                refused(bad, None, "pays_amount < max_assignments: 0 per accepted result"),
            ),
        ),
        xt("alice", remark(T(expiration_block=5), refused(bad, None, "expires at its block"))),
        xt("alice", remark(T(question=""), refused(bad, None, "empty question"))),
        xt(
            "alice",
            remark(
                T(question=" \t\n\u3000\u00a0\u2028\u0085\u200a"),
                refused(bad, None, "only White_Space characters"),
            ),
        ),
        xt(
            "alice",
            remark(
                T(storage_endpoint="http://user:pw@storage.example:8333"),
                refused(bad, None, "credentials in the endpoint"),
            ),
        ),
        xt(
            "alice",
            remark(T(storage_endpoint="ftp://storage.example"), refused(bad, None, "not http")),
        ),
        xt(
            "alice",
            remark(T(storage_endpoint="http://:8333"), refused(bad, None, "a port, no host")),
        ),
        xt(
            "alice",
            remark(T(storage_endpoint="http://storage example"), refused(bad, None, "a space")),
        ),
        xt("alice", remark(T(payment_rule="weekly"), refused(bad, None, "unknown rule"))),
        xt("alice", remark(same, ok(0, why="pays_amount == max_assignments: 1 per slot"))),
        xt(
            "alice",
            remark(
                T(question="\u001c\u001f"),
                ok(1, why="U+001C and U+001F are not White_Space (Python's isspace says so)"),
            ),
        ),
        xt(
            "alice",
            remark(
                T(
                    storage_endpoint="HTTPS://storage.example:8333/bucket?x=1",
                    model="mnist_mlp",
                    epochs=2,
                    payment_rule="value",
                ),
                ok(2),
            ),
        ),
        xt(
            "alice",
            remark(
                T(question="bracket", storage_endpoint="http://["),
                ok(3, why="the endpoint rule is textual: no URL parser, nothing to raise"),
            ),
        ),
    )
    c.task(0, creator="alice", pays_amount=3).task(1, creator="alice", pays_amount=300)
    c.task(2, creator="alice", pays_amount=300).task(3, creator="alice", pays_amount=300)
    c.block(
        6,
        xt("alice", remark(same, ok(0, why="a repeat of task 0: no new task"))),
        xt("alice", remark(spelled_out, ok(0, why="defaults spelled out: the same task"))),
        xt("bob", remark(same, ok(4, why="another creator: a new task"))),
    )
    c.task(4, creator="bob", pays_amount=3)
    c.block(7, xt("alice", remark(C(0), ok(0, 3))))
    c.task(0, status="Withdrawn", refunded=3)
    c.block(8, xt("alice", remark(same, ok(5, why="task 0 is finished: a new task"))))
    c.task(5, creator="alice", pays_amount=3)
    return c


def _padded_assign(total_bytes: int) -> str:
    text = A(0)
    return text + " " * (total_bytes - len(text.encode()))


MALFORMED: list[tuple[str, str]] = [
    ('dml1A{"task_id":0}', "the previous version"),
    ('DML2A{"task_id":0}', "the prefix is case-sensitive"),
    ('dml2Z{"task_id":0}', "an unknown kind"),
    ('dml2a{"task_id":0}', "kinds are upper case"),
    ('dml2A{"task_id":0', "truncated JSON"),
    ("dml2A{}", "a missing key"),
    ('dml2A{"task_id":0,"extra":1}', "an extra key"),
    ('dml2A{"task_id":0,"task_id":0}', "a duplicate key, even with the same value"),
    ('dml2A{"task_id":0.0}', "a fraction: not an integer"),
    ('dml2A{"task_id":0e0}', "an exponent: not an integer"),
    ('dml2A{"task_id":-0}', "a minus sign: not an unsigned integer, even -0"),
    ('dml2A{"task_id":-1}', "negative"),
    ('dml2A{"task_id":true}', "a bool is not an integer"),
    ('dml2A{"task_id":"0"}', "a text is not an integer"),
    ('dml2A{"task_id":null}', "null is not an integer"),
    ('dml2A{"task_id":00}', "a leading zero: not JSON"),
    ('dml2A{"task_id":+0}', "a plus sign: not JSON"),
    ('dml2A{"task_id":18446744073709551616}', "2^64: above u64"),
    ("dml2A[0]", "not an object"),
    ('dml2A{"task_id":0} x', "text after the JSON value"),
    ('dml2A{"task_id":NaN}', "NaN is not JSON"),
    ('dml2V{"accept":1,"reason":"","submission_id":0}', "an integer is not a bool"),
    ('dml2V{"accept":true,"reason":"\\ud800","submission_id":0}', "a lone surrogate escape"),
    ('dml2V{"accept":true,"reason":"","submission_id":0,"value":null}', "value null"),
    ('dml2V{"accept":true,"reason":"","submission_id":0,"value":1e400}', "value infinite"),
    ('dml2V{"accept":true,"amount":100.0,"reason":"","submission_id":0}', "amount 100.0"),
    ('dml2V{"accept":true,"amount":-1,"reason":"","submission_id":0}', "amount negative"),
    ('dml2V{"accept":"true","reason":"","submission_id":0}', "a text is not a bool"),
    ('dml2C{"task_id":0,"reason":""}', "a key of another kind"),
    (
        'dml2H{"commitment":"' + commitment("bob", SHA_B).upper() + '","submission_id":0}',
        "an upper-case commitment",
    ),
    ('dml2H{"commitment":"' + "ab" * 31 + 'a","submission_id":0}', "63 hex characters"),
    (
        "dml2R"
        + canonical({"submission_id": 0, "result": result_body(SHA_B)}).replace(
            '"accuracy":0.91', '"accuracy":0.91,"accuracy":0.92'
        ),
        "a duplicate key inside metrics",
    ),
    (
        "dml2R"
        + canonical(
            {
                "submission_id": 0,
                "result": result_body(SHA_B, metrics={f"m{i}": 0.5 for i in range(65)}),
            }
        ),
        "65 metrics",
    ),
    (R(0, SHA_B, metrics={"accuracy": "0.91"}), "a metric that is a text"),
    (
        "dml2R"
        + canonical(
            {
                "submission_id": 0,
                "result": {k: v for k, v in result_body(SHA_B).items() if k != "base_fingerprint"},
            }
        ),
        "a result without base_fingerprint",
    ),
    (R(0, SHA_B, num_examples=1.0), "num_examples 1.0"),
    (T(question="é" * 4097), "a question of 4097 code points"),
    (T(validation_strategy="autoaccept"), "an unknown enum name (case matters)"),
    (T(max_assignments=2**32), "2^32: above u32"),
    (T(pays_amount=2**128), "2^128: above u128"),
    (T(deadline=10), "an unknown key"),
    (T(epochs=1.0), "epochs 1.0"),
    (T(question=None), "question null"),
    (_padded_assign(16385), "16385 bytes: over the 16 KiB limit (valid JSON otherwise)"),
]


def malformed() -> Case:
    c = Case(
        "malformed",
        "Payloads readers ignore (no outcome, no id, no change), then well-formed edge cases: "
        "any JSON spelling, exactly 16384 bytes, texts counted in code points (3000 emoji; "
        "4096 code points with an escaped surrogate pair).",
    )
    c.block(1, xt("alice", remark(T(), ok(0))))
    c.task(0, creator="alice", pays_amount=300)
    c.block(2, xt("bob", remark(A(0), ok(0))))
    c.task(0, status="InProgress", assigned=1).sub(0, task_id=0, worker="bob")
    calls = [remark(text, ignored(why)) for text, why in MALFORMED]
    calls.append(
        remark_hex(b'dml2A\xef\xbb\xbf{"task_id":0}', ignored("a byte-order mark is not JSON"))
    )
    calls.append(
        remark_hex(b'dml2V{"accept":false,"reason":"\xff","submission_id":0}', ignored("not UTF-8"))
    )
    calls.append(remark_hex(b"\x80\x04\x95dml2A", ignored("a pickle: data, never executed")))
    calls.append(remark("hello", ignored("someone else's remark")))
    calls.append(
        remark(A(0), refused("AlreadyAssigned", 0, "well-formed: ignored remarks keep their item"))
    )
    c.block(3, xt("bob", *calls))
    emoji = "\U0001f600" * 3000
    escaped = "é" * 4095 + "\\ud83d\\ude00"
    four_096 = T(question="QUESTION").replace("QUESTION", escaped)
    c.block(
        4,
        xt("charlie", remark('dml2A \n{ "task_id" : 0 }\t', ok(1, why="whitespace is JSON"))),
        xt("dave", remark(_padded_assign(16384), ok(2, why="exactly 16384 bytes"))),
        xt(
            "alice",
            remark(
                T(question=emoji),
                ok(1, why="3000 code points (6000 UTF-16 units, 12000 bytes)"),
            ),
        ),
        xt(
            "alice",
            remark(four_096, ok(2, why="4095 + 1 code points: the escaped pair is one")),
        ),
    )
    c.task(0, assigned=3)
    c.sub(1, task_id=0, worker="charlie").sub(2, task_id=0, worker="dave")
    c.task(1, creator="alice", pays_amount=300).task(2, creator="alice", pays_amount=300)
    return c


def big_integers() -> Case:
    share = (2**64 + 1) // 3  # 6148914691236517205
    c = Case(
        "big_integers",
        "Integers above 2^53 read exactly: a u128 reward and its floor share, the largest "
        "u128, ids above 2^53 and at 2^64-1 (well-formed, naming nothing), num_examples "
        "above 2^53.",
    )
    c.block(
        1,
        xt("alice", remark(T(pays_amount=2**64 + 1), ok(0))),
        xt(
            "alice",
            remark(T(pays_amount=U128_MAX, max_assignments=1, payment_rule="value"), ok(1)),
        ),
    )
    c.task(0, creator="alice", pays_amount=2**64 + 1)
    c.task(1, creator="alice", pays_amount=U128_MAX)
    c.block(
        2,
        xt("bob", remark(A(0), ok(0))),
        xt("bob", remark(A(ABOVE_2_53), refused("UnknownTask", ABOVE_2_53))),
        xt("bob", remark(A(U64_MAX), refused("UnknownTask", U64_MAX))),
        xt("bob", remark(A(1), ok(1))),
    )
    c.task(0, status="InProgress", assigned=1).task(1, status="InProgress", assigned=1)
    c.sub(0, task_id=0, worker="bob").sub(1, task_id=1, worker="bob")
    c.block(
        3,
        xt("bob", remark(H(0, "bob", SHA_B), ok(0)), remark(H(1, "bob", SHA_B2), ok(1))),
    )
    c.sub(0, commit_order=0).sub(1, commit_order=1)
    c.block(
        4,
        xt(
            "bob",
            remark(R(0, SHA_B, num_examples=ABOVE_2_53), ok(0)),
            remark(R(1, SHA_B2), ok(1)),
        ),
    )
    c.sub(0, status="PendingValidation").sub(1, status="PendingValidation")
    c.block(
        5,
        xt(
            "alice",
            remark(V(0, True), ok(0, share, "(2^64 + 1) // 3, exactly")),
            pay("bob", share - 1),
            pay("bob", share),
        ),
    )
    c.sub(0, status="Accepted", paid=share).task(0, paid=share)
    c.block(
        6,
        xt(
            "alice",
            remark(V(1, True, amount=U128_MAX - 1), ok(1, U128_MAX - 1)),
            pay("bob", U128_MAX - 1),
        ),
    )
    c.sub(1, status="Accepted", paid=U128_MAX - 1).task(1, paid=U128_MAX - 1)
    c.block(
        7,
        xt("alice", remark(C(0), ok(0, 2**64 + 1 - share)), remark(C(1), ok(1, 1))),
    )
    c.task(0, status="Completed", refunded=2**64 + 1 - share)
    c.task(1, status="Completed", refunded=1)
    return c


def slot_and_result_rules() -> Case:
    c = Case(
        "slot_and_result_rules",
        "Assign, Commit and Result refusals in their order, repeats, the commitment over "
        "the result's bytes (either hex case), no commitment or result after expiry, and a "
        "verdict after expiry that finishes the task.",
    )
    c.block(
        1,
        xt("alice", remark(T(pays_amount=200, max_assignments=2, expiration_block=50), ok(0))),
    )
    c.task(0, creator="alice", pays_amount=200)
    c.block(
        2,
        xt("bob", remark(A(0), ok(0))),
        xt("bob", remark(A(0), refused("AlreadyAssigned", 0))),
        xt("charlie", remark(A(0), ok(1))),
        xt("dave", remark(A(0), refused("TaskFull", 0))),
        xt("eve", remark(A(7), refused("UnknownTask", 7))),
    )
    c.task(0, status="InProgress", assigned=2)
    c.sub(0, task_id=0, worker="bob").sub(1, task_id=0, worker="charlie")
    c.block(
        3,
        xt("charlie", remark(H(0, "charlie", SHA_C), refused("NotAssignee", 0))),
        xt("bob", remark(H(5, "bob", SHA_B), refused("UnknownSubmission", 5))),
        xt("bob", remark(R(0, SHA_B), refused("NotCommitted", 0))),
        xt("bob", remark(H(0, "bob", SHA_B), ok(0))),
        xt("bob", remark(H(0, "bob", SHA_B), ok(0, why="the same commitment: a repeat"))),
        xt("bob", remark(H(0, "bob", SHA_X), refused("AlreadyCommitted", 0))),
    )
    c.sub(0, commit_order=0)
    huge = "1" + "0" * 400
    with_loss = R(0, SHA_B, metrics={"loss": 9.5})
    bad = "InvalidResult"
    accepted_result = R(0, SHA_B.upper(), num_examples=ABOVE_2_53)
    c.block(
        4,
        xt("bob", remark(R(0, SHA_X), refused(bad, 0, "not the committed bytes"))),
        xt("bob", remark(R(0, "not-a-digest"), refused(bad, 0, "sha256 is not 64 hex"))),
        xt("bob", remark(R(0, SHA_B, num_examples=0), refused(bad, 0, "num_examples 0"))),
        xt("bob", remark(R(0, SHA_B, num_examples=2**63), refused(bad, 0, "above 2^63-1"))),
        xt(
            "bob",
            remark(R(0, SHA_B, metrics={"loss": None}), refused(bad, 0, "null is not finite")),
        ),
        xt(
            "bob",
            remark(with_loss.replace("9.5", "1e400"), refused(bad, 0, "1e400: infinite")),
        ),
        xt(
            "bob",
            remark(with_loss.replace("9.5", huge), refused(bad, 0, "401 digits: infinite")),
        ),
        xt(
            "eve",
            remark(
                R(0, SHA_B, num_examples=0),
                refused(bad, 0, "the result's own checks come before the submission's"),
            ),
        ),
        xt("charlie", remark(R(0, SHA_B), refused("NotAssignee", 0))),
        xt(
            "bob",
            remark(accepted_result, ok(0, why="upper-case sha256: the same 32 bytes")),
        ),
        xt("bob", remark(accepted_result, ok(0, why="the very same result: a repeat"))),
        xt("bob", remark(R(0, SHA_B), refused("ResultAlreadySent", 0))),
        xt("bob", remark(H(0, "bob", SHA_B), refused("ResultAlreadySent", 0))),
        xt("alice", remark(V(1, True), refused("NoResultYet", 1))),
    )
    c.sub(0, status="PendingValidation")
    c.block(5, xt("charlie", remark(H(1, "charlie", SHA_C), ok(1))))
    c.sub(1, commit_order=1)
    c.block(
        50,
        xt("charlie", remark(R(1, SHA_C), refused("TaskNotOpen", 1, "block 50 is its expiry"))),
        xt("eve", remark(A(0), refused("TaskNotOpen", 0))),
        xt("bob", remark(accepted_result, ok(0, why="a repeat counts after expiry too"))),
    )
    # expired, but submission 0 awaits a verdict: task 0 stays InProgress
    c.block(51, xt("alice", remark(V(0, True), ok(0, 100)), pay("bob", 100)))
    c.sub(0, status="Accepted", paid=100)
    c.task(0, paid=100, status="Completed", refunded=100)
    return c


def reputation_rules() -> Case:
    c = Case(
        "reputation_rules",
        "A task asking min_reputation takes only accounts whose accepted results on other "
        "accounts' tasks, less their rejected ones, reach it: a newcomer, a rejected worker "
        "and a creator accepting its own result are refused; an accepted worker is not.",
    )
    c.block(
        1,
        xt("alice", remark(T(pays_amount=200, max_assignments=2, expiration_block=50), ok(0))),
        xt("eve", remark(T(pays_amount=100, max_assignments=1, expiration_block=50), ok(1))),
    )
    c.task(0, creator="alice", pays_amount=200).task(1, creator="eve", pays_amount=100)
    c.block(
        2,
        xt("bob", remark(A(0), ok(0))),
        xt("charlie", remark(A(0), ok(1))),
        xt("eve", remark(A(1), ok(2, why="eve takes a slot of her own task"))),
    )
    c.task(0, status="InProgress", assigned=2).task(1, status="InProgress", assigned=1)
    c.sub(0, task_id=0, worker="bob").sub(1, task_id=0, worker="charlie")
    c.sub(2, task_id=1, worker="eve")
    c.block(
        3,
        xt("bob", remark(H(0, "bob", SHA_B), ok(0))),
        xt("charlie", remark(H(1, "charlie", SHA_C), ok(1))),
        xt("eve", remark(H(2, "eve", SHA_E), ok(2))),
    )
    c.sub(0, commit_order=0).sub(1, commit_order=1).sub(2, commit_order=2)
    c.block(
        4,
        xt("bob", remark(R(0, SHA_B), ok(0))),
        xt("charlie", remark(R(1, SHA_C), ok(1))),
        xt("eve", remark(R(2, SHA_E), ok(2))),
    )
    c.sub(0, status="PendingValidation").sub(1, status="PendingValidation")
    c.sub(2, status="PendingValidation")
    picky = T(pays_amount=100, max_assignments=3, expiration_block=60, min_reputation=1)
    c.block(
        5,
        xt("alice", batch_all(remark(V(0, True), ok(0, 100)), pay("bob", 100))),
        xt("alice", remark(V(1, False, "a copy"), ok(1))),
        xt("eve", batch_all(remark(V(2, True), ok(2, 100)), pay("eve", 100))),
        xt("alice", remark(picky, ok(2))),
    )
    c.sub(0, status="Accepted", paid=100).sub(1, status="Rejected")
    c.sub(2, status="Accepted", paid=100)
    c.task(0, paid=100).task(1, paid=100)
    c.task(2, creator="alice", pays_amount=100)
    c.block(
        6,
        xt("dave", remark(A(2), refused("TooLittleReputation", 2, "a newcomer: 0"))),
        xt("charlie", remark(A(2), refused("TooLittleReputation", 2, "rejected once: -1"))),
        xt("eve", remark(A(2), refused("TooLittleReputation", 2, "accepted by herself: 0"))),
        xt("bob", remark(A(2), ok(3, why="accepted once by alice: 1"))),
    )
    c.task(2, status="InProgress", assigned=1)
    c.sub(3, task_id=2, worker="bob")
    return c


def verdict_rules() -> Case:
    c = Case(
        "verdict_rules",
        "Verdict refusals in their order, the transfer that pays an accept (which calls "
        "count, to whom, how much, before or after the remark, one accept each), repeats, "
        "the per_result share and the value rule, an accept of 0.",
    )
    c.block(
        1,
        xt("alice", remark(T(), ok(0))),
        xt("alice", remark(T(question="by value", payment_rule="value"), ok(1))),
        xt(
            "alice",
            remark(
                T(question="zero", pays_amount=10, max_assignments=1, payment_rule="value"),
                ok(2),
            ),
        ),
    )
    c.task(0, creator="alice", pays_amount=300).task(1, creator="alice", pays_amount=300)
    c.task(2, creator="alice", pays_amount=10)
    workers = [("bob", 0), ("charlie", 0), ("dave", 0), ("bob", 1), ("charlie", 1), ("dave", 1)]
    workers.append(("eve", 2))
    c.block(
        2, *(xt(worker, remark(A(task), ok(sid))) for sid, (worker, task) in enumerate(workers))
    )
    c.task(0, status="InProgress", assigned=3).task(1, status="InProgress", assigned=3)
    c.task(2, status="InProgress", assigned=1)
    for sid, (worker, task) in enumerate(workers):
        c.sub(sid, task_id=task, worker=worker)
    sha = {0: SHA_B, 1: SHA_C, 2: SHA_D, 3: SHA_B2, 4: "c2" * 32, 5: "d2" * 32, 6: SHA_E}
    c.block(
        3,
        xt("bob", remark(H(0, "bob", sha[0]), ok(0)), remark(H(3, "bob", sha[3]), ok(3))),
        xt(
            "charlie",
            remark(H(1, "charlie", sha[1]), ok(1)),
            remark(H(4, "charlie", sha[4]), ok(4)),
        ),
        xt("dave", remark(H(2, "dave", sha[2]), ok(2)), remark(H(5, "dave", sha[5]), ok(5))),
        xt("eve", remark(H(6, "eve", sha[6]), ok(6))),
    )
    for order, sid in enumerate([0, 3, 1, 4, 2, 5, 6]):
        c.sub(sid, commit_order=order)
    c.block(4, xt("alice", remark(V(0, True), refused("NoResultYet", 0)), pay("bob", 100)))
    c.block(
        5,
        xt("bob", remark(R(0, sha[0]), ok(0)), remark(R(3, sha[3]), ok(3))),
        xt("charlie", remark(R(1, sha[1]), ok(1)), remark(R(4, sha[4]), ok(4))),
        xt("dave", remark(R(2, sha[2]), ok(2)), remark(R(5, sha[5]), ok(5))),
        xt("eve", remark(R(6, sha[6]), ok(6))),
    )
    for sid in range(7):
        c.sub(sid, status="PendingValidation")
    unpaid = "UnpaidAccept"
    c.block(
        6,
        xt("eve", remark(V(0, True), refused("NotCreator", 0)), pay("bob", 100)),
        xt(
            "eve",
            remark(
                V(0, True, amount=150),
                refused("NotCreator", 0, "who judges is checked before the amount"),
            ),
        ),
        xt("alice", remark(V(99, True), refused("UnknownSubmission", 99))),
        xt("alice", remark(V(0, True), refused(unpaid, 0, "no transfer"))),
        xt("alice", remark(V(0, True), refused(unpaid, 0, "99, not 100")), pay("bob", 99)),
        xt(
            "alice",
            remark(V(0, True), refused(unpaid, 0, "paid to charlie")),
            pay("charlie", 100),
        ),
        xt(
            "alice",
            remark(V(0, True), refused(unpaid, 0, "transfer_allow_death does not count")),
            pay("bob", 100, "Balances.transfer_allow_death"),
        ),
        xt(
            "alice",
            remark(V(0, True), refused(unpaid, 0, "a MultiAddress::Index dest pays no key")),
            pay({"Index": 1}, 100),
        ),
        xt(
            "alice",
            remark(V(0, True), refused(unpaid, 0, "a transfer inside batch does not count")),
            wrapper("Utility.batch", pay("bob", 100)),
        ),
        xt(
            "alice",
            remark(V(0, True, amount=150), refused("InvalidAmount", 0, "per_result pays 100")),
            pay("bob", 150),
        ),
        xt(
            "alice",
            pay("bob", 100),
            remark(V(0, True, amount=100), ok(0, 100, "paid by the transfer before it")),
        ),
    )
    c.sub(0, status="Accepted", paid=100).task(0, paid=100)
    c.block(
        7,
        xt("alice", remark(V(0, True, "again"), ok(0, 0, "a repeat pays 0")), pay("bob", 100)),
        xt("alice", remark(V(0, True, "again"), ok(0, 0, "a repeat needs no transfer"))),
        xt("alice", remark(V(0, False, "changed my mind"), refused("VerdictAlreadyGiven", 0))),
        xt(
            "alice",
            remark(V(1, True), ok(1, 100, "the legacy Balances.transfer counts")),
            remark(V(4, True, amount=100), refused(unpaid, 4, "the transfer paid submission 1")),
            pay("charlie", 100, "Balances.transfer"),
        ),
        xt("alice", remark(V(2, False, "accuracy 0.10 < 0.50"), ok(2))),
        xt(
            "alice",
            remark(V(2, True), refused("VerdictAlreadyGiven", 2)),
            remark(
                V(5, True),
                ok(5, 100, "a value task's share: the transfer the refused verdict left"),
            ),
            pay("dave", 100),
        ),
        xt("alice", remark(V(2, False, "another reason"), ok(2, 0, "a repeat reject"))),
    )
    c.sub(1, status="Accepted", paid=100).task(0, paid=200)
    c.sub(2, status="Rejected").sub(5, status="Accepted", paid=100).task(1, paid=100)
    c.block(
        8,
        xt(
            "alice",
            remark(V(3, True, "value +0.12", amount=170, value=0.12), ok(3, 170)),
            pay("bob", 170),
        ),
        xt(
            "alice",
            remark(V(4, True, amount=140), refused("InvalidAmount", 4, "only 30 left")),
            pay("charlie", 140),
        ),
        xt(
            "alice",
            remark(V(4, True, value=-0.0022), ok(4, 30, "no amount: what is left, 30")),
            pay("charlie", 30),
        ),
        xt("alice", remark(V(6, True, amount=0), refused(unpaid, 6, "0 needs a 0 transfer"))),
        xt("alice", remark(V(6, True, amount=0), ok(6, 0)), pay("eve", 0)),
    )
    c.sub(3, status="Accepted", paid=170).sub(4, status="Accepted", paid=30).task(1, paid=300)
    c.sub(6, status="Accepted", paid=0)
    c.block(
        9, xt("alice", remark(C(0), ok(0, 100)), remark(C(1), ok(1, 0)), remark(C(2), ok(2, 10)))
    )
    c.task(0, status="Completed", refunded=100).task(1, status="Completed", refunded=0)
    c.task(2, status="Withdrawn", refunded=10)  # an accept paid 0 is still nothing paid
    return c


def close_rules() -> Case:
    c = Case(
        "close_rules",
        "Close refusals in their order and the repeat close.",
    )
    c.block(1, xt("alice", remark(T(), ok(0))))
    c.task(0, creator="alice", pays_amount=300)
    c.block(2, xt("bob", remark(A(0), ok(0))))
    c.task(0, status="InProgress", assigned=1).sub(0, task_id=0, worker="bob")
    c.block(3, xt("bob", remark(H(0, "bob", SHA_B), ok(0))))
    c.sub(0, commit_order=0)
    c.block(4, xt("bob", remark(R(0, SHA_B), ok(0))))
    c.sub(0, status="PendingValidation")
    c.block(
        5,
        xt("bob", remark(C(0), refused("NotCreator", 0))),
        xt("alice", remark(C(0), refused("PendingResults", 0))),
        xt("alice", remark(C(3), refused("UnknownTask", 3))),
    )
    c.block(6, xt("alice", remark(V(0, False, "no"), ok(0)), remark(C(0), ok(0, 300))))
    c.sub(0, status="Rejected").task(0, status="Withdrawn", refunded=300)
    c.block(
        7,
        xt("alice", remark(C(0), ok(0, 0, "a repeat"))),
        xt("bob", remark(C(0), refused("NotCreator", 0, "the creator check comes first"))),
    )
    return c


def chain_reading() -> Case:
    c = Case(
        "chain_reading",
        "Which extrinsics and calls count: signed and successful only; System.remark and "
        "remark_with_event; batch_all flattened (nested too), batch, force_batch and proxy "
        "not read; item indexes count remarks and counted transfers; chain order.",
    )
    ignored_here = "not read"
    c.block(
        1,
        xt(None, remark(T(question="unsigned"), ignored("an unsigned extrinsic"))),
        xt("alice", remark(T(question="failed"), ignored("a failed extrinsic")), success=False),
        xt("alice", remark(T(question="plain"), ok(0), "System.remark")),
        xt("alice", wrapper("Utility.batch", remark(T(question="b"), ignored(ignored_here)))),
        xt(
            "alice",
            wrapper("Utility.force_batch", remark(T(question="fb"), ignored(ignored_here))),
        ),
        xt("alice", wrapper("Proxy.proxy", remark(T(question="px"), ignored(ignored_here)))),
        xt(
            "alice",
            batch_all(
                remark(T(question="first"), ok(1)),
                batch_all(remark(T(question="nested"), ok(2))),
                remark(T(question="third"), ok(3)),
            ),
        ),
        xt("bob", pay("charlie", 5), remark(A(0), ok(0, why="item 1: after the transfer"))),
        xt(
            "charlie",
            pay("dave", 5, "Balances.transfer_allow_death"),
            remark(A(0), ok(1, why="item 0: that transfer is not counted")),
        ),
    )
    for task_id in range(4):
        c.task(task_id, creator="alice", pays_amount=300)
    c.task(0, status="InProgress", assigned=2)
    c.sub(0, task_id=0, worker="bob").sub(1, task_id=0, worker="charlie")
    c.block(3)
    c.block(
        4,
        xt("dave", remark(A(3), ok(2))),
        xt("dave", remark(A(1), ok(3, why="submission ids are global, in chain order"))),
    )
    c.task(3, status="InProgress", assigned=1).task(1, status="InProgress", assigned=1)
    c.sub(2, task_id=3, worker="dave").sub(3, task_id=1, worker="dave")
    return c


CASES = (
    lifecycle,
    statuses,
    task_rules,
    malformed,
    big_integers,
    slot_and_result_rules,
    verdict_rules,
    reputation_rules,
    close_rules,
    chain_reading,
)


def build() -> dict[str, Any]:
    return {
        "spec": "docs/chain-protocol.md",
        "about": (
            "Conformance vectors: each case is a chain replayed from start_block by a fresh "
            "reader. Accounts are named; their 32-byte public keys are in 'accounts'. Remark "
            "payloads are given as UTF-8 text ('remark') or hex ('remark_hex'); 'note' says "
            "why. After each block: 'outcomes' lists every well-formed record of the block "
            "in chain order (malformed ones have none) and 'index' the whole expected state. "
            "Amounts are decimal strings; ids are JSON numbers and go above 2^53, so read "
            "this file with an exact (BigInt-aware) JSON parser."
        ),
        "accounts": ACCOUNTS,
        "cases": [case().to_json() for case in CASES],
    }


def render() -> str:
    return _render(build(), "") + "\n"


def _render(value: Any, indent: str) -> str:
    """JSON with one line per call, outcome and row: objects holding only scalars (and short
    lists or objects) stay on one line, whatever their length."""
    flat = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    scalars = isinstance(value, dict) and not any(
        isinstance(v, dict) or (isinstance(v, list) and len(json.dumps(v)) > 40)
        for v in value.values()
    )
    if not isinstance(value, dict | list) or len(flat) <= 96 or scalars:
        return flat
    inner = indent + " "
    if isinstance(value, list):
        items = [inner + _render(item, inner) for item in value]
        return "[\n" + ",\n".join(items) + "\n" + indent + "]"
    items = [f"{inner}{json.dumps(key)}: {_render(item, inner)}" for key, item in value.items()]
    return "{\n" + ",\n".join(items) + "\n" + indent + "}"


if __name__ == "__main__":
    VECTORS.write_text(render(), encoding="utf-8")
    print(f"wrote {VECTORS}")
