"""RtpTransport against real UDP peers on 127.0.0.1.

Time-dependent behaviour (learning window, RTCP interval, DTMF spacing, jitter, RTT) is driven
by a fake clock passed as `now` and by explicit `tick(now)` calls, never by sleeping. Waits on
sockets have a generous hang guard only; no test passes or fails on speed.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callbridge.engine.errors import EngineError
from callbridge.engine.ports import PortAllocationError, PortAllocator
from callbridge.engine.rtp_transport import RtpTransport
from callbridge.media.rtcp import (
    Goodbye,
    ReportBlock,
    SenderReport,
    SourceDescription,
    build_goodbye,
    build_receiver_report,
    build_sender_report,
    compact_ntp,
    ntp_timestamp,
    parse_rtcp,
)
from callbridge.media.rtp import RtpExtension, RtpPacket, build_rtp, parse_rtp
from callbridge.media.telephone_event import parse_telephone_event
from tests.conftest import free_port_range

HOST = "127.0.0.1"
GUARD_S = 5.0
"""Hang guard for socket waits; never reached when things work."""


class FakeClock:
    """A monotonic clock the test moves by hand (seconds)."""

    def __init__(self, value: float = 1000.0) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


class Peer(asyncio.DatagramProtocol):
    """One UDP socket of a remote party; queues every datagram it receives."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[tuple[bytes, tuple[Any, ...]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.inbox.put_nowait((data, addr))

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def send(self, data: bytes, address: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, address)

    async def receive(self) -> bytes:
        data, _ = await asyncio.wait_for(self.inbox.get(), GUARD_S)
        return data

    def pending(self) -> int:
        return self.inbox.qsize()


class Recorder:
    """The transport's callbacks: packets and BYEs as they arrive."""

    def __init__(self) -> None:
        self.packets: list[tuple[RtpPacket, float]] = []
        self.arrived: asyncio.Queue[RtpPacket] = asyncio.Queue()
        self.byes: list[tuple[list[int], str | None]] = []

    def on_packet(self, packet: RtpPacket, arrival: float) -> None:
        self.packets.append((packet, arrival))
        self.arrived.put_nowait(packet)

    def on_rtcp_bye(self, ssrcs: list[int], reason: str | None) -> None:
        self.byes.append((ssrcs, reason))

    async def next(self) -> RtpPacket:
        return await asyncio.wait_for(self.arrived.get(), GUARD_S)


async def until(condition: Callable[[], bool]) -> None:
    """Wait for a counter to move (a datagram that produces no callback)."""
    deadline = time.monotonic() + GUARD_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Harness:
    """Owns everything a test opens, closes it all, and checks nothing leaked."""

    def __init__(self) -> None:
        self.allocator = PortAllocator(*free_port_range(8))
        self.clock = FakeClock()
        self.transports: list[RtpTransport] = []
        self.peers: list[Peer] = []

    async def transport(self, **options: Any) -> tuple[RtpTransport, Recorder]:
        recorder = Recorder()
        transport = await RtpTransport.open(
            self.allocator,
            HOST,
            on_packet=recorder.on_packet,
            on_rtcp_bye=recorder.on_rtcp_bye,
            now=self.clock,
            **options,
        )
        self.transports.append(transport)
        return transport, recorder

    async def peer(self, sock: Any = None) -> Peer:
        loop = asyncio.get_running_loop()
        if sock is None:
            _, peer = await loop.create_datagram_endpoint(Peer, local_addr=(HOST, 0))
        else:
            _, peer = await loop.create_datagram_endpoint(Peer, sock=sock)
        self.peers.append(peer)
        return peer

    async def peer_pair(self) -> tuple[Peer, Peer]:
        """An RTP peer on an even port and its RTCP peer on the odd port above it."""
        pair = self.allocator.allocate(HOST)
        pair.release()  # the sockets now belong to the peers
        return await self.peer(pair.rtp_socket), await self.peer(pair.rtcp_socket)

    async def close(self) -> None:
        for transport in self.transports:
            transport.close()
            await transport.wait_closed()
        for peer in self.peers:
            assert peer.transport is not None
            peer.transport.close()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert self.allocator.in_use == 0


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    tasks_before = asyncio.all_tasks() - {asyncio.current_task()}
    fds = open_fds()
    harness = Harness()
    yield harness
    await harness.close()
    assert asyncio.all_tasks() - {asyncio.current_task()} <= tasks_before, "tasks leaked"
    assert open_fds() == fds, "sockets leaked"


