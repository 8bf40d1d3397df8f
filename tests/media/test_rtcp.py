from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.media.rtcp import (
    NTP_UNIX_OFFSET,
    Goodbye,
    ReceiverReport,
    ReportBlock,
    RtcpError,
    SenderReport,
    SourceDescription,
    build_goodbye,
    build_receiver_report,
    build_sender_report,
    build_source_description,
    compact_ntp,
    ntp_timestamp,
    parse_rtcp,
    round_trip_time,
)

KNOWN_BLOCK = ReportBlock(0x55667788, 64, 5, 0x1000A, 32, 0xA1B28000, 0x10000)
KNOWN_SR = bytes.fromhex(
    "81c8000c 11223344 e8e4a1b280000000 00001f40 00000064 00003e80"  # header, sender info
    + " 55667788 40000005 0001000a 00000020 a1b28000 00010000"  # one report block
)
KNOWN_SDES = bytes.fromhex("81ca0003 11223344 0104 75736572 0000")
KNOWN_BYE = bytes.fromhex("81cb0003 11223344 07 68616e67757021")
APP = bytes.fromhex("80cc0002 11223344 6e616d65")


def test_parses_a_hand_built_sender_report() -> None:
    assert parse_rtcp(KNOWN_SR) == [
        SenderReport(0x11223344, 0xE8E4A1B280000000, 8000, 100, 16000, (KNOWN_BLOCK,))
    ]


def test_builds_the_same_sender_report() -> None:
    built = build_sender_report(0x11223344, 0xE8E4A1B280000000, 8000, 100, 16000, [KNOWN_BLOCK])
    assert built == KNOWN_SR


def test_parses_a_compound_packet_and_skips_app() -> None:
    packets = parse_rtcp(KNOWN_SR + KNOWN_SDES + APP + KNOWN_BYE)
    assert packets[1:] == [
        SourceDescription(((0x11223344, "user"),)),
        Goodbye((0x11223344,), "hangup!"),
    ]


def test_skips_feedback_and_extended_reports() -> None:
    feedback = bytes.fromhex("81cd0002 11223344 55667788")
    extended = bytes.fromhex("80cf0001 11223344")
    assert parse_rtcp(feedback + extended + KNOWN_BYE) == [Goodbye((0x11223344,), "hangup!")]


def test_receiver_report_with_negative_cumulative_loss() -> None:
    data = bytes.fromhex("81c90007 11223344 55667788 00ffffff 0000ffff" + "0" * 24)
    assert parse_rtcp(data) == [
        ReceiverReport(0x11223344, (ReportBlock(0x55667788, 0, -1, 0xFFFF, 0, 0, 0),))
    ]


def test_padding_on_the_last_packet_is_stripped() -> None:
    padded_bye = bytes.fromhex("a1cb0002 11223344 00000004")
    assert parse_rtcp(KNOWN_SR + padded_bye)[1] == Goodbye((0x11223344,), None)


def test_sdes_with_several_items_and_chunks() -> None:
    chunk_one = bytes.fromhex("00000001 0201 41 0103 616263 00000000")  # NAME, CNAME
    chunk_two = bytes.fromhex("00000002 00000000")  # no items
    data = bytes.fromhex("82ca0006") + chunk_one + chunk_two
    assert parse_rtcp(data) == [SourceDescription(((1, "abc"), (2, None)))]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short"),
        (b"\x81\xc8\x00", "too short"),
        (bytes.fromhex("41c80000"), "version"),
        (bytes.fromhex("81c8000d") + KNOWN_SR[4:], "length field"),
        (KNOWN_SR + b"\x81", "trailing"),
        (bytes.fromhex("a1cb0001 00000000"), "padding count 0"),
        (bytes.fromhex("a1cb0001 00000009"), "padding count 9"),
        (bytes.fromhex("82c80006") + KNOWN_SR[4:28], "report blocks"),
        (bytes.fromhex("80c80001 11223344"), "sender info"),
        (bytes.fromhex("80c90000"), "SSRC"),
        (bytes.fromhex("81ca0002 11223344 01090000"), "item longer"),
        (bytes.fromhex("82cb0001 11223344"), "BYE too short"),
        (bytes.fromhex("81cb0002 11223344 09000000"), "reason longer"),
    ],
)
def test_rejects_malformed_compounds(data: bytes, message: str) -> None:
    with pytest.raises(RtcpError, match=message):
        parse_rtcp(data)


def test_source_description_is_word_aligned_with_a_null_item() -> None:
    for name in ("", "a", "ab", "abc", "abcd", "callbridge@host"):
        packet = build_source_description(7, name)
        assert len(packet) % 4 == 0
        assert packet[8 + 2 + len(name)] == 0
        assert parse_rtcp(packet) == [SourceDescription(((7, name),))]


