"""AutoAccept: whatever passed the integrity screening is accepted."""

from __future__ import annotations

from decentralml.domain import Verdict
from decentralml.validation.base import Candidate


class AutoAccept:
    name = "AutoAccept"

    def decide(self, candidate: Candidate) -> Verdict:
        return Verdict(candidate.submission.submission_id, True, "passed integrity checks")
