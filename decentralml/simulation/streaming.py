"""Verified aggregation as one stream: every result read once, hashed once, never copied,
checked and folded into the mean, then dropped; the next one is read (and hashed) on a second
thread meanwhile, so reading and hashing overlap the checks and the accumulate.

Each result goes through the creator's own screening (``screen``: its location, size bound,
sha256 while it is in cache, safetensors header, names, shapes, dtypes, finite values), so the
refusals and their one-line reasons are the review's. Its tensors are read-only views on the
bytes read (``weights.decode_views``), folded into the accumulator of ``accumulate_weighted``:
memory stays at two results (the one checked, the one read ahead) plus the accumulator
whatever the number of results.

This is the whole of a round only when nothing compares results with each other: the
creator's review (``Judge.review``) also checks originality and runs round-level policies,
so it holds the round's screened results together and federates afterwards. Weights are the
claims capped as the review caps them (``allowed_weights``), computed from the records before
any byte is read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from decentralml.io.weights import Layout
from decentralml.protocol.records import Submission, Verdict
from decentralml.strategies.base import Contribution, NothingToAggregate, Strategy, Tensors
from decentralml.validation.base import (
    Deferred,
    ScreeningRules,
    allowed_weights,
    commitment_order,
    refusal_before_reading,
    screen,
)


@dataclass
class StreamedRound:
    """What a streamed aggregation made of a round: the new weights (None: nothing passed),
    the refusals with their reasons, and the results the creator could not read (deferred)."""

    new_global: Tensors | None = None
    refused: list[Verdict] = field(default_factory=list)
    deferred: list[Deferred] = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)


class _ReadAhead:
    """``fetch`` with results read in advance on a second thread: while one result is
    decoded, checked and folded in, the next one is read and hashed (file reads and sha256
    release the GIL). Each read happens once, in commitment order, exactly as ``screen`` would
    do it; its exceptions reach ``screen`` unchanged through the future."""

    def __init__(self, fetch: Callable[[str, str], bytes], reader: ThreadPoolExecutor) -> None:
        self._fetch = fetch
        self._reader = reader
        self._pending: dict[tuple[str, str], Future[bytes]] = {}

    def start(self, submission: Submission, location: str, max_examples: int | None) -> None:
        """Begin reading ``submission``'s result if ``screen`` is going to read it."""
        if refusal_before_reading(submission, location, max_examples) is None:
            assert submission.result is not None
            key = (location, submission.result.sha256)
            self._pending[key] = self._reader.submit(self._fetch, *key)

    def __call__(self, url: str, digest: str) -> bytes:
        pending = self._pending.pop((url, digest), None)
        return pending.result() if pending is not None else self._fetch(url, digest)


def screened_stream(
    submissions: Sequence[Submission],
    fetch: Callable[[str, str], bytes],
    result_location: Callable[[Submission], str],
    layout: Layout,
    max_bytes: int,
    rules: ScreeningRules,
    outcome: StreamedRound,
) -> Iterator[Contribution]:
    """The submissions that pass screening, one at a time, as contributions weighted by their
    capped claims; refusals and deferrals are recorded in ``outcome`` as they happen. The next
    result is read while this one is checked and folded in (``_ReadAhead``)."""
    ordered = sorted(submissions, key=commitment_order)
    claims = [s.result.num_examples if s.result else 0 for s in ordered]
    weights = allowed_weights(claims, rules.examples_cap_multiple, rules.max_examples)
    locations = [result_location(s) for s in ordered]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead") as reader:
        read = _ReadAhead(fetch, reader)
        for k, (submission, weight, location) in enumerate(
            zip(ordered, weights, locations, strict=True)
        ):
            if k == 0:
                read.start(submission, location, rules.max_examples)
            if k + 1 < len(ordered):
                read.start(ordered[k + 1], locations[k + 1], rules.max_examples)
            screened = screen(submission, read, layout, location, max_bytes, rules.max_examples)
            if isinstance(screened, Verdict):
                outcome.refused.append(screened)
            elif isinstance(screened, Deferred):
                outcome.deferred.append(screened)
            else:
                outcome.accepted.append(submission.submission_id)
                yield Contribution(screened, weight, submission.worker)
            del screened  # this result's bytes go before the one after the next is read


def aggregate_verified(
    strategy: Strategy,
    round_number: int,
    global_tensors: Tensors,
    submissions: Sequence[Submission],
    fetch: Callable[[str, str], bytes],
    result_location: Callable[[Submission], str],
    layout: Layout,
    max_bytes: int,
    rules: ScreeningRules | None = None,
) -> StreamedRound:
    """Screen and federate ``submissions`` in one pass with a streaming ``strategy`` (FedAvg,
    Average, the server optimizers); a rule that materializes (median, Krum) still works but
    holds every result. ``rules``: the screening limits (default ScreeningRules())."""
    outcome = StreamedRound()
    stream = screened_stream(
        submissions, fetch, result_location, layout, max_bytes, rules or ScreeningRules(), outcome
    )
    try:
        outcome.new_global = strategy.aggregate(round_number, global_tensors, stream)
    except NothingToAggregate:
        outcome.new_global = None
    return outcome
