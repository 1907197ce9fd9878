"""The rulebook (decentralml/protocol/rules.py) as pure functions over domain records, and
the proof that the Substrate backend's pre-flight check and the SQLite ledger are one rule:
same refusal, same message, and no scratch ledger written to decide it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from substrateinterface import Keypair

from decentralml.marketplace.embedded import EmbeddedMarketplace
from decentralml.marketplace.ledger import Ledger
from decentralml.marketplace.substrate import _check_spec
from decentralml.protocol import rules
from decentralml.protocol.accounts import contributor_dev_keypair, dev_keypair
from decentralml.protocol.commitment import result_commitment
from decentralml.protocol.errors import (
    AlreadyAssigned,
    AlreadyCommitted,
    InvalidResult,
    InvalidTaskSpec,
    NoResultYet,
    NotAssignee,
    NotCommitted,
    NotCreator,
    PendingResults,
    ResultAlreadySent,
    TaskFull,
    TaskNotOpen,
    VerdictAlreadyGiven,
)
from decentralml.protocol.records import (
    ResultSubmissionStatus,
    Submission,
    Task,
    TaskResult,
    TaskSpec,
    TaskStatus,
    Verdict,
)
from decentralml.protocol.rules import ALREADY_DONE

CREATOR = dev_keypair("Alice").ss58_address
BOB, CHARLIE = (contributor_dev_keypair(i).ss58_address for i in range(2))
SPEC = TaskSpec("train on your shard", pays_amount=300, max_assignments=2, expiration_block=50)
RESULT = TaskResult("memory://r/0.safetensors", "ab" * 32, 600, {"accuracy": 0.9}, "fp")
COMMITMENT = result_commitment(BOB, RESULT.sha256)


def task(**changes: object) -> Task:
    return dataclasses.replace(Task(0, CREATOR, SPEC, TaskStatus.InProgress, 0, 1), **changes)


def submission(**changes: object) -> Submission:
    base = Submission(7, 0, BOB, ResultSubmissionStatus.Assigned, 1)
    return dataclasses.replace(base, **changes)


def committed(**changes: object) -> Submission:
    return submission(commitment=COMMITMENT, **changes)


def sent(**changes: object) -> Submission:
    fields = {"status": ResultSubmissionStatus.PendingValidation, "result": RESULT, **changes}
    return committed(**fields)


def test_enforce_raises_refusals_and_tells_a_repeat_from_a_new_record() -> None:
    assert rules.enforce(None) is True
    assert rules.enforce(ALREADY_DONE) is False
    with pytest.raises(TaskFull, match="full"):
        rules.enforce(TaskFull("full"))


def test_assignment_rules() -> None:
    assert rules.can_assign(task(), None, CHARLIE, 10) is None
    assert isinstance(rules.can_assign(task(), submission(), BOB, 10), AlreadyAssigned)
    assert isinstance(rules.can_assign(task(assigned=2), None, CHARLIE, 10), TaskFull)
    expired = rules.can_assign(task(), None, CHARLIE, 50)
    assert isinstance(expired, TaskNotOpen) and "expired at block 50 (now 50)" in str(expired)
    closed = rules.can_assign(task(status=TaskStatus.Withdrawn), None, CHARLIE, 10)
    assert isinstance(closed, TaskNotOpen) and "is Withdrawn" in str(closed)


def test_commitment_rules() -> None:
    assert rules.can_commit(task(), submission(), BOB, COMMITMENT, 10) is None
    assert rules.can_commit(task(), committed(), BOB, COMMITMENT, 10) is ALREADY_DONE
    assert isinstance(rules.can_commit(task(), committed(), BOB, "cd" * 32, 10), AlreadyCommitted)
    assert isinstance(rules.can_commit(task(), submission(), CHARLIE, COMMITMENT, 10), NotAssignee)
    assert isinstance(rules.can_commit(task(), sent(), BOB, COMMITMENT, 10), ResultAlreadySent)
    assert isinstance(rules.can_commit(task(), submission(), BOB, "AB" * 32, 10), InvalidResult)
    assert isinstance(rules.can_commit(task(), submission(), BOB, COMMITMENT, 50), TaskNotOpen)


def test_result_rules() -> None:
    assert rules.can_send_result(task(), committed(), BOB, RESULT, 10) is None
    assert rules.can_send_result(task(), sent(), BOB, RESULT, 10) is ALREADY_DONE
    other = dataclasses.replace(RESULT, metrics={"accuracy": 0.5})
    assert isinstance(rules.can_send_result(task(), sent(), BOB, other, 10), ResultAlreadySent)
    assert isinstance(rules.can_send_result(task(), sent(), CHARLIE, RESULT, 10), NotAssignee)
    assert isinstance(rules.can_send_result(task(), submission(), BOB, RESULT, 10), NotCommitted)
    wrong = dataclasses.replace(RESULT, sha256="cd" * 32)
    assert isinstance(rules.can_send_result(task(), committed(), BOB, wrong, 10), InvalidResult)
    assert isinstance(rules.can_send_result(task(), committed(), BOB, RESULT, 50), TaskNotOpen)
    nan = dataclasses.replace(RESULT, metrics={"accuracy": float("nan")})
    refusal = rules.can_send_result(task(), committed(), BOB, nan, 10)
    assert isinstance(refusal, InvalidResult) and "not finite" in str(refusal)


def test_verdict_rules() -> None:
    assert rules.can_judge(task(), sent(), CREATOR, accept=True) is None
    assert isinstance(rules.can_judge(task(), sent(), BOB, accept=True), NotCreator)
    assert isinstance(rules.can_judge(task(), committed(), CREATOR, accept=False), NoResultYet)
    accepted = sent(status=ResultSubmissionStatus.Accepted)
    assert rules.can_judge(task(), accepted, CREATOR, accept=True) is ALREADY_DONE
    refusal = rules.can_judge(task(), accepted, CREATOR, accept=False)
    assert isinstance(refusal, VerdictAlreadyGiven) and "already accepted" in str(refusal)


def test_close_rules() -> None:
    pending = sent()
    assert rules.can_close(task(), [committed()], CREATOR) is None
    refusal = rules.can_close(task(), [pending], CREATOR)
    assert isinstance(refusal, PendingResults) and "[7]" in str(refusal)
    assert rules.can_close(task(), [pending], CREATOR, decided={7}) is None  # same settlement
    assert isinstance(rules.can_close(task(), [], BOB), NotCreator)
    assert rules.can_close(task(status=TaskStatus.Completed), [pending], CREATOR) is ALREADY_DONE


def test_addresses_compare_by_key_whatever_the_prefix() -> None:
    """The ledger stores prefix-42 addresses, the chain reports prefix 2: one account."""
    other_spelling = Keypair(public_key=dev_keypair("Alice").public_key, ss58_format=2).ss58_address
    assert other_spelling != CREATOR
    assert rules.can_judge(task(), sent(), other_spelling, accept=True) is None


BAD_SPECS = [
    dataclasses.replace(SPEC, pays_amount=0),
    dataclasses.replace(SPEC, max_assignments=0),
    dataclasses.replace(SPEC, pays_amount=1),
    dataclasses.replace(SPEC, expiration_block=3),
    dataclasses.replace(SPEC, question="  "),
    dataclasses.replace(SPEC, epochs=-1),
    dataclasses.replace(SPEC, storage_endpoint="http://key:secret@s3.local"),
]


@pytest.mark.parametrize("bad", BAD_SPECS)
def test_chain_preflight_and_ledger_refuse_a_spec_alike(
    tmp_path: Path, bad: TaskSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Substrate backend's pre-flight (before a fee is spent) gives the ledger's own
    refusal, and decides it without a scratch SQLite ledger: opening one fails here."""
    market = EmbeddedMarketplace(tmp_path / "m.sqlite", block_time_seconds=1e9)
    market.advance_blocks(3)
    market.fund(CREATOR, 1_000)
    with pytest.raises(InvalidTaskSpec) as on_ledger:
        market.create_task(dev_keypair("Alice"), bad)

    def no_ledger(*args: object, **kwargs: object) -> None:
        raise AssertionError("the pre-flight check opened a SQLite ledger")

    monkeypatch.setattr(Ledger, "__init__", no_ledger)
    with pytest.raises(InvalidTaskSpec) as before_chain:
        _check_spec(bad, 3)
    assert str(before_chain.value) == str(on_ledger.value)
    _check_spec(SPEC, 3)  # a valid spec passes


