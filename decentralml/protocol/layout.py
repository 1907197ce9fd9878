"""The storage layout of a training run: one home for every path a party derives.

A creator keeps everything of a run under ``runs/<run>/`` of its storage root::

    runs/<run>/round-<n>/global.safetensors          the weights round n starts from
    runs/<run>/round-<n>/assets.tar.gz               the contributor package of round n
    runs/<run>/round-<n>/results/submission-<id>.safetensors   a contributor's result
    runs/<run>/round-<n>/results/pulled/<sha256>.safetensors   the creator's copy of a result
                                                 its contributor hosts (pulled, verified)
    runs/<run>/checkpoints/round-<n>.safetensors     the global weights after round n
    runs/<run>/checkpoints/round-<n>.strategy.safetensors      the strategy's state after n

A result's place is derived from the task record (beside the round's global weights) and the
submission id, never read from what a contributor claims: the creator reads only there. A
contributor that hosts its result itself commits a link instead; the creator pulls it once
(decentralml.io.fetcher) into ``results/pulled/``, named by the committed digest, so a copy is
only ever the bytes it was committed as, and reads its own copy from then on.

A contributor hosting its results keeps them under its own prefix as
``task-<task id>/submission-<id>.safetensors`` (``hosted_result_parts``).
"""

from __future__ import annotations

import posixpath

RUNS = "runs"
RESULTS = "results"


def run_parts(run: str) -> tuple[str, ...]:
    """The run's folder, relative to the storage root."""
    return (RUNS, run)


def round_parts(run: str, round_number: int, name: str) -> tuple[str, ...]:
    """A file of round ``round_number`` (its global weights, its package)."""
    return (*run_parts(run), f"round-{round_number}", name)


def checkpoint_parts(run: str, round_number: int) -> tuple[str, ...]:
    """The global weights after round ``round_number``."""
    return (*run_parts(run), "checkpoints", f"round-{round_number}.safetensors")


def strategy_checkpoint_parts(run: str, round_number: int) -> tuple[str, ...]:
    """The strategy's state after round ``round_number``, written before the weights."""
    return (*run_parts(run), "checkpoints", f"round-{round_number}.strategy.safetensors")


def result_name(submission_id: int) -> str:
    return f"submission-{submission_id}.safetensors"


def result_url(global_weights_url: str, submission_id: int) -> str:
    """Where submission ``submission_id`` of the task whose round weights are at
    ``global_weights_url`` must put its result: ``results/`` beside those weights."""
    round_dir = posixpath.dirname(global_weights_url)
    return posixpath.join(round_dir, RESULTS, result_name(submission_id))


RESULT_PLACE = f"{RESULTS}/submission-<id>.safetensors beside the task's global weights"
"""The layout's rule for results, in words (a refusal names it)."""


def pulled_result_url(global_weights_url: str, sha256: str) -> str:
    """Where the creator keeps its copy of a result it pulled from the contributor's place:
    content-addressed, so nothing but the committed bytes can be there for long."""
    round_dir = posixpath.dirname(global_weights_url)
    return posixpath.join(round_dir, RESULTS, "pulled", f"{sha256}.safetensors")


def hosted_result_parts(task_id: int, submission_id: int) -> tuple[str, ...]:
    """Where a contributor hosting its results keeps one, under its own prefix."""
    return (f"task-{task_id}", result_name(submission_id))
