"""CustomAccept: the creator's validators decide, in the order its config lists them.

Validators are round-level (``validation.validators``): the built-ins ``update_norm``,
``holdout_gate`` and ``min_accuracy``, and any ``package.module:function`` of the creator's
own, which judges one Candidate at a time. Each validator sees only the candidates the earlier
ones kept; a candidate is accepted when every validator accepted it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

from decentralml.protocol.errors import ConfigError
from decentralml.protocol.records import Verdict
from decentralml.validation.base import Candidate, RoundView
from decentralml.validation.validators import Finding, FunctionValidator, RoundValidator


def load_function(reference: str) -> Callable[[Candidate], Any]:
    module_name, _, function_name = reference.partition(":")
    if not module_name or not function_name:
        raise ConfigError(
            f"custom validator {reference!r} must look like 'package.module:function'"
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # the creator's module may fail in any way while it loads
        raise ConfigError(
            f"custom validator module {module_name!r} cannot be imported: {error}"
        ) from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError(
            f"custom validator {reference!r}: {module_name} has no function {function_name!r}"
        )
    return function


class CustomAccept:
    name = "CustomAccept"
    shows_values = False

    def __init__(self, *validators: RoundValidator) -> None:
        if not validators:
            raise ConfigError("CustomAccept needs at least one validator")
        self.validators = validators

    def decide_round(self, candidates: Sequence[Candidate], view: RoundView) -> list[Verdict]:
        in_play = list(candidates)
        notes: dict[int, list[str]] = {c.submission_id: [] for c in candidates}
        refused: dict[int, str] = {}
        for validator in self.validators:
            if not in_play:
                break
            findings = validator.check(in_play, view)
            for candidate in in_play:
                finding = findings.get(candidate.submission_id) or Finding(
                    False, f"{validator.name} gave no finding"
                )
                if finding.accept:
                    notes[candidate.submission_id].append(finding.note)
                else:
                    refused[candidate.submission_id] = finding.note
            in_play = [c for c in in_play if c.submission_id not in refused]
        return [
            Verdict(c.submission_id, False, refused[c.submission_id])
            if c.submission_id in refused
            else Verdict(c.submission_id, True, "; ".join(notes[c.submission_id]))
            for c in candidates
        ]

    def decide(self, candidate: Candidate) -> Verdict:
        """A round of one: only meaningful for validators that judge candidates alone."""
        view = RoundView(candidate.tensors, candidate.evaluate)
        return self.decide_round([candidate], view)[0]


def function_policy(reference: str) -> CustomAccept:
    """CustomAccept with one ``package.module:function`` validator."""
    return CustomAccept(FunctionValidator(load_function(reference), reference))