def rtp(
    sequence: int, timestamp: int = 0, ssrc: int = 0x1234, payload: bytes = b"\xff" * 160, **kw: Any
) -> bytes:
    return build_rtp(0, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc, payload, **kw)


async def activate(transport: RtpTransport, recorder: Recorder, peer: Peer, seq: int = 0) -> None:
    """The peer sends one RTP packet: the transport learns its SSRC and source address."""
    peer.send(rtp(seq), ("127.0.0.1", transport.local_port))
    await recorder.next()


# ---------------------------------------------------------------------------- open / close


async def test_open_binds_an_even_port_and_close_releases_the_pair(harness: Harness) -> None:
    transport, _ = await harness.transport()
    assert transport.local_port % 2 == 0
    assert harness.allocator.in_use == 1
    transport.close()
    transport.close()
    await transport.wait_closed()
    assert transport.closed and harness.allocator.in_use == 0
    assert transport.send(b"late", 0, 0) is False
    await harness.transport()  # the released pair is bindable again at once
    assert harness.allocator.in_use == 1


async def test_exhaustion_and_reuse_through_transports(harness: Harness) -> None:
    harness.allocator = PortAllocator(*free_port_range(2))
    first, _ = await harness.transport()
    await harness.transport()
    with pytest.raises(PortAllocationError, match="No available port pairs in range"):
        await harness.transport()
    first.close()
    await first.wait_closed()
    third, _ = await harness.transport()
    assert third.local_port == first.local_port


# ---------------------------------------------------------------------------- send


async def test_sending_starts_at_once_to_the_sdp_address(harness: Harness) -> None:
    """A receive-only peer (a recorder, a gateway waiting for media) never sends first."""
    transport, _ = await harness.transport()
    peer = await harness.peer()
    assert transport.send(b"early", 0, 1) is False  # no target yet
    transport.set_remote(peer.address, None, rtcp_mux=True)
    transport.tick(harness.clock.value + 60)  # no RTCP before any RTP either way
    assert transport.rtcp_packets_sent == 0 and transport.stream.remote_ssrc is None

    assert transport.send(b"\x01\x02\x03", 8, 0x1_0000_0005, marker=True) is True
    packet = parse_rtp(await peer.receive())  # the first datagram is this one: nothing earlier
    assert packet.payload_type == 8 and packet.marker
    assert packet.timestamp == 5 and packet.ssrc == transport.stream.ssrc
    assert bytes(packet.payload) == b"\x01\x02\x03"
    transport.send(b"\x04", 8, 165)
    second = parse_rtp(await peer.receive())
    assert second.sequence == (packet.sequence + 1) & 0xFFFF and not second.marker
    assert transport.stats()["outbound"] == {"packets": 2, "bytes": 4}


