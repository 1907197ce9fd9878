"""The round's judge: integrity, originality, then the policy, for every submission.

One assembly for every caller (``task_judge``): the creator's round, its manual review sheet,
the seed API's validate_task_results and the benchmarks all judge a task's results from the
same place (the task's layout, in the given storage) with the same bounds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from decentralml.io.fetcher import PullPolicy
from decentralml.io.storage import ArtifactStore
from decentralml.io.weights import Layout, layout_of
from decentralml.protocol.errors import StorageError
from decentralml.protocol.records import Submission, Task, Verdict
from decentralml.validation.base import (
    Aggregator,
    Candidate,
    Decision,
    Deferred,
    Evaluator,
    Policy,
    RoundView,
    ScreeningRules,
    allowed_weights,
    commitment_order,
    reject,
    result_size_limit,
    screen,
)
from decentralml.validation.intake import ResultIntake
from decentralml.validation.originality import find_copies
from decentralml.validation.value import ValuePricing


@dataclass(frozen=True)
class Judge:
    """Decides a round's submissions: integrity, originality, then the policy on the rest.

    Shared by the creator's round (which federates the accepted weights) and the seed's
    validate_task_results (which only reports verdicts). Reads only through ``fetch`` and
    only at ``result_location(submission)``."""

    fetch: Callable[[str, str], bytes]
    result_location: Callable[[Submission], str]
    layout: Layout
    global_tensors: Mapping[str, np.ndarray]
    max_bytes: int
    policy: Policy
    evaluate: Evaluator | None
    params: Mapping[str, object] = field(default_factory=dict)
    rules: ScreeningRules = field(default_factory=ScreeningRules)
    aggregate: Aggregator | None = None
    pricing: ValuePricing | None = None
    """A task paying by value: the accepted results' amounts (and refusals of those worth
    nothing) come from their measured value (validation.value)."""

    def review(self, submissions: Iterable[Submission]) -> list[Decision]:
        """A decision for every submission, in commitment order (earliest first)."""
        decisions: dict[int, Decision] = {}
        candidates: list[Candidate] = []
        ordered = sorted(submissions, key=commitment_order)
        first_deferred: int | None = None
        for submission in ordered:
            screened = screen(
                submission,
                self.fetch,
                self.layout,
                self.result_location(submission),
                self.max_bytes,
                self.rules.max_examples,
            )
            if isinstance(screened, Verdict):
                decisions[submission.submission_id] = Decision(screened)
            elif isinstance(screened, Deferred):
                decisions[submission.submission_id] = Decision(deferred=screened)
                if first_deferred is None:
                    first_deferred = submission.submission_id
            elif first_deferred is not None:
                # It may copy the unread earlier one: it cannot be judged original yet.
                decisions[submission.submission_id] = Decision(
                    deferred=Deferred(
                        submission.submission_id,
                        f"waits for submission {first_deferred}, committed earlier, which "
                        "could not be read: copies are judged against earlier commitments",
                    )
                )
            else:
                candidates.append(Candidate(submission, screened, self.evaluate, self.params))
        view = RoundView(self.global_tensors, self.evaluate, self.aggregate)
        copies = find_copies(candidates, view, self.rules.copy_threshold)
        originals = [c for c in candidates if c.submission_id not in copies]
        for candidate in candidates:
            if candidate.submission_id in copies:
                reason = copies[candidate.submission_id]
                decisions[candidate.submission_id] = Decision(
                    reject(candidate.submission, reason), holdout=candidate.recorded_metrics()
                )
        weights = allowed_weights(
            [c.num_examples for c in originals],
            self.rules.examples_cap_multiple,
            self.rules.max_examples,
        )
        for candidate, weight in zip(originals, weights, strict=True):
            candidate.weight = weight
        if originals:
            if self.pricing is not None and self.policy.shows_values:
                values = self.pricing.estimate(originals, view)
                for candidate in originals:
                    candidate.value = values[candidate.submission_id]
            verdicts = self.policy.decide_round(originals, view)
            if self.pricing is not None:
                verdicts = self.pricing.price(originals, verdicts, view)
            for candidate, verdict in zip(originals, verdicts, strict=True):
                kept = candidate if verdict.accept else None
                decisions[candidate.submission_id] = Decision(
                    verdict, kept, holdout=candidate.recorded_metrics(), counted=candidate.weight
                )
        return [decisions[s.submission_id] for s in ordered]


def task_judge(
    store: ArtifactStore,
    task: Task,
    global_tensors: Mapping[str, np.ndarray],
    policy: Policy,
    *,
    evaluate: Evaluator | None = None,
    max_result_bytes: int,
    rules: ScreeningRules | None = None,
    params: Mapping[str, object] | None = None,
    aggregate: Aggregator | None = None,
    pull_policy: PullPolicy | None = None,
    accept_uploads: bool = True,
    pricing: ValuePricing | None = None,
) -> Judge:
    """The judge of ``task``'s results: each read only where ``ResultIntake`` says (the
    task's layout in ``store``, which must hold the task's files, or a hosted result's link
    when ``pull_policy`` allows pulling; a record naming anywhere else is refused before
    anything is read), bounded by the model's size and ``max_result_bytes``."""
    if not store.holds(task.spec.global_weights_path):
        raise StorageError(
            f"task {task.task_id} keeps its weights outside this creator's storage "
            f"({store.root_url}); review it with the storage it was published with"
        )
    layout = layout_of(global_tensors)
    max_bytes = result_size_limit(layout, max_result_bytes)
    intake = ResultIntake(
        store, task.spec.global_weights_path, max_bytes, pull_policy, accept_uploads
    )
    return Judge(
        fetch=intake.read,
        result_location=intake.location,
        layout=layout,
        global_tensors=global_tensors,
        max_bytes=max_bytes,
        policy=policy,
        evaluate=evaluate,
        params=params or {},
        rules=rules or ScreeningRules(),
        aggregate=aggregate,
        pricing=pricing,
    )
