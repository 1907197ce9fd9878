"""CustomAccept: a user function named ``package.module:function`` decides.

The function gets a ``Candidate`` and returns a ``Verdict``, a ``(bool, reason)`` pair or a
bool. It runs in the creator's process: it is the creator's own code, never a contributor's.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from decentralml.domain import Verdict
from decentralml.errors import ConfigError
from decentralml.validation.base import Candidate


def load_function(reference: str) -> Callable[[Candidate], Any]:
    module_name, _, function_name = reference.partition(":")
    if not module_name or not function_name:
        raise ConfigError(
            f"custom validator {reference!r} must look like 'package.module:function'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
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

    def __init__(self, function: Callable[[Candidate], Any], reference: str = "") -> None:
        self._function = function
        self._reference = reference or getattr(function, "__name__", "custom")

    def decide(self, candidate: Candidate) -> Verdict:
        sid = candidate.submission.submission_id
        outcome = self._function(candidate)
        if isinstance(outcome, Verdict):
            return outcome
        if isinstance(outcome, bool | np.bool_):
            return Verdict(sid, bool(outcome), f"{self._reference} returned {bool(outcome)}")
        if (
            isinstance(outcome, tuple)
            and len(outcome) == 2
            and isinstance(outcome[0], bool | np.bool_)
        ):
            return Verdict(sid, bool(outcome[0]), str(outcome[1]))
        raise ConfigError(
            f"custom validator {self._reference} returned {outcome!r}; "
            "return a Verdict, a bool or an (accept, reason) pair"
        )
