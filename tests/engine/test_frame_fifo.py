"""Mixer inputs under realistic arrival times: no frame of a steady source is ever lost.

Deterministic: arrivals and ticks are computed (seconds on the media clock's grid), the way a
source whose packets land just before the tick boundary sees them under load: most packets
on time, now and then one delayed by a millisecond or two across the boundary.
"""

from __future__ import annotations

import random

from callbridge.engine.pipeline import FrameFifo

FRAME_S = 0.020
START = 100.0


def play(arrivals: list[list[float]], ticks: int) -> tuple[FrameFifo, list[int]]:
    """Feed packet k's frames (one per 20 ms) at `arrivals[k]`; returns what each tick took.

    The tick of nominal time T runs 0.3 ms late, after every packet that arrived before it.
    """
    fifo = FrameFifo()
    events: list[tuple[float, int, int]] = []
    frame = 0
    for arrival_times in arrivals:
        for arrival in arrival_times:
            events.append((arrival, 0, frame))
            frame += 1
    events += [(START + tick * FRAME_S + 0.0003, 1, tick) for tick in range(ticks)]
    taken: list[int] = []
    for moment, kind, number in sorted(events):
        if kind == 0:
            fifo.append(number.to_bytes(4, "little"), moment)
        else:
            pcm = fifo.take(number, START + number * FRAME_S)
            if pcm is not None:
                taken.append(int.from_bytes(pcm, "little"))
    return fifo, taken


def boundary_source(packets: int, frames_per_packet: int, late_every: int) -> list[list[float]]:
    """Packets 0.6 ms before a tick; every `late_every`-th one (on average) 1.5 ms late."""
    chance = random.Random(7)
    arrivals = []
    for packet in range(packets):
        late = 0.0015 if chance.random() < 1 / late_every else chance.uniform(0, 0.00005)
        moment = START + packet * frames_per_packet * FRAME_S - 0.0006 + late
        arrivals.append([moment] * frames_per_packet)
    return arrivals


def test_a_source_straddling_the_tick_boundary_loses_no_frame() -> None:
    fifo, taken = play(boundary_source(3000, 1, late_every=200), 3005)
    assert taken == list(range(3000))  # every frame once, in order
    assert fifo.dropped == 0
    assert fifo.underruns <= 5  # only the ticks after the end: the cushion took every late one


def test_sixty_ms_packets_straddling_the_boundary_lose_no_frame() -> None:
    fifo, taken = play(boundary_source(1000, 3, late_every=40), 3005)
    assert taken == list(range(3000))
    assert fifo.dropped == 0


def test_a_faster_sender_is_trimmed_back_to_one_spare_frame() -> None:
    """A sender whose clock runs 1 % fast: latency stays bounded, the surplus is dropped."""
    arrivals = [[START + packet * FRAME_S * 0.99 - 0.005] for packet in range(2000)]
    fifo, taken = play(arrivals, 1980)
    assert len(taken) == 1980 - 1  # the first tick holds the new input back
    assert taken == sorted(taken)
    assert 2000 - 1980 - 3 <= fifo.dropped <= 2000 - 1980
    assert taken[-1] >= 1995  # at most a few frames of latency at the end


def test_overflow_drops_the_oldest_frames_and_counts_them() -> None:
    fifo = FrameFifo()
    for number in range(12):
        fifo.append(bytes([number]), START)
    assert fifo.dropped == 2
    assert fifo.take(1, START + FRAME_S) is None  # a new input is held one tick
    assert fifo.take(2, START + 2 * FRAME_S) == bytes([2])