async def test_passthrough_sends_our_pt_ssrc_sequence_and_keeps_the_rest(harness: Harness) -> None:
    side_a, recorder_a = await harness.transport()
    side_b, recorder_b = await harness.transport()
    peer_a, peer_b = await harness.peer(), await harness.peer()
    side_b.set_remote(peer_b.address, None, rtcp_mux=False)
    await activate(side_b, recorder_b, peer_b)

    sources = [
        rtp(7, 0xFFFFFFF0, ssrc=0xAAAA, payload=b"voice-1", marker=True),
        rtp(
            8,
            0xFFFFFFF0 + 160,
            ssrc=0xAAAA,
            payload=b"voice-2",
            csrcs=(1, 2),
            extension=RtpExtension(0xBEDE, b"\x10\x20\x30\x40"),
            padding=4,
        ),
    ]
    received = []
    for datagram in sources:
        peer_a.send(datagram, (HOST, side_a.local_port))
        incoming = await recorder_a.next()
        assert side_b.send(incoming.payload, 96, incoming.timestamp, incoming.marker)
        received.append(parse_rtp(await peer_b.receive()))
    first, second = received
    assert [p.payload_type for p in received] == [96, 96]
    assert [p.ssrc for p in received] == [side_b.stream.ssrc, side_b.stream.ssrc]
    assert second.sequence == (first.sequence + 1) & 0xFFFF
    assert (first.timestamp, first.marker, bytes(first.payload)) == (0xFFFFFFF0, True, b"voice-1")
    assert (second.timestamp, second.marker, bytes(second.payload)) == (0x90, False, b"voice-2")
    assert second.csrcs == () and second.extension is None and second.padding == 0
    assert side_b.sent_bytes == 14 and side_a.received_bytes == 14


# ---------------------------------------------------------------------------- symmetric RTP


async def test_symmetric_rtp_follows_the_source_within_the_window_then_locks(
    harness: Harness,
) -> None:
    transport, recorder = await harness.transport()
    sdp_peer, nat_peer, late_peer = await harness.peer(), await harness.peer(), await harness.peer()
    transport.set_remote(sdp_peer.address, None, rtcp_mux=False)
    assert transport.stream.rtcp_target == (HOST, sdp_peer.address[1] + 1)
    assert transport.stream.learning(harness.clock.value)

    harness.clock.value += 4.9
    nat_peer.send(rtp(1), (HOST, transport.local_port))
    await recorder.next()
    assert transport.stream.rtp_target == nat_peer.address
    assert transport.stream.rtcp_target == (HOST, nat_peer.address[1] + 1)
    transport.send(b"x", 0, 0)
    assert bytes(parse_rtp(await nat_peer.receive()).payload) == b"x"

    harness.clock.value += 0.2  # window over: locked
    assert not transport.stream.learning(harness.clock.value)
    late_peer.send(rtp(2), (HOST, transport.local_port))
    assert (await recorder.next()).sequence == 2  # never filtered by source
    assert transport.stream.rtp_target == nat_peer.address
    assert transport.unexpected_source_packets == 1

    transport.reopen_learning_window()
    late_peer.send(rtp(3), (HOST, transport.local_port))
    await recorder.next()
    assert transport.stream.rtp_target == late_peer.address
    assert transport.unexpected_source_packets == 1


async def test_rtcp_target_follows_the_rtp_source_under_rtcp_mux(harness: Harness) -> None:
    transport, recorder = await harness.transport()
    peer = await harness.peer()
    transport.set_remote(("0:0::1", 9), ("127.0.0.1", 4000), rtcp_mux=True)
    assert transport.stream.rtp_target == ("::1", 9) == transport.stream.rtcp_target
    await activate(transport, recorder, peer)
    assert transport.stream.rtp_target == peer.address == transport.stream.rtcp_target


async def test_a_port_zero_target_is_none_and_the_first_source_is_learned_any_time(
    harness: Harness,
) -> None:
    transport, recorder = await harness.transport()
    peer = await harness.peer()
    transport.set_remote((HOST, 0), None, rtcp_mux=False)
    assert transport.stream.rtp_target is None and transport.stream.rtcp_target is None
    harness.clock.value += 60
    await activate(transport, recorder, peer)
    assert transport.stream.rtp_target == peer.address
    assert transport.send(b"y", 0, 0)
    assert bytes(parse_rtp(await peer.receive()).payload) == b"y"


# ---------------------------------------------------------------------------- RTCP


