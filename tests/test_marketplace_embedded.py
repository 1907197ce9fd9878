"""The marketplace rules, checked on a real SQLite file (no mocks), through EmbeddedMarketplace.

The clock is frozen (one block per 10^9 s) so blocks move only by ``advance_blocks``: every
expiry case is deterministic. Balances are asserted exactly, so a rule that pays twice, pays
the wrong amount or forgets a refund fails here.
"""

from __future__ import annotations

import multiprocessing
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from substrateinterface import Keypair

from decentralml.accounts import (
    InvalidAddress,
    canonical_address,
    contributor_dev_keypair,
    dev_keypair,
    keypair_from_env,
    keypair_from_uri,
    public_key_of,
    same_account,
)
from decentralml.commitment import result_commitment
from decentralml.domain import (
    ResultSubmissionStatus,
    TaskResult,
    TaskSpec,
    TaskStatus,
    TaskType,
    ValidationStrategy,
    Verdict,
)
from decentralml.errors import (
    AlreadyAssigned,
    AlreadyCommitted,
    ConfigError,
    InsufficientBalance,
    InvalidResult,
    InvalidTaskSpec,
    MarketplaceError,
    NoResultYet,
    NotAssignee,
    NotCommitted,
    NotCreator,
    PendingResults,
    ResultAlreadySent,
    TaskFull,
    TaskNotOpen,
    UnknownSubmission,
    UnknownTask,
    VerdictAlreadyGiven,
)
from decentralml.marketplace import Marketplace
from decentralml.marketplace.embedded import EmbeddedMarketplace
from decentralml.marketplace.ledger import Ledger
from tests.helpers import commit_and_send

FROZEN = 1e9  # seconds per block: the wall clock never reaches block 1 during a test
ALICE = dev_keypair("Alice")
BOB, CHARLIE, DAVE, EVE, FERDIE = (contributor_dev_keypair(i) for i in range(5))
START = 1_000


def spec(pays: int = 300, slots: int = 3, expires: int = 100, **extra: Any) -> TaskSpec:
    return TaskSpec(
        question="train the MNIST model on your shard",
        pays_amount=pays,
        max_assignments=slots,
        expiration_block=expires,
        **extra,
    )


def result(name: str = "r", accuracy: float = 0.9) -> TaskResult:
    return TaskResult(
        result_path=f"memory://tasks/0/results/{name}.safetensors",
        sha256="ab" * 32,
        num_examples=600,
        metrics={"accuracy": accuracy, "loss": 0.25},
        base_fingerprint="fp",
    )


def commitment_of(worker: Keypair, sha256: str = "ab" * 32) -> str:
    """The worker's commitment to a result with this digest (``result()``'s by default)."""
    return result_commitment(worker.ss58_address, sha256)


def reencoded(keypair: Keypair, ss58_format: int) -> Keypair:
    """The same key, spelled with another SS58 prefix."""
    return Keypair(public_key=keypair.public_key, ss58_format=ss58_format)


def dump(path: Path) -> list[str]:
    conn = sqlite3.connect(str(path))
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


@pytest.fixture
def market(tmp_path: Path) -> EmbeddedMarketplace:
    m = EmbeddedMarketplace(tmp_path / "market.db", block_time_seconds=FROZEN)
    m.fund(ALICE.ss58_address, START)
    return m


def with_results(market: EmbeddedMarketplace, *workers: Keypair, **kw: Any) -> list[int]:
    """A task by Alice (id 0 when first) with one result from each worker; the submission ids."""
    task_id = market.create_task(ALICE, spec(**kw))
    ids = []
    for worker in workers:
        sid = market.assign_task(worker, task_id)
        commit_and_send(market, worker, sid, result(str(sid)))
        ids.append(sid)
    return ids


# --- accounts ---------------------------------------------------------------------------------


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


# --- create_task --------------------------------------------------------------------------------


def test_ids_start_at_zero_and_escrow_is_taken(market: EmbeddedMarketplace) -> None:
    assert market.create_task(ALICE, spec(pays=300)) == 0
    assert market.create_task(ALICE, spec(pays=200)) == 1
    assert market.balance(ALICE.ss58_address) == START - 500
    assert market.escrow_total() == 500
    assert market.assign_task(BOB, 1) == 0
    assert market.assign_task(BOB, 0) == 1  # submission ids are global


def test_full_spec_is_stored(market: EmbeddedMarketplace) -> None:
    full = spec(
        validation_strategy=ValidationStrategy.ManualAccept,
        task_type=TaskType.ModelContributor,
        assets_path="s3://bucket/tasks/0/assets.tar.gz",
        assets_sha256="cd" * 32,
        global_weights_path="s3://bucket/tasks/0/global.safetensors",
        global_weights_sha256="ef" * 32,
        round_number=4,
    )
    task = market.get_task(market.create_task(ALICE, full))
    assert task.spec == full
    assert task.creator == ALICE.ss58_address
    assert task.status is TaskStatus.Created
    assert (task.assigned, task.paid, task.refunded, task.created_block) == (0, 0, 0, 0)


def test_no_credentials_in_schema(market: EmbeddedMarketplace) -> None:
    text = "\n".join(dump(market.path)).lower()
    assert "credential" not in text and "secret" not in text


@pytest.mark.parametrize(
    "bad",
    [
        spec(pays=0),
        spec(pays=-5),
        spec(slots=0),
        spec(pays=2, slots=3),
        spec(expires=0),
        TaskSpec(question="   ", pays_amount=300, max_assignments=3, expiration_block=100),
    ],
)
def test_invalid_spec_refused(market: EmbeddedMarketplace, bad: TaskSpec) -> None:
    with pytest.raises(InvalidTaskSpec):
        market.create_task(ALICE, bad)
    assert market.balance(ALICE.ss58_address) == START
    assert market.list_tasks(open_only=False) == []


