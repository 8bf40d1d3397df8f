from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.media.telephone_event import (
    DIGITS,
    FLASH_EVENT,
    DtmfDetector,
    DtmfDigit,
    DtmfPacket,
    TelephoneEvent,
    TelephoneEventError,
    build_telephone_event,
    digit_to_event,
    dtmf_packets,
    event_to_digit,
    parse_telephone_event,
)


def event_payload(event: int, duration: int, end: bool = False, volume: int = 10) -> bytes:
    return build_telephone_event(event, end, volume, duration)


def test_parses_a_hand_built_payload() -> None:
    assert parse_telephone_event(bytes.fromhex("058a0320")) == TelephoneEvent(5, True, 10, 800)
    assert parse_telephone_event(bytes.fromhex("0b4aFFFF")) == TelephoneEvent(
        11, False, 10, 0xFFFF, reserved=True
    )
    assert parse_telephone_event(bytes.fromhex("00000000ffff")).duration == 0


def test_builds_the_same_payload() -> None:
    assert build_telephone_event(5, True, 10, 800) == bytes.fromhex("058a0320")
    assert build_telephone_event(11, False, 10, 0xFFFF, reserved=True) == bytes.fromhex("0b4affff")


def test_short_payload_and_bad_fields_are_errors() -> None:
    with pytest.raises(TelephoneEventError):
        parse_telephone_event(b"\x05\x8a\x03")
    for arguments in [(256, False, 0, 0), (0, False, 64, 0), (0, False, 0, 0x10000)]:
        with pytest.raises(TelephoneEventError):
            build_telephone_event(*arguments)


def test_digit_mapping() -> None:
    assert [digit_to_event(digit) for digit in DIGITS] == list(range(16))
    assert [digit_to_event(digit) for digit in "abcd"] == [12, 13, 14, 15]
    assert "".join(event_to_digit(event) or "" for event in range(16)) == "0123456789*#ABCD"
    assert event_to_digit(FLASH_EVENT) is None
    assert event_to_digit(200) is None
    for bad in ["", "12", "E", "e", " ", "٣"]:
        with pytest.raises(TelephoneEventError, match="exactly one character"):
            digit_to_event(bad)


def digit_packets(
    event: int, timestamp: int, durations: list[int], end_copies: int = 3
) -> list[tuple[bytes, int, bool]]:
    """(payload, timestamp, marker) for a digit: updates, then `end_copies` end packets."""
    packets = [
        (event_payload(event, duration), timestamp, index == 0)
        for index, duration in enumerate(durations[:-1])
    ]
    end = event_payload(event, durations[-1], end=True)
    packets += [(end, timestamp, False)] * end_copies
    return packets


def run(
    detector: DtmfDetector, packets: list[tuple[bytes, int, bool]], start: float = 0.0
) -> list[DtmfDigit]:
    digits: list[DtmfDigit] = []
    for index, (payload, timestamp, marker) in enumerate(packets):
        digits += detector.feed(payload, timestamp, start + index * 0.02, marker)
    return digits


def test_digit_reported_once_despite_redundant_end_packets() -> None:
    detector = DtmfDetector(8000)
    digits = run(detector, digit_packets(5, 1000, [160, 320, 480, 640, 800]))
    assert digits == [DtmfDigit("5", 100, 1000)]
    assert detector.poll(100.0) == ()


def test_duration_uses_the_audio_clock() -> None:
    digits = run(DtmfDetector(48000), digit_packets(11, 7, [960, 1920, 4800]))
    assert digits == [DtmfDigit("#", 100, 7)]


def test_markerless_stream_and_missing_start_packets() -> None:
    packets = [(payload, timestamp, False) for payload, timestamp, _ in digit_packets(1, 5, [800])]
    assert run(DtmfDetector(8000), packets) == [DtmfDigit("1", 100, 5)]
    late_start = digit_packets(2, 9, [480, 640, 800])[1:]
    assert run(DtmfDetector(8000), late_start) == [DtmfDigit("2", 100, 9)]


def test_lost_end_packets_are_reported_after_the_timeout() -> None:
    detector = DtmfDetector(8000)
    assert run(detector, digit_packets(3, 500, [160, 320, 480], end_copies=0)[:2]) == []
    assert detector.poll(0.02 + 2.9) == ()
    assert detector.poll(0.02 + 3.0) == (DtmfDigit("3", 40, 500),)
    assert detector.poll(10.0) == ()
    late_end = event_payload(3, 480, end=True)
    assert detector.feed(late_end, 500, 10.0) == ()


