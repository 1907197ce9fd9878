"""The chain layer: the remark codec (pure) and ChainClient against a real local chain.

The codec tests need no chain. The others are ``integration`` tests on chopsticks executing
the Rococo Asset Hub runtime; each uses fresh funded accounts, so they share one chain.
Run alone with ``pytest -p tests.chain_fixture tests/test_chain_client.py``.
"""

from __future__ import annotations

import functools
import json
import math
import random
from collections.abc import Callable

import pytest
from substrateinterface import Keypair

from decentralml.chain import codec
from decentralml.chain.client import (
    ChainClient,
    ChainDispatchError,
    ChainRecord,
    Receipt,
    Remark,
    Transfer,
    compact_decode,
    compact_encode,
    public_key_hex,
)
from decentralml.protocol.errors import ChainError, InsufficientBalance
from decentralml.protocol.records import TaskResult, TaskSpec, TaskType, ValidationStrategy
from tests.chain_fixture import in_one_block

SPEC = TaskSpec(
    question="Train the MNIST classifier on your shard — ünïcode ok",
    pays_amount=2**100,
    max_assignments=5,
    expiration_block=1234,
    validation_strategy=ValidationStrategy.ManualAccept,
    task_type=TaskType.ModelContributor,
    assets_path="s3://bucket/tasks/7/assets.tar.gz",
    assets_sha256="ab" * 32,
    global_weights_path="s3://bucket/tasks/7/global.safetensors",
    global_weights_sha256="cd" * 32,
    round_number=3,
)
RESULT = TaskResult(
    result_path="s3://bucket/tasks/7/results/4.safetensors",
    sha256="ef" * 32,
    num_examples=12000,
    metrics={"accuracy": 0.9731, "loss": 0.0912},
    base_fingerprint="0123abcd",
)
RECORDS: list[codec.Record] = [
    codec.TaskCreated(SPEC),
    codec.Assign(0),
    codec.Commit(4, "0f" * 32),
    codec.Result(4, RESULT),
    codec.VerdictRecord(4, True, ""),
    codec.VerdictRecord(5, False, "accuracy 0.10 < 0.50"),
    codec.Close(2**64 - 1),
]


# --- codec (no chain) ----------------------------------------------------------------------


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_codec_round_trip(record: codec.Record) -> None:
    payload = codec.encode(record)
    assert payload.startswith(b"dml2")
    payload.decode("utf-8")  # readable text in explorers
    assert codec.decode(payload) == record
    assert codec.decode(bytearray(payload)) == record


def test_codec_writes_canonical_compact_json() -> None:
    assert codec.encode(codec.Assign(7)) == b'dml2A{"task_id":7}'
    assert codec.encode(codec.Commit(3, "0f" * 32)) == (
        b'dml2H{"commitment":"' + b"0f" * 32 + b'","submission_id":3}'
    )
    assert codec.encode(codec.VerdictRecord(1, False, "é")) == (
        b'dml2V{"accept":false,"reason":"\xc3\xa9","submission_id":1}'
    )


def test_codec_accepts_any_json_spelling_of_a_valid_record() -> None:
    assert codec.decode(b'dml2A{ "task_id" : 7 }') == codec.Assign(7)


def test_codec_non_finite_metric_becomes_nan() -> None:
    result = TaskResult("p", "s", 1, {"loss": math.inf, "acc": math.nan})
    decoded = codec.decode(codec.encode(codec.Result(1, result)))
    assert isinstance(decoded, codec.Result)
    assert all(math.isnan(v) for v in decoded.result.metrics.values())


@pytest.mark.parametrize(
    "record",
    [
        codec.TaskCreated(TaskSpec("q", 2**128, 1, 10)),  # pays_amount above u128
        codec.TaskCreated(TaskSpec("q" * 5000, 1, 1, 10)),  # question too long
        codec.TaskCreated(TaskSpec("q", 1, 2**32, 10)),  # max_assignments above u32
        codec.Assign(-1),
        codec.Commit(1, "AB" * 32),  # a commitment is lower-case hex
        codec.Commit(1, "ab" * 31),
        codec.Commit(2**64, "ab" * 32),
        codec.Result(1, TaskResult("p", "s", 1, {f"m{i}": 0.0 for i in range(100)})),
    ],
)
def test_codec_refuses_to_encode_out_of_range(record: codec.Record) -> None:
    with pytest.raises(codec.CodecError):
        codec.encode(record)


