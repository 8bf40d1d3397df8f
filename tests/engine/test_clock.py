"""The media clock: grid deadlines, bounded catch-up after a stall, robust listeners."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

import pytest

from callbridge.engine.clock import MediaClock


async def wait_frames(clock: MediaClock, frames: int) -> None:
    """Wait until the clock has delivered `frames` more frames."""
    target = clock.stats.frames + frames
    reached = asyncio.Event()

    def check(_: float) -> None:
        if clock.stats.frames >= target:
            reached.set()

    clock.add(check)
    try:
        await reached.wait()
    finally:
        clock.discard(check)


async def test_listeners_get_grid_times_and_housekeeping_runs() -> None:
    clock = MediaClock(housekeeping_interval_s=0.04)
    times: list[float] = []
    housekeeping: list[float] = []
    clock.add(times.append)
    clock.add_housekeeping(housekeeping.append)
    clock.start()
    try:
        await wait_frames(clock, 6)
    finally:
        clock.stop()
    steps = [round(later - earlier, 6) for earlier, later in itertools.pairwise(times)]
    assert set(steps) == {0.02}
    assert len(housekeeping) >= 2
    assert not clock.running


async def test_stall_catches_up_at_most_five_frames_and_skips_the_rest() -> None:
    clock = MediaClock()
    times: list[float] = []
    clock.add(times.append)
    clock.start()
    try:
        await wait_frames(clock, 1)
        time.sleep(0.2)  # noqa: ASYNC251 -- a deliberate stall of ten frames
        before = clock.stats.frames
        await wait_frames(clock, 6)
    finally:
        clock.stop()
    assert clock.stats.skipped_frames >= 4
    assert clock.stats.frames - before >= 5
    assert clock.stats.max_lateness_s >= 0.15
    assert clock.lateness_percentiles_ms(100)[0] >= 150


@pytest.mark.parametrize("periodic", [False, True], ids=["every-frame", "periodic"])
async def test_failing_listener_does_not_stop_the_clock(periodic: bool) -> None:
    clock = MediaClock()
    calls: list[float] = []

    def broken(_: float) -> None:
        raise RuntimeError("boom")

    def add(listener: Callable[[float], None]) -> None:
        if periodic:
            clock.add_periodic(listener, 1)
        else:
            clock.add(listener)

    add(broken)
    add(calls.append)
    clock.start()
    try:
        await wait_frames(clock, 3)
    finally:
        clock.stop()
    assert clock.stats.listener_errors >= 3
    assert len(calls) >= 3
    for _ in range(2):  # idempotent
        clock.discard_periodic(broken) if periodic else clock.discard(broken)


async def test_periodic_listeners_are_spread_over_the_phases_of_their_period() -> None:
    clock = MediaClock()
    calls: dict[int, list[int]] = {index: [] for index in range(25)}

    def listener(index: int) -> Callable[[float], None]:
        return lambda _: calls[index].append(clock.stats.frames)

    listeners = [listener(index) for index in range(25)]
    for each in listeners:
        clock.add_periodic(each, 10)
    clock.start()
    try:
        await wait_frames(clock, 21)
    finally:
        clock.stop()
    for frames in calls.values():
        assert len(frames) >= 2
        assert {later - earlier for earlier, later in itertools.pairwise(frames)} == {10}
    per_phase = [0] * 10
    for frames in calls.values():
        per_phase[frames[0] % 10] += 1
    assert sorted(per_phase) == [2] * 5 + [3] * 5  # 25 listeners over 10 phases, evenly
    clock.add_periodic(listeners[0], 10)  # again with the same period: no change
    clock.add_periodic(listeners[1], 4)  # moved to another period
    clock.discard_periodic(listeners[2])
    clock.discard_periodic(listeners[2])  # idempotent
    for frames in calls.values():
        frames.clear()
    clock.start()
    try:
        await wait_frames(clock, 21)
    finally:
        clock.stop()
    assert calls[2] == []
    assert {later - earlier for earlier, later in itertools.pairwise(calls[1])} == {4}
    assert {later - earlier for earlier, later in itertools.pairwise(calls[0])} == {10}
    with pytest.raises(ValueError, match="period_frames"):
        clock.add_periodic(listeners[3], 0)