def test_timeout_is_noticed_on_the_next_packet_without_poll() -> None:
    detector = DtmfDetector(8000)
    detector.feed(event_payload(4, 160), 100, 0.0)
    assert detector.feed(event_payload(4, 320), 100, 5.0) == (DtmfDigit("4", 20, 100),)
    assert detector.feed(event_payload(4, 400, end=True), 100, 5.02) == ()


def test_event_change_mid_digit_emits_the_open_digit_first() -> None:
    detector = DtmfDetector(8000)
    assert detector.feed(event_payload(1, 160), 100, 0.0) == ()
    assert detector.feed(event_payload(1, 320), 100, 0.02) == ()
    assert detector.feed(event_payload(2, 160), 900, 0.2) == (DtmfDigit("1", 40, 100),)
    assert detector.feed(event_payload(2, 320, end=True), 900, 0.22) == (DtmfDigit("2", 40, 900),)


def test_new_digit_whose_first_packet_is_its_end() -> None:
    detector = DtmfDetector(8000)
    detector.feed(event_payload(1, 160), 100, 0.0)
    digits = detector.feed(event_payload(9, 800, end=True), 900, 0.2)
    assert digits == (DtmfDigit("1", 20, 100), DtmfDigit("9", 100, 900))


def test_same_digit_twice_with_a_lost_end_is_two_digits() -> None:
    detector = DtmfDetector(8000)
    detector.feed(event_payload(7, 160), 100, 0.0)
    assert detector.feed(event_payload(7, 160), 2000, 0.3) == (DtmfDigit("7", 20, 100),)
    assert detector.feed(event_payload(7, 320, end=True), 2000, 0.32) == (DtmfDigit("7", 40, 2000),)


def test_repeated_key_presses_are_all_reported() -> None:
    detector = DtmfDetector(8000)
    packets = digit_packets(0, 100, [160, 800]) + digit_packets(0, 2000, [160, 800])
    assert run(detector, packets) == [DtmfDigit("0", 100, 100), DtmfDigit("0", 100, 2000)]


def test_flash_is_tracked_but_not_a_digit() -> None:
    detector = DtmfDetector(8000)
    detector.feed(event_payload(6, 160), 100, 0.0)
    assert detector.feed(event_payload(FLASH_EVENT, 160), 900, 0.1) == (DtmfDigit("6", 20, 100),)
    assert detector.feed(event_payload(FLASH_EVENT, 800, end=True), 900, 0.12) == ()


def test_malformed_payload_is_counted_and_ignored() -> None:
    detector = DtmfDetector(8000)
    assert detector.feed(b"\x01", 0, 0.0) == ()
    assert detector.malformed == 1


def test_long_event_segments_make_one_digit() -> None:
    detector = DtmfDetector(48000)
    first = [(event_payload(8, duration), 1000, False) for duration in (30000, 65535)]
    second = digit_packets(8, 1000 + 65535, [960, 30465])
    assert run(detector, first + second) == [DtmfDigit("8", 2000, 1000)]


def test_reset_drops_the_open_digit() -> None:
    detector = DtmfDetector(8000)
    detector.feed(event_payload(1, 160), 100, 0.0)
    detector.reset()
    assert detector.poll(100.0) == ()


def test_detector_rejects_a_bad_clock() -> None:
    with pytest.raises(TelephoneEventError):
        DtmfDetector(0)


def test_injection_sequence_shape() -> None:
    packets = dtmf_packets("5", 100, 10, 8000)
    assert len(packets) == 7
    fields = [parse_telephone_event(packet.payload) for packet in packets]
    assert [field.duration for field in fields] == [160, 320, 480, 640, 800, 800, 800]
    assert [packet.marker for packet in packets] == [True] + [False] * 6
    assert [packet.end for packet in packets] == [False] * 4 + [True] * 3
    assert [field.end for field in fields] == [False] * 4 + [True] * 3
    assert {field.event for field in fields} == {5}
    assert {field.volume for field in fields} == {10}
    assert {packet.timestamp_offset for packet in packets} == {0}


