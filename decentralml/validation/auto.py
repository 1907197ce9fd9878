"""AutoAccept: the seed's meaning — whatever passed screening is accepted and paid.

Screening still refuses unreadable, malformed and unoriginal results, but nothing judges what
an update does to the model: a sign-flipped or noisy update passes and is paid (measured in
docs/benchmarks.md). Use CustomAccept with the held-out gate when contributors are strangers.
"""

from __future__ import annotations

from decentralml.protocol.records import Verdict
from decentralml.validation.base import Candidate, PerCandidatePolicy


class AutoAccept(PerCandidatePolicy):
    name = "AutoAccept"

    def decide(self, candidate: Candidate) -> Verdict:
        return Verdict(candidate.submission.submission_id, True, "passed integrity checks")
