"""The Pacer as a unit: a sliding window on an injected clock (no waiting,
no timing). The end-to-end tests (test_reliability.py) check it against the
stand-in LMS's own window."""

from __future__ import annotations

import asyncio

from edx_hooks.lms import Pacer


class Clock:
    """A clock that moves only when told; ``sleep`` moves it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await asyncio.sleep(0)  # others run meanwhile, then the time has passed
        self.now += seconds


def pacer(limit: int, window: float = 60.0, margin: float = 0.0) -> tuple[Pacer, Clock]:
    clock = Clock()
    return Pacer(limit, window, margin=margin, clock=clock, sleep=clock.sleep), clock


def test_a_burst_up_to_the_limit_goes_at_once():
    p, _ = pacer(5)
    assert [p.reserve() for _ in range(5)] == [0.0] * 5


def test_the_next_call_waits_until_the_oldest_leaves_the_window():
    p, clock = pacer(3, window=10.0)
    assert [p.reserve() for _ in range(3)] == [0, 0, 0]
    clock.now += 4
    # turns 4-6 come when turns 1-3 are a window old: 6 s from now
    assert [p.reserve() for _ in range(3)] == [6, 6, 6]
    # turns 7-9 a window after those
    assert [p.reserve() for _ in range(3)] == [16, 16, 16]


def test_calls_spread_out_free_their_turns_one_by_one():
    p, clock = pacer(2, window=10.0)
    assert p.reserve() == 0
    clock.now += 3
    assert p.reserve() == 0
    clock.now += 1
    assert p.reserve() == 6  # the first is 10 s old at +10
    assert p.reserve() == 9  # the second at +13
    clock.now += 100
    assert [p.reserve() for _ in range(2)] == [0, 0]  # the window is empty again


def test_no_window_ever_holds_more_than_the_limit():
    p, clock = pacer(7, window=60.0, margin=0.5)
    sent, arrived = [], []
    for n in range(200):
        clock.now += (n % 5) * 0.7  # arrivals at an uneven pace, often bursts
        arrived.append(clock.now)
        sent.append(clock.now + p.reserve())
    assert sent == sorted(sent)
    for i, t in enumerate(sent):
        in_window = [s for s in sent if t - 60.0 < s <= t]
        assert len(in_window) <= 7, i
    # and none waits longer than the window requires: a call that waited goes
    # exactly a window (and the margin) after the 7th call before it
    for i in range(7, 200):
        if sent[i] > arrived[i]:
            assert sent[i] == sent[i - 7] + 60.5, i


def test_the_margin_keeps_a_window_and_a_bit_between_the_first_and_the_limit_plus_first():
    p, clock = pacer(2, window=60.0, margin=1.0)
    p.reserve(), p.reserve()
    assert p.reserve() == 61.0
    assert Pacer(100).margin == 1.0 and Pacer(10, 2.0).margin == 0.25


def test_unpaced_never_waits_but_still_honours_retry_after():
    p, clock = pacer(0)
    assert [p.reserve() for _ in range(1000)] == [0.0] * 1000
    p.back_off(30)
    assert p.reserve() == 30
    clock.now += 30
    assert p.reserve() == 0


def test_a_429_pushes_back_every_call_still_to_come():
    p, clock = pacer(3, window=10.0)
    assert [p.reserve() for _ in range(3)] == [0, 0, 0]  # sent
    assert p.reserve() == 10  # waiting
    clock.now += 1
    p.back_off(20)  # the LMS counted others: Retry-After 20
    # the waiting one moves to +20; the next ones count from the sent three
    # (their window ends at +9), but none goes before the Retry-After
    assert p.reserve() == 20
    assert p.reserve() == 20


def test_a_call_already_waiting_its_turn_waits_out_a_retry_after_too():
    p, clock = pacer(1, window=10.0)

    async def scenario() -> list[float]:
        await p.wait()  # at once
        done = []

        async def waiter() -> None:
            await p.wait()
            done.append(clock.now)

        task = asyncio.ensure_future(waiter())
        await asyncio.sleep(0)  # it takes its turn (+10) and sleeps
        assert clock.slept == [10.0]
        p.back_off(25)  # a 429 comes meanwhile
        await task
        return done

    # it wakes at its turn, sees the Retry-After and waits the rest of it
    assert asyncio.run(scenario()) == [1025.0]
    assert clock.slept == [10.0, 15.0]


def test_a_shorter_retry_after_moves_nothing_back_earlier():
    p, clock = pacer(1, window=10.0)
    p.reserve()
    p.back_off(30)
    p.back_off(5)
    assert p.reserve() == 30