def test_a_retried_create_on_the_ledger_escrows_once(tmp_path: Path) -> None:
    """create-task is retried after an unknown outcome: the ledger now treats the very same
    spec of an unfinished task as that task, as the chain always did (one rule for both)."""
    market = EmbeddedMarketplace(tmp_path / "m.sqlite", block_time_seconds=1e9)
    market.fund(CREATOR, 1_000)
    first = market.create_task(dev_keypair("Alice"), SPEC)
    assert market.create_task(dev_keypair("Alice"), SPEC) == first
    assert market.balance(CREATOR) == 1_000 - SPEC.pays_amount
    other = dataclasses.replace(SPEC, question="another task")
    assert market.create_task(dev_keypair("Alice"), other) != first


def test_overdue_results_are_decided_by_one_rule() -> None:
    """The ledger's auto-acceptance and the creator's catch-up on a chain pay the same
    verdicts: those of ``rules.auto_accepted``, from ``expiration + grace`` on."""
    expiry = SPEC.expiration_block
    pending = [sent(), submission(submission_id=8)]
    assert rules.auto_accepted(task(), pending, expiry + 4, grace=5) == []
    [verdict] = rules.auto_accepted(task(), pending, expiry + 5, grace=5)
    assert verdict.submission_id == 7 and verdict.accept
    assert verdict.reason == rules.AUTO_ACCEPTED.format(grace=5)
    assert rules.auto_accepted(task(), pending, expiry + 100, grace=None) == []
    closed = task(status=TaskStatus.Completed)
    assert rules.auto_accepted(closed, pending, expiry + 100, grace=5) == []


def test_what_a_creator_owes_is_one_reward_per_unpaid_slot() -> None:
    """'outstanding' has one definition: an uneven remainder is never owed."""
    uneven = task(spec=dataclasses.replace(SPEC, pays_amount=301, max_assignments=3), paid=100)
    assert rules.outstanding(uneven) == 200
    assert rules.outstanding(dataclasses.replace(uneven, status=TaskStatus.Completed)) == 0
    assert (
        rules.owed([uneven, task(creator=contributor_dev_keypair(5).ss58_address)], CREATOR) == 200
    )


def test_one_settlement_takes_one_verdict_per_result() -> None:
    accept, again, opposite = Verdict(7, True, "a"), Verdict(7, True, "b"), Verdict(7, False, "c")
    assert rules.distinct_verdicts([accept, again]) == [accept]
    with pytest.raises(VerdictAlreadyGiven):
        rules.distinct_verdicts([accept, opposite])


def test_the_task_limit_on_examples_wins_over_the_shards() -> None:
    assert rules.examples_limit(500, 6000) == 500
    assert rules.examples_limit(None, 6000) == 6000
    assert rules.examples_limit(None, None) is None