def _assign_variant(body: str) -> bytes:
    return b"dml2A" + body.encode()


def _commit_variant(body: str) -> bytes:
    return b"dml2H" + body.replace("C", "ab" * 32).encode()


GARBAGE = [
    b"",
    b"dml2",
    b"dml2A",
    b"dml2A{}",
    b"hello world",
    b"\x00\xff\x01",
    b"0xdeadbeef",
    b"dml1A" + b'{"task_id":1}',  # the previous version
    b"dml3A" + b'{"task_id":1}',  # another version
    b"DML2A" + b'{"task_id":1}',
    b"dml2Z" + b'{"task_id":1}',  # unknown kind
    b"dml2A" + b'{"task_id":1',  # truncated
    b"dml2A" + b"\xff\xfe",  # not UTF-8
    _assign_variant('{"task_id":-1}'),
    _assign_variant('{"task_id":1.0}'),
    _assign_variant('{"task_id":true}'),
    _assign_variant('{"task_id":"1"}'),
    _assign_variant('{"task_id":null}'),
    _assign_variant('{"task_id":18446744073709551616}'),  # u64 + 1
    _assign_variant('{"task_id":-0}'),  # an integer is digits only, without a sign
    _assign_variant('{"task_id":0e0}'),
    _assign_variant("{" + '"task_id":' + "9" * 5000 + "}"),  # more digits than any field
    _assign_variant('{"task_id":1,"task_id":2}'),  # duplicate key
    _assign_variant('{"task_id":1,"extra":0}'),
    _assign_variant('{"task":1}'),
    _assign_variant("[1]"),
    _assign_variant('"task_id"'),
    _assign_variant("NaN"),
    _assign_variant("[" * 100_000 + "]" * 100_000),  # too large, and deeply nested
    _assign_variant("[" * 5000 + "]" * 5000),  # deeply nested within the size limit
    b"dml2V" + b'{"accept":1,"reason":"","submission_id":1}',  # int posing as bool
    b"dml2V" + b'{"accept":true,"reason":null,"submission_id":1}',
    b"dml2V" + b'{"accept":true,"reason":"\\ud800","submission_id":1}',  # a lone surrogate
    b"dml2V" + b'{"accept":true,"reason":"","submission_id":1,"value":null}',
    b"dml2V" + b'{"accept":true,"reason":"","submission_id":1,"value":1e400}',
    b"dml2R" + b'{"result":{},"submission_id":1}',
    b"dml2R" + b'{"result":[],"submission_id":1}',
    b"dml2T" + json.dumps({"question": "q"}).encode(),
    b"dml2A" + b'{"task_id":1} trailing',
    _commit_variant('{"commitment":"C"}'),  # missing submission_id
    _commit_variant('{"submission_id":1}'),  # missing commitment
    _commit_variant('{"commitment":"C","submission_id":1,"extra":0}'),
    _commit_variant('{"commitment":"C","submission_id":1,"submission_id":2}'),
    _commit_variant('{"commitment":"C","submission_id":true}'),
    _commit_variant('{"commitment":"C","submission_id":-1}'),
    _commit_variant('{"commitment":"C","submission_id":18446744073709551616}'),
    _commit_variant('{"commitment":"C","submission_id":"1"}'),
    _commit_variant('{"commitment":"' + "AB" * 32 + '","submission_id":1}'),  # upper case
    _commit_variant('{"commitment":"' + "ab" * 31 + '","submission_id":1}'),  # too short
    _commit_variant('{"commitment":"C00","submission_id":1}'),  # too long
    _commit_variant('{"commitment":"' + "zz" * 32 + '","submission_id":1}'),  # not hex
    _commit_variant('{"commitment":"0xC","submission_id":1}'),
    _commit_variant('{"commitment":null,"submission_id":1}'),
    _commit_variant('{"commitment":["C"],"submission_id":1}'),
    _commit_variant('["C",1]'),
    b"cos\nsystem\n(S'echo pwned'\ntR.",  # a pickle: data, never executed
    b"\x80\x04\x95" + b"dml2A",
]


