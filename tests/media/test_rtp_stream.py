"""RtpStream without an event loop or sockets: datagrams in, datagrams out through list sinks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.media.rtcp import (
    Goodbye,
    ReportBlock,
    SenderReport,
    build_goodbye,
    build_receiver_report,
    build_sender_report,
    compact_ntp,
    ntp_timestamp,
    parse_rtcp,
)
from callbridge.media.rtp import build_rtp, parse_rtp
from callbridge.media.rtp_stream import Address, DtmfBusyError, RtpStream
from callbridge.media.telephone_event import parse_telephone_event

START = 1000.0
UNIX_OFFSET = 1_700_000_000.0 - START
PEER: Address = ("192.0.2.10", 40000)
NAT: Address = ("198.51.100.7", 61000)
LATE: Address = ("203.0.113.9", 50000)


class Wire:
    """One sink: every datagram the stream sent through it, with its target."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Address]] = []

    def __call__(self, datagram: bytes, address: Address) -> None:
        self.sent.append((datagram, address))


def stream_and_wires() -> tuple[RtpStream, Wire, Wire]:
    rtp_wire, rtcp_wire = Wire(), Wire()
    stream = RtpStream(
        START, unix_offset=UNIX_OFFSET, transmit_rtp=rtp_wire, transmit_rtcp=rtcp_wire
    )
    return stream, rtp_wire, rtcp_wire


def rtp(
    sequence: int, timestamp: int = 0, ssrc: int = 0x1234, payload: bytes = b"\xff" * 160
) -> bytes:
    return build_rtp(0, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc, payload)


def test_the_packet_is_a_view_of_the_datagram() -> None:
    stream, _, _ = stream_and_wires()
    datagram = rtp(7, 160, payload=b"voice")
    packet = stream.receive_rtp(datagram, PEER, START)
    assert packet is not None and packet.sequence == 7 and packet.timestamp == 160
    assert packet.payload.obj is datagram and bytes(packet.payload) == b"voice"
    assert (stream.received_packets, stream.received_bytes) == (1, 5)
    assert stream.remote_ssrc == 0x1234


def test_rtp_goes_to_the_sdp_address_at_once_and_rtcp_once_rtp_flowed() -> None:
    """A receive-only peer (a recorder, a gateway waiting for media) never sends first."""
    stream, rtp_wire, rtcp_wire = stream_and_wires()
    assert stream.send(b"early", 0, 1) is False  # no target yet
    stream.set_remote(PEER, None, rtcp_mux=False)
    stream.tick(START + 60)
    assert rtcp_wire.sent == []  # nothing to report before RTP flowed either way

    assert stream.send(b"\x01\x02", 8, 0x1_0000_0005, marker=True)
    ((datagram, target),) = rtp_wire.sent
    packet = parse_rtp(datagram)
    assert target == PEER and stream.remote_ssrc is None
    assert (packet.payload_type, packet.marker, packet.timestamp) == (8, True, 5)
    assert packet.ssrc == stream.ssrc and bytes(packet.payload) == b"\x01\x02"
    stream.send(b"\x03", 8, 165)
    assert parse_rtp(rtp_wire.sent[1][0]).sequence == (packet.sequence + 1) & 0xFFFF
    assert stream.stats(START + 1)["outbound"] == {"packets": 2, "bytes": 3}
    stream.tick(START + 120)  # a sender now: its SR goes out
    ((report, rtcp_target),) = rtcp_wire.sent
    assert rtcp_target == (PEER[0], PEER[1] + 1)
    assert isinstance(parse_rtcp(report)[0], SenderReport)

    stream.close(START + 121)
    assert stream.send(b"late", 0, 325) is False


def test_symmetric_rtp_latches_within_the_window_then_counts() -> None:
    stream, rtp_wire, _ = stream_and_wires()
    stream.set_remote(PEER, None, rtcp_mux=False)
    assert stream.rtcp_target == (PEER[0], PEER[1] + 1)
    stream.receive_rtp(rtp(1), NAT, START + 4.9)
    assert stream.rtp_target == NAT and stream.rtcp_target == (NAT[0], NAT[1] + 1)
    assert not stream.learning(START + 5.0)

    assert stream.receive_rtp(rtp(2), LATE, START + 5.1) is not None  # still delivered
    assert stream.rtp_target == NAT and stream.unexpected_source_packets == 1
    stream.send(b"x", 0, 0)
    assert rtp_wire.sent[-1][1] == NAT

    stream.reopen_learning_window(START + 6)
    stream.receive_rtp(rtp(3), LATE, START + 6.1)
    assert stream.rtp_target == LATE and stream.unexpected_source_packets == 1
    stream.send(b"y", 0, 160)
    assert rtp_wire.sent[-1][1] == LATE


