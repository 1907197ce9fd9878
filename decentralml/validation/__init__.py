"""Validation policies (AutoAccept, ManualAccept, CustomAccept) and integrity screening."""

from __future__ import annotations

from decentralml.config import TaskConfig
from decentralml.domain import ValidationStrategy
from decentralml.validation.auto import AutoAccept
from decentralml.validation.base import Candidate, Judge, Policy, result_size_limit, screen
from decentralml.validation.custom import CustomAccept, load_function
from decentralml.validation.manual import Decider, ManualAccept, decisions_from_file, prompt_decider


def make_policy(task: TaskConfig, decider: Decider | None = None) -> Policy:
    """The policy the task's config names. ManualAccept uses ``decider``, else the decisions
    file from the config, else a terminal prompt."""
    if task.validation_strategy is ValidationStrategy.AutoAccept:
        return AutoAccept()
    if task.validation_strategy is ValidationStrategy.ManualAccept:
        if decider is None:
            decider = (
                decisions_from_file(task.manual_decisions)
                if task.manual_decisions
                else prompt_decider()
            )
        return ManualAccept(decider)
    reference = task.custom_validator or "decentralml.validation.builtin:min_accuracy"
    return CustomAccept(load_function(reference), reference)


__all__ = [
    "AutoAccept",
    "Candidate",
    "CustomAccept",
    "Judge",
    "ManualAccept",
    "Policy",
    "decisions_from_file",
    "make_policy",
    "prompt_decider",
    "result_size_limit",
    "screen",
]
