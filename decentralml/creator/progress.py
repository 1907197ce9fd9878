"""Where each slot of a round stands while the creator waits, from the marketplace's records.

The marketplace records, per slot, who took it and at which block (``assigned_block``), the
digest it committed to, and the result it sent: that is all a creator can know of a stranger's
progress, and all this view shows. No clock of the creator's enters it, so a view published
once stays true until a record changes (the progress artifact is updated only then).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from decentralml.protocol.records import Submission, Task


@dataclass(frozen=True)
class SlotProgress:
    """One slot of a task: free, or taken by ``worker`` at ``assigned_block`` with what it has
    sent since (a commitment, a result; "" while not).

    ``slow``: taken, no result, while a contributor that took its slot at the same block or
    later has already sent its result. A contributor still training before anyone delivered
    is not called slow: there is nothing yet to compare with."""

    slot: int
    submission_id: int | None = None
    worker: str = ""
    assigned_block: int | None = None
    commitment: str = ""
    result_sha256: str = ""
    slow: bool = False

    @property
    def state(self) -> str:
        """free, assigned, committed or result in: the furthest record the slot has."""
        if self.submission_id is None:
            return "free"
        if self.result_sha256:
            return "result in"
        return "committed" if self.commitment else "assigned"


def slot_progress(task: Task, submissions: Sequence[Submission]) -> tuple[SlotProgress, ...]:
    """Every slot of ``task``: its taken slots in submission order, then its free ones."""
    taken = sorted(submissions, key=lambda s: s.submission_id)
    delivered = [s.assigned_block for s in taken if s.result is not None]
    slots = [
        SlotProgress(
            slot=number,
            submission_id=s.submission_id,
            worker=s.worker,
            assigned_block=s.assigned_block,
            commitment=s.commitment,
            result_sha256=s.result.sha256 if s.result is not None else "",
            slow=s.result is None and any(block >= s.assigned_block for block in delivered),
        )
        for number, s in enumerate(taken, start=1)
    ]
    free = range(len(slots) + 1, task.spec.max_assignments + 1)
    return (*slots, *(SlotProgress(number) for number in free))