def test_the_same_peer_spelled_as_recvfrom_does_is_not_a_new_source() -> None:
    stream, _, _ = stream_and_wires()
    stream.set_remote(("::1", 9), None, rtcp_mux=False)
    stream.receive_rtp(rtp(1), ("::1", 9, 0, 0), START + 60)  # after the window
    assert stream.rtp_target == ("::1", 9, 0, 0)
    assert stream.rtcp_target == ("::1", 10) and stream.unexpected_source_packets == 0


def test_rtcp_on_the_rtp_port_is_taken_in_and_reports_follow_the_mux() -> None:
    for rtcp_mux in (True, False):
        stream, rtp_wire, rtcp_wire = stream_and_wires()
        stream.set_remote(PEER, None, rtcp_mux=rtcp_mux)
        stream.receive_rtp(rtp(1), PEER, START)
        compound = build_receiver_report(0x1234) + build_goodbye([0x1234], "bye")
        assert stream.receive_rtp(compound, PEER, START + 1) is None
        assert stream.rtcp_packets_received == 1 and stream.malformed_packets == 0
        assert stream.take_goodbyes() == [Goodbye((0x1234,), "bye")]
        assert stream.take_goodbyes() == []

        stream.tick(START + 4.99)
        assert stream.rtcp_packets_sent == 0
        stream.tick(START + 5.0)
        wire = rtp_wire if rtcp_mux else rtcp_wire
        ((datagram, target),) = wire.sent
        assert target == (PEER if rtcp_mux else (PEER[0], PEER[1] + 1))
        report = parse_rtcp(datagram)[0]
        assert isinstance(report, SenderReport) and report.ssrc == stream.ssrc
        stream.tick(START + 9.99)
        stream.tick(START + 10.0)
        assert stream.rtcp_packets_sent == 2


def test_round_trip_time_from_a_report_block_about_our_stream() -> None:
    stream, _, rtcp_wire = stream_and_wires()
    stream.set_remote(PEER, None, rtcp_mux=False)
    stream.receive_rtp(rtp(1), PEER, START)
    stream.tick(START + 5)
    our_sr = parse_rtcp(rtcp_wire.sent[0][0])[0]
    assert isinstance(our_sr, SenderReport)
    assert (our_sr.ntp_timestamp >> 32) - 2_208_988_800 == int(START + 5 + UNIX_OFFSET)
    held = int(0.25 * 65536)
    block = ReportBlock(stream.ssrc, 0, 0, 0, 0, compact_ntp(our_sr.ntp_timestamp), held)
    other = ReportBlock(0x999, 0, 0, 0, 0, 1, 0)  # about someone else: ignored
    stream.receive_rtcp(build_receiver_report(0x1234, [other, block]), START + 5.33)
    assert stream.stats(START + 6)["rtt_ms"] == pytest.approx(80, abs=0.1)
    stream.receive_rtcp(build_receiver_report(0x1234, [block]), START + 20)  # over 10 s
    assert stream.stats(START + 21)["rtt_ms"] == pytest.approx(80, abs=0.1)


def test_a_peer_sr_fills_lsr_and_dlsr() -> None:
    stream, _, rtcp_wire = stream_and_wires()
    stream.set_remote(PEER, None, rtcp_mux=False)
    stream.receive_rtp(rtp(1), PEER, START)
    peer_ntp = ntp_timestamp(1_700_000_000.5)
    stream.receive_rtcp(build_sender_report(0x1234, peer_ntp, 0, 1, 160), START + 1)
    stream.tick(START + 6)
    report = parse_rtcp(rtcp_wire.sent[0][0])[0]
    assert isinstance(report, SenderReport)
    assert report.reports[0].last_sr == compact_ntp(peer_ntp)
    assert report.reports[0].delay_since_last_sr == 5 * 65536


