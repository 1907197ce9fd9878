"""A long creator outage pays no round twice.

The outside crash test: the creator was killed while waiting for results and came back after
expiry + the review grace. The embedded marketplace had paid the round's unjudged results by
itself (its promise to contributors), and the rerun of the training, seeing "task finished, no
checkpoint", published and paid round 1 again: 2 000 000 instead of 1 000 000, and two paid
results never aggregated. Resuming now adopts the settled round: its paid results are screened
and federated, checkpointed as the round, and the training goes on from there.
"""

from __future__ import annotations

import numpy as np
import pytest

from decentralml.contributor import assign, result_url
from decentralml.creator.round import PLAIN_STEPS, publish_round, start_training
from decentralml.creator.session import open_session
from decentralml.io.weights import decode, encode
from decentralml.protocol.records import ResultSubmissionStatus, TaskResult, TaskStatus
from decentralml.runtime.backends import contributor_keypair
from tests.helpers import commit_and_send, write_config

GRACE = 5
EXPIRY = 10


@pytest.mark.slow
def test_a_round_paid_during_an_outage_is_aggregated_not_bought_again(tmp_path) -> None:
    _, config = write_config(
        tmp_path,
        **{
            "task.max_assignments": 2,
            "task.pays_amount": 1000,
            "task.expiry_blocks": EXPIRY,
            "marketplace.review_grace_blocks": GRACE,
            "marketplace.block_time_seconds": 10**9,  # blocks move only when the test says
        },
    )
    session = open_session(config, run="outage")
    market, store = session.creator.market, session.creator.store
    start = dict(session.global_tensors)
    task = market.get_task(publish_round(session, 1))
    rng = np.random.default_rng(0)
    sent = {}
    for index in range(2):  # two contributors deliver; the creator is away
        worker = contributor_keypair(config.marketplace, index)
        sid = assign(market, worker, task.task_id)
        tensors = {n: (t + rng.normal(0, 0.01, t.shape)).astype(t.dtype) for n, t in start.items()}
        artifact = store.put(result_url(task, sid), encode(tensors))
        commit_and_send(market, worker, sid, TaskResult(artifact.url, artifact.sha256, 1000))
        sent[sid] = tensors
    market.advance_blocks(EXPIRY + GRACE)  # past expiry and grace: the ledger pays them
    paid = [s for s in market.list_task_results(task.task_id)]
    assert {s.status for s in paid} == {ResultSubmissionStatus.Accepted}
    assert market.get_task(task.task_id).status is TaskStatus.Completed

    resumed = open_session(config, run="outage")  # the creator comes back
    progress = start_training(resumed, PLAIN_STEPS)

    assert progress.done_rounds == 1 and progress.settled_without_us is None
    assert len(market.list_tasks(open_only=False)) == 1  # round 1 was not published again
    assert sum(t.paid for t in market.list_tasks(open_only=False)) == 1000  # paid once
    for index in range(2):
        assert market.balance(contributor_keypair(config.marketplace, index).ss58_address) == 500
    checkpoint = decode(store.get(store.checkpoint_url("outage", 1)))
    mean = {n: (sent[0][n] + sent[1][n]) / 2 for n in start}  # equal claims: the plain mean
    for name in start:
        np.testing.assert_allclose(checkpoint[name], mean[name], atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(resumed.global_tensors[name], checkpoint[name])
    next_task = market.get_task(publish_round(resumed, 2))  # the training goes on from there
    assert next_task.spec.round_number == 2