async def test_rtcp_mux_demux_on_the_rtp_port_and_sr_back_to_it(harness: Harness) -> None:
    transport, recorder = await harness.transport()
    peer = await harness.peer()
    transport.set_remote(peer.address, None, rtcp_mux=True)
    await activate(transport, recorder, peer)
    peer.send(build_receiver_report(0x1234), (HOST, transport.local_port))
    await until(lambda: transport.rtcp_packets_received == 1)
    assert len(recorder.packets) == 1 and transport.malformed_packets == 0

    transport.tick(harness.clock.value + 5)
    packets = parse_rtcp(await peer.receive())
    assert isinstance(packets[0], SenderReport) and packets[0].ssrc == transport.stream.ssrc


async def test_separate_rtcp_port_sr_on_tick_with_sender_info(harness: Harness) -> None:
    transport, recorder = await harness.transport()
    rtp_peer, rtcp_peer = await harness.peer_pair()
    transport.set_remote(rtp_peer.address, None, rtcp_mux=False)
    opened = harness.clock.value
    for sequence in range(3):
        rtp_peer.send(
            rtp(100 + sequence, 160 * sequence, ssrc=0x5151), (HOST, transport.local_port)
        )
        await recorder.next()
    for index in range(4):
        transport.send(b"\x00" * 160, 0, 8000 + 160 * index)

    transport.tick(opened + 4.98)
    assert transport.rtcp_packets_sent == 0
    transport.tick(opened + 5.0)
    packets = parse_rtcp(await rtcp_peer.receive())
    report = packets[0]
    assert isinstance(report, SenderReport)
    assert report.ssrc == transport.stream.ssrc
    assert (report.packet_count, report.octet_count) == (4, 640)
    assert report.rtp_timestamp == 8000 + 160 * 3
    assert abs((report.ntp_timestamp >> 32) - 2_208_988_800 - time.time()) < 60
    (block,) = report.reports
    assert block.ssrc == 0x5151
    assert block.extended_highest_sequence == 102
    assert block.cumulative_lost == 0 and block.last_sr == 0
    assert isinstance(packets[1], SourceDescription)
    assert packets[1].chunks == ((transport.stream.ssrc, transport.stream.cname),)

    transport.tick(opened + 9.9)
    assert transport.rtcp_packets_sent == 1
    transport.tick(opened + 10.0)
    assert transport.rtcp_packets_sent == 2
    assert isinstance(parse_rtcp(await rtcp_peer.receive())[0], SenderReport)
    audio = [parse_rtp(await rtp_peer.receive()) for _ in range(4)]
    assert [packet.timestamp for packet in audio] == [8000, 8160, 8320, 8480]


async def test_rtt_from_a_receiver_report_that_references_our_sr(harness: Harness) -> None:
    transport, recorder = await harness.transport()
    rtp_peer, rtcp_peer = await harness.peer_pair()
    transport.set_remote(rtp_peer.address, None, rtcp_mux=False)
    await activate(transport, recorder, rtp_peer)
    assert transport.stats()["rtt_ms"] is None

    sent_at = harness.clock.value + 5
    transport.tick(sent_at)
    (our_sr, _) = parse_rtcp(await rtcp_peer.receive())
    assert isinstance(our_sr, SenderReport)
    held = int(0.25 * 65536)
    block = ReportBlock(transport.stream.ssrc, 0, 0, 0, 0, compact_ntp(our_sr.ntp_timestamp), held)
    harness.clock.value = sent_at + 0.25 + 0.080  # the reply arrives after 80 ms of network
    rtcp_peer.send(build_receiver_report(0x1234, [block]), (HOST, transport.local_port + 1))
    await until(lambda: transport.rtcp_packets_received == 1)
    assert transport.stats()["rtt_ms"] == pytest.approx(80, abs=0.1)


