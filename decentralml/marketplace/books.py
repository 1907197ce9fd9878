"""The marketplace's books checked against the chain's money, both ways.

"Accepted ⇒ paid once" is the index's own rule (an accept record counts only with its
transfer). The other way is checked here: every transfer a creator made, read from the chain's
``Balances.Transfer`` events (decentralml.chain.audit), must be explained by an applied accept
verdict of that creator to that contributor, of that amount. A repeated accept (its record a
no-op, its transfer not) and a stray payment are money no verdict explains; an index that
says paid where the chain shows less is money missing. Each task's books must also balance:
what its results were paid is what the task paid, and a finished task's paid and refunded
make its promise.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from decentralml.chain.audit import ChainAudit
from decentralml.marketplace.indexer import RecordOutcome
from decentralml.marketplace.ledger import Ledger
from decentralml.protocol import rules
from decentralml.protocol.accounts import canonical_address
from decentralml.protocol.records import Submission, Task


@dataclass(frozen=True)
class Discrepancy:
    """Money between a creator and an account that verdicts and transfers disagree on."""

    creator: str
    receiver: str
    amount: int


@dataclass(frozen=True)
class TaskBooks:
    """One task's money as the index records it."""

    task_id: int
    promised: int
    paid: int
    paid_to_results: int
    refunded: int
    finished: bool

    @property
    def balanced(self) -> bool:
        """Results paid what the task paid; a finished task paid or refunded its promise;
        an open one promised at least what it paid."""
        settled = self.paid + self.refunded
        whole = settled == self.promised if self.finished else settled <= self.promised
        return self.paid == self.paid_to_results and whole


@dataclass
class PaymentCheck:
    """What ``check_payments`` found between two blocks."""

    unexplained: list[Discrepancy] = field(default_factory=list)
    """Creator transfers beyond what its applied accept verdicts paid to that account."""
    missing: list[Discrepancy] = field(default_factory=list)
    """Verdict payments the index counts that the chain's transfers do not show."""
    tasks: list[TaskBooks] = field(default_factory=list)

    @property
    def unbalanced(self) -> list[TaskBooks]:
        return [books for books in self.tasks if not books.balanced]

    @property
    def clean(self) -> bool:
        return not (self.unexplained or self.missing or self.unbalanced)


def check_payments(
    audit: ChainAudit,
    ledger: Ledger,
    outcomes: Iterable[RecordOutcome],
    first_block: int,
    last_block: int,
) -> PaymentCheck:
    """Compare the creators' transfers in ``audit`` (blocks first..last) with the applied
    accept verdicts among ``outcomes`` in the same blocks, and balance every task's books.
    Only senders who created a task are checked: the marketplace explains their money."""
    tasks = ledger.list_tasks(open_only=False)
    creators = {canonical_address(task.creator) for task in tasks}
    results = {task.task_id: ledger.list_task_results(task.task_id) for task in tasks}
    workers = {s.submission_id: s.worker for subs in results.values() for s in subs}
    explained = _explained(workers, outcomes, first_block, last_block)
    check = PaymentCheck(tasks=[_books(task, results[task.task_id]) for task in tasks])
    for (sender, receiver), amount in sorted(audit.transfers.items()):
        if sender in creators and amount > explained.get((sender, receiver), 0):
            extra = amount - explained.get((sender, receiver), 0)
            check.unexplained.append(Discrepancy(sender, receiver, extra))
    for (sender, receiver), amount in sorted(explained.items()):
        moved = audit.transfers.get((sender, receiver), 0)
        if moved < amount:
            check.missing.append(Discrepancy(sender, receiver, amount - moved))
    return check


def _explained(
    workers: dict[int, str], outcomes: Iterable[RecordOutcome], first_block: int, last_block: int
) -> dict[tuple[str, str], int]:
    """What applied accept verdicts paid, by (creator, contributor); ``workers``: each
    submission's worker, read once for all verdicts."""
    paid: dict[tuple[str, str], int] = defaultdict(int)
    for outcome in outcomes:
        in_range = first_block <= outcome.block_number <= last_block
        if not (in_range and outcome.kind == "VerdictRecord" and outcome.applied):
            continue
        if outcome.amount > 0 and outcome.entity_id is not None:
            worker = workers[outcome.entity_id]
            key = (canonical_address(outcome.signer), canonical_address(worker))
            paid[key] += outcome.amount
    return dict(paid)


def _books(task: Task, results: list[Submission]) -> TaskBooks:
    return TaskBooks(
        task_id=task.task_id,
        promised=task.spec.pays_amount,
        paid=task.paid,
        paid_to_results=sum(s.paid for s in results),
        refunded=task.refunded,
        finished=not rules.unfinished(task),
    )