def test_injection_of_a_partial_last_frame_and_a_short_digit() -> None:
    durations = [parse_telephone_event(p.payload).duration for p in dtmf_packets("#", 50, 0, 8000)]
    assert durations == [160, 320, 400, 400, 400]
    shortest = dtmf_packets("a", 1, 63, 48000)
    assert (
        shortest
        == [DtmfPacket(build_telephone_event(12, True, 63, 48), True, True)]
        + [DtmfPacket(build_telephone_event(12, True, 63, 48), False, True)] * 2
    )


def test_injection_of_a_long_wideband_digit_uses_segments() -> None:
    packets = dtmf_packets("9", 2000, 10, 48000)
    offsets = [packet.timestamp_offset for packet in packets]
    assert offsets[0] == 0 and offsets[-1] == 65535
    assert sorted(set(offsets)) == [0, 65535]
    closing = [p for p in packets if parse_telephone_event(p.payload).duration == 65535]
    assert len(closing) == 1 and not closing[0].end
    assert sum(packet.marker for packet in packets) == 1
    digits = run(
        DtmfDetector(48000), [(p.payload, 5000 + p.timestamp_offset, p.marker) for p in packets]
    )
    assert digits == [DtmfDigit("9", 2000, 5000)]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("X", 100, 10, 8000), "exactly one character"),
        (("", 100, 10, 8000), "exactly one character"),
        (("12", 100, 10, 8000), "exactly one character"),
        (("1", 0, 10, 8000), "duration_ms"),
        (("1", 10001, 10, 8000), "duration_ms"),
        (("1", 100, 64, 8000), "volume"),
        (("1", 100, -1, 8000), "volume"),
        (("1", 100, 10, 0), "clock"),
    ],
)
def test_injection_validation(arguments: tuple[str, int, int, int], message: str) -> None:
    with pytest.raises(TelephoneEventError, match=message):
        dtmf_packets(*arguments)


@given(st.binary(max_size=12))
def test_parse_rejects_only_with_its_error(data: bytes) -> None:
    try:
        event = parse_telephone_event(data)
    except TelephoneEventError:
        assert len(data) < 4
        return
    assert 0 <= event.volume <= 63


@given(
    st.integers(0, 255), st.booleans(), st.integers(0, 63), st.integers(0, 0xFFFF), st.booleans()
)
def test_build_then_parse_round_trips(
    event: int, end: bool, volume: int, duration: int, reserved: bool
) -> None:
    payload = build_telephone_event(event, end, volume, duration, reserved)
    assert parse_telephone_event(payload) == TelephoneEvent(event, end, volume, duration, reserved)


@given(
    st.lists(
        st.tuples(st.binary(max_size=6), st.integers(0, 3), st.floats(0, 4), st.booleans()),
        max_size=60,
    )
)
def test_detector_survives_arbitrary_streams(packets: list[tuple[bytes, int, float, bool]]) -> None:
    detector = DtmfDetector(8000)
    now = 0.0
    for payload, timestamp, step, marker in packets:
        now += step
        for digit in detector.feed(payload, timestamp, now, marker) + detector.poll(now):
            assert digit.digit in DIGITS
            assert digit.duration_ms >= 0


@given(
    st.sampled_from(DIGITS + "abcd"),
    st.integers(1, 10_000),
    st.integers(0, 63),
    st.sampled_from([8000, 16000, 48000]),
    st.sampled_from([10, 20, 30]),
)
def test_injected_digit_is_detected_once_with_its_duration(
    digit: str, duration_ms: int, volume: int, clock_rate: int, ptime_ms: int
) -> None:
    packets = dtmf_packets(digit, duration_ms, volume, clock_rate, ptime_ms)
    assert len(packets) >= -(-duration_ms // ptime_ms) + 2
    assert packets[0].marker and sum(packet.marker for packet in packets) == 1
    assert all(packet.end for packet in packets[-3:])
    stream = [
        (packet.payload, (0xFFFF0000 + packet.timestamp_offset) & 0xFFFFFFFF, False)
        for packet in packets
    ]
    detector = DtmfDetector(clock_rate)
    digits = run(detector, stream) + list(detector.poll(1e9))
    assert digits == [DtmfDigit(digit.upper(), duration_ms, 0xFFFF0000)]
