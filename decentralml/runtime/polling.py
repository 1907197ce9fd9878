"""Waiting on the marketplace cheaply: poll often just after something changed, then less and
less while nothing does.

A round is mostly quiet (contributors train for tens of seconds) with bursts of changes
(slots taken, results in, the next task published). A fixed short interval spends thousands
of marketplace calls on the quiet part (docs/benchmarks.md); a fixed long one answers late
to the bursts. Exponential back-off, reset on every change, does both.
"""

from __future__ import annotations

from collections.abc import Hashable

FIRST_DELAY_SECONDS = 0.2
GROWTH = 1.5
CAP_MULTIPLE = 4.0
"""The longest wait is this many times the configured ``poll_seconds`` (0.5 s: 2 s)."""


class Backoff:
    """Delays of ``first``, ``first × growth``, ... up to ``cap`` seconds, starting over at
    ``first`` whenever :meth:`observe` sees a state other than the last one."""

    def __init__(
        self, cap: float, first: float = FIRST_DELAY_SECONDS, growth: float = GROWTH
    ) -> None:
        if not (cap > 0 and first > 0 and growth >= 1):
            raise ValueError(f"need cap > 0, first > 0, growth >= 1; got {cap}, {first}, {growth}")
        self.cap, self.first, self.growth = cap, min(first, cap), growth
        self._delay = self.first
        self._last: Hashable | None = None

    @classmethod
    def for_poll_seconds(cls, poll_seconds: float) -> Backoff:
        """The pollers' back-off for the configured ``poll_seconds``: from min(0.2 s,
        poll_seconds) up to ``CAP_MULTIPLE`` × poll_seconds."""
        return cls(cap=CAP_MULTIPLE * poll_seconds, first=min(FIRST_DELAY_SECONDS, poll_seconds))

    def observe(self, state: Hashable) -> bool:
        """Record what the poll saw; True (and the delays start over) if it changed."""
        changed = state != self._last
        self._last = state
        if changed:
            self.reset()
        return changed

    def reset(self) -> None:
        self._delay = self.first

    def next_delay(self) -> float:
        """How long to wait now; the following wait is longer, up to the cap."""
        delay = self._delay
        self._delay = min(self.cap, self._delay * self.growth)
        return delay
