"""Seed API: reject results with a recorded reason (never built in DecentralML)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from decentralml.api.seed import as_keypair, as_marketplace
from decentralml.protocol.records import Verdict


def reject_task_results(
    substrate: Any,
    sudoaccount: Any,
    passphrase: str | None,
    submission_ids: Iterable[int] | int,
    reason: str,
) -> None:
    ids = [submission_ids] if isinstance(submission_ids, int) else list(submission_ids)
    as_marketplace(substrate).settle(
        as_keypair(sudoaccount, passphrase), [Verdict(s, False, reason) for s in ids]
    )
