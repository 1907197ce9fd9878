"""Seed API: accept results, which pays each contributor once (never built in DecentralML)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from decentralml.api.seed import as_keypair, as_marketplace
from decentralml.protocol.records import Verdict


def accept_task_results(
    substrate: Any,
    sudoaccount: Any,
    passphrase: str | None,
    submission_ids: Iterable[int] | int,
    reason: str = "accepted by the creator",
) -> dict[int, int]:
    """Returns what each submission was paid by this call (0 for one already paid)."""
    ids = [submission_ids] if isinstance(submission_ids, int) else list(submission_ids)
    verdicts = [Verdict(sid, True, reason) for sid in ids]
    return as_marketplace(substrate).settle(as_keypair(sudoaccount, passphrase), verdicts)
