"""A minimal reader of DecentralML's chain records, written from docs/chain-protocol.md alone.

It imports nothing of the project and nothing installed: an outside implementer's reader, in
Python's standard library. Each section below follows the document's section of the same
name. It replays the cases of ``vectors.json`` (decoded blocks: signer, success, call tree)
and produces, after each block, the outcomes of that block's records and the whole index.

    python tests/conformance/minimal_reader.py [vectors.json]
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# --- Reading the chain: which calls count -----------------------------------------------------

REMARK_CALLS = ("System.remark_with_event", "System.remark")
TRANSFER_CALLS = ("Balances.transfer_keep_alive", "Balances.transfer")
BATCH_ALL = "Utility.batch_all"


def counted_calls(call: dict[str, Any], accounts: dict[str, str]) -> list[tuple[Any, ...]]:
    """("remark", payload) and ("transfer", dest key, value) in item order: batch_all
    flattened, every other call (batch, force_batch, proxy, ...) left out with its inside."""
    name = call["call"]
    if name in REMARK_CALLS:
        if "remark_hex" in call:
            return [("remark", bytes.fromhex(call["remark_hex"].removeprefix("0x")))]
        return [("remark", call["remark"].encode("utf-8"))]
    if name in TRANSFER_CALLS:
        dest = call["dest"]  # an account id; another MultiAddress variant pays nobody we know
        return [("transfer", accounts[dest], int(call["value"]))] if isinstance(dest, str) else []
    if name == BATCH_ALL:
        return [item for inner in call["calls"] for item in counted_calls(inner, accounts)]
    return []


# --- Reading a payload ------------------------------------------------------------------------

KINDS = {
    "T": "TaskCreated",
    "A": "Assign",
    "H": "Commit",
    "R": "Result",
    "V": "Verdict",
    "C": "Close",
}
MAX_PAYLOAD = 16384
MAX_TEXT = 4096
MAX_METRICS = 64
U32, U64, U128 = 2**32 - 1, 2**64 - 1, 2**128 - 1


class Malformed(Exception):
    pass


class IntegerToken(str):
    """A JSON number token without fraction or exponent, kept as written."""


class FractionToken(str):
    """A JSON number token with a fraction or exponent, kept as written."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise Malformed("a duplicate key")
    return dict(pairs)


def _not_json(name: str) -> Any:
    raise Malformed(f"{name} is not JSON")


def parse_payload(payload: bytes) -> tuple[str, dict[str, Any]]:
    """(kind name, fields) of a well-formed payload; raises Malformed otherwise."""
    if not 7 <= len(payload) <= MAX_PAYLOAD:
        raise Malformed("size")
    if payload[:4] != b"dml2":
        raise Malformed("prefix")
    kind = KINDS.get(chr(payload[4]))
    if kind is None:
        raise Malformed("kind")
    try:
        text = payload[5:].decode("utf-8")
        body = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_int=IntegerToken,
            parse_float=FractionToken,
            parse_constant=_not_json,
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Malformed(str(exc)) from None
    if not isinstance(body, dict):
        raise Malformed("not an object")
    return kind, FIELDS[kind](body)


def _keys(body: dict[str, Any], required: set[str], optional: set[str] = frozenset()) -> None:
    if not required <= body.keys() <= required | optional:
        raise Malformed("keys")


def integer(value: Any, maximum: int) -> int:
    if type(value) is not IntegerToken or value.startswith("-"):
        raise Malformed("not an unsigned integer")
    number = int(value)
    if number > maximum:
        raise Malformed("out of range")
    return number


def number(value: Any) -> float:
    if type(value) not in (IntegerToken, FractionToken):
        raise Malformed("not a number")
    return float(value)  # the nearest double; inf when too large


def text(value: Any) -> str:
    if type(value) is not str or len(value) > MAX_TEXT:
        raise Malformed("not a text of at most 4096 code points")
    if any(0xD800 <= ord(char) <= 0xDFFF for char in value):
        raise Malformed("a lone surrogate")
    return value


def boolean(value: Any) -> bool:
    if type(value) is not bool:
        raise Malformed("not a bool")
    return value