def test_builds_goodbye() -> None:
    assert build_goodbye([0x11223344], "hangup!") == KNOWN_BYE
    assert build_goodbye([1, 2]) == bytes.fromhex("82cb0002 00000001 00000002")
    assert parse_rtcp(build_goodbye([], "x")) == [Goodbye((), "x")]


def test_sender_report_with_cname_is_compound() -> None:
    packets = parse_rtcp(build_sender_report(9, 1, 2, 3, 4, cname="me"))
    assert packets == [SenderReport(9, 1, 2, 3, 4), SourceDescription(((9, "me"),))]
    rr = parse_rtcp(build_receiver_report(9, [KNOWN_BLOCK], cname="me"))
    assert rr == [ReceiverReport(9, (KNOWN_BLOCK,)), SourceDescription(((9, "me"),))]


@pytest.mark.parametrize(
    "block",
    [
        ReportBlock(1, 256, 0, 0, 0, 0, 0),
        ReportBlock(1, 0, 0x800000, 0, 0, 0, 0),
        ReportBlock(1, 0, -0x800001, 0, 0, 0, 0),
        ReportBlock(1 << 32, 0, 0, 0, 0, 0, 0),
    ],
)
def test_build_rejects_out_of_range_blocks(block: ReportBlock) -> None:
    with pytest.raises(RtcpError):
        build_receiver_report(1, [block])


def test_build_rejects_oversized_fields() -> None:
    with pytest.raises(RtcpError):
        build_goodbye(list(range(32)))
    with pytest.raises(RtcpError):
        build_goodbye([1], "x" * 256)
    with pytest.raises(RtcpError):
        build_source_description(1, "x" * 256)
    with pytest.raises(RtcpError):
        build_sender_report(1 << 32, 0, 0, 0, 0)


def test_ntp_conversion() -> None:
    assert ntp_timestamp(0.0) == NTP_UNIX_OFFSET << 32
    assert ntp_timestamp(1.5) == (NTP_UNIX_OFFSET + 1) << 32 | 0x80000000
    assert compact_ntp(0xE8E4A1B2_80000000) == 0xA1B28000


def test_round_trip_time_from_lsr_and_dlsr() -> None:
    sent = 1_700_000_000.0
    block = ReportBlock(1, 0, 0, 0, 0, compact_ntp(ntp_timestamp(sent)), int(0.25 * 65536))
    rtt = round_trip_time(block, sent + 0.35)
    assert rtt == pytest.approx(0.1, abs=2 / 65536)
    assert round_trip_time(block, sent + 10.5) is None  # over 10 s
    assert round_trip_time(block, sent + 0.1) is None  # negative: clocks disagree
    no_sr = ReportBlock(1, 0, 0, 0, 0, 0, 0)
    assert round_trip_time(no_sr, sent) is None


@given(st.binary(max_size=300))
def test_parse_rejects_only_with_rtcp_error(data: bytes) -> None:
    try:
        parse_rtcp(data)
    except RtcpError:
        pass


@given(st.lists(st.binary(max_size=40), max_size=6), st.sampled_from([200, 201, 202, 203, 204]))
def test_parse_of_well_framed_garbage_bodies(bodies: list[bytes], packet_type: int) -> None:
    data = b"".join(
        bytes((0x80 | len(body) % 32, packet_type)) + (len(padded) // 4).to_bytes(2, "big") + padded
        for body in bodies
        for padded in [body + bytes(-len(body) % 4 + 4)]
    )
    try:
        parse_rtcp(data)
    except RtcpError:
        pass


u32 = st.integers(0, 0xFFFFFFFF)
blocks = st.builds(
    ReportBlock, u32, st.integers(0, 255), st.integers(-0x800000, 0x7FFFFF), u32, u32, u32, u32
)


@given(
    u32,
    st.integers(0, (1 << 64) - 1),
    u32,
    u32,
    u32,
    st.lists(blocks, max_size=31),
    st.none() | st.text(max_size=60),
)
def test_sender_report_round_trips(
    ssrc: int,
    ntp: int,
    rtp_timestamp: int,
    packets: int,
    octets: int,
    reports: list[ReportBlock],
    cname: str | None,
) -> None:
    data = build_sender_report(ssrc, ntp, rtp_timestamp, packets, octets, reports, cname=cname)
    parsed = parse_rtcp(data)
    assert parsed[0] == SenderReport(ssrc, ntp, rtp_timestamp, packets, octets, tuple(reports))
    if cname is not None:
        assert parsed[1] == SourceDescription(((ssrc, cname),))


@given(st.lists(u32, max_size=31), st.none() | st.text(max_size=80))
def test_goodbye_round_trips(ssrcs: list[int], reason: str | None) -> None:
    assert parse_rtcp(build_goodbye(ssrcs, reason)) == [Goodbye(tuple(ssrcs), reason)]
