from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.media.errors import MediaError
from callbridge.media.rtp import (
    RtpError,
    RtpExtension,
    build_rtp,
    extend_sequence,
    is_newer_sequence,
    is_rtcp,
    parse_rtp,
    parse_rtp_datagram,
    sequence_delta,
    timestamp_delta,
)

# V=2, PT 0, seq 1, ts 160, SSRC 0x12345678, four payload bytes.
PCMU_PACKET = bytes.fromhex("80000001000000a012345678") + b"\x01\x02\x03\x04"


def test_parses_a_hand_built_packet() -> None:
    packet = parse_rtp(PCMU_PACKET)
    assert packet.payload_type == 0
    assert packet.marker is False
    assert packet.sequence == 1
    assert packet.timestamp == 160
    assert packet.ssrc == 0x12345678
    assert bytes(packet.payload) == b"\x01\x02\x03\x04"
    assert packet.csrcs == ()
    assert packet.extension is None
    assert packet.padding == 0


def test_marker_and_dynamic_payload_type() -> None:
    packet = parse_rtp(bytes.fromhex("80e5ffff ffffffff 00000001"))
    assert packet.marker is True
    assert packet.payload_type == 101
    assert packet.sequence == 65535
    assert packet.timestamp == 0xFFFFFFFF
    assert bytes(packet.payload) == b""


def test_payload_is_a_view_without_copy() -> None:
    buffer = bytearray(PCMU_PACKET)
    packet = parse_rtp(buffer)
    buffer[12] = 0xEE
    assert packet.payload[0] == 0xEE


def test_skips_csrc_list() -> None:
    data = bytes.fromhex("82000001000000a012345678 00000011 00000022") + b"audio"
    packet = parse_rtp(data)
    assert packet.csrcs == (0x11, 0x22)
    assert bytes(packet.payload) == b"audio"


def test_skips_header_extension() -> None:
    extension = bytes.fromhex("bede0002 10aa0000 20bbcc00")
    data = bytes.fromhex("90000001000000a012345678") + extension + b"audio"
    packet = parse_rtp(data)
    assert packet.extension == RtpExtension(0xBEDE, bytes.fromhex("10aa000020bbcc00"))
    assert bytes(packet.payload) == b"audio"


def test_skips_csrc_then_extension() -> None:
    data = bytes.fromhex("91000001000000a012345678 00000011 10000000") + b"x"
    packet = parse_rtp(data)
    assert packet.csrcs == (0x11,)
    assert packet.extension == RtpExtension(0x1000, b"")
    assert bytes(packet.payload) == b"x"


def test_strips_padding() -> None:
    data = bytes.fromhex("a0000001000000a012345678") + b"abc" + b"\x00\x00\x00\x03"
    packet = parse_rtp(data)
    assert bytes(packet.payload) == b"abc\x00"
    assert packet.padding == 3


def test_padding_may_consume_the_whole_payload() -> None:
    data = bytes.fromhex("a0000001000000a012345678") + b"\x00\x00\x00\x04"
    assert bytes(parse_rtp(data).payload) == b""


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short"),
        (PCMU_PACKET[:11], "too short"),
        (bytes.fromhex("40000001000000a012345678"), "version 1"),
        (bytes.fromhex("00000001000000a012345678"), "version 0"),
        (bytes.fromhex("83000001000000a012345678 00000011"), "CSRC"),
        (bytes.fromhex("90000001000000a012345678 bede"), "extension"),
        (bytes.fromhex("90000001000000a012345678 bede0002 00000000"), "extension"),
        (bytes.fromhex("a0000001000000a012345678") + b"ab\x00", "padding count 0"),
        (bytes.fromhex("a0000001000000a012345678") + b"ab\x05", "padding count 5"),
        (bytes.fromhex("a0000001000000a012345678"), "padding count 120"),
    ],
)
def test_rejects_malformed_packets(data: bytes, message: str) -> None:
    with pytest.raises(RtpError, match=message.split()[0]) as caught:
        parse_rtp(data)
    assert isinstance(caught.value, MediaError)


def test_build_matches_hand_built_bytes() -> None:
    assert build_rtp(0, 1, 160, 0x12345678, b"\x01\x02\x03\x04") == PCMU_PACKET
    built = build_rtp(101, 7, 0, 1, b"", marker=True, padding=4)
    assert built == bytes.fromhex("a0e50007 00000000 00000001 00000004")