def test_expiration_must_be_after_current_block(market: EmbeddedMarketplace) -> None:
    market.advance_blocks(10)
    with pytest.raises(InvalidTaskSpec):
        market.create_task(ALICE, spec(expires=10))
    assert market.create_task(ALICE, spec(expires=11)) == 0


def test_insufficient_balance(market: EmbeddedMarketplace) -> None:
    with pytest.raises(InsufficientBalance):
        market.create_task(ALICE, spec(pays=START + 1))
    with pytest.raises(InsufficientBalance):
        market.create_task(BOB, spec(pays=3))
    assert market.balance(ALICE.ss58_address) == START
    assert market.create_task(ALICE, spec(pays=START)) == 0
    assert market.balance(ALICE.ss58_address) == 0


# --- assign_task --------------------------------------------------------------------------------


def test_over_assignment_refused(market: EmbeddedMarketplace) -> None:
    task_id = market.create_task(ALICE, spec(slots=3))
    ids = [market.assign_task(worker, task_id) for worker in (BOB, CHARLIE, DAVE)]
    assert ids == [0, 1, 2]
    with pytest.raises(TaskFull):
        market.assign_task(EVE, task_id)
    task = market.get_task(task_id)
    assert (task.assigned, task.open_slots, task.status) == (3, 0, TaskStatus.InProgress)
    assert [s.worker for s in market.list_task_results(task_id)] == [
        BOB.ss58_address,
        CHARLIE.ss58_address,
        DAVE.ss58_address,
    ]


def test_status_created_until_first_assignment(market: EmbeddedMarketplace) -> None:
    task_id = market.create_task(ALICE, spec())
    assert market.get_task(task_id).status is TaskStatus.Created
    market.assign_task(BOB, task_id)
    assert market.get_task(task_id).status is TaskStatus.InProgress


def test_one_slot_per_contributor_whatever_the_prefix(market: EmbeddedMarketplace) -> None:
    task_id = market.create_task(ALICE, spec(slots=3))
    sid = market.assign_task(reencoded(BOB, 2), task_id)
    with pytest.raises(AlreadyAssigned):
        market.assign_task(BOB, task_id)
    with pytest.raises(AlreadyAssigned):
        market.assign_task(reencoded(BOB, 0), task_id)
    assert market.get_task(task_id).assigned == 1
    assert market.get_submission(sid).worker == BOB.ss58_address  # stored canonical (42)
    commit_and_send(market, BOB, sid, result())  # the assignee, in another spelling


def test_unknown_ids(market: EmbeddedMarketplace) -> None:
    with pytest.raises(UnknownTask):
        market.assign_task(BOB, 7)
    with pytest.raises(UnknownTask):
        market.get_task(0)
    with pytest.raises(UnknownSubmission):
        market.send_task_result(BOB, 3, result())
    with pytest.raises(UnknownSubmission):
        market.commit_result(BOB, 3, commitment_of(BOB))
    with pytest.raises(UnknownSubmission):
        market.accept(ALICE, 3)


def test_no_assignment_at_or_after_expiry(market: EmbeddedMarketplace) -> None:
    task_id = market.create_task(ALICE, spec(expires=5))
    market.advance_blocks(4)
    market.assign_task(BOB, task_id)  # block 4 < 5: allowed
    market.advance_blocks(1)
    assert market.current_block() == 5
    with pytest.raises(TaskNotOpen):
        market.assign_task(CHARLIE, task_id)
    assert market.get_task(task_id).assigned == 1


def test_no_assignment_on_closed_task(market: EmbeddedMarketplace) -> None:
    task_id = market.create_task(ALICE, spec())
    market.close_task(ALICE, task_id)
    with pytest.raises(TaskNotOpen):
        market.assign_task(BOB, task_id)


# --- send_task_result ---------------------------------------------------------------------------


def test_result_only_from_assignee_and_once(market: EmbeddedMarketplace) -> None:
    task_id = market.create_task(ALICE, spec())
    sid = market.assign_task(BOB, task_id)
    with pytest.raises(NotAssignee):
        market.send_task_result(CHARLIE, sid, result())
    with pytest.raises(NotAssignee):
        market.send_task_result(ALICE, sid, result())
    assert market.get_submission(sid).status is ResultSubmissionStatus.Assigned
    commit_and_send(market, BOB, sid, result(accuracy=0.875))
    stored = market.get_submission(sid)
    assert stored.status is ResultSubmissionStatus.PendingValidation
    assert stored.result == result(accuracy=0.875)
    with pytest.raises(ResultAlreadySent):
        market.send_task_result(BOB, sid, result(accuracy=0.5))
    assert market.get_submission(sid).result == result(accuracy=0.875)


def test_no_result_after_expiry(market: EmbeddedMarketplace) -> None:
    task_id = market.create_task(ALICE, spec(expires=3))
    sid = market.assign_task(BOB, task_id)
    market.commit_result(BOB, sid, commitment_of(BOB))
    market.advance_blocks(3)
    with pytest.raises(TaskNotOpen):
        market.send_task_result(BOB, sid, result())
    assert market.get_submission(sid).result is None


def test_no_result_on_closed_task(market: EmbeddedMarketplace) -> None:
    task_id = market.create_task(ALICE, spec())
    sid = market.assign_task(BOB, task_id)
    market.commit_result(BOB, sid, commitment_of(BOB))
    assert market.close_task(ALICE, task_id) == 300
    with pytest.raises(TaskNotOpen):
        market.send_task_result(BOB, sid, result())


# --- commit-reveal ------------------------------------------------------------------------------


