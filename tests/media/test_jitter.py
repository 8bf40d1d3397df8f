from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.media.jitter import JitterBuffer, JitterError


def test_in_order_packets_come_out_at_once() -> None:
    buffer: JitterBuffer[str] = JitterBuffer()
    for index in range(10):
        assert buffer.push(100 + index, f"p{index}", index * 0.02) == [(100 + index, f"p{index}")]
        assert buffer.held == 0
    assert (buffer.received, buffer.released, buffer.lost, buffer.reordered) == (10, 10, 0, 0)


def test_reordered_packet_within_depth_is_put_back_in_order() -> None:
    buffer: JitterBuffer[int] = JitterBuffer(depth_packets=3)
    assert buffer.push(1, 1, 0.0) == [(1, 1)]
    assert buffer.push(3, 3, 0.02) == []
    assert buffer.push(4, 4, 0.04) == []
    assert buffer.held == 2
    assert buffer.push(2, 2, 0.045) == [(2, 2), (3, 3), (4, 4)]
    assert buffer.push(5, 5, 0.06) == [(5, 5)]
    assert (buffer.reordered, buffer.lost, buffer.late) == (1, 0, 0)


def test_gap_is_given_up_when_the_depth_is_exceeded() -> None:
    buffer: JitterBuffer[int] = JitterBuffer(depth_packets=3, max_delay_ms=None)
    buffer.push(1, 1, 0.0)
    for sequence in (3, 4, 5):
        assert buffer.push(sequence, sequence, 0.0) == []
    assert buffer.push(6, 6, 0.0) == [(2, None), (3, 3), (4, 4), (5, 5), (6, 6)]
    assert buffer.lost == 1


def test_gap_is_given_up_after_the_maximum_delay() -> None:
    buffer: JitterBuffer[int] = JitterBuffer(depth_packets=10, max_delay_ms=60)
    buffer.push(1, 1, 0.0)
    assert buffer.push(4, 4, 0.04) == []
    assert buffer.tick(0.099) == []
    assert buffer.tick(0.1) == [(2, None), (3, None), (4, 4)]
    assert buffer.lost == 2
    assert buffer.tick(1.0) == []


def test_expiry_is_also_checked_on_push() -> None:
    buffer: JitterBuffer[int] = JitterBuffer(depth_packets=10, max_delay_ms=60)
    buffer.push(1, 1, 0.0)
    buffer.push(3, 3, 0.0)
    assert buffer.push(5, 5, 0.07) == [(2, None), (3, 3)]
    assert buffer.held == 1  # 5 has only just arrived: it waits for 4 in turn
    assert buffer.tick(0.13) == [(4, None), (5, 5)]


def test_zero_depth_never_waits() -> None:
    buffer: JitterBuffer[int] = JitterBuffer(depth_packets=0)
    buffer.push(1, 1, 0.0)
    assert buffer.push(3, 3, 0.0) == [(2, None), (3, 3)]
    assert buffer.push(2, 2, 0.0) == []
    assert buffer.late == 1


def test_duplicates_are_dropped_and_counted() -> None:
    buffer: JitterBuffer[int] = JitterBuffer()
    buffer.push(1, 1, 0.0)
    assert buffer.push(1, 1, 0.0) == []
    buffer.push(3, 3, 0.0)
    assert buffer.push(3, 3, 0.0) == []
    assert buffer.duplicate == 2
    assert buffer.late == 0


def test_late_packet_for_a_slot_given_up_is_dropped() -> None:
    buffer: JitterBuffer[int] = JitterBuffer(depth_packets=1, max_delay_ms=None)
    buffer.push(1, 1, 0.0)
    buffer.push(3, 3, 0.0)
    assert buffer.push(4, 4, 0.0) == [(2, None), (3, 3), (4, 4)]
    assert buffer.push(2, 2, 0.0) == []
    assert buffer.push(3, 3, 0.0) == []
    assert (buffer.late, buffer.duplicate) == (1, 1)


def test_sequence_wrap_in_order_and_reordered() -> None:
    buffer: JitterBuffer[int] = JitterBuffer()
    assert buffer.push(65534, 1, 0.0) == [(65534, 1)]
    assert buffer.push(0, 3, 0.0) == []
    assert buffer.push(65535, 2, 0.0) == [(65535, 2), (0, 3)]
    assert buffer.push(1, 4, 0.0) == [(1, 4)]
    buffer.push(3, 6, 0.0)
    buffer.push(4, 7, 0.0)
    buffer.push(5, 8, 0.0)
    assert buffer.push(6, 9, 0.0)[0] == (2, None)