@pytest.mark.parametrize("payload", GARBAGE, ids=range(len(GARBAGE)))
def test_codec_rejects_garbage(payload: bytes) -> None:
    assert codec.decode(payload) is None


def test_codec_counts_code_points_and_reads_integers_exactly() -> None:
    emoji = TaskSpec("\U0001f600" * 3000, 10, 1, 100)  # 6000 UTF-16 units: still 3000
    assert codec.decode(codec.encode(codec.TaskCreated(emoji))) == codec.TaskCreated(emoji)
    paired = b'dml2V{"accept":true,"reason":"' + "é".encode() * 4095 + rb'\ud83d\ude00"'
    decoded = codec.decode(paired + b',"submission_id":1}')  # an escaped pair: 1 code point
    assert isinstance(decoded, codec.VerdictRecord) and len(decoded.reason) == 4096
    assert codec.decode(b'dml2A{"task_id":9007199254740993}') == codec.Assign(2**53 + 1)


def test_codec_reads_huge_metric_literals_as_infinite() -> None:
    """A metric is a double: 400 digits or 1e400 are infinite alike (the Ledger refuses the
    result), not an error of Python's int parser."""
    body = json.loads(codec.encode(codec.Result(1, RESULT))[5:])
    for literal in ("1" + "0" * 400, "1e400", "-" + "9" * 400):
        text = json.dumps(body).replace("0.9731", literal)
        decoded = codec.decode(b"dml2R" + text.encode())
        assert isinstance(decoded, codec.Result)
        assert math.isinf(decoded.result.metrics["accuracy"])


def test_codec_rejects_bad_enum_and_metrics() -> None:
    body = json.loads(codec.encode(codec.TaskCreated(SPEC))[5:])
    for key, bad in [("validation_strategy", "YoloAccept"), ("task_type", 3)]:
        assert codec.decode(b"dml2T" + json.dumps({**body, key: bad}).encode()) is None
    result = json.loads(codec.encode(codec.Result(1, RESULT))[5:])
    result["result"]["metrics"] = {"acc": "high"}
    assert codec.decode(b"dml2R" + json.dumps(result).encode()) is None


def test_codec_never_raises_on_random_bytes() -> None:
    rng = random.Random(1234)
    valid = [codec.encode(r) for r in RECORDS]
    for _ in range(3000):
        base = bytearray(rng.choice(valid))
        for _ in range(rng.randint(1, 4)):  # flip, drop or insert a few bytes
            pos = rng.randrange(len(base))
            op = rng.randrange(3)
            if op == 0:
                base[pos] = rng.randrange(256)
            elif op == 1:
                del base[pos]
            else:
                base.insert(pos, rng.randrange(256))
        decoded = codec.decode(bytes(base))
        assert decoded is None or type(decoded) in {type(r) for r in RECORDS}
        codec.decode(bytes(rng.randrange(256) for _ in range(rng.randrange(64))))


@pytest.mark.parametrize("n", [0, 1, 63, 64, 16383, 16384, 2**30 - 1, 2**30, 2**64, 2**128 - 1])
def test_scale_compact_round_trip(n: int) -> None:
    encoded = compact_encode(n)
    assert compact_decode(encoded + b"tail") == (n, len(encoded))


# --- ChainClient on a real chain -----------------------------------------------------------


def _records_of(client: ChainClient, first: int, last: int) -> list[ChainRecord]:
    return list(client.iter_records(first, last))


@pytest.mark.integration
def test_chain_basics(chain_client: ChainClient) -> None:
    assert chain_client.genesis_hash().startswith("0x")
    assert chain_client.finalized_head_number() >= 1
    assert chain_client.existential_deposit() == 3_333_333
    alice = Keypair.create_from_uri("//Alice")
    assert chain_client.free_balance(alice.ss58_address) > 0
    # any SS58 prefix names the same account
    kusama_spelling = Keypair(public_key=alice.public_key, ss58_format=2).ss58_address
    assert chain_client.free_balance(kusama_spelling) == chain_client.free_balance(
        alice.ss58_address
    )