def test_result_needs_a_commitment_first(market: EmbeddedMarketplace) -> None:
    task_id = market.create_task(ALICE, spec())
    sid = market.assign_task(BOB, task_id)
    before = dump(market.path)
    with pytest.raises(NotCommitted, match="commit_result"):
        market.send_task_result(BOB, sid, result())
    assert dump(market.path) == before
    market.commit_result(BOB, sid, commitment_of(BOB))
    assert market.get_submission(sid).status is ResultSubmissionStatus.Assigned
    market.send_task_result(BOB, sid, result())
    assert market.get_submission(sid).result == result()


def test_result_must_match_the_commitment(market: EmbeddedMarketplace) -> None:
    task_id = market.create_task(ALICE, spec())
    sid = market.assign_task(BOB, task_id)
    market.commit_result(BOB, sid, commitment_of(BOB, "cd" * 32))
    with pytest.raises(InvalidResult, match="does not match the submission's commitment"):
        market.send_task_result(BOB, sid, result())  # sha256 "ab" * 32
    assert market.get_submission(sid).result is None
    revealed = TaskResult("memory://r", "CD" * 32, 600)  # the digest in upper case is the same
    market.send_task_result(BOB, sid, revealed)
    assert market.get_submission(sid).result == revealed


def test_a_copied_commitment_is_useless_to_the_copier(market: EmbeddedMarketplace) -> None:
    """Charlie copies Bob's commitment (public) and then Bob's result record: the commitment
    binds Bob's key, so Charlie's reveal of the same digest does not match it."""
    task_id = market.create_task(ALICE, spec())
    bob_sid = market.assign_task(BOB, task_id)
    charlie_sid = market.assign_task(CHARLIE, task_id)
    market.commit_result(BOB, bob_sid, commitment_of(BOB))
    copied = market.get_submission(bob_sid).commitment
    market.commit_result(CHARLIE, charlie_sid, copied)  # the form is valid: it is recorded
    market.send_task_result(BOB, bob_sid, result())
    with pytest.raises(InvalidResult, match="does not match"):
        market.send_task_result(CHARLIE, charlie_sid, market.get_submission(bob_sid).result)
    with pytest.raises(AlreadyCommitted):  # nor can Charlie re-commit to the copied bytes
        market.commit_result(CHARLIE, charlie_sid, commitment_of(CHARLIE))


def test_commit_only_by_the_assignee(market: EmbeddedMarketplace) -> None:
    task_id = market.create_task(ALICE, spec())
    sid = market.assign_task(reencoded(BOB, 2), task_id)
    for stranger in (CHARLIE, ALICE):
        with pytest.raises(NotAssignee):
            market.commit_result(stranger, sid, commitment_of(stranger))
    assert market.get_submission(sid).commitment == ""
    market.commit_result(reencoded(BOB, 0), sid, commitment_of(BOB))  # any spelling of Bob
    assert market.get_submission(sid).commitment == commitment_of(reencoded(BOB, 2))


def test_commit_once_and_an_identical_repeat_is_a_no_op(market: EmbeddedMarketplace) -> None:
    task_id = market.create_task(ALICE, spec())
    sid = market.assign_task(BOB, task_id)
    market.commit_result(BOB, sid, commitment_of(BOB))
    before = dump(market.path)
    market.commit_result(BOB, sid, commitment_of(BOB))  # a retried step
    assert dump(market.path) == before
    with pytest.raises(AlreadyCommitted):
        market.commit_result(BOB, sid, commitment_of(BOB, "cd" * 32))
    assert dump(market.path) == before
    market.send_task_result(BOB, sid, result())
    with pytest.raises(ResultAlreadySent):
        market.commit_result(BOB, sid, commitment_of(BOB))
    stored = market.get_submission(sid)
    assert stored.commitment == commitment_of(BOB) and stored.commit_order == 0


@pytest.mark.parametrize(
    "bad", ["", "ab" * 31, "AB" * 32, "ab" * 32 + "00", "zz" * 32, " " + "ab" * 31 + "a"]
)
def test_malformed_commitments_are_refused(market: EmbeddedMarketplace, bad: str) -> None:
    task_id = market.create_task(ALICE, spec())
    sid = market.assign_task(BOB, task_id)
    with pytest.raises(InvalidResult, match="64 lowercase hex"):
        market.commit_result(BOB, sid, bad)
    assert market.get_submission(sid).commitment == ""


def test_no_commit_after_expiry_or_close(market: EmbeddedMarketplace) -> None:
    expiring = market.create_task(ALICE, spec(expires=3))
    closed = market.create_task(ALICE, spec())
    late = market.assign_task(BOB, expiring)
    shut = market.assign_task(BOB, closed)
    market.close_task(ALICE, closed)
    with pytest.raises(TaskNotOpen):
        market.commit_result(BOB, shut, commitment_of(BOB))
    market.advance_blocks(3)
    with pytest.raises(TaskNotOpen):
        market.commit_result(BOB, late, commitment_of(BOB))
    assert market.get_submission(late).commitment == ""
    assert market.get_submission(late).commit_order is None


def test_commit_order_spans_submissions_and_tasks(market: EmbeddedMarketplace) -> None:
    first = market.create_task(ALICE, spec())
    second = market.create_task(ALICE, spec())
    bob_1 = market.assign_task(BOB, first)
    charlie_1 = market.assign_task(CHARLIE, first)
    bob_2 = market.assign_task(BOB, second)
    assert market.get_submission(bob_1).commit_order is None
    market.advance_blocks(1)
    market.commit_result(BOB, bob_2, commitment_of(BOB))
    market.commit_result(CHARLIE, charlie_1, commitment_of(CHARLIE))
    market.advance_blocks(2)
    market.commit_result(BOB, bob_1, commitment_of(BOB, "cd" * 32))
    market.commit_result(BOB, bob_2, commitment_of(BOB))  # a repeat takes no new number
    orders = {sid: market.get_submission(sid).commit_order for sid in (bob_1, charlie_1, bob_2)}
    assert orders == {bob_2: 0, charlie_1: 1, bob_1: 2}
    rows = sqlite3.connect(market.path).execute(
        "SELECT submission_id, commit_block FROM submissions ORDER BY submission_id"
    )
    assert dict(rows.fetchall()) == {bob_1: 3, charlie_1: 1, bob_2: 1}