async def test_an_sr_from_the_peer_fills_lsr_and_dlsr_of_our_next_report(harness: Harness) -> None:
    transport, recorder = await harness.transport()
    rtp_peer, rtcp_peer = await harness.peer_pair()
    transport.set_remote(rtp_peer.address, None, rtcp_mux=False)
    await activate(transport, recorder, rtp_peer)
    peer_ntp = ntp_timestamp(1_700_000_000.5)
    rtcp_peer.send(
        build_sender_report(0x1234, peer_ntp, 0, 1, 160), (HOST, transport.local_port + 1)
    )
    await until(lambda: transport.rtcp_packets_received == 1)
    transport.tick(harness.clock.value + 5)
    report = parse_rtcp(await rtcp_peer.receive())[0]
    assert isinstance(report, SenderReport)
    assert report.reports[0].last_sr == compact_ntp(peer_ntp)
    assert report.reports[0].delay_since_last_sr == 5 * 65536


async def test_bye_calls_back_and_close_sends_our_bye(harness: Harness) -> None:
    transport, recorder = await harness.transport()
    rtp_peer, rtcp_peer = await harness.peer_pair()
    transport.set_remote(rtp_peer.address, None, rtcp_mux=False)
    await activate(transport, recorder, rtp_peer)
    compound = build_receiver_report(0x1234) + build_goodbye([0x1234, 0x99], "hangup")
    rtcp_peer.send(compound, (HOST, transport.local_port + 1))
    await until(lambda: bool(recorder.byes))
    assert recorder.byes == [([0x1234, 0x99], "hangup")]

    transport.close("done")
    await transport.wait_closed()
    packets = parse_rtcp(await rtcp_peer.receive())
    assert isinstance(packets[0], SenderReport)
    assert packets[-1] == Goodbye((transport.stream.ssrc,), "done")
    assert transport.send(b"late", 0, 0) is False


async def test_no_bye_on_close_when_the_peer_never_sent(harness: Harness) -> None:
    transport, _ = await harness.transport()
    rtp_peer, _ = await harness.peer_pair()
    transport.set_remote(rtp_peer.address, None, rtcp_mux=False)
    assert transport.stream.send_bye(harness.clock.value) is False
    transport.close()
    await transport.wait_closed()
    assert transport.rtcp_packets_sent == 0


# ---------------------------------------------------------------------------- bad input


