"""The creator's own storage faults are not the contributors' fault.

An outside tester made 20 % of storage reads fail: every honest result of the round was
rejected ("cannot read ...: injected fault"), the task withdrawn, nobody paid; with 10 % of
reads damaged, 2 of 3 intact results were rejected as "changed or damaged". Here the same
faults (tests/faulty_fs.py, seeded) go through the real store, the real Judge, the creator's
review and settlement on a real SQLite marketplace, and a whole round of Prefect flows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from decentralml.contributor import Contributor, result_url
from decentralml.creator import Creator, review, settle_and_close
from decentralml.creator import checkpoint as core_checkpoint
from decentralml.creator.session import open_session
from decentralml.io.storage import ArtifactStore, Retries, sha256_hex
from decentralml.io.weights import encode, layout_of
from decentralml.marketplace.embedded import EmbeddedMarketplace
from decentralml.protocol.accounts import contributor_dev_keypair, dev_keypair
from decentralml.protocol.errors import StorageUnavailable
from decentralml.protocol.records import (
    ResultSubmissionStatus,
    Submission,
    TaskResult,
    TaskSpec,
    TaskStatus,
    Verdict,
)
from decentralml.runtime.backends import contributor_keypair, open_store
from decentralml.runtime.config import parse_config
from decentralml.validation import AutoAccept, Decision, Deferred, Judge, ScreeningRules
from flows.contributor import contribute
from flows.creator import publish, run_round
from tasks.creator import STEPS
from tests.faulty_fs import inject
from tests.helpers import commit_and_send, write_config

RNG = np.random.default_rng(0)
GLOBAL = {
    "000.kernel": RNG.normal(0, 0.05, (20, 8)).astype(np.float32),
    "001.bias": np.zeros(8, dtype=np.float32),
}
FAST = Retries(attempts=6, delays=(0.0,))  # the store's retries, without the waiting


def trained(seed: int) -> dict[str, np.ndarray]:
    """Honest weights: the global ones plus an independent update."""
    rng = np.random.default_rng(seed)
    return {n: (t + rng.normal(0, 0.01, t.shape)).astype(t.dtype) for n, t in GLOBAL.items()}


class FaultyRound:
    """Results in the creator's storage on ``faulty://``, recorded as a marketplace would."""

    def __init__(self, root: Path, retries: Retries = FAST) -> None:
        self.store = ArtifactStore(f"faulty://{root}", retries=retries)
        self.submissions: list[Submission] = []

    def location(self, sid: int) -> str:
        return self.store.round_url("run", 1, f"results/submission-{sid}.safetensors")

    def add(self, data: bytes, *, stored: bytes | None = None, write: bool = True) -> int:
        """A result whose digest is recorded for ``data``; ``stored`` is what lies in the
        storage instead (a file swapped after registration); ``write=False``: nothing."""
        sid = len(self.submissions)
        if write:
            self.store.put(self.location(sid), data if stored is None else stored)
        result = TaskResult(self.location(sid), sha256_hex(data), 1000)
        status = ResultSubmissionStatus.PendingValidation
        self.submissions.append(Submission(sid, 1, f"w{sid}", status, 0, result, commit_order=sid))
        return sid

    def review(self) -> dict[int, Decision]:
        judge = Judge(
            fetch=lambda url, digest: self.store.get(url, digest, 1_000_000),
            result_location=lambda s: self.location(s.submission_id),
            layout=layout_of(GLOBAL),
            global_tensors=GLOBAL,
            max_bytes=1_000_000,
            policy=AutoAccept(),
            evaluate=lambda tensors: {"accuracy": 0.5},
            rules=ScreeningRules(),
        )
        return {d.submission_id: d for d in judge.review(self.submissions)}


# --- (a) the Judge on faulty storage ---------------------------------------------------------


