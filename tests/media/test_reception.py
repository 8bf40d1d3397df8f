"""Reception statistics of a remote RTP source (RFC 3550 A.1, A.3, A.8)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.media.reception import ReceptionStats
from callbridge.media.rtcp import SenderReport


def feed(stats: ReceptionStats, sequences: list[int], start: float = 0.0) -> None:
    for index, sequence in enumerate(sequences):
        stats.on_rtp(sequence, (sequence * 160) & 0xFFFFFFFF, start + index * 0.02)


def test_probation_counts_from_the_second_sequential_packet() -> None:
    stats = ReceptionStats(1, 8000)
    assert stats.on_rtp(10, 0, 0.0) is False
    assert not stats.valid
    assert stats.on_rtp(11, 160, 0.02) is True
    assert stats.valid
    assert (stats.received, stats.expected, stats.extended_highest_sequence) == (1, 1, 11)


def test_probation_restarts_on_a_non_sequential_packet() -> None:
    stats = ReceptionStats(1, 8000)
    assert not stats.on_rtp(10, 0, 0.0)
    assert not stats.on_rtp(50, 0, 0.0)
    assert stats.on_rtp(51, 0, 0.0)
    assert stats.extended_highest_sequence == 51


def test_no_loss_across_the_wrap() -> None:
    stats = ReceptionStats(1, 8000)
    feed(stats, [(65500 + index) & 0xFFFF for index in range(100)])
    assert stats.extended_highest_sequence == 0x10000 + 63
    assert stats.cumulative_lost == 0
    block = stats.report_block(2.0)
    assert (block.fraction_lost, block.cumulative_lost) == (0, 0)
    assert block.extended_highest_sequence == 0x10000 + 63


def test_loss_and_fraction_per_interval() -> None:
    stats = ReceptionStats(1, 8000)
    feed(stats, [sequence for sequence in range(1, 102) if sequence % 10 != 5])
    # Valid from 2; 2..101 is 100 expected, 10 of them (5, 15, ..., 95) missing.
    assert (stats.expected, stats.received, stats.cumulative_lost) == (100, 90, 10)
    block = stats.report_block(2.0)
    assert block.fraction_lost == 10 * 256 // 100
    assert block.cumulative_lost == 10
    feed(stats, list(range(102, 152)), start=3.0)
    second = stats.report_block(4.0)
    assert (second.fraction_lost, second.cumulative_lost) == (0, 10)


def test_duplicates_make_loss_negative_and_the_block_clamps() -> None:
    stats = ReceptionStats(1, 8000, min_sequential=1)
    stats.on_rtp(1, 0, 0.0)
    for _ in range(3):
        stats.on_rtp(1, 0, 0.0)
    assert stats.cumulative_lost == -3
    assert stats.report_block(0.0).cumulative_lost == -3
    stats.received += 0x900000
    assert stats.report_block(0.0).cumulative_lost == -0x800000


def test_reordered_packet_inside_the_misorder_window_is_counted() -> None:
    stats = ReceptionStats(1, 8000)
    feed(stats, [1, 2, 4, 3])
    assert stats.extended_highest_sequence == 4
    assert (stats.expected, stats.received) == (3, 3)


def test_large_jump_is_ignored_until_confirmed_then_restarts() -> None:
    stats = ReceptionStats(1, 8000)
    feed(stats, [1, 2, 3])
    assert stats.on_rtp(9000, 0, 1.0) is False
    assert stats.extended_highest_sequence == 3
    assert stats.on_rtp(9001, 160, 1.02) is True
    assert (stats.extended_highest_sequence, stats.expected, stats.received) == (9001, 1, 1)


def test_jitter_follows_a8() -> None:
    stats = ReceptionStats(1, 8000, min_sequential=1)
    arrivals = [0.0, 0.02, 0.05, 0.06, 0.08]  # the third packet is 10 ms late
    for index, arrival in enumerate(arrivals):
        stats.on_rtp(index, index * 160, arrival)
    # |D| = 0, 80, 80, 0 units: J = 0, 5, 5 + 75/16, then that × 15/16.
    expected = (5 + 75 / 16) * 15 / 16
    assert stats.jitter == pytest.approx(expected)
    assert stats.jitter_ms == pytest.approx(expected / 8)
    assert stats.report_block(1.0).jitter == 9


def test_jitter_is_zero_for_a_regular_stream_across_timestamp_wrap() -> None:
    stats = ReceptionStats(1, 8000)
    for index in range(50):
        timestamp = (0xFFFFF000 + index * 160) & 0xFFFFFFFF
        stats.on_rtp(index, timestamp, index * 0.02)
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)


def test_jitter_skipped_for_event_packets() -> None:
    stats = ReceptionStats(1, 8000, min_sequential=1)
    for index in range(10):
        stats.on_rtp(index, 1000, index * 0.02, update_jitter=False)
    assert stats.jitter == 0.0
    assert stats.received == 10


def test_report_block_carries_lsr_and_dlsr() -> None:
    stats = ReceptionStats(0xABCD, 8000)
    assert stats.report_block(0.0).last_sr == 0
    stats.on_sender_report(SenderReport(2, 0xE8E4A1B2_80000000, 0, 0, 0), arrival=100.0)
    block = stats.report_block(101.5)
    assert block.ssrc == 0xABCD
    assert block.last_sr == 0xA1B28000
    assert block.delay_since_last_sr == int(1.5 * 65536)


@given(st.lists(st.integers(0, 0xFFFF), max_size=300), st.integers(1, 3))
def test_reception_stats_never_fail_and_stay_in_range(sequences: list[int], probation: int) -> None:
    stats = ReceptionStats(1, 8000, min_sequential=probation)
    for index, sequence in enumerate(sequences):
        stats.on_rtp(sequence, index * 160, index * 0.02)
        if index % 50 == 0:
            block = stats.report_block(index * 0.02)
            assert 0 <= block.fraction_lost <= 255
            assert -0x800000 <= block.cumulative_lost <= 0x7FFFFF
    assert stats.expected >= 0