def test_an_old_schema_file_is_migrated(tmp_path: Path) -> None:
    """A file written before commit-reveal (no commitment columns, no commit counter, a result
    sent without commitment) opens, keeps its data, and takes commitments."""
    path = tmp_path / "old.sqlite"
    old = EmbeddedMarketplace(path, block_time_seconds=FROZEN)
    old.fund(ALICE.ss58_address, START)
    task_id = old.create_task(ALICE, spec())
    old_sid = old.assign_task(BOB, task_id)
    conn = sqlite3.connect(path)
    with conn:
        for column in ("commitment", "commit_block", "commit_seq"):
            conn.execute(f"ALTER TABLE submissions DROP COLUMN {column}")
        conn.execute("DELETE FROM meta WHERE key = 'next_commit_seq'")
        conn.execute(
            "UPDATE submissions SET status = 'PendingValidation', result_path = 'memory://old', "
            "result_sha256 = ?, num_examples = 5, metrics_json = '{}', base_fingerprint = '', "
            "result_block = 0 WHERE submission_id = ?",
            ("ab" * 32, old_sid),
        )
    columns = {row[1] for row in conn.execute("PRAGMA table_info(submissions)")}
    conn.close()
    assert "commitment" not in columns

    market = EmbeddedMarketplace(path, block_time_seconds=FROZEN)
    legacy = market.get_submission(old_sid)
    assert (legacy.commitment, legacy.commit_order) == ("", None)
    assert legacy.result is not None and legacy.result.result_path == "memory://old"
    assert market.accept(ALICE, old_sid) == 100  # verdicts on old results still work
    sid = market.assign_task(CHARLIE, task_id)
    commit_and_send(market, CHARLIE, sid, result())
    assert market.get_submission(sid).commit_order == 0
    EmbeddedMarketplace(path, block_time_seconds=FROZEN)  # opening again changes nothing
    assert market.get_submission(sid).commitment == commitment_of(CHARLIE)


# --- verdicts -----------------------------------------------------------------------------------


def test_verdicts_and_close_only_by_creator(market: EmbeddedMarketplace) -> None:
    (sid,) = with_results(market, BOB)
    for actor in (BOB, CHARLIE):
        with pytest.raises(NotCreator):
            market.accept(actor, sid)
        with pytest.raises(NotCreator):
            market.reject(actor, sid, "no")
        with pytest.raises(NotCreator):
            market.close_task(actor, 0)
    assert market.get_submission(sid).status is ResultSubmissionStatus.PendingValidation
    assert market.accept(reencoded(ALICE, 2), sid) == 100  # the creator in another spelling


def test_verdict_needs_a_result(market: EmbeddedMarketplace) -> None:
    task_id = market.create_task(ALICE, spec())
    sid = market.assign_task(BOB, task_id)
    with pytest.raises(NoResultYet):
        market.accept(ALICE, sid)
    with pytest.raises(NoResultYet):
        market.reject(ALICE, sid, "nothing sent")


def test_double_accept_pays_once(market: EmbeddedMarketplace) -> None:
    (sid,) = with_results(market, BOB, pays=301, slots=3)
    assert market.accept(ALICE, sid) == 100
    assert market.accept(ALICE, sid) == 0
    assert market.balance(BOB.ss58_address) == 100
    assert market.balance(ALICE.ss58_address) == START - 301
    assert market.escrow_total() == 201
    submission = market.get_submission(sid)
    assert (submission.status, submission.paid) == (ResultSubmissionStatus.Accepted, 100)
    assert market.get_task(0).paid == 100


def test_accept_after_reject_and_reject_after_accept_refused(
    market: EmbeddedMarketplace,
) -> None:
    bob_sid, charlie_sid = with_results(market, BOB, CHARLIE)
    market.reject(ALICE, bob_sid, "weights are not finite")
    with pytest.raises(VerdictAlreadyGiven):
        market.accept(ALICE, bob_sid)
    market.accept(ALICE, charlie_sid)
    with pytest.raises(VerdictAlreadyGiven):
        market.reject(ALICE, charlie_sid, "changed my mind")
    assert market.balance(BOB.ss58_address) == 0
    assert market.balance(CHARLIE.ss58_address) == 100
    assert market.get_submission(charlie_sid).status is ResultSubmissionStatus.Accepted


def test_reject_reason_recorded_and_repeat_is_noop(market: EmbeddedMarketplace) -> None:
    (sid,) = with_results(market, BOB)
    market.reject(ALICE, sid, "shape mismatch in dense/kernel")
    market.reject(ALICE, sid, "second reason")
    submission = market.get_submission(sid)
    assert submission.status is ResultSubmissionStatus.Rejected
    assert submission.reason == "shape mismatch in dense/kernel"
    assert submission.paid == 0
    assert market.balance(BOB.ss58_address) == 0