@pytest.mark.integration
def test_remark_batch_is_read_back_exactly(
    chain_client: ChainClient, funded_keypair: Callable[..., Keypair]
) -> None:
    signer, payee = funded_keypair(), funded_keypair()
    payloads = [codec.encode(r) for r in RECORDS] + [b"0xff", b"\xff", b"", b"plain text"]
    calls = [chain_client.remark_call(p) for p in payloads]
    calls.insert(2, chain_client.transfer_call(payee.ss58_address, 10**12))
    receipt = chain_client.submit(signer, calls)
    assert receipt.fee > 0

    records = _records_of(chain_client, receipt.block_number, receipt.block_number)
    assert [r.payload for r in records] == payloads
    assert {(r.block_number, r.extrinsic_index) for r in records} == {
        (receipt.block_number, receipt.extrinsic_index)
    }
    assert {r.signer for r in records} == {public_key_hex(signer)}
    assert [codec.decode(r.payload) for r in records[: len(RECORDS)]] == RECORDS

    (extrinsic,) = chain_client.block_extrinsics(receipt.block_number)
    assert extrinsic.items[2] == Transfer(public_key_hex(payee), 10**12)
    assert isinstance(extrinsic.items[0], Remark)
    assert chain_client.free_balance(payee.ss58_address) == 10**15 + 10**12


@pytest.mark.integration
def test_single_remark_goes_direct(
    chain_client: ChainClient, funded_keypair: Callable[..., Keypair]
) -> None:
    signer = funded_keypair()
    payload = codec.encode(codec.Assign(3))
    receipt = chain_client.submit(signer, [chain_client.remark_call(payload)])
    block = chain_client.substrate.get_block(block_hash=receipt.block_hash)
    call = block["extrinsics"][receipt.extrinsic_index].value["call"]
    assert (call["call_module"], call["call_function"]) == ("System", "remark_with_event")
    records = _records_of(chain_client, receipt.block_number, receipt.block_number)
    assert records == [
        ChainRecord(receipt.block_number, receipt.extrinsic_index, public_key_hex(signer), payload)
    ]


@pytest.mark.integration
def test_remarks_of_several_signers_in_one_block(
    chain_client: ChainClient, chain_url: str, funded_keypair: Callable[..., Keypair]
) -> None:
    """Several remark extrinsics in one block each keep their own bytes and signer (the
    decoder's shared-object trap), in submission order."""
    signers = [funded_keypair() for _ in range(3)]
    clients = [ChainClient(chain_url) for _ in signers]
    payloads = [codec.encode(codec.Assign(i)) for i in range(3)]
    calls = [c.remark_call(p) for c, p in zip(clients, payloads, strict=True)]
    for client, signer, call in zip(clients, signers, calls, strict=True):
        client.estimate_fee(signer, call)  # load metadata before the block is held
    actions = [
        functools.partial(client.submit, signer, [call])
        for client, signer, call in zip(clients, signers, calls, strict=True)
    ]
    try:
        receipts = in_one_block(chain_client, actions, join_timeout=60)
    finally:
        for client in clients:
            client.close()
    assert all(isinstance(r, Receipt) for r in receipts), receipts
    (block,) = {r.block_number for r in receipts}  # type: ignore[union-attr]
    records = _records_of(chain_client, block, block)
    assert [r.payload for r in records] == payloads
    assert [r.signer for r in records] == [public_key_hex(s) for s in signers]
    assert [r.extrinsic_index for r in records] == [r.extrinsic_index for r in receipts]  # type: ignore[union-attr]