@pytest.mark.parametrize("seed", range(1, 5))  # seed 0 draws no value under 0.2 in 22 reads
@pytest.mark.parametrize(("fail", "corrupt"), [(0.2, 0.0), (0.0, 0.1)], ids=["fail20", "damage10"])
def test_honest_results_survive_failed_and_damaged_reads(
    tmp_path: Path, fail: float, corrupt: float, seed: int
) -> None:
    round_ = FaultyRound(tmp_path)
    honest = [round_.add(encode(trained(i), {"num_examples": 1000})) for i in range(20)]
    tampered = round_.add(encode(trained(10)), stored=encode(trained(11)))
    missing = round_.add(encode(trained(12)), write=False)
    with inject(fail_reads=fail, corrupt_reads=corrupt, seed=seed) as faults:
        decisions = round_.review()
    assert faults.failed + faults.corrupted > 0
    assert all(decisions[sid].accepted for sid in honest), decisions
    assert decisions[tampered].verdict == Verdict(
        tampered, False, "stored result does not match its recorded sha256"
    )
    assert decisions[missing].verdict == Verdict(
        missing, False, "no result file is stored at the submission's location"
    )


def test_an_unreadable_result_is_deferred_not_rejected(tmp_path: Path) -> None:
    round_ = FaultyRound(tmp_path)
    first, second = (round_.add(encode(trained(i))) for i in range(2))
    down = round_.add(encode(trained(2)))  # committed last
    with inject(unreadable=(f"submission-{down}.",)) as faults:
        decisions = round_.review()
    assert decisions[first].accepted and decisions[second].accepted
    assert decisions[down].verdict is None and not decisions[down].accepted
    assert decisions[down].deferred == Deferred(down, "the creator's storage could not be read")
    assert faults.failed == FAST.attempts  # retried before giving up for this round


def test_results_committed_after_an_unreadable_one_wait_for_it(tmp_path: Path) -> None:
    """A later result may be a copy of the unread one: it cannot be judged original yet. A
    later result broken on its own is still rejected."""
    round_ = FaultyRound(tmp_path)
    down = round_.add(encode(trained(0)))
    later = round_.add(encode(trained(1)))
    broken = round_.add(b"not safetensors")
    with inject(unreadable=(f"submission-{down}.",)):
        decisions = round_.review()
    assert decisions[down].deferred is not None
    assert decisions[later].deferred == Deferred(
        later,
        f"waits for submission {down}, committed earlier, which could not be read: copies "
        "are judged against earlier commitments",
    )
    assert decisions[broken].verdict is not None and not decisions[broken].verdict.accept


def test_deferred_reasons_do_not_describe_the_creators_machine(tmp_path: Path) -> None:
    round_ = FaultyRound(tmp_path)
    down = round_.add(encode(trained(0)))
    round_.add(encode(trained(1)))
    with inject(fail_reads=1.0):
        decisions = round_.review()
    for decision in decisions.values():
        assert decision.deferred is not None
        reason = decision.deferred.reason
        assert "/" not in reason and "faulty" not in reason and str(tmp_path) not in reason
    assert decisions[down].deferred.reason == "the creator's storage could not be read"


# --- the creator's review and settlement with a deferred result ------------------------------


@pytest.fixture
def creator_round(tmp_path: Path):
    market = EmbeddedMarketplace(tmp_path / "m.sqlite")
    alice = dev_keypair("Alice")
    market.fund(alice.ss58_address, 1000)
    store = ArtifactStore(f"faulty://{tmp_path / 'storage'}", retries=FAST)
    global_art = store.put(store.round_url("r", 1, "global.safetensors"), encode(GLOBAL))
    block = market.current_block()
    spec = TaskSpec(
        "q",
        300,
        3,
        block + 100,
        global_weights_path=global_art.url,
        global_weights_sha256=global_art.sha256,
    )
    task = market.get_task(market.create_task(alice, spec))
    for index in range(3):
        worker = contributor_dev_keypair(index)
        sid = market.assign_task(worker, task.task_id)
        artifact = store.put(result_url(task, sid), encode(trained(index)))
        result = TaskResult(artifact.url, artifact.sha256, 100, {}, global_art.sha256)
        commit_and_send(market, worker, sid, result)
    creator = Creator(parse_config({}), market, store, alice, "r", Path("."))
    return creator, market, task