def enum(value: Any, names: tuple[str, ...]) -> str:
    if type(value) is not str or value not in names:
        raise Malformed("not one of the names")
    return value


TASK_INTEGERS = {
    "pays_amount": U128,
    "max_assignments": U32,
    "expiration_block": U32,
    "round_number": U32,
}
TASK_TEXTS = (
    "question",
    "assets_path",
    "assets_sha256",
    "global_weights_path",
    "global_weights_sha256",
)
TASK_OPTIONAL = {
    "model": "",
    "epochs": 0,
    "storage_endpoint": "",
    "payment_rule": "per_result",
    "min_reputation": 0,
}
STRATEGIES = ("AutoAccept", "ManualAccept", "CustomAccept")
TASK_TYPES = ("DataAnnotators", "ModelContributor", "ModelEngineer")


def task_fields(body: dict[str, Any]) -> dict[str, Any]:
    _keys(body, {*TASK_INTEGERS, *TASK_TEXTS, "validation_strategy", "task_type"}, {*TASK_OPTIONAL})
    fields = {name: integer(body[name], bound) for name, bound in TASK_INTEGERS.items()}
    fields.update({name: text(body[name]) for name in TASK_TEXTS})
    fields["validation_strategy"] = enum(body["validation_strategy"], STRATEGIES)
    fields["task_type"] = enum(body["task_type"], TASK_TYPES)
    for name, default in TASK_OPTIONAL.items():  # absent: the default
        if name not in body:
            fields[name] = default
        elif name in ("epochs", "min_reputation"):
            fields[name] = integer(body[name], U32)
        else:
            fields[name] = text(body[name])
    return fields


def assign_fields(body: dict[str, Any]) -> dict[str, Any]:
    _keys(body, {"task_id"})
    return {"task_id": integer(body["task_id"], U64)}


close_fields = assign_fields


def commit_fields(body: dict[str, Any]) -> dict[str, Any]:
    _keys(body, {"submission_id", "commitment"})
    value = body["commitment"]
    if type(value) is not str or len(value) != 64 or set(value) - set("0123456789abcdef"):
        raise Malformed("not a commitment")
    return {"submission_id": integer(body["submission_id"], U64), "commitment": value}


def result_fields(body: dict[str, Any]) -> dict[str, Any]:
    _keys(body, {"submission_id", "result"})
    result = body["result"]
    if not isinstance(result, dict):
        raise Malformed("result is not an object")
    _keys(result, {"result_path", "sha256", "num_examples", "metrics", "base_fingerprint"})
    metrics = result["metrics"]
    if not isinstance(metrics, dict) or len(metrics) > MAX_METRICS:
        raise Malformed("metrics")
    return {
        "submission_id": integer(body["submission_id"], U64),
        "result": {
            "result_path": text(result["result_path"]),
            "sha256": text(result["sha256"]),
            "num_examples": integer(result["num_examples"], U64),
            "metrics": {
                text(name): math.nan if value is None else number(value)
                for name, value in metrics.items()
            },
            "base_fingerprint": text(result["base_fingerprint"]),
        },
    }


def verdict_fields(body: dict[str, Any]) -> dict[str, Any]:
    _keys(body, {"submission_id", "accept", "reason"}, {"amount", "value"})
    fields = {
        "submission_id": integer(body["submission_id"], U64),
        "accept": boolean(body["accept"]),
        "reason": text(body["reason"]),
        "amount": integer(body["amount"], U128) if "amount" in body else None,
    }
    if "value" in body and not math.isfinite(number(body["value"])):
        raise Malformed("value is not finite")
    return fields


FIELDS = {
    "TaskCreated": task_fields,
    "Assign": assign_fields,
    "Commit": commit_fields,
    "Result": result_fields,
    "Verdict": verdict_fields,
    "Close": close_fields,
}


# --- Statuses, Applying records ---------------------------------------------------------------

