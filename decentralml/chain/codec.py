"""Marketplace records as ``System.remark_with_event`` payloads, and back.

The chain has no marketplace pallet, so every marketplace action is a remark whose bytes say
what happened; an indexer replays them in chain order through the marketplace rules
(docs/chain-protocol.md). The encoding, version 2::

    payload := b"dml2" kind body
    kind    := one ASCII byte: b"T" TaskCreated, b"A" Assign, b"H" Commit, b"R" Result,
               b"V" Verdict, b"C" Close
    body    := one JSON object in UTF-8 with exactly the fields of that kind (below)

    T  {"assets_path": str, "assets_sha256": str, "expiration_block": u32,
        "global_weights_path": str, "global_weights_sha256": str, "max_assignments": u32,
        "pays_amount": u128, "question": str, "round_number": u32,
        "task_type": "DataAnnotators"|"ModelContributor"|"ModelEngineer",
        "validation_strategy": "AutoAccept"|"ManualAccept"|"CustomAccept",
        optional: "model": str, "epochs": u32, "storage_endpoint": str,
                  "payment_rule": str, "min_reputation": u32}
    A  {"task_id": u64}
    H  {"commitment": str (64 lowercase hex), "submission_id": u64}
    R  {"result": {"base_fingerprint": str, "metrics": {str: float|null}, "num_examples": u64,
                   "result_path": str, "sha256": str},
        "submission_id": u64}
    V  {"accept": bool, "reason": str, "submission_id": u64,
        optional: "amount": u128, "value": finite number}
    C  {"task_id": u64}

Why this shape: the whole payload is valid UTF-8, so explorers (polkadot.js) show a remark as
readable text, and any language can produce it with a JSON library. The encoder writes the
canonical form (sorted keys, no spaces, no NaN; a non-finite metric is written as null and read
back as NaN). The decoder accepts any JSON object with exactly the listed keys and types, as
docs/chain-protocol.md ("Reading a payload") defines them for readers in any language: an
integer is digits only (no fraction, exponent or sign: ``1.0``, ``1e0``, ``-0`` and ``true``
are not integers) and is read exactly up to its field's width (ids u64, amounts u128, above a
JavaScript Number's 2^53); a text is at most 4096 code points, without lone surrogates. A
foreign, truncated or hostile remark decodes to ``None`` and is never evaluated (no eval, no
pickle; duplicate keys, unknown keys, bools posing as ints and out-of-range numbers are all
refused). An incompatible change gets a new prefix: version 2 (``b"dml2"``) added the Commit
record, and a Result now counts only after its submission's commitment (commit-reveal,
decentralml.protocol.commitment), so version 1 records are not read.

The optional TaskCreated keys came after version 2 was live: a writer leaves out a field at
its default ("" or 0), so records written before them (or without them) decode as they did,
with those defaults, and their encoding is unchanged.

Ids are not in the TaskCreated/Assign records: like the pallet's counters, a task id is the
0-based position of the record among ACCEPTED TaskCreated records in chain order (block number,
extrinsic index, call index inside a batch), and a submission id the position among accepted
Assign records. The indexer derives them by replaying; a writer learns its id by reading back
the outcome of its own record.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from decentralml.protocol.commitment import is_commitment
from decentralml.protocol.records import TaskResult, TaskSpec, TaskType, ValidationStrategy

PREFIX = b"dml2"
"""Magic and version of every payload; remarks without it are not ours and are ignored."""

MAX_PAYLOAD_BYTES = 16 * 1024
"""Larger remarks are refused both ways: they cost fees and no valid record needs that much."""

MAX_TEXT_CHARS = 4096
"""The longest text, in Unicode code points (not UTF-16 units, not bytes)."""
MAX_METRICS = 64
"""The most metrics a result may carry."""
U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
U128_MAX = 2**128 - 1


class CodecError(ValueError):
    """A record cannot be encoded (a value is out of range or too long); nothing was sent."""


@dataclass(frozen=True)
class TaskCreated:
    spec: TaskSpec


@dataclass(frozen=True)
class Assign:
    task_id: int


@dataclass(frozen=True)
class Commit:
    """The assignee's commitment to its result, written before the result is uploaded."""

    submission_id: int
    commitment: str


@dataclass(frozen=True)
class Result:
    submission_id: int
    result: TaskResult


@dataclass(frozen=True)
class VerdictRecord:
    """A creator's decision; named apart from ``domain.Verdict`` which it carries on chain."""

    submission_id: int
    accept: bool
    reason: str
    amount: int | None = None
    """What the accept pays (a ``value`` task); absent: the task's fixed share."""
    value: float | None = None
    """The result's measured value, when the creator measured it."""


@dataclass(frozen=True)
class Close:
    task_id: int


Record = TaskCreated | Assign | Commit | Result | VerdictRecord | Close

_KIND_OF: dict[type, bytes] = {
    TaskCreated: b"T",
    Assign: b"A",
    Commit: b"H",
    Result: b"R",
    VerdictRecord: b"V",
    Close: b"C",
}

