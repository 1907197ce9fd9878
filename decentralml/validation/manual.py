"""ManualAccept: the creator decides each result, from a decisions file or at a prompt.

A decisions file (JSON or YAML) maps submission ids to ``{"accept": bool, "reason": str}``:

    {"7": {"accept": true, "reason": "looks good"}, "8": {"accept": false, "reason": "late"}}

The Prefect UI form (pause_flow_run with a RunInput) plugs in here as another ``Decider``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import yaml

from decentralml.domain import Verdict
from decentralml.errors import ConfigError
from decentralml.validation.base import Candidate, PerCandidatePolicy

Decider = Callable[[Candidate], Verdict]


class ManualAccept(PerCandidatePolicy):
    name = "ManualAccept"

    def __init__(self, decider: Decider) -> None:
        self._decider = decider

    def decide(self, candidate: Candidate) -> Verdict:
        return self._decider(candidate)


def decisions_from_file(path: str | Path) -> Decider:
    """A decider reading the creator's verdicts from a file; a missing id is an error."""
    source = Path(path)
    decisions = _read_decisions(source)

    def decide(candidate: Candidate) -> Verdict:
        sid = candidate.submission.submission_id
        if sid not in decisions:
            raise ConfigError(f"{source} has no decision for submission {sid}; add it and rerun")
        accept, reason = decisions[sid]
        return Verdict(sid, accept, reason)

    return decide


def _read_decisions(source: Path) -> dict[int, tuple[bool, str]]:
    try:
        raw = (
            yaml.safe_load(source.read_text())
            if source.suffix in {".yaml", ".yml"}
            else json.loads(source.read_text())
        )
    except FileNotFoundError:
        raise ConfigError(f"decisions file {source} does not exist") from None
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"decisions file {source} cannot be parsed: {error}") from None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"decisions file {source} must map submission ids to decisions")
    decisions: dict[int, tuple[bool, str]] = {}
    for key, value in raw.items():
        if not isinstance(value, Mapping) or not isinstance(value.get("accept"), bool):
            raise ConfigError(f"{source}: decision for {key} needs a boolean 'accept'")
        try:
            sid = int(key)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: {key!r} is not a submission id (an integer)") from None
        reason = value.get("reason")
        decisions[sid] = (value["accept"], str(reason) if reason else "decided by the creator")
    return decisions


def prompt_decider(ask: Callable[[str], str] = input) -> Decider:
    """Ask the creator at the terminal, showing the held-out metrics of the candidate."""

    def decide(candidate: Candidate) -> Verdict:
        sid = candidate.submission.submission_id
        metrics = candidate.holdout_metrics()
        summary = (
            f"submission {sid} by {candidate.submission.worker}: "
            f"{candidate.num_examples} examples, held-out accuracy {metrics['accuracy']:.4f}"
        )
        answer = ask(f"{summary}\naccept? [y/n] ").strip().lower()
        accept = answer in {"y", "yes"}
        reason = ask("reason: ").strip() or (
            "accepted by the creator" if accept else "rejected by the creator"
        )
        return Verdict(sid, accept, reason)

    return decide