REFUSALS = (
    "InvalidTaskSpec",
    "UnknownTask",
    "UnknownSubmission",
    "TaskNotOpen",
    "AlreadyAssigned",
    "TooLittleReputation",
    "TaskFull",
    "NotAssignee",
    "ResultAlreadySent",
    "AlreadyCommitted",
    "NotCommitted",
    "InvalidResult",
    "NotCreator",
    "NoResultYet",
    "VerdictAlreadyGiven",
    "InvalidAmount",
    "UnpaidAccept",
    "PendingResults",
)
MAX_ID = 2**63 - 1
WHITE_SPACE = frozenset(
    [
        *"\t\n\v\f\r \x85\xa0\u1680",
        *map(chr, range(0x2000, 0x200B)),
        *"\u2028\u2029\u202f\u205f\u3000",
    ]
)
ENDPOINT = re.compile(r"(?i:https?)://([^/?#]*)(?:[/?#].*)?", re.DOTALL)
UNFINISHED = ("Created", "InProgress")


class Refused(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class Repeat(Exception):
    """The very same action again: applied, nothing changes. Carries the outcome's id."""

    def __init__(self, entity_id: int) -> None:
        super().__init__(entity_id)
        self.entity_id = entity_id


@dataclass
class Task:
    creator: str
    fields: dict[str, Any]
    status: str = "Created"
    assigned: int = 0
    paid: int = 0
    refunded: int = 0


@dataclass
class Submission:
    task_id: int
    worker: str
    status: str = "Assigned"
    commitment: str | None = None
    commit_order: int | None = None
    result: dict[str, Any] | None = None
    paid: int = 0


@dataclass
class Index:
    tasks: list[Task] = field(default_factory=list)
    submissions: list[Submission] = field(default_factory=list)
    commits: int = 0

    # expiry

    def finish(self, task: Task) -> int:
        task.status = "Completed" if task.paid > 0 else "Withdrawn"
        task.refunded = task.fields["pays_amount"] - task.paid
        return task.refunded

    def expire(self, block: int) -> None:
        for task_id, task in enumerate(self.tasks):
            if (
                task.status in UNFINISHED
                and task.fields["expiration_block"] <= block
                and not any(
                    s.task_id == task_id and s.status == "PendingValidation"
                    for s in self.submissions
                )
            ):
                self.finish(task)

    # lookups

    def task(self, task_id: int) -> Task:
        if task_id > MAX_ID or task_id >= len(self.tasks):
            raise Refused("UnknownTask")
        return self.tasks[task_id]

    def submission(self, submission_id: int) -> Submission:
        if submission_id > MAX_ID or submission_id >= len(self.submissions):
            raise Refused("UnknownSubmission")
        return self.submissions[submission_id]

    @staticmethod
    def open(task: Task, block: int) -> None:
        if task.status not in UNFINISHED or block >= task.fields["expiration_block"]:
            raise Refused("TaskNotOpen")

    # records: each returns (id, amount) when applied

    def task_created(self, signer: str, fields: dict[str, Any], block: int) -> tuple[int, int]:
        for task_id, task in enumerate(self.tasks):
            if task.creator == signer and task.status in UNFINISHED and task.fields == fields:
                raise Repeat(task_id)
        pays, slots = fields["pays_amount"], fields["max_assignments"]
        endpoint = fields["storage_endpoint"]
        if (
            pays < 1
            or slots < 1
            or pays < slots
            or fields["expiration_block"] <= block
            or all(char in WHITE_SPACE for char in fields["question"])
            or (endpoint and not is_endpoint(endpoint))
            or fields["payment_rule"] not in ("per_result", "value")
        ):
            raise Refused("InvalidTaskSpec")
        self.tasks.append(Task(signer, fields))
        return len(self.tasks) - 1, 0

    def assign(self, signer: str, fields: dict[str, Any], block: int) -> tuple[int, int]:
        task_id = fields["task_id"]
        task = self.task(task_id)
        self.open(task, block)
        if any(s.task_id == task_id and s.worker == signer for s in self.submissions):
            raise Refused("AlreadyAssigned")
        needed = task.fields["min_reputation"]
        if needed and self.reputation(signer) < needed:
            raise Refused("TooLittleReputation")
        if task.assigned >= task.fields["max_assignments"]:
            raise Refused("TaskFull")
        self.submissions.append(Submission(task_id, signer))
        task.assigned += 1
        task.status = "InProgress"
        return len(self.submissions) - 1, 0

    def reputation(self, signer: str) -> int:
        """Accepted on another account's task, less rejected (the spec's reputation score)."""
        score = 0
        for sub in self.submissions:
            if sub.worker != signer:
                continue
            if sub.status == "Rejected":
                score -= 1
            elif sub.status == "Accepted" and self.tasks[sub.task_id].creator != signer:
                score += 1
        return score

    def commit(self, signer: str, fields: dict[str, Any], block: int) -> tuple[int, int]:
        sid = fields["submission_id"]
        sub = self.submission(sid)
        if sub.worker != signer:
            raise Refused("NotAssignee")
        if sub.status != "Assigned":
            raise Refused("ResultAlreadySent")
        if sub.commitment is not None:
            if sub.commitment == fields["commitment"]:
                raise Repeat(sid)
            raise Refused("AlreadyCommitted")
        self.open(self.tasks[sub.task_id], block)
        sub.commitment, sub.commit_order = fields["commitment"], self.commits
        self.commits += 1
        return sid, 0

    def result(self, signer: str, fields: dict[str, Any], block: int) -> tuple[int, int]:
        sid, result = fields["submission_id"], fields["result"]
        if not 1 <= result["num_examples"] <= MAX_ID or not all(
            math.isfinite(value) for value in result["metrics"].values()
        ):
            raise Refused("InvalidResult")
        sub = self.submission(sid)
        if sub.result == result and sub.worker == signer:
            raise Repeat(sid)
        if sub.worker != signer:
            raise Refused("NotAssignee")
        if sub.status != "Assigned":
            raise Refused("ResultAlreadySent")
        if sub.commitment is None:
            raise Refused("NotCommitted")
        digest = result["sha256"]
        if not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            raise Refused("InvalidResult")
        if commitment(signer, digest) != sub.commitment:
            raise Refused("InvalidResult")
        self.open(self.tasks[sub.task_id], block)
        sub.result, sub.status = result, "PendingValidation"
        return sid, 0

    def verdict(
        self, signer: str, fields: dict[str, Any], payments: list[list[Any]]
    ) -> tuple[int, int]:
        sid = fields["submission_id"]
        sub = self.submission(sid)
        task = self.tasks[sub.task_id]
        if task.creator != signer:
            raise Refused("NotCreator")
        if sub.status == "Assigned":
            raise Refused("NoResultYet")
        if sub.status in ("Accepted", "Rejected"):
            if (sub.status == "Accepted") == fields["accept"]:
                raise Repeat(sid)
            raise Refused("VerdictAlreadyGiven")
        if not fields["accept"]:
            sub.status = "Rejected"
            return sid, 0
        amount = accept_amount(task, fields["amount"])
        for payment in payments:  # [dest key, value, used]
            if not payment[2] and payment[0] == sub.worker and payment[1] == amount:
                payment[2] = True
                break
        else:
            raise Refused("UnpaidAccept")
        sub.status, sub.paid = "Accepted", amount
        task.paid += amount
        return sid, amount

    def close(self, signer: str, fields: dict[str, Any]) -> tuple[int, int]:
        task_id = fields["task_id"]
        task = self.task(task_id)
        if task.creator != signer:
            raise Refused("NotCreator")
        if task.status not in UNFINISHED:
            raise Repeat(task_id)
        if any(s.task_id == task_id and s.status == "PendingValidation" for s in self.submissions):
            raise Refused("PendingResults")
        return task_id, self.finish(task)


def is_endpoint(value: str) -> bool:
    match = ENDPOINT.fullmatch(value)
    if match is None:
        return False
    authority = match.group(1)
    return (
        authority != ""
        and not authority.startswith(":")
        and "@" not in authority
        and not any(ord(c) <= 0x20 or 0x7F <= ord(c) <= 0x9F for c in authority)
    )


def accept_amount(task: Task, amount: int | None) -> int:
    pays, slots = task.fields["pays_amount"], task.fields["max_assignments"]
    share = pays // slots
    left = pays - task.paid
    if task.fields["payment_rule"] == "per_result":
        if amount is not None and amount != share:
            raise Refused("InvalidAmount")
        return share
    if amount is None:
        return min(share, left)
    if amount > left:
        raise Refused("InvalidAmount")
    return amount


def commitment(signer: str, sha256: str) -> str:
    key = bytes.fromhex(signer.removeprefix("0x"))
    return hashlib.sha256(b"decentralml-commit-v1" + key + bytes.fromhex(sha256)).hexdigest()


def target_id(kind: str, fields: dict[str, Any]) -> int | None:
    """The id a refused record names (none for TaskCreated)."""
    if kind in ("Assign", "Close"):
        return fields["task_id"]
    if kind == "TaskCreated":
        return None
    return fields["submission_id"]


# --- replaying a case of the vectors ------------------------------------------------------------


def apply_extrinsic(
    index: Index, block: int, extrinsic: dict[str, Any], accounts: dict[str, str]
) -> list[dict[str, Any]]:
    if extrinsic["signer"] is None or not extrinsic["success"]:
        return []
    signer = accounts[extrinsic["signer"]]
    items = counted_calls(extrinsic["call"], accounts)
    payments = [[item[1], item[2], False] for item in items if item[0] == "transfer"]
    outcomes = []
    for item_index, item in enumerate(items):
        if item[0] != "remark":
            continue
        try:
            kind, fields = parse_payload(item[1])
        except Malformed:
            continue
        index.expire(block)
        outcome = {
            "position": [block, extrinsic["index"], item_index],
            "kind": kind,
            "signer": extrinsic["signer"],
        }
        try:
            entity_id, amount = apply_record(index, kind, signer, fields, block, payments)
            outcome.update(applied=True, id=entity_id, amount=str(amount))
        except Repeat as repeat:
            outcome.update(applied=True, id=repeat.entity_id, amount="0")
        except Refused as refusal:
            outcome.update(applied=False, id=target_id(kind, fields), amount="0")
            outcome["refusal"] = refusal.name
        index.expire(block)
        outcomes.append(outcome)
    return outcomes


def apply_record(
    index: Index,
    kind: str,
    signer: str,
    fields: dict[str, Any],
    block: int,
    payments: list[list[Any]],
) -> tuple[int, int]:
    if kind == "TaskCreated":
        return index.task_created(signer, fields, block)
    if kind == "Assign":
        return index.assign(signer, fields, block)
    if kind == "Commit":
        return index.commit(signer, fields, block)
    if kind == "Result":
        return index.result(signer, fields, block)
    if kind == "Verdict":
        return index.verdict(signer, fields, payments)
    return index.close(signer, fields)


def snapshot(index: Index, names: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    return {
        "tasks": [
            {
                "id": task_id,
                "creator": names[t.creator],
                "pays_amount": str(t.fields["pays_amount"]),
                "status": t.status,
                "assigned": t.assigned,
                "paid": str(t.paid),
                "refunded": str(t.refunded),
            }
            for task_id, t in enumerate(index.tasks)
        ],
        "submissions": [
            {
                "id": sid,
                "task_id": s.task_id,
                "worker": names[s.worker],
                "status": s.status,
                "commit_order": s.commit_order,
                "paid": str(s.paid),
            }
            for sid, s in enumerate(index.submissions)
        ],
    }


def replay_case(case: dict[str, Any], accounts: dict[str, str]) -> list[dict[str, Any]]:
    """After each block of the case: its number, its records' outcomes and the index."""
    names = {key: name for name, key in accounts.items()}
    index = Index()
    replayed = []
    for block in case["blocks"]:
        number = block["number"]
        outcomes = [
            outcome
            for extrinsic in block["extrinsics"]
            for outcome in apply_extrinsic(index, number, extrinsic, accounts)
        ]
        index.expire(number)  # the index as of this block
        replayed.append({"number": number, "outcomes": outcomes, "index": snapshot(index, names)})
    return replayed


def main(path: str) -> int:
    vectors = json.loads(Path(path).read_text(encoding="utf-8"))
    failed = 0
    for case in vectors["cases"]:
        replayed = replay_case(case, vectors["accounts"])
        for want, got in zip(case["blocks"], replayed, strict=True):
            if {k: want[k] for k in got} != got:
                print(f"FAIL {case['name']} block {want['number']}")
                failed += 1
                break
        else:
            print(f"ok   {case['name']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(
        main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).with_name("vectors.json")))
    )