def test_a_new_remote_ssrc_restarts_the_stats_and_keeps_the_loss() -> None:
    stream, _, _ = stream_and_wires()
    for sequence in (0, 1, 2, 5):  # 3 and 4 lost
        stream.receive_rtp(rtp(sequence, ssrc=0xAAAA), PEER, START + sequence * 0.02)
    assert stream.stats(START)["inbound"]["packets_lost"] == 2
    for sequence in (100, 101, 103):  # the peer restarted its stream; 102 lost
        stream.receive_rtp(rtp(sequence, ssrc=0xBBBB), PEER, START + 1)
    assert stream.remote_ssrc == 0xBBBB
    inbound = stream.stats(START + 1.25)["inbound"]
    assert inbound["packets_lost"] == 3 and inbound["packets"] == 7
    assert inbound["last_received_ms_ago"] == 250


def test_malformed_datagrams_are_counted_and_dropped() -> None:
    stream, _, _ = stream_and_wires()
    for datagram in (b"", b"\x80", b"\x40" + bytes(15), b"\x81\x00" + bytes(10)):
        assert stream.receive_rtp(datagram, PEER, START) is None
    assert stream.receive_rtp(b"\x80\xc9\x00\x07" + bytes(4), PEER, START) is None
    stream.receive_rtcp(b"\x40\xc9\x00\x01" + bytes(4), START)
    assert (stream.malformed_packets, stream.malformed_rtcp_packets) == (4, 2)
    assert stream.received_packets == 0 and stream.remote_ssrc is None


def test_digits_are_paced_and_continue_the_audio_timeline() -> None:
    stream, rtp_wire, _ = stream_and_wires()
    stream.set_remote(PEER, None, rtcp_mux=True)
    stream.receive_rtp(rtp(1), PEER, START)
    stream.send(b"\xff" * 160, 0, 48_000)
    stream.start_dtmf("#", 60, 10, 101, 8000)  # 3 packets + 2 end repeats
    with pytest.raises(DtmfBusyError, match="already in progress"):
        stream.start_dtmf("1", 60, 10, 101, 8000)
    sent = []
    for index in range(6):
        before = stream.sent_packets
        stream.tick(START + 1 + index * 0.020 + (0.004 if index % 2 else -0.004))
        sent.append(stream.sent_packets - before)
    assert sent == [1] * 5 + [0] and not stream.dtmf_busy
    packets = [parse_rtp(datagram) for datagram, _ in rtp_wire.sent[1:]]
    assert {packet.timestamp for packet in packets} == {48_000 + 160}
    assert [packet.marker for packet in packets] == [True] + [False] * 4
    assert [parse_telephone_event(p.payload).end for p in packets] == [False] * 2 + [True] * 3

    stream.tick(START + 5)  # the SR's RTP timestamp is audio time, not the digit's
    report = parse_rtcp(rtp_wire.sent[-1][0])[0]
    assert isinstance(report, SenderReport) and report.rtp_timestamp == 48_000


def test_close_sends_bye_once_and_then_nothing() -> None:
    stream, _, rtcp_wire = stream_and_wires()
    stream.set_remote(PEER, None, rtcp_mux=False)
    assert stream.send_bye(START) is False  # the peer never sent
    stream.receive_rtp(rtp(1), PEER, START)
    stream.start_dtmf("5", 60, 10, 101, 8000)
    stream.close(START + 1, "done")
    stream.close(START + 2)
    ((datagram, _),) = rtcp_wire.sent
    assert parse_rtcp(datagram)[-1] == Goodbye((stream.ssrc,), "done")
    assert stream.closed and not stream.dtmf_busy
    assert stream.send(b"late", 0, 0) is False
    stream.tick(START + 60)
    assert len(rtcp_wire.sent) == 1


@given(datagram=st.binary(max_size=80), rtcp_port=st.booleans())
def test_no_datagram_raises(datagram: bytes, rtcp_port: bool) -> None:
    stream, _, _ = stream_and_wires()
    if rtcp_port:
        stream.receive_rtcp(datagram, START)
    else:
        stream.receive_rtp(datagram, PEER, START)