async def test_malformed_datagrams_are_counted_and_dropped(harness: Harness) -> None:
    transport, recorder = await harness.transport()
    rtp_port, rtcp_port = (HOST, transport.local_port), (HOST, transport.local_port + 1)
    garbage_rtp = [
        b"",
        b"\x80",
        b"\x80\x00" + bytes(9),  # 11 bytes
        b"\x40" + bytes(15),  # version 1
        b"\xa0\x00" + bytes(10) + b"\x00\x00\x00\x09",  # padding count beyond the payload
        b"\x81\x00" + bytes(10),  # CSRC list missing
    ]
    garbage_rtcp = [
        b"",
        b"\x80\xc8",
        b"\x80\xc9\x00\x05" + bytes(4),
        b"\x40\xc9\x00\x01" + bytes(4),
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:  # asyncio drops b"" sends
        for datagram in garbage_rtp:
            peer.sendto(datagram, rtp_port)
        for datagram in garbage_rtcp:
            peer.sendto(datagram, rtcp_port)
        peer.sendto(b"\x80\xc9\x00\x07" + bytes(4), rtp_port)  # muxed RTCP, truncated
        peer.sendto(rtp(42), rtp_port)
    assert (await recorder.next()).sequence == 42  # still working, and nothing else surfaced
    await until(lambda: transport.malformed_rtcp_packets == len(garbage_rtcp) + 1)
    assert transport.malformed_packets == len(garbage_rtp)
    assert len(recorder.packets) == 1 and recorder.byes == []
    assert transport.stats()["inbound"]["packets"] == 1


async def test_a_failing_on_packet_is_counted_and_does_not_stop_the_transport(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def explode(packet: RtpPacket, arrival: float) -> None:
        calls.append(packet.sequence)
        raise RuntimeError("engine bug")

    transport = await RtpTransport.open(
        harness.allocator, HOST, on_packet=explode, on_rtcp_bye=lambda s, r: None
    )
    harness.transports.append(transport)
    peer = await harness.peer()
    for sequence in range(3):
        peer.send(rtp(sequence), (HOST, transport.local_port))
    await until(lambda: len(calls) == 3)
    assert transport.callback_errors == 3 and not transport.closed
    logged = [record for record in caplog.records if record.name.endswith("rtp_transport")]
    assert len(logged) == 1 and "on_packet" in logged[0].getMessage()


# ---------------------------------------------------------------------------- DTMF


async def test_dtmf_injection_on_the_wire(harness: Harness) -> None:
    transport, recorder = await harness.transport()
    peer = await harness.peer()
    transport.set_remote(peer.address, None, rtcp_mux=True)
    await activate(transport, recorder, peer)
    transport.send(b"\xff" * 160, 0, 48_000)
    audio = parse_rtp(await peer.receive())

    transport.start_dtmf("#", 100, 10, 101, 8000)
    assert transport.dtmf_busy
    with pytest.raises(EngineError, match="already in progress"):
        transport.start_dtmf("1", 100, 10, 101, 8000)
    start = harness.clock.value + 1  # RTCP is not due before + 5 s
    sent_per_tick = []
    for index in range(10):
        before = transport.sent_packets
        now = start + index * 0.020 + (0.004 if index % 2 else -0.004)  # tick jitter
        transport.tick(now)
        transport.tick(now)  # a second call in the same frame sends nothing more
        sent_per_tick.append(transport.sent_packets - before)
    assert sent_per_tick == [1] * 7 + [0] * 3
    assert not transport.dtmf_busy

    packets = [parse_rtp(await peer.receive()) for _ in range(7)]
    events = [parse_telephone_event(p.payload) for p in packets]
    assert {p.payload_type for p in packets} == {101}
    assert [p.marker for p in packets] == [True] + [False] * 6
    assert {p.timestamp for p in packets} == {48_000 + 160}  # one frame after our audio
    assert [p.sequence for p in packets] == [(audio.sequence + 1 + i) & 0xFFFF for i in range(7)]
    assert {e.event for e in events} == {11} and {e.volume for e in events} == {10}
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert transport.stats()["outbound"]["packets"] == 8

    transport.start_dtmf("1", 20, 10, 101, 8000)  # free again
    transport.cancel_dtmf()
    assert not transport.dtmf_busy


async def test_dtmf_after_a_stalled_clock_catches_up(harness: Harness) -> None:
    transport, recorder = await harness.transport()
    peer = await harness.peer()
    transport.set_remote(peer.address, None, rtcp_mux=True)
    await activate(transport, recorder, peer)
    transport.start_dtmf("7", 60, 5, 96, 8000)  # 3 packets + 2 end repeats
    transport.tick(10.0)
    transport.tick(10.06)  # two frames late: the three packets due by now go out together
    assert transport.sent_packets == 4
    transport.tick(10.08)
    assert transport.sent_packets == 5 and not transport.dtmf_busy
    packets = [parse_rtp(await peer.receive()) for _ in range(5)]
    assert len({p.timestamp for p in packets}) == 1  # random: no audio was sent before


# ---------------------------------------------------------------------------- stats


async def test_stats_loss_and_jitter_for_a_stream_with_drops(harness: Harness) -> None:
    transport, recorder = await harness.transport()
    peer = await harness.peer()
    transport.set_clock_rate(8000)
    assert transport.stats()["inbound"]["last_received_ms_ago"] == 0
    dropped = {5, 6, 20, 41, 42, 43, 77}
    offsets_ms = [0, 0, 3, -2, 5, 0, 1, -4, 2]  # arrival jitter around the 20 ms grid
    jitter = 0.0
    previous: tuple[float, int] | None = None
    start = harness.clock.value
    for sequence in range(65530, 65530 + 100):  # wraps 65535 -> 0 on the way
        index = sequence - 65530
        if index in dropped:
            continue
        arrival = start + index * 0.020 + offsets_ms[index % len(offsets_ms)] / 1000
        timestamp = 160 * index
        harness.clock.value = arrival
        peer.send(rtp(sequence, timestamp), (HOST, transport.local_port))
        await recorder.next()
        if previous is not None:  # RFC 3550 A.8 reference
            difference = (arrival - previous[0]) * 8000 - (timestamp - previous[1])
            jitter += (abs(difference) - jitter) / 16
        previous = (arrival, timestamp)
    harness.clock.value += 0.250
    inbound = transport.stats()["inbound"]
    assert inbound["packets"] == 100 - len(dropped)
    assert inbound["bytes"] == 160 * (100 - len(dropped))
    assert inbound["packets_lost"] == len(dropped)
    assert inbound["jitter_ms"] == pytest.approx(jitter / 8, abs=0.001)
    assert inbound["last_received_ms_ago"] == 250


async def test_telephone_events_do_not_count_in_jitter(harness: Harness) -> None:
    transport, recorder = await harness.transport()
    peer = await harness.peer()
    transport.set_clock_rate(8000, event_payload_type=101)
    for sequence in range(10):
        harness.clock.value += 0.020
        datagram = build_rtp(101, sequence, 5000, 0x77, b"\x01\x0a\x00\xa0")
        peer.send(datagram, (HOST, transport.local_port))
        await recorder.next()
    assert transport.stats()["inbound"]["jitter_ms"] == 0.0


# ---------------------------------------------------------------------------- uvloop


async def scenario() -> tuple[int, int]:
    """Open, learn, pass through, inject, report, close: the whole life of a transport."""
    harness = Harness()
    try:
        side_a, recorder_a = await harness.transport()
        side_b, recorder_b = await harness.transport()
        peer_a = await harness.peer()
        peer_b_rtp, peer_b_rtcp = await harness.peer_pair()
        side_b.set_remote(peer_b_rtp.address, None, rtcp_mux=False)
        await activate(side_b, recorder_b, peer_b_rtp)
        peer_a.send(rtp(1, 320, payload=b"hello"), (HOST, side_a.local_port))
        incoming = await recorder_a.next()
        assert side_b.send(incoming.payload, 0, incoming.timestamp, incoming.marker)
        assert bytes(parse_rtp(await peer_b_rtp.receive()).payload) == b"hello"
        side_b.start_dtmf("9", 20, 10, 101, 8000)
        for index in range(3):
            side_b.tick(50.0 + index * 0.02)
        side_b.tick(harness.clock.value + 5)
        received = [parse_rtp(await peer_b_rtp.receive()) for _ in range(3)]
        assert all(packet.payload_type == 101 for packet in received)
        assert isinstance(parse_rtcp(await peer_b_rtcp.receive())[0], SenderReport)
        ports = side_a.local_port, side_b.local_port
        side_b.close()
        await side_b.wait_closed()
        assert isinstance(parse_rtcp(await peer_b_rtcp.receive())[-1], Goodbye)
        return ports
    finally:
        await harness.close()


@pytest.mark.parametrize("runner", ["asyncio", "uvloop"])
def test_whole_life_under_both_event_loops(runner: str) -> None:
    run: Callable[[Awaitable[Any]], Any]
    run = uvloop.run if runner == "uvloop" else asyncio.run  # type: ignore[assignment]
    run(asyncio.sleep(0))  # the first uvloop run keeps two process-wide descriptors
    fds = open_fds()
    ports = run(scenario())
    assert all(port % 2 == 0 for port in ports)
    assert open_fds() == fds


# ---------------------------------------------------------------------------- fuzz


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(datagram=st.binary(max_size=80), muxed=st.booleans())
async def test_no_datagram_raises_into_the_event_loop(
    harness: Harness, datagram: bytes, muxed: bool
) -> None:
    """Whatever arrives, the receive handlers return normally (asyncio would close the socket)."""
    if not harness.transports:
        await harness.transport()
    transport = harness.transports[0]
    receive = transport._receive_rtp if muxed else transport._receive_rtcp
    receive(datagram, (HOST, 40000))