def test_settlement_pays_the_decided_and_keeps_the_task_open_for_the_deferred(creator_round):
    creator, market, task = creator_round
    submissions = market.list_task_results(task.task_id)
    down = submissions[-1].submission_id
    with inject(unreadable=(f"submission-{down}.",)):
        outcome = review(creator, task, submissions, GLOBAL, AutoAccept(), lambda t: {})
    assert [d.submission_id for d in outcome.deferred] == [down]
    assert len(outcome.accepted) == 2 and not outcome.rejected
    payments, refund = settle_and_close(
        market, creator.keypair, task.task_id, outcome.verdicts, outcome.deferred
    )
    assert payments == {s.submission_id: 100 for s in submissions[:2]} and refund == 0
    assert market.get_submission(down).status is ResultSubmissionStatus.PendingValidation
    assert market.get_task(task.task_id).status not in (TaskStatus.Completed, TaskStatus.Withdrawn)

    # The storage is back: the deferred result is judged, paid, and the task closed.
    pending = [market.get_submission(down)]
    later = review(creator, task, pending, GLOBAL, AutoAccept(), lambda t: {})
    assert [v.accept for v in later.verdicts] == [True] and not later.deferred
    payments, refund = settle_and_close(market, creator.keypair, task.task_id, later.verdicts)
    assert payments == {down: 100} and refund == 0
    assert market.get_task(task.task_id).status in (TaskStatus.Completed, TaskStatus.Withdrawn)
    assert market.escrow_total() == 0


# --- (b) a whole round of Prefect flows on faulty storage ------------------------------------


@pytest.mark.slow
def test_a_round_on_storage_failing_a_fifth_of_reads_pays_every_honest_result(
    tmp_path: Path, prefect_harness
) -> None:
    contributors = 3
    _, config = write_config(
        tmp_path,
        **{
            "contributors": contributors,
            "task.max_assignments": contributors,
            "task.pays_amount": 300,
            "storage.url": f"faulty://{tmp_path / 'storage'}",
            "storage.retry_attempts": 6,
            "storage.retry_delays": [0.05, 0.1],
        },
    )
    session = open_session(config, run="faulty-round")
    market = session.creator.market
    with inject(fail_reads=0.2, seed=7) as faults:
        task_id = publish(session, 1)
        task = market.get_task(task_id)
        sent = [
            contribute(
                Contributor(
                    market, session.creator.store, contributor_keypair(config.marketplace, i), i
                ),
                task,
            )
            for i in range(contributors)
        ]
        report = run_round(session, 1, task_id)
    assert faults.failed > 0, faults
    assert sorted(report.accepted) == sorted(c.submission_id for c in sent)
    assert not report.rejected and not report.deferred and not report.task_open
    assert report.payments == {c.submission_id: 100 for c in sent}
    for contribution in sent:
        submission = market.get_submission(contribution.submission_id)
        assert submission.status is ResultSubmissionStatus.Accepted and submission.paid == 100
    assert market.get_task(task_id).status is TaskStatus.Completed


# --- one retry layer: a write that keeps failing is tried as often as configured -------------


@pytest.mark.parametrize("runner", ["core", "prefect-task"])
def test_a_write_that_keeps_failing_is_tried_exactly_the_configured_number_of_times(
    tmp_path: Path, runner: str, request: pytest.FixtureRequest
) -> None:
    """Regression (issue 18): the store's 4 tries ran inside each of the Prefect task's 4 tries,
    16 writes of a checkpoint that could not be stored. Storage is retried by one layer, the
    store, with ``storage.retry_attempts``, whoever runs the step: the seed API and the packaged
    script (the plain function) or a flow (the same step as a Prefect task)."""
    config = parse_config(
        {
            "storage": {
                "url": f"faulty://{tmp_path / 'storage'}",
                "retry_attempts": 3,
                "retry_delays": [0.0],
            }
        }
    )
    creator = Creator(config, None, open_store(config.storage), None, "r", Path("."))  # type: ignore[arg-type]
    if runner == "core":
        checkpoint = core_checkpoint
    else:
        request.getfixturevalue("prefect_harness")
        checkpoint = STEPS.checkpoint
    with inject(fail_writes=1.0) as faults, pytest.raises(StorageUnavailable, match="injected"):
        checkpoint(creator, 1, GLOBAL)
    assert faults.writes == config.storage.retry_attempts == 3