def test_settle_records_and_pays_a_batch_once(market: EmbeddedMarketplace) -> None:
    bob, charlie, dave = with_results(market, BOB, CHARLIE, DAVE, pays=301, slots=3)
    verdicts = [
        Verdict(bob, True, "held-out accuracy 0.91 >= 0.80"),
        Verdict(charlie, False, "held-out accuracy 0.12 is below 0.80"),
        Verdict(dave, True, "held-out accuracy 0.88 >= 0.80"),
    ]
    assert market.settle(ALICE, verdicts) == {bob: 100, charlie: 0, dave: 100}
    assert market.settle(ALICE, verdicts) == {bob: 0, charlie: 0, dave: 0}  # a retry pays 0
    assert market.balance(BOB.ss58_address) == 100
    assert market.balance(CHARLIE.ss58_address) == 0
    assert market.balance(DAVE.ss58_address) == 100
    assert market.get_submission(bob).reason == "held-out accuracy 0.91 >= 0.80"
    assert market.get_submission(charlie).reason == "held-out accuracy 0.12 is below 0.80"
    assert market.close_task(ALICE, 0) == 101


def test_settle_is_all_or_nothing(market: EmbeddedMarketplace) -> None:
    bob, charlie = with_results(market, BOB, CHARLIE)
    market.reject(ALICE, charlie, "corrupt file")
    before = dump(market.path)
    with pytest.raises(VerdictAlreadyGiven):
        market.settle(ALICE, [Verdict(bob, True, "ok"), Verdict(charlie, True, "ok after all")])
    with pytest.raises(NotCreator):
        market.settle(BOB, [Verdict(bob, True, "self-approved")])
    assert dump(market.path) == before
    assert market.get_submission(bob).status is ResultSubmissionStatus.PendingValidation
    assert market.balance(BOB.ss58_address) == 0


# --- close and expiry ---------------------------------------------------------------------------


def test_close_refunds_exactly_what_was_not_paid(market: EmbeddedMarketplace) -> None:
    bob_sid, charlie_sid = with_results(market, BOB, CHARLIE, pays=301, slots=3)
    market.accept(ALICE, bob_sid)
    market.reject(ALICE, charlie_sid, "too few examples")
    assert market.close_task(ALICE, 0) == 201
    assert market.close_task(ALICE, 0) == 0
    assert market.balance(ALICE.ss58_address) == START - 100
    assert market.balance(BOB.ss58_address) == 100
    task = market.get_task(0)
    assert (task.status, task.paid, task.refunded) == (TaskStatus.Completed, 100, 201)
    assert market.escrow_total() == 0
    assert market.list_tasks() == []


def test_close_without_payment_is_withdrawn(market: EmbeddedMarketplace) -> None:
    task_id = market.create_task(ALICE, spec(pays=300))
    market.assign_task(BOB, task_id)  # assigned but no result: nothing to wait for
    assert market.close_task(ALICE, task_id) == 300
    assert market.get_task(task_id).status is TaskStatus.Withdrawn
    assert market.balance(ALICE.ss58_address) == START


def test_close_refused_while_results_pending(market: EmbeddedMarketplace) -> None:
    bob_sid, charlie_sid = with_results(market, BOB, CHARLIE)
    with pytest.raises(PendingResults, match=rf"\[{bob_sid}, {charlie_sid}\]"):
        market.close_task(ALICE, 0)
    market.accept(ALICE, bob_sid)
    with pytest.raises(PendingResults, match=rf"\[{charlie_sid}\]"):
        market.close_task(ALICE, 0)
    market.reject(ALICE, charlie_sid, "late")
    assert market.close_task(ALICE, 0) == 200
    assert market.balance(ALICE.ss58_address) == START - 100


def test_expiry_refunds_without_pending_results(market: EmbeddedMarketplace) -> None:
    (sid,) = with_results(market, BOB, pays=300, expires=10)
    market.assign_task(CHARLIE, 0)  # never sends a result
    market.create_task(ALICE, spec(pays=50, expires=20))
    market.accept(ALICE, sid)
    market.advance_blocks(10)
    assert market.balance(ALICE.ss58_address) == START - 300 - 50 + 200
    task = market.get_task(0)
    assert (task.status, task.refunded) == (TaskStatus.Completed, 200)
    assert market.get_task(1).status is TaskStatus.Created
    assert market.close_task(ALICE, 0) == 0
    market.advance_blocks(10)
    assert market.get_task(1).status is TaskStatus.Withdrawn
    assert market.balance(ALICE.ss58_address) == START - 100
    assert market.escrow_total() == 0