_SPEC_INT_BOUNDS: dict[str, int] = {
    "pays_amount": U128_MAX,
    "max_assignments": U32_MAX,
    "expiration_block": U32_MAX,
    "round_number": U32_MAX,
}
_SPEC_TEXT_FIELDS = (
    "question",
    "assets_path",
    "assets_sha256",
    "global_weights_path",
    "global_weights_sha256",
)
_SPEC_KEYS = frozenset({*_SPEC_INT_BOUNDS, *_SPEC_TEXT_FIELDS, "validation_strategy", "task_type"})
_SPEC_OPTIONAL: dict[str, int | None] = {
    "model": None,
    "epochs": U32_MAX,
    "storage_endpoint": None,
    "payment_rule": None,
    "min_reputation": U32_MAX,
}
"""Added later, written only when not at their default: name -> u32 bound, None for a text."""
_RESULT_KEYS = frozenset({"result_path", "sha256", "num_examples", "metrics", "base_fingerprint"})


# --- encoding -------------------------------------------------------------------------------


def encode(record: Record) -> bytes:
    """The remark payload for ``record``; raises CodecError if a value cannot be represented."""
    kind = _KIND_OF.get(type(record))
    if kind is None:
        raise CodecError(f"not a chain record: {type(record).__name__}")
    try:
        payload = PREFIX + kind + _canonical_json(_body_of(record))
    except (TypeError, ValueError) as exc:
        raise CodecError(f"record cannot be encoded as JSON: {exc}") from None
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise CodecError(
            f"record is {len(payload)} bytes, the limit is {MAX_PAYLOAD_BYTES}: "
            "shorten the question, paths or metrics"
        )
    if decode(payload) is None:  # a value out of range: refuse here, not silently on replay
        raise CodecError(f"record has a value out of range or too long: {record!r}")
    return payload


def _body_of(record: Record) -> dict[str, Any]:
    if isinstance(record, TaskCreated):
        return _spec_body(record.spec)
    if isinstance(record, Assign):
        return {"task_id": record.task_id}
    if isinstance(record, Commit):
        return {"submission_id": record.submission_id, "commitment": record.commitment}
    if isinstance(record, Result):
        return {"submission_id": record.submission_id, "result": _result_body(record.result)}
    if isinstance(record, VerdictRecord):
        body = {
            "submission_id": record.submission_id,
            "accept": record.accept,
            "reason": record.reason,
        }
        if record.amount is not None:
            body["amount"] = record.amount
        if record.value is not None:
            if not math.isfinite(record.value):
                raise ValueError(f"a value must be finite, got {record.value}")
            body["value"] = float(record.value)
        return body
    return {"task_id": record.task_id}


def _spec_body(spec: TaskSpec) -> dict[str, Any]:
    body: dict[str, Any] = {name: getattr(spec, name) for name in _SPEC_INT_BOUNDS}
    body.update({name: getattr(spec, name) for name in _SPEC_TEXT_FIELDS})
    body["validation_strategy"] = ValidationStrategy(spec.validation_strategy).value
    body["task_type"] = TaskType(spec.task_type).value
    body.update(
        {
            name: getattr(spec, name)
            for name in _SPEC_OPTIONAL
            if getattr(spec, name) and getattr(spec, name) != _SPEC_DEFAULTS.get(name)
        }
    )
    return body


_SPEC_DEFAULTS = {"payment_rule": TaskSpec.payment_rule}
"""Optional keys whose default is not empty: left out at that default too."""


def _result_body(result: TaskResult) -> dict[str, Any]:
    body = result.to_json_dict()
    # JSON has no NaN/Infinity: a diverged training run reports null rather than failing.
    body["metrics"] = {
        str(k): (float(v) if math.isfinite(float(v)) else None) for k, v in body["metrics"].items()
    }
    return body


def _canonical_json(body: dict[str, Any]) -> bytes:
    text = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")


# --- decoding -------------------------------------------------------------------------------


class _Refused(Exception):
    """Internal: the payload is not a valid record."""


def decode(payload: bytes | bytearray) -> Record | None:
    """The record in a remark payload, or None for anything that is not a valid v2 record.

    Never raises: remarks are written by anyone, so garbage is expected input."""
    try:
        return _decode(bytes(payload))
    except (_Refused, ValueError, TypeError, KeyError, RecursionError, OverflowError):
        return None