@pytest.mark.integration
def test_failed_transfer_names_the_pallet_error(
    chain_client: ChainClient, funded_keypair: Callable[..., Keypair]
) -> None:
    signer, payee = funded_keypair(10**13), funded_keypair()
    call = chain_client.transfer_call(payee.ss58_address, 10**14)

    with pytest.raises(InsufficientBalance, match="needs"):  # pre-flight: no fee spent
        chain_client.submit(signer, [call])
    assert chain_client.free_balance(signer.ss58_address) == 10**13

    with pytest.raises(ChainError, match=r"Balances\.InsufficientBalance") as caught:
        chain_client.submit(signer, [call], preflight=False)
    assert isinstance(caught.value, InsufficientBalance)  # catchable either way
    assert isinstance(caught.value, ChainDispatchError)
    assert caught.value.error_name == "Balances.InsufficientBalance"
    assert chain_client.free_balance(payee.ss58_address) == 10**15
    assert chain_client.free_balance(signer.ss58_address) < 10**13  # the fee was charged


@pytest.mark.integration
def test_existential_deposit_failure(
    chain_client: ChainClient, funded_keypair: Callable[..., Keypair]
) -> None:
    signer = funded_keypair()
    newcomer = Keypair.create_from_mnemonic(Keypair.generate_mnemonic())
    with pytest.raises(ChainError, match="ExistentialDeposit") as caught:
        chain_client.submit(signer, [chain_client.transfer_call(newcomer.ss58_address, 1000)])
    assert not isinstance(caught.value, InsufficientBalance)


@pytest.mark.integration
def test_unfunded_signer_is_insufficient_balance(
    chain_client: ChainClient, funded_keypair: Callable[..., Keypair]
) -> None:
    pauper = funded_keypair(0)
    remark = chain_client.remark_call(b"dml2 nobody pays for me")
    with pytest.raises(InsufficientBalance, match="has 0 free"):
        chain_client.submit(pauper, [remark])
    with pytest.raises(InsufficientBalance, match="1010"):  # the pool's own refusal
        chain_client.submit(pauper, [remark], preflight=False)


@pytest.mark.integration
def test_failed_batch_all_remarks_are_not_records(
    chain_client: ChainClient, funded_keypair: Callable[..., Keypair]
) -> None:
    signer, payee = funded_keypair(10**13), funded_keypair()
    doomed = codec.encode(codec.VerdictRecord(99, True, "paid?"))
    calls = [
        chain_client.remark_call(doomed),
        chain_client.transfer_call(payee.ss58_address, 10**14),  # more than the signer has
    ]
    with pytest.raises(ChainDispatchError) as caught:
        chain_client.submit(signer, calls, preflight=False)
    failed_block = caught.value.block_number

    kept = codec.encode(codec.VerdictRecord(99, False, "retry without payment"))
    receipt = chain_client.submit(signer, [chain_client.remark_call(kept)])

    # the failed extrinsic is in the block body, with its remark ...
    body = chain_client.substrate.get_block(block_number=failed_block)["extrinsics"]
    assert "paid?" in json.dumps(body[caught.value.extrinsic_index].value, default=str)
    # ... but is not a record
    mine = [
        r.payload
        for r in chain_client.iter_records(failed_block, receipt.block_number)
        if r.signer == public_key_hex(signer)
    ]
    assert mine == [kept]


@pytest.mark.integration
def test_unreachable_chain_is_a_clear_error() -> None:
    from tests.chain_fixture import free_port

    with pytest.raises(ChainError, match="cannot connect"):
        ChainClient(f"ws://127.0.0.1:{free_port()}", connect_timeout=0.5)


@pytest.mark.integration
def test_clients_in_many_threads_decode_the_chain_without_racing(chain_url: str) -> None:
    """Regression (simulated contributors as task runs in CI): several contributors
    in one process each opened a ChainClient, and one of them failed its first read with
    'Decoder class for "Compact<u32>" not found'. scalecodec attaches the looking-up
    RuntimeConfigurationObject to its shared decoder *classes*, so two interfaces decoding
    metadata at once corrupt each other's lookups. Every client must survive that."""
    import threading

    starts = threading.Barrier(THREADS := 6)
    failures: list[BaseException] = []

    def contributor() -> None:
        try:
            starts.wait()
            with ChainClient(chain_url) as client:
                for _ in range(3):
                    assert client.finalized_head_number() >= 0
                    assert client.best_head_number() >= 0
        except BaseException as exc:  # collected and asserted below
            failures.append(exc)

    for _attempt in range(3):
        threads = [threading.Thread(target=contributor) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        starts.reset()
    assert failures == []
