"""The held-out gate judges the aggregate the round will really produce: the configured
rule's, not a private FedAvg mean (it always judged FedAvg's, whatever the task configured)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from decentralml.protocol.records import ResultSubmissionStatus, Submission, TaskResult
from decentralml.strategies import Contribution, FedAvg, Median
from decentralml.validation import HoldoutGate, RoundView
from decentralml.validation.base import Candidate

GLOBAL = {"w": np.zeros(3, np.float32)}
VALUES = {1: 1.0, 2: 1.1, 3: 0.9, 4: -5.0}  # three honest results and one far outlier


def loss_to_one(tensors: Mapping[str, np.ndarray]) -> dict:
    """A held-out loss that is lowest at w = 1, with a floor: relative drops stay moderate."""
    return {"loss": float(np.mean((np.asarray(tensors["w"]) - 1.0) ** 2)) + 1.0}


def candidates() -> list[Candidate]:
    made = []
    for sid, value in VALUES.items():
        result = TaskResult(f"memory://r/{sid}", "ab" * 32, 10)
        submission = Submission(sid, 0, f"w{sid}", ResultSubmissionStatus.PendingValidation, 0)
        submission = Submission(**{**submission.__dict__, "result": result})
        made.append(Candidate(submission, {"w": np.full(3, value, np.float32)}, loss_to_one))
        made[-1].weight = 10
    return made


def rule(strategy) -> object:
    def aggregate(chosen: Sequence[Candidate]) -> dict:
        contributions = [Contribution(c.tensors, c.weight) for c in chosen]
        return strategy.aggregate(1, GLOBAL, contributions)

    return aggregate


def test_the_gate_refuses_what_hurts_the_mean_of_a_fedavg_round() -> None:
    findings = HoldoutGate(tolerance=0.08).check(candidates(), RoundView(GLOBAL, loss_to_one))
    assert not findings[4].accept
    findings = HoldoutGate(tolerance=0.08).check(
        candidates(), RoundView(GLOBAL, loss_to_one, rule(FedAvg()))
    )
    assert not findings[4].accept  # FedAvg as the configured rule: the same judgement


def test_under_a_median_rule_the_gate_judges_the_median() -> None:
    """The median already ignores the outlier: leaving it out barely changes the round's
    aggregate, so the gate has nothing to refuse, where a FedAvg mean would be ruined."""
    view = RoundView(GLOBAL, loss_to_one, rule(Median()))
    findings = HoldoutGate(tolerance=0.08).check(candidates(), view)
    assert all(finding.accept for finding in findings.values())