def test_ledger_settle_expired_reports_refunds(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.fund(ALICE.ss58_address, 500)
    ledger.create_task(ALICE.ss58_address, spec(pays=300, expires=10), block=0)
    ledger.create_task(ALICE.ss58_address, spec(pays=200, expires=20), block=0)
    assert ledger.settle_expired(9) == []
    assert ledger.settle_expired(10) == [(0, 300)]
    assert ledger.settle_expired(10) == []
    assert ledger.balance(ALICE.ss58_address) == 300
    assert ledger.balance(ALICE.ss58_address, block=25) == 500


def test_expiry_waits_for_pending_verdicts(market: EmbeddedMarketplace) -> None:
    bob_sid, charlie_sid = with_results(market, BOB, CHARLIE, pays=300, expires=10)
    market.advance_blocks(15)
    assert market.balance(ALICE.ss58_address) == START - 300  # escrow held for the verdicts
    assert market.get_task(0).status is TaskStatus.InProgress
    assert market.list_tasks() == []
    with pytest.raises(TaskNotOpen):
        market.assign_task(DAVE, 0)
    assert market.accept(ALICE, bob_sid) == 100
    assert market.balance(ALICE.ss58_address) == START - 300
    market.reject(ALICE, charlie_sid, "late validation failed")
    task = market.get_task(0)
    assert (task.status, task.paid, task.refunded) == (TaskStatus.Completed, 100, 200)
    assert market.balance(ALICE.ss58_address) == START - 100
    assert market.balance(BOB.ss58_address) == 100
    assert market.escrow_total() == 0


def test_list_tasks_open_only(market: EmbeddedMarketplace) -> None:
    full = market.create_task(ALICE, spec(pays=10, slots=1))
    market.assign_task(BOB, full)
    closed = market.create_task(ALICE, spec(pays=10))
    market.close_task(ALICE, closed)
    expiring = market.create_task(ALICE, spec(pays=10, expires=5))
    lasting = market.create_task(ALICE, spec(pays=10, expires=50))
    assert [t.task_id for t in market.list_tasks()] == [expiring, lasting]
    market.advance_blocks(5)
    assert [t.task_id for t in market.list_tasks()] == [lasting]
    assert [t.task_id for t in market.list_tasks(open_only=False)] == [0, 1, 2, 3]


# --- atomicity, clock, protocol -----------------------------------------------------------------


def test_refused_operations_change_nothing(market: EmbeddedMarketplace) -> None:
    bob_sid, charlie_sid = with_results(market, BOB, CHARLIE, pays=300, slots=2, expires=10)
    market.accept(ALICE, bob_sid)
    market.create_task(ALICE, spec(pays=100, expires=5))  # task 1 will be settleable
    market.advance_blocks(6)
    before = dump(market.path)
    refused: list[Callable[[], object]] = [
        lambda: market.create_task(ALICE, spec(pays=10**9, expires=50)),
        lambda: market.create_task(ALICE, spec(pays=0, expires=50)),
        lambda: market.assign_task(DAVE, 0),
        lambda: market.assign_task(DAVE, 1),
        lambda: market.send_task_result(BOB, bob_sid, result()),
        lambda: market.send_task_result(DAVE, charlie_sid, result()),
        lambda: market.commit_result(BOB, bob_sid, commitment_of(BOB)),
        lambda: market.commit_result(DAVE, charlie_sid, commitment_of(DAVE)),
        lambda: market.accept(BOB, charlie_sid),
        lambda: market.reject(ALICE, bob_sid, "too late"),
        lambda: market.close_task(ALICE, 0),
        lambda: market.close_task(BOB, 1),
        lambda: market.assign_task(DAVE, 99),
    ]
    for operation in refused:
        with pytest.raises(MarketplaceError):
            operation()
        assert dump(market.path) == before, operation
    # Task 1's expiry refund happens once something that is not refused runs:
    assert market.balance(ALICE.ss58_address) == START - 300 - 100 + 100


def test_block_clock_is_shared_through_the_file(tmp_path: Path) -> None:
    first = EmbeddedMarketplace(tmp_path / "m.db", block_time_seconds=FROZEN)
    second = EmbeddedMarketplace(tmp_path / "m.db", block_time_seconds=FROZEN)
    assert first.current_block() == second.current_block() == 0
    assert first.advance_blocks(7) == 7
    assert second.current_block() == 7
    assert second.genesis_time == first.genesis_time
    with pytest.raises(ConfigError, match="block_time_seconds"):
        EmbeddedMarketplace(tmp_path / "m.db", block_time_seconds=6.0)


def test_block_clock_follows_wall_time(tmp_path: Path) -> None:
    market = EmbeddedMarketplace(tmp_path / "m.db", block_time_seconds=0.05)
    start = market.current_block()
    time.sleep(0.25)
    assert market.current_block() >= start + 3


def test_embedded_is_a_marketplace(market: EmbeddedMarketplace) -> None:
    assert isinstance(market, Marketplace)


def test_ledger_without_balances_keeps_the_rules(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "index.db", track_balances=False)
    task_id = ledger.create_task(ALICE.ss58_address, spec(pays=300, slots=1), block=3)
    sid = ledger.assign_task(BOB.ss58_address, task_id, block=4)
    with pytest.raises(TaskFull):
        ledger.assign_task(CHARLIE.ss58_address, task_id, block=4)
    ledger.commit_result(BOB.ss58_address, sid, commitment_of(BOB), block=5)
    ledger.send_task_result(BOB.ss58_address, sid, result(), block=5)
    assert ledger.accept(ALICE.ss58_address, sid, block=6) == 300
    assert ledger.close_task(ALICE.ss58_address, task_id, block=7) == 0
    assert ledger.get_task(task_id).status is TaskStatus.Completed
    with pytest.raises(ValueError):
        ledger.balance(ALICE.ss58_address)


# --- conservation under random operations -------------------------------------------------------

PEOPLE = [ALICE, BOB, CHARLIE, DAVE, EVE, FERDIE, contributor_dev_keypair(5)]


class RandomSession:
    """Random, often invalid, operations. It remembers who created each task and who holds each
    submission, and picks the right actor most of the time, so that every rule is reached
    both by operations that succeed and by operations that are refused."""

    def __init__(self, market: EmbeddedMarketplace, rng: random.Random) -> None:
        self.market, self.rng = market, rng
        self.creators: list[Keypair] = []  # by task id
        self.workers: list[tuple[Keypair, Keypair]] = []  # by submission id: (worker, creator)
        self.sent: list[int] = []  # submission ids with a result

    def who(self, likely: Keypair | None = None) -> Keypair:
        if likely is not None and self.rng.random() < 0.7:
            return likely
        return self.rng.choice(PEOPLE)

    def recent(self, count: int) -> int:
        """Mostly one of the last few ids (where the action is), sometimes any id or an
        unknown one."""
        if count and self.rng.random() < 0.8:
            return max(0, count - 1 - self.rng.randrange(4))
        return self.rng.randrange(count + 1)

    def task_id(self) -> int:
        return self.recent(len(self.creators))

    def submission_id(self) -> int:
        return self.recent(len(self.workers))

    def creator_of_task(self, task_id: int) -> Keypair | None:
        return self.creators[task_id] if task_id < len(self.creators) else None

    def party(self, submission_id: int, index: int) -> Keypair | None:
        return self.workers[submission_id][index] if submission_id < len(self.workers) else None

    def fund(self) -> None:
        self.market.fund(self.who(ALICE).ss58_address, self.rng.randint(1, 1500))

    def create(self) -> None:
        now = self.market.current_block()
        task = spec(
            pays=self.rng.randint(-1, 700),
            slots=self.rng.randint(0, 4),
            expires=now + self.rng.choice([-1, 0, 2, 5, 10, 20, 40]),
        )
        creator = self.who(ALICE)
        self.market.create_task(creator, task)
        self.creators.append(creator)

    def assign(self) -> None:
        task_id = self.task_id()
        worker = self.who()
        self.market.assign_task(worker, task_id)
        self.workers.append((worker, self.creators[task_id]))

    def commit(self) -> None:
        """Mostly the commitment to ``result()`` of the submission's assignee; sometimes
        another result's, so that a later send does not match it."""
        sid = self.submission_id()
        owner = self.party(sid, 0) or BOB
        sha256 = "ab" * 32 if self.rng.random() < 0.8 else "cd" * 32
        commitment = result_commitment(owner.ss58_address, sha256)
        self.market.commit_result(self.who(owner), sid, commitment)

    def send(self) -> None:
        sid = self.submission_id()
        self.market.send_task_result(self.who(self.party(sid, 0)), sid, result())
        self.sent.append(sid)

    def accept(self) -> None:
        sid = self.submission_id()
        self.market.accept(self.who(self.party(sid, 1)), sid)

    def reject(self) -> None:
        sid = self.submission_id()
        self.market.reject(self.who(self.party(sid, 1)), sid, "random")

    def settle(self) -> None:
        """A batch, mostly of results that were sent (a batch with one refused verdict is
        refused as a whole, so random ids alone would almost never succeed)."""
        pool = self.sent[-4:] if self.sent and self.rng.random() < 0.7 else [self.submission_id()]
        sids = [self.rng.choice(pool) for _ in range(self.rng.randint(1, 2))]
        verdicts = [Verdict(sid, self.rng.random() < 0.6, "batch") for sid in sids]
        self.market.settle(self.who(self.party(sids[0], 1)), verdicts)

    def close(self) -> None:
        task_id = self.task_id()
        self.market.close_task(self.who(self.creator_of_task(task_id)), task_id)

    def advance(self) -> None:
        self.market.advance_blocks(self.rng.randint(0, 3))


def assert_conserved(market: EmbeddedMarketplace) -> None:
    balances = market.ledger.balances()
    assert all(amount >= 0 for amount in balances.values())
    assert sum(balances.values()) + market.ledger.escrow_total() == market.total_issuance()


def assert_tasks_consistent(market: EmbeddedMarketplace) -> None:
    for task in market.ledger.list_tasks(open_only=False):
        submissions = market.list_task_results(task.task_id)
        accepted = [s for s in submissions if s.status is ResultSubmissionStatus.Accepted]
        assert len(submissions) == task.assigned <= task.spec.max_assignments
        assert len({s.worker for s in submissions}) == len(submissions)
        assert task.paid == sum(s.paid for s in submissions)
        assert task.paid == len(accepted) * task.spec.reward_per_result
        finished = task.status in (TaskStatus.Completed, TaskStatus.Withdrawn)
        assert task.paid + task.refunded == (task.spec.pays_amount if finished else task.paid)


def test_conservation_under_random_operations(tmp_path: Path) -> None:
    """After every one of 500 random operations (most of them refused): value is conserved,
    every task's books add up, and a refused operation left the file byte-for-byte as it was."""
    market = EmbeddedMarketplace(tmp_path / "random.db", block_time_seconds=FROZEN)
    session = RandomSession(market, random.Random(20240611))
    kinds = ["fund", "create", "create", "assign", "assign", "assign", "commit", "commit"]
    kinds += ["commit", "send", "send", "send"]
    kinds += ["accept", "accept", "reject", "settle", "close", "advance"]
    outcomes: Counter[tuple[str, bool]] = Counter()
    refusals: Counter[str] = Counter()
    for step in range(500):
        kind = session.rng.choice(kinds)
        before = dump(market.path)
        try:
            getattr(session, kind)()
            outcomes[(kind, True)] += 1
        except MarketplaceError as exc:
            outcomes[(kind, False)] += 1
            refusals[type(exc).__name__] += 1
            assert dump(market.path) == before, (step, kind)
        assert_conserved(market)
        if step % 25 == 0:
            assert_tasks_consistent(market)
    assert_tasks_consistent(market)
    for kind in ("create", "assign", "commit", "send", "accept", "reject", "settle", "close"):
        assert outcomes[(kind, True)] > 0 and outcomes[(kind, False)] > 0, (kind, outcomes)
    expected_refusals = {
        InvalidTaskSpec, InsufficientBalance, UnknownTask, UnknownSubmission, TaskNotOpen,
        TaskFull, AlreadyAssigned, NotAssignee, ResultAlreadySent, NotCreator, NoResultYet,
        VerdictAlreadyGiven, NotCommitted, AlreadyCommitted, InvalidResult,
    }  # fmt: skip
    assert {e.__name__ for e in expected_refusals} <= set(refusals), refusals
    statuses = {task.status for task in market.ledger.list_tasks(open_only=False)}
    assert TaskStatus.Withdrawn in statuses and TaskStatus.Completed in statuses, statuses


# --- several processes, one file ----------------------------------------------------------------


def _race_for_slot(path: str, index: int, barrier: Any, results: Any) -> None:
    """Run in a spawned process: wait for the others, then try to take a slot of task 0."""
    market = EmbeddedMarketplace(path, block_time_seconds=FROZEN)
    worker = contributor_dev_keypair(index)
    barrier.wait(timeout=120)
    try:
        results.put((index, "assigned", market.assign_task(worker, 0)))
    except MarketplaceError as exc:
        results.put((index, type(exc).__name__, -1))


def test_processes_race_for_three_slots(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    market = EmbeddedMarketplace(path, block_time_seconds=FROZEN)
    market.fund(ALICE.ss58_address, START)
    market.create_task(ALICE, spec(pays=300, slots=3))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(6)
    results = ctx.Queue()
    processes = [
        ctx.Process(target=_race_for_slot, args=(str(path), i, barrier, results)) for i in range(6)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=180) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    kinds = Counter(kind for _, kind, _ in outcomes)
    assert kinds == Counter({"assigned": 3, "TaskFull": 3})
    winners = {index for index, kind, _ in outcomes if kind == "assigned"}
    assert sorted(sid for _, kind, sid in outcomes if kind == "assigned") == [0, 1, 2]
    task = market.get_task(0)
    assert task.assigned == 3
    stored = {s.worker for s in market.list_task_results(0)}
    assert stored == {contributor_dev_keypair(i).ss58_address for i in winners}


def test_settle_with_close_refunds_in_the_same_transaction(tmp_path) -> None:
    market = EmbeddedMarketplace(tmp_path / "settle-close.sqlite")
    alice, bob, charlie = dev_keypair("Alice"), dev_keypair("Bob"), dev_keypair("Charlie")
    market.fund(alice.ss58_address, 900)
    spec = TaskSpec("q", 900, 3, market.current_block() + 50)
    task_id = market.create_task(alice, spec)
    sids = [market.assign_task(worker, task_id) for worker in (bob, charlie)]
    for sid, worker in zip(sids, (bob, charlie), strict=True):
        commit_and_send(market, worker, sid, TaskResult("memory://r", "ab" * 32, 10))

    with pytest.raises(PendingResults, match=str(sids[1])):  # charlie's result is undecided
        market.settle(alice, [Verdict(sids[0], True, "ok")], close_task_id=task_id)
    assert market.get_submission(sids[0]).status is ResultSubmissionStatus.PendingValidation
    assert market.balance(bob.ss58_address) == 0  # refused as a whole: nothing paid

    paid = market.settle(
        alice, [Verdict(sids[0], True, "ok"), Verdict(sids[1], False, "bad")], close_task_id=task_id
    )
    assert paid == {sids[0]: 300, sids[1]: 0}
    task = market.get_task(task_id)
    assert task.status is TaskStatus.Completed and task.refunded == 600
    assert market.balance(alice.ss58_address) == 600 and market.escrow_total() == 0


def test_ids_beyond_sqlite_integers_are_unknown(tmp_path) -> None:
    ledger = Ledger(tmp_path / "huge.sqlite")
    with pytest.raises(UnknownTask):
        ledger.close_task(dev_keypair("Alice").ss58_address, 2**64 - 1, 0)
    with pytest.raises(UnknownSubmission):
        ledger.get_submission(2**63)


@pytest.mark.parametrize(
    ("num_examples", "metrics"), [(0, {}), (-5, {}), (2**64 - 1, {}), (10, {"loss": float("nan")})]
)
def test_unusable_result_numbers_are_refused(tmp_path, num_examples, metrics) -> None:
    market = EmbeddedMarketplace(tmp_path / "bad-result.sqlite")
    alice, bob = dev_keypair("Alice"), dev_keypair("Bob")
    market.fund(alice.ss58_address, 100)
    task_id = market.create_task(alice, TaskSpec("q", 100, 1, market.current_block() + 50))
    sid = market.assign_task(bob, task_id)
    market.commit_result(bob, sid, result_commitment(bob.ss58_address, "ab" * 32))
    with pytest.raises(InvalidResult):
        market.send_task_result(
            bob, sid, TaskResult("memory://r", "ab" * 32, num_examples, metrics)
        )
    assert market.get_submission(sid).status is ResultSubmissionStatus.Assigned


def test_results_left_unjudged_past_the_grace_are_paid_and_the_rest_refunded(tmp_path: Path):
    """The finding: a task that expired with a pending result kept its escrow forever (checked
    100 000 blocks later). Now, like MTurk's auto-approval, the ledger pays it after the grace."""
    market = EmbeddedMarketplace(tmp_path / "grace.sqlite", review_grace_blocks=50)
    market.fund(ALICE.ss58_address, START)
    bob_sid, charlie_sid = with_results(market, BOB, CHARLIE, pays=300, expires=10)
    market.advance_blocks(10 + 49)  # expired, still within the creator's grace
    assert market.get_submission(bob_sid).status is ResultSubmissionStatus.PendingValidation
    market.reject(ALICE, charlie_sid, "checked in time: refused")
    market.advance_blocks(1)
    bob = market.get_submission(bob_sid)
    assert (bob.status, bob.paid) == (ResultSubmissionStatus.Accepted, 100)
    assert bob.reason == "not judged within 50 blocks after the task expired: accepted and paid"
    task = market.get_task(0)
    assert (task.status, task.paid, task.refunded) == (TaskStatus.Completed, 100, 200)
    assert market.balance(BOB.ss58_address) == 100
    assert market.balance(ALICE.ss58_address) == START - 100
    assert market.escrow_total() == 0
    with pytest.raises(VerdictAlreadyGiven):
        market.reject(ALICE, bob_sid, "too late to refuse")