@pytest.mark.parametrize(
    "arguments",
    [
        {"payload_type": 128},
        {"sequence": 65536},
        {"timestamp": -1},
        {"ssrc": 1 << 32},
        {"csrcs": tuple(range(16))},
        {"padding": 256},
        {"extension": RtpExtension(1, b"abc")},
    ],
)
def test_build_rejects_out_of_range_fields(arguments: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "payload_type": 0,
        "sequence": 0,
        "timestamp": 0,
        "ssrc": 0,
        "payload": b"",
    }
    fields.update(arguments)
    with pytest.raises(RtpError):
        build_rtp(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("second_octet", [192, 200, 201, 202, 203, 204, 205, 206, 207, 223])
def test_rtcp_packet_types_are_demuxed_as_rtcp(second_octet: int) -> None:
    assert is_rtcp(bytes((0x80, second_octet, 0, 1)))


@pytest.mark.parametrize("second_octet", [0, 8, 9, 96, 111, 127, 0x80, 0x80 | 101, 191, 224, 255])
def test_rtp_payload_types_are_not_rtcp(second_octet: int) -> None:
    assert not is_rtcp(bytes((0x80, second_octet, 0, 1)))


def test_is_rtcp_needs_two_bytes() -> None:
    assert not is_rtcp(b"")
    assert not is_rtcp(b"\x80")


def test_sequence_arithmetic_wraps() -> None:
    assert sequence_delta(65535, 0) == 1
    assert sequence_delta(0, 65535) == -1
    assert sequence_delta(100, 100) == 0
    assert sequence_delta(0, 32767) == 32767
    assert sequence_delta(0, 32768) == -32768
    assert is_newer_sequence(0, 65535)
    assert not is_newer_sequence(65535, 0)
    assert not is_newer_sequence(7, 7)
    assert extend_sequence(2, 65534) == 65538
    assert extend_sequence(65534, 65538) == 65534
    assert extend_sequence(65535, 0) == -1
    assert timestamp_delta(0xFFFFFF60, 0x40) == 0xE0
    assert timestamp_delta(0x40, 0xFFFFFF60) == -0xE0


@given(st.binary(max_size=200))
def test_parse_rejects_only_with_rtp_error(data: bytes) -> None:
    try:
        packet = parse_rtp(data)
    except RtpError:
        return
    assert 0 <= packet.payload_type <= 127
    assert len(packet.payload) <= len(data) - 12


packets = st.fixed_dictionaries(
    {
        "payload_type": st.integers(0, 127),
        "sequence": st.integers(0, 0xFFFF),
        "timestamp": st.integers(0, 0xFFFFFFFF),
        "ssrc": st.integers(0, 0xFFFFFFFF),
        "payload": st.binary(max_size=64),
        "marker": st.booleans(),
        "csrcs": st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
        "extension": st.none()
        | st.builds(
            RtpExtension,
            st.integers(0, 0xFFFF),
            st.integers(0, 4).flatmap(
                lambda words: st.binary(min_size=4 * words, max_size=4 * words)
            ),
        ),
        "padding": st.integers(0, 255),
    }
)


@given(packets)
def test_build_then_parse_round_trips(fields: dict[str, object]) -> None:
    packet = parse_rtp(build_rtp(**fields))  # type: ignore[arg-type]
    assert packet.payload_type == fields["payload_type"]
    assert packet.sequence == fields["sequence"]
    assert packet.timestamp == fields["timestamp"]
    assert packet.ssrc == fields["ssrc"]
    assert packet.marker == fields["marker"]
    assert packet.csrcs == fields["csrcs"]
    assert packet.extension == fields["extension"]
    assert packet.padding == fields["padding"]
    assert bytes(packet.payload) == fields["payload"]


@given(packets)
def test_datagram_parse_equals_the_full_parse(fields: dict[str, object]) -> None:
    """The plain-header fast path and the general parser agree on every packet that a
    demux can tell from RTCP (PT 64..95 with the marker cannot be, so rtcp-mux forbids it)."""
    data = build_rtp(**fields)  # type: ignore[arg-type]
    packet = parse_rtp_datagram(data)
    if is_rtcp(data):
        assert packet is None
        return
    assert packet is not None
    assert packet == parse_rtp(data)
    assert bytes(packet.payload) == bytes(parse_rtp(data).payload)


@given(st.binary(max_size=40))
def test_datagram_parse_is_rtcp_or_rtp_or_rtp_error(data: bytes) -> None:
    try:
        packet = parse_rtp_datagram(data)
    except RtpError:
        assert not is_rtcp(data)
        with pytest.raises(RtpError):
            parse_rtp(data)
        return
    assert (packet is None) == is_rtcp(data)
    if packet is not None:
        assert packet == parse_rtp(data)


@given(st.integers(0, 0xFFFF), st.integers(-32768, 32767))
def test_sequence_delta_inverts_addition(reference: int, distance: int) -> None:
    sequence = (reference + distance) & 0xFFFF
    assert sequence_delta(reference, sequence) == distance
    assert is_newer_sequence(sequence, reference) == (distance > 0)
    base = 16 * 0x10000 + reference
    assert extend_sequence(sequence, base) == base + distance
