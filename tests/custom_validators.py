"""CustomAccept validators for tests/test_validation.py: "tests.custom_validators:<name>".

Each shows one return form a creator's validator may use.
"""

from __future__ import annotations

import numpy as np

from decentralml.protocol.records import Verdict
from decentralml.validation import Candidate

MIN_EXAMPLES = 100


def always(candidate: Candidate) -> bool:
    return True


def never(candidate: Candidate) -> bool:
    return False


def enough_examples(candidate: Candidate) -> tuple[bool, str]:
    count = candidate.num_examples
    return count >= MIN_EXAMPLES, f"{count} examples (needs {MIN_EXAMPLES})"


def small_bias(candidate: Candidate) -> Verdict:
    """A Verdict of its own, computed from the tensors themselves."""
    largest = max(float(np.max(np.abs(t))) for n, t in candidate.tensors.items() if "bias" in n)
    sid = candidate.submission.submission_id
    if largest > 1.0:
        return Verdict(sid, False, f"bias magnitude {largest:.2f} exceeds 1.0")
    return Verdict(sid, True, f"bias magnitude {largest:.2f} within 1.0")


def garbage(candidate: Candidate) -> str:
    return "yes please"


def half_pair(candidate: Candidate) -> tuple[str, str]:
    return ("true", "a string is not a bool")


def numpy_bool(candidate: Candidate) -> np.bool_:
    """What ``np.mean(...) > threshold`` gives: numpy's bool, not Python's."""
    return np.mean([t.mean() for t in candidate.tensors.values()]) > -1e9


NOT_A_FUNCTION = 42
