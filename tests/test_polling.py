"""Pollers back off while the marketplace is quiet and start over when it changes
(decentralml.runtime.polling, creator.wait_for_results)."""

from __future__ import annotations

from pathlib import Path

import pytest

from decentralml.creator import wait_for_results
from decentralml.marketplace.embedded import EmbeddedMarketplace
from decentralml.protocol.accounts import contributor_dev_keypair, dev_keypair
from decentralml.protocol.records import TaskSpec
from decentralml.runtime.polling import Backoff
from tests.helpers import FakeClock


def test_delays_grow_to_the_cap() -> None:
    backoff = Backoff(cap=1.0, first=0.2, growth=1.5)
    delays = [backoff.next_delay() for _ in range(7)]
    assert delays == pytest.approx([0.2, 0.3, 0.45, 0.675, 1.0, 1.0, 1.0])


def test_a_change_starts_the_delays_over_and_the_same_state_does_not() -> None:
    backoff = Backoff(cap=2.0, first=0.2)
    assert backoff.observe((0, 0)) is True  # the first look is news
    for _ in range(5):
        backoff.next_delay()
    assert backoff.observe((0, 0)) is False
    assert backoff.next_delay() > 0.2
    assert backoff.observe((1, 0)) is True
    assert backoff.next_delay() == pytest.approx(0.2)


def test_poll_seconds_sets_the_cap_and_never_a_longer_first_wait() -> None:
    default = Backoff.for_poll_seconds(0.5)
    assert (default.first, default.cap) == (0.2, 2.0)
    fast = Backoff.for_poll_seconds(0.01)  # tests poll fast: the first wait follows
    assert (fast.first, fast.cap) == (0.01, 0.04)


@pytest.mark.parametrize("cap, first, growth", [(0, 0.2, 1.5), (1, 0, 1.5), (1, 0.2, 0.5)])
def test_nonsense_delays_are_refused(cap: float, first: float, growth: float) -> None:
    with pytest.raises(ValueError, match="need cap > 0"):
        Backoff(cap=cap, first=first, growth=growth)


@pytest.fixture
def open_task(tmp_path: Path) -> tuple[EmbeddedMarketplace, int]:
    """A task with two free slots on a marketplace whose clock never moves."""
    market = EmbeddedMarketplace(tmp_path / "m.sqlite", block_time_seconds=1e9)
    creator = dev_keypair("Alice")
    market.fund(creator.ss58_address, 1_000)
    spec = TaskSpec(question="q", pays_amount=300, max_assignments=2, expiration_block=100)
    return market, market.create_task(creator, spec)


def _on_every_poll(market: EmbeddedMarketplace, monkeypatch, before) -> None:
    """Call ``before()`` each time the creator reads the task's results."""
    real = market.list_task_results

    def watched(task: int):
        before()
        return real(task)

    monkeypatch.setattr(market, "list_task_results", watched)


def test_a_quiet_round_is_polled_less_than_at_a_fixed_interval(open_task, monkeypatch) -> None:
    market, task_id = open_task
    clock = FakeClock()
    polls: list[float] = []
    _on_every_poll(market, monkeypatch, lambda: polls.append(clock()))
    wait_for_results(market, task_id, timeout_s=2.0, poll_s=0.1, clock=clock, sleep=clock.sleep)
    # from 0.1 s growing by 1.5 up to the cap of 4 x 0.1 s; the last wait ends at the deadline
    assert clock.sleeps == pytest.approx([0.1, 0.15, 0.225, 0.3375, 0.4, 0.4, 0.3875])
    assert clock() == pytest.approx(2.0)
    assert polls == pytest.approx([0, 0.1, 0.25, 0.475, 0.8125, 1.2125, 1.6125, 2.0])
    # a fixed 0.1 s interval polls 21 times in the same 2 s


def test_a_slot_taken_resets_the_wait(open_task, monkeypatch) -> None:
    market, task_id = open_task
    clock = FakeClock()
    polls: list[int] = []

    def count_then_assign() -> None:
        polls.append(len(polls))
        if len(polls) == 5:  # a contributor takes a slot while the creator has backed off
            market.assign_task(contributor_dev_keypair(0), task_id)

    _on_every_poll(market, monkeypatch, count_then_assign)
    statuses = []
    wait_for_results(
        market, task_id, timeout_s=5.0, poll_s=0.1, on_poll=statuses.append,
        clock=clock, sleep=clock.sleep,
    )  # fmt: skip
    assert [s.assigned for s in statuses[:6]] == [0, 0, 0, 0, 1, 1]
    # backed off to 0.3375 s, then the taken slot starts the delays over at 0.1 s
    assert clock.sleeps[:6] == pytest.approx([0.1, 0.15, 0.225, 0.3375, 0.1, 0.15])
    assert [s.seconds_left for s in statuses[:6]] == pytest.approx(
        [5.0, 4.9, 4.75, 4.525, 4.1875, 4.0875]
    )
    assert clock() == pytest.approx(5.0) and statuses[-1].seconds_left == 0