def _decode(payload: bytes) -> Record:
    if len(payload) > MAX_PAYLOAD_BYTES or len(payload) < len(PREFIX) + 3:
        raise _Refused
    if not payload.startswith(PREFIX):
        raise _Refused
    kind = payload[len(PREFIX) : len(PREFIX) + 1]
    body = json.loads(
        payload[len(PREFIX) + 1 :].decode("utf-8"),
        object_pairs_hook=_no_duplicate_keys,
        parse_int=_integer_literal,
        parse_constant=_refuse_constant,
    )
    if not isinstance(body, dict):
        raise _Refused
    parser = _PARSERS.get(kind)
    if parser is None:
        raise _Refused
    return parser(body)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Two parsers could disagree on which duplicate wins: refuse the ambiguity instead."""
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _Refused
    return result


_MAX_INTEGER_DIGITS = len(str(U128_MAX))


def _integer_literal(text: str) -> int | float:
    """A JSON number without fraction or exponent. Integer fields are unsigned, written as
    digits only: a literal with a minus sign (even ``-0``) or with more digits than any field
    can hold is read as a double, which only the number fields (metrics, a verdict's value)
    take. So ``-0`` is not an integer here, and a 5000-digit literal is not Python's
    int-from-string error but a double (infinite), as every other reader sees it."""
    if text.startswith("-") or len(text) > _MAX_INTEGER_DIGITS:
        return float(text)
    return int(text)


def _refuse_constant(name: str) -> Any:
    raise _Refused  # NaN, Infinity, -Infinity are not JSON


def _keys(body: dict[str, Any], expected: frozenset[str]) -> None:
    if body.keys() != expected:
        raise _Refused


def _uint(value: Any, maximum: int) -> int:
    if type(value) is not int or not 0 <= value <= maximum:  # bool is not an int here
        raise _Refused
    return value


def _text(value: Any) -> str:
    """A JSON string of at most MAX_TEXT_CHARS code points (Python's len; a JavaScript reader
    counts ``[...text].length``, not ``text.length``). A lone surrogate (a ``\\ud800`` escape
    without its pair) is not text: some readers' JSON parsers refuse it, so all refuse it."""
    if type(value) is not str or len(value) > MAX_TEXT_CHARS:
        raise _Refused
    value.encode("utf-8")  # UnicodeEncodeError (a ValueError) on a lone surrogate
    return value


def _parse_task_created(body: dict[str, Any]) -> TaskCreated:
    if not _SPEC_KEYS <= body.keys() <= _SPEC_KEYS | _SPEC_OPTIONAL.keys():
        raise _Refused
    ints = {name: _uint(body[name], bound) for name, bound in _SPEC_INT_BOUNDS.items()}
    texts = {name: _text(body[name]) for name in _SPEC_TEXT_FIELDS}
    optional = {
        name: _text(body[name]) if bound is None else _uint(body[name], bound)
        for name, bound in _SPEC_OPTIONAL.items()
        if name in body
    }
    spec = TaskSpec(
        validation_strategy=ValidationStrategy(_text(body["validation_strategy"])),
        task_type=TaskType(_text(body["task_type"])),
        **ints,
        **texts,
        **optional,
    )
    return TaskCreated(spec)


def _parse_assign(body: dict[str, Any]) -> Assign:
    _keys(body, frozenset({"task_id"}))
    return Assign(_uint(body["task_id"], U64_MAX))


def _parse_close(body: dict[str, Any]) -> Close:
    _keys(body, frozenset({"task_id"}))
    return Close(_uint(body["task_id"], U64_MAX))


def _parse_commit(body: dict[str, Any]) -> Commit:
    _keys(body, frozenset({"submission_id", "commitment"}))
    commitment = body["commitment"]
    if not is_commitment(commitment):
        raise _Refused
    return Commit(_uint(body["submission_id"], U64_MAX), commitment)


def _parse_result(body: dict[str, Any]) -> Result:
    _keys(body, frozenset({"submission_id", "result"}))
    raw = body["result"]
    if not isinstance(raw, dict):
        raise _Refused
    _keys(raw, _RESULT_KEYS)
    result = TaskResult(
        result_path=_text(raw["result_path"]),
        sha256=_text(raw["sha256"]),
        num_examples=_uint(raw["num_examples"], U64_MAX),
        metrics=_metrics(raw["metrics"]),
        base_fingerprint=_text(raw["base_fingerprint"]),
    )
    return Result(_uint(body["submission_id"], U64_MAX), result)


def _metrics(value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or len(value) > MAX_METRICS:
        raise _Refused
    metrics: dict[str, float] = {}
    for name, number in value.items():
        if number is None:
            metrics[_text(name)] = math.nan
        elif type(number) in (int, float):
            metrics[_text(name)] = float(number)
        else:
            raise _Refused
    return metrics


_VERDICT_KEYS = frozenset({"submission_id", "accept", "reason"})
_VERDICT_OPTIONAL = frozenset({"amount", "value"})


def _parse_verdict(body: dict[str, Any]) -> VerdictRecord:
    if not _VERDICT_KEYS <= body.keys() <= _VERDICT_KEYS | _VERDICT_OPTIONAL:
        raise _Refused
    if type(body["accept"]) is not bool:
        raise _Refused
    value = body.get("value")
    if "value" in body and (type(value) not in (int, float) or not math.isfinite(value)):
        raise _Refused  # null is not a number: leave the key out instead
    return VerdictRecord(
        submission_id=_uint(body["submission_id"], U64_MAX),
        accept=body["accept"],
        reason=_text(body["reason"]),
        amount=_uint(body["amount"], U128_MAX) if "amount" in body else None,
        value=float(value) if value is not None else None,
    )


_PARSERS = {
    b"T": _parse_task_created,
    b"A": _parse_assign,
    b"H": _parse_commit,
    b"R": _parse_result,
    b"V": _parse_verdict,
    b"C": _parse_close,
}
