"""The media clock: grid deadlines, bounded catch-up after a stall, robust listeners."""

from __future__ import annotations

import asyncio
import itertools
import time

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


async def test_failing_listener_does_not_stop_the_clock() -> None:
    clock = MediaClock()
    calls: list[float] = []

    def broken(_: float) -> None:
        raise RuntimeError("boom")

    clock.add(broken)
    clock.add(calls.append)
    clock.start()
    try:
        await wait_frames(clock, 3)
    finally:
        clock.stop()
    assert clock.stats.listener_errors >= 3
    assert len(calls) >= 3
    clock.discard(broken)
    clock.discard(broken)  # idempotent
