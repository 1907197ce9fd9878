"""A task's books balance (decentralml.marketplace.books.TaskBooks): what its results were
paid is what the task paid, and a finished task paid or refunded all it promised."""

from __future__ import annotations

import pytest

from decentralml.marketplace.books import TaskBooks


@pytest.mark.parametrize(
    ("paid", "to_results", "refunded", "finished", "balanced"),
    [
        (200, 200, 100, True, True),  # settled: paid + refunded = promised
        (200, 200, 0, False, True),  # open: the rest still promised
        (200, 100, 100, True, False),  # the task paid more than its results were
        (200, 200, 50, True, False),  # finished, 50 neither paid nor refunded
        (300, 300, 100, True, False),  # more than promised left the books
        (400, 400, 0, False, False),  # an open task paid beyond its promise
    ],
)
def test_books_balance(
    paid: int, to_results: int, refunded: int, finished: bool, balanced: bool
) -> None:
    books = TaskBooks(0, 300, paid, to_results, refunded, finished)
    assert books.balanced is balanced
