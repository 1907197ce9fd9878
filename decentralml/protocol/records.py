"""The marketplace's vocabulary: enums named as in the DecentralML pallet, and plain records.

Names and declaration order follow the pallet (see docs/architecture.md), so a record read from
the original chain and one produced here mean the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class TaskType(StrEnum):
    DataAnnotators = "DataAnnotators"
    ModelContributor = "ModelContributor"
    ModelEngineer = "ModelEngineer"


class ValidationStrategy(StrEnum):
    AutoAccept = "AutoAccept"
    ManualAccept = "ManualAccept"
    CustomAccept = "CustomAccept"


class StorageType(StrEnum):
    """Kept for the seed's signatures; our storage is addressed by fsspec URLs instead."""

    IPFS = "IPFS"
    Crust = "Crust"
    S3 = "S3"
    GCP = "GCP"
    Azure = "Azure"


class ResultSubmissionStatus(StrEnum):
    Assigned = "Assigned"
    PendingValidation = "PendingValidation"
    Validated = "Validated"
    Accepted = "Accepted"
    Rejected = "Rejected"


class TaskStatus(StrEnum):
    Created = "Created"
    InProgress = "InProgress"
    Completed = "Completed"
    Withdrawn = "Withdrawn"


@dataclass(frozen=True)
class TaskSpec:
    """What a creator publishes. No credentials: storage access comes from each party's env."""

    question: str
    pays_amount: int
    max_assignments: int
    expiration_block: int
    validation_strategy: ValidationStrategy = ValidationStrategy.AutoAccept
    task_type: TaskType = TaskType.ModelContributor
    assets_path: str = ""
    assets_sha256: str = ""
    global_weights_path: str = ""
    global_weights_sha256: str = ""
    round_number: int = 0
    model: str = ""
    """The model the task trains (e.g. mnist_mlp): contributors filter on it before downloading."""
    epochs: int = 0
    """Local epochs per result the task asks for (0: not recorded)."""
    storage_endpoint: str = ""
    """Where the task's storage URLs resolve: an S3 endpoint URL, "" for AWS or local files.
    Never credentials: each party reads its own from its environment."""
    payment_rule: str = "per_result"
    """How an accepted result is paid (protocol.rules.PAYMENT_RULES): ``per_result``, the
    seed's fixed share ``pays_amount // max_assignments``; ``value``, the amount its verdict
    names (the creator splits the round's reward by measured value), all of them together at
    most ``pays_amount``."""

    min_reputation: int = 0
    """0: any account may take a slot. n > 0: only a worker whose reputation score
    (``Reputation.score``: results accepted by other creators, less its results refused) is at
    least n: a task can keep fresh accounts (Sybils, returning poisoners) out."""

    @property
    def reward_per_result(self) -> int:
        return self.pays_amount // self.max_assignments


@dataclass(frozen=True)
class Reputation:
    """A worker's record on the marketplace, from its verdicts (protocol.rules.reputation):
    results accepted by creators other than itself, results refused (every refusal is for
    cause: a creator's own failures defer a verdict, they never refuse), what it was paid for
    them, and how many distinct creators accepted its work."""

    accepted: int = 0
    refused: int = 0
    earned: int = 0
    creators: int = 0

    @property
    def score(self) -> int:
        """Accepted less refused: what ``TaskSpec.min_reputation`` is compared with."""
        return self.accepted - self.refused


@dataclass(frozen=True)
class Task:
    task_id: int
    creator: str
    spec: TaskSpec
    status: TaskStatus
    created_block: int
    assigned: int = 0
    paid: int = 0
    refunded: int = 0

    @property
    def open_slots(self) -> int:
        return self.spec.max_assignments - self.assigned


@dataclass(frozen=True)
class TaskResult:
    """A contributor's claim: where its weights are, their digest, and what they were trained on."""

    result_path: str
    sha256: str
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)
    base_fingerprint: str = ""

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "result_path": self.result_path,
            "sha256": self.sha256,
            "num_examples": self.num_examples,
            "metrics": dict(self.metrics),
            "base_fingerprint": self.base_fingerprint,
        }

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> TaskResult:
        return cls(
            result_path=str(data["result_path"]),
            sha256=str(data["sha256"]),
            num_examples=int(data["num_examples"]),
            metrics={str(k): float(v) for k, v in dict(data.get("metrics", {})).items()},
            base_fingerprint=str(data.get("base_fingerprint", "")),
        )


@dataclass(frozen=True)
class Submission:
    """A slot of a task and what happened to it.

    ``commitment`` is the assignee's commitment to its result (decentralml.protocol.commitment), ""
    before it committed. ``commit_order`` is the marketplace-wide 0-based order of that
    commitment among all commitments (earlier = smaller; on chain, the chain order of the
    commit records), None before it committed."""

    submission_id: int
    task_id: int
    worker: str
    status: ResultSubmissionStatus
    assigned_block: int
    result: TaskResult | None = None
    reason: str = ""
    paid: int = 0
    commitment: str = ""
    commit_order: int | None = None
    value: float | None = None


@dataclass(frozen=True)
class Verdict:
    """The creator's decision on one submission, with the reason that is recorded."""

    submission_id: int
    accept: bool
    reason: str
    amount: int | None = None
    """What an accept pays; None: the task's fixed share (``per_result``, or an automatic
    accept). Only a ``value`` task takes another amount."""
    value: float | None = None
    """The result's measured value to the round (held-out loss reduction), when measured."""