def test_large_forward_jump_resyncs_instead_of_waiting() -> None:
    buffer: JitterBuffer[int] = JitterBuffer()
    buffer.push(1, 1, 0.0)
    buffer.push(3, 3, 0.0)
    assert buffer.push(5000, 5000, 0.0) == [(2, None), (3, 3), (5000, 5000)]
    assert buffer.push(5001, 5001, 0.0) == [(5001, 5001)]
    assert buffer.resyncs == 1


def test_large_backward_jump_resyncs() -> None:
    buffer: JitterBuffer[int] = JitterBuffer(resync_threshold=100)
    buffer.push(1000, 0, 0.0)
    assert buffer.push(899, 1, 0.0) == [(899, 1)]
    assert buffer.push(900, 2, 0.0) == [(900, 2)]
    assert buffer.resyncs == 1


def test_jump_within_the_threshold_is_a_gap() -> None:
    buffer: JitterBuffer[int] = JitterBuffer(resync_threshold=100, max_delay_ms=None)
    buffer.push(1000, 0, 0.0)
    assert buffer.push(1100, 1, 0.0) == []
    assert buffer.resyncs == 0


def test_ssrc_change_resyncs() -> None:
    buffer: JitterBuffer[str] = JitterBuffer()
    buffer.push(10, "a", 0.0, ssrc=1)
    buffer.push(12, "c", 0.0, ssrc=1)
    assert buffer.push(11, "x", 0.0, ssrc=2) == [(11, None), (12, "c"), (11, "x")]
    assert buffer.push(12, "y", 0.0, ssrc=2) == [(12, "y")]
    assert buffer.resyncs == 1


def test_flush_and_reset() -> None:
    buffer: JitterBuffer[int] = JitterBuffer(max_delay_ms=None)
    buffer.push(1, 1, 0.0)
    buffer.push(4, 4, 0.0)
    buffer.push(6, 6, 0.0)
    assert buffer.flush() == [(2, None), (3, None), (4, 4), (5, None), (6, 6)]
    assert buffer.held == 0
    buffer.push(8, 8, 0.0)
    buffer.reset()
    assert buffer.push(500, 500, 0.0) == [(500, 500)]
    assert buffer.resyncs == 0


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(JitterError):
        JitterBuffer(depth_packets=-1)
    with pytest.raises(JitterError):
        JitterBuffer(resync_threshold=0)
    with pytest.raises(JitterError):
        JitterBuffer(max_delay_ms=-1.0)


@st.composite
def network_streams(draw: st.DrawFn) -> tuple[int, list[int]]:
    """A base sequence and the arrival order of packet indexes (drops, dups, local reorder)."""
    count = draw(st.integers(1, 150))
    base = draw(st.integers(0, 0xFFFF))
    arrivals = []
    for index in range(count):
        if draw(st.integers(0, 9)) == 0:
            continue
        jitter = draw(st.floats(0, 4))
        arrivals.append((index + jitter, index))
        if draw(st.integers(0, 19)) == 0:
            arrivals.append((index + jitter + draw(st.floats(0, 4)), index))
    arrivals.sort()
    return base, [index for _, index in arrivals]


@given(network_streams(), st.integers(0, 5), st.sampled_from([None, 30.0, 60.0]))
def test_output_is_consecutive_and_each_packet_released_once(
    stream: tuple[int, list[int]], depth: int, max_delay_ms: float | None
) -> None:
    base, order = stream
    buffer: JitterBuffer[int] = JitterBuffer(depth_packets=depth, max_delay_ms=max_delay_ms)
    released = []
    for step, index in enumerate(order):
        released += buffer.push((base + index) & 0xFFFF, index, step * 0.02)
        if step % 3 == 0:
            released += buffer.tick(step * 0.02)
    released += buffer.flush()
    if not order:
        assert released == []
        return
    first = released[0][0]
    assert [sequence for sequence, _ in released] == [
        (first + offset) & 0xFFFF for offset in range(len(released))
    ]
    items = [item for _, item in released if item is not None]
    assert items == sorted(set(items))
    assert all(item is None or (base + item) & 0xFFFF == seq for seq, item in released)
    assert buffer.released == len(items)
    assert buffer.lost == len(released) - len(items)
    assert buffer.received == len(order)
    assert buffer.received == buffer.released + buffer.late + buffer.duplicate
    assert buffer.resyncs == 0
