"""Validation policies (AutoAccept, ManualAccept, CustomAccept), screening and originality."""

from __future__ import annotations

from typing import TYPE_CHECKING

from decentralml.protocol import rules
from decentralml.protocol.records import ValidationStrategy
from decentralml.validation import builtin
from decentralml.validation.auto import AutoAccept
from decentralml.validation.base import (
    Candidate,
    Decision,
    Deferred,
    Policy,
    RoundView,
    ScreeningRules,
    allowed_weights,
    result_size_limit,
    screen,
)
from decentralml.validation.custom import CustomAccept, function_policy, load_function
from decentralml.validation.judge import Judge, task_judge
from decentralml.validation.manual import (
    Decider,
    ManualAccept,
    RoundDecider,
    decisions_from_file,
    prompt_decider,
    terminal_decider,
)
from decentralml.validation.validators import (
    MIN_ACCURACY,
    FunctionValidator,
    HoldoutGate,
    UpdateNormBound,
    make_validator,
)

if TYPE_CHECKING:
    from decentralml.runtime.config import TaskConfig


def make_policy(
    task: TaskConfig, decider: Decider | None = None, round_decider: RoundDecider | None = None
) -> Policy:
    """The policy the task's config names. ManualAccept uses ``decider``, else the decisions
    file from the config, else ``round_decider`` (the Prefect UI form in a flow run), else a
    terminal prompt if there is a terminal (else a ConfigError naming the review command).
    CustomAccept runs the configured validators, then ``custom_validator``."""
    if task.validation_strategy is ValidationStrategy.AutoAccept:
        return AutoAccept()
    if task.validation_strategy is ValidationStrategy.ManualAccept:
        if decider is None and task.manual_decisions:
            decider = decisions_from_file(task.manual_decisions)
        if decider is None and round_decider is not None:
            return ManualAccept(round_decider=round_decider)
        return ManualAccept(decider or terminal_decider())
    validators = [make_validator(entry) for entry in task.custom_validators()]
    if task.custom_validator:
        function = load_function(task.custom_validator)
        validators.append(FunctionValidator(function, task.custom_validator))
    return CustomAccept(*validators)


def screening_rules(task: TaskConfig, max_examples: int | None = None) -> ScreeningRules:
    """The screening limits of a task: ``task.max_examples`` wins over the creator's own
    knowledge of its shards (``max_examples``)."""
    return ScreeningRules(
        copy_threshold=task.copy_threshold,
        max_examples=rules.examples_limit(task.max_examples, max_examples),
        examples_cap_multiple=task.examples_cap_multiple,
    )


__all__ = [
    "MIN_ACCURACY",
    "AutoAccept",
    "Candidate",
    "CustomAccept",
    "Decision",
    "Deferred",
    "FunctionValidator",
    "HoldoutGate",
    "Judge",
    "ManualAccept",
    "Policy",
    "RoundDecider",
    "RoundView",
    "ScreeningRules",
    "UpdateNormBound",
    "allowed_weights",
    "builtin",
    "decisions_from_file",
    "function_policy",
    "make_policy",
    "make_validator",
    "prompt_decider",
    "result_size_limit",
    "screen",
    "screening_rules",
    "task_judge",
    "terminal_decider",
]
