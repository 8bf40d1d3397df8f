"""The sockets and RTP/RTCP mechanics of one plain RTP endpoint (rtpbridge §3.3, §3.6, §3.10).

`RtpTransport` owns an even/odd UDP port pair and does what every plain RTP endpoint needs below
routing: RTCP demux, RTP parse, symmetric-RTP learning (sending starts at once to the SDP's
address and follows the peer's source during the learning window), own SSRC and sequence
numbers, reception stats, RTCP SR/BYE/RTT, and RFC 4733 digit injection. The engine's
RtpEndpoint wraps it. SRTP is not implemented here.

Hot path: `datagram_received` is bound straight to `_receive_rtp`; a packet is parsed once into
views of the datagram and handed to `on_packet` synchronously; `forward` and `send` build one
buffer, rewrite its header in place and call `sendto` once. Periodic work (RTCP, digit packets)
runs from `tick(now)`, called by the engine's single 20 ms media clock with `now` on the same
monotonic clock as the `now` given to `open`. Times are seconds unless the name says otherwise.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from callbridge.engine.errors import endpoint_error
from callbridge.engine.ports import PortAllocator, PortPair
from callbridge.media import rtcp
from callbridge.media.rtp import (
    RTP_FIXED_HEADER,
    RTP_HEADER_SIZE,
    RtpPacket,
    is_rtcp,
    parse_rtp,
)
from callbridge.media.telephone_event import DtmfPacket, dtmf_packets

__all__ = [
    "DTMF_PTIME_S",
    "LEARNING_WINDOW_S",
    "RTCP_INTERVAL_S",
    "Address",
    "PacketHandler",
    "RtcpByeHandler",
    "RtpTransport",
]

LEARNING_WINDOW_S: Final = 5.0
"""Symmetric-RTP learning window after open (and after `reopen_learning_window`)."""
RTCP_INTERVAL_S: Final = 5.0
"""Interval between our RTCP reports."""
DTMF_PTIME_S: Final = 0.020
"""Spacing of injected telephone-event packets."""
DEFAULT_CLOCK_RATE: Final = 8000
"""RTP clock (Hz) assumed for jitter until `set_clock_rate` is called (PCMU)."""

_DTMF_SLACK_S: Final = DTMF_PTIME_S / 2
"""A digit packet due within this much after `now` goes out in this tick (tick jitter)."""
_pack_header: Final = RTP_FIXED_HEADER.pack
_unpack_header: Final = RTP_FIXED_HEADER.unpack_from
_PLAIN_FIRST_OCTET: Final = 0x80
"""Version 2, no padding, no extension, no CSRCs: the packets the fast path parses inline."""
_RTCP_FIRST_TYPE: Final = 192
_RTCP_LAST_TYPE: Final = 223
"""RTCP packet types as rtcp-mux demux sees them (RFC 5761 §4, as `is_rtcp`)."""

Address = tuple[Any, ...]
"""A socket address as asyncio reports it: (host, port) or (host, port, flowinfo, scope_id)."""
PacketHandler = Callable[[RtpPacket, float], None]
"""on_packet(packet, arrival_time): called synchronously for every valid inbound RTP packet."""
RtcpByeHandler = Callable[[list[int], str | None], None]
"""on_rtcp_bye(ssrcs, reason): called for every inbound RTCP BYE."""

logger = logging.getLogger(__name__)


class _SocketProtocol(asyncio.BaseProtocol):
    """Datagram protocol whose `datagram_received` is the transport's bound handler itself."""

    __slots__ = ("_error", "_lost", "datagram_received")

    def __init__(
        self,
        receive: Callable[[bytes, Address], None],
        error: Callable[[OSError], None],
        lost: Callable[[], None],
    ) -> None:
        self.datagram_received = receive
        self._error = error
        self._lost = lost

    def error_received(self, exc: OSError) -> None:
        self._error(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()


def _normalize(address: tuple[str, int] | None) -> Address | None:
    """Write an IP literal the way recvfrom reports it, so that SDP and packets compare equal."""
    if address is None or not address[1]:
        return None
    host, port = address
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        pass  # a host name: sendto resolves it
    return (host, port)


def _rtcp_address_for(address: Address, rtcp_mux: bool) -> Address:
    """The RTCP target that follows an RTP target: the same under rtcp-mux, else port + 1."""
    return address if rtcp_mux else (address[0], address[1] + 1, *address[2:])


class RtpTransport:
    """One plain RTP endpoint's port pair and RTP/RTCP state. Create it with `open`.

    Counters (plain attributes, read them): `received_packets`/`received_bytes` and
    `sent_packets`/`sent_bytes` (bytes = RTP payload, digits included); `malformed_packets`
    (RTP port datagrams that are neither RTP nor RTCP) and `malformed_rtcp_packets`, both
    dropped; `unexpected_source_packets` (RTP from another address after the learning window,
    still delivered); `rtcp_packets_received`/`rtcp_packets_sent`; `socket_errors` (e.g. ICMP
    port unreachable); `callback_errors` (on_packet/on_rtcp_bye raised: logged once, counted).
    """

    def __init__(
        self,
        pair: PortPair,
        on_packet: PacketHandler,
        on_rtcp_bye: RtcpByeHandler,
        now: Callable[[], float],
        learning_window_s: float,
        rtcp_interval_s: float,
        cname: str | None,
    ) -> None:
        """Use `open`; this only sets up state."""
        self._pair = pair
        self._on_packet = on_packet
        self._on_rtcp_bye = on_rtcp_bye
        self._now = now
        self._learning_window_s = learning_window_s
        self._rtcp_interval_s = rtcp_interval_s
        self.ssrc: Final = secrets.randbits(32)
        """Our SSRC on every packet we send."""
        self.cname: Final = cname or f"callbridge-{self.ssrc:08x}"
        self._sequence = secrets.randbits(16)
        opened_at = now()
        self._unix_offset = time.time() - opened_at
        """Added to `now` to stamp NTP times, so RTT needs no second clock."""
        self._learning_until = opened_at + learning_window_s
        self._next_report_at = opened_at + rtcp_interval_s
        self._rtp_transport: asyncio.DatagramTransport | None = None
        self._rtcp_transport: asyncio.DatagramTransport | None = None
        self._open_sockets = 0
        self._closed = False
        self._released: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._rtp_target: Address | None = None
        self._rtcp_target: Address | None = None
        self._rtcp_mux = False
        self._clock_rate = DEFAULT_CLOCK_RATE
        self._event_payload_type = -1
        self._remote_ssrc: int | None = None
        self._reception: rtcp.ReceptionStats | None = None
        self._lost_by_earlier_sources = 0
        self._last_received = 0.0
        self._last_timestamp: int | None = None
        self._round_trip_time: float | None = None
        self._dtmf_queue: list[DtmfPacket] = []
        self._dtmf_started_at: float | None = None
        self._dtmf_index = self._dtmf_payload_type = self._dtmf_timestamp = 0
        self.received_packets = self.received_bytes = self.sent_packets = self.sent_bytes = 0
        self.malformed_packets = self.malformed_rtcp_packets = self.unexpected_source_packets = 0
        self.rtcp_packets_received = self.rtcp_packets_sent = 0
        self.socket_errors = self.callback_errors = 0

    @classmethod
    async def open(
        cls,
        allocator: PortAllocator,
        media_ip: str,
        *,
        on_packet: PacketHandler,
        on_rtcp_bye: RtcpByeHandler,
        now: Callable[[], float] = time.monotonic,
        learning_window_s: float = LEARNING_WINDOW_S,
        rtcp_interval_s: float = RTCP_INTERVAL_S,
        cname: str | None = None,
    ) -> RtpTransport:
        """Take a port pair bound to `media_ip` and start receiving on both ports.

        Raises PortAllocationError (an EngineError) when no pair can be bound.
        """
        pair = allocator.allocate(media_ip)
        loop = asyncio.get_running_loop()
        transport = cls(
            pair, on_packet, on_rtcp_bye, now, learning_window_s, rtcp_interval_s, cname
        )
        try:
            transport._rtp_transport, _ = await loop.create_datagram_endpoint(
                transport._protocol_for(transport._receive_rtp), sock=pair.rtp_socket
            )
            transport._open_sockets += 1
            transport._rtcp_transport, _ = await loop.create_datagram_endpoint(
                transport._protocol_for(transport._receive_rtcp), sock=pair.rtcp_socket
            )
            transport._open_sockets += 1
        except BaseException:
            if transport._rtp_transport is None:
                pair.close()
            else:
                pair.rtcp_socket.close()
                transport.close()
            raise
        return transport

    def _protocol_for(
        self, receive: Callable[[bytes, Address], None]
    ) -> Callable[[], _SocketProtocol]:
        return lambda: _SocketProtocol(receive, self._socket_error, self._socket_lost)

    # ------------------------------------------------------------------ state and setup

    @property
    def local_port(self) -> int:
        """Our RTP port (even); RTCP is on `local_port + 1` unless rtcp-mux is used."""
        return self._pair.rtp_port

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def remote_ssrc(self) -> int | None:
        """The peer's SSRC from its latest RTP packet; None until it sent one."""
        return self._remote_ssrc

    @property
    def rtp_target(self) -> Address | None:
        """Where RTP goes: the SDP address, or the latest learned source."""
        return self._rtp_target

    @property
    def rtcp_target(self) -> Address | None:
        return self._rtcp_target

    @property
    def learning(self) -> bool:
        """True while the symmetric-RTP window is open (the target follows the peer's source)."""
        return self._now() < self._learning_until

    def set_remote(
        self, rtp_addr: tuple[str, int] | None, rtcp_addr: tuple[str, int] | None, rtcp_mux: bool
    ) -> None:
        """Targets from the negotiated SDP; an address with port 0 counts as none.

        Without an explicit RTCP address (a=rtcp) RTCP goes to the RTP port + 1.
        """
        rtp_target = _normalize(rtp_addr)
        rtcp_target = _normalize(rtcp_addr)
        self._rtcp_mux = rtcp_mux
        self._rtp_target = rtp_target
        if rtcp_mux or rtcp_target is None:
            rtcp_target = None if rtp_target is None else _rtcp_address_for(rtp_target, rtcp_mux)
        self._rtcp_target = rtcp_target

    def set_clock_rate(self, clock_rate: int, *, event_payload_type: int | None = None) -> None:
        """The inbound audio RTP clock (Hz) for jitter; packets of `event_payload_type`
        (telephone-event, one timestamp per digit) are left out of the jitter estimate."""
        if clock_rate <= 0:
            raise ValueError(f"clock rate must be positive: {clock_rate}")
        self._clock_rate = clock_rate
        self._event_payload_type = -1 if event_payload_type is None else event_payload_type
        if self._reception is not None:
            self._reception.clock_rate = clock_rate

    def reopen_learning_window(self) -> None:
        """Let the target follow the peer's source again for one window (e.g. after a re-offer)."""
        self._learning_until = self._now() + self._learning_window_s

    # ------------------------------------------------------------------ inbound

    def _receive_rtp(self, data: bytes, address: Address) -> None:
        """Hot path: every datagram on the even port.

        RTCP types (192..223) are demuxed whether or not rtcp-mux was negotiated: they cannot
        be valid RTP (RFC 5761 §4), and a peer may mux before the answer is applied. A plain
        header (no padding, extension or CSRCs: what phones send) is parsed inline, the rest
        by `parse_rtp`.
        """
        if (
            len(data) >= RTP_HEADER_SIZE
            and data[0] == _PLAIN_FIRST_OCTET
            and not _RTCP_FIRST_TYPE <= data[1] <= _RTCP_LAST_TYPE
        ):
            _, second, sequence, timestamp, ssrc = _unpack_header(data)
            packet = RtpPacket(
                second & 0x7F,
                second > 0x7F,
                sequence,
                timestamp,
                ssrc,
                memoryview(data)[RTP_HEADER_SIZE:],
            )
        elif is_rtcp(data):
            self._receive_rtcp(data, address)
            return
        else:
            try:
                packet = parse_rtp(data)
            except ValueError:
                self.malformed_packets += 1
                return
        arrival = self._now()
        if address != self._rtp_target:
            self._source_moved(address, arrival)
        if packet.ssrc != self._remote_ssrc:
            self._new_remote_source(packet.ssrc)
        reception = self._reception
        assert reception is not None
        reception.on_rtp(
            packet.sequence,
            packet.timestamp,
            arrival,
            update_jitter=packet.payload_type != self._event_payload_type,
        )
        self.received_packets += 1
        self.received_bytes += len(packet.payload)
        self._last_received = arrival
        try:
            self._on_packet(packet, arrival)
        except Exception:
            self._callback_failed("on_packet")

    def _source_moved(self, address: Address, arrival: float) -> None:
        """Symmetric RTP: follow a new source during the window, count it afterwards."""
        target = self._rtp_target
        if target is not None and address[0] == target[0] and address[1] == target[1]:
            self._rtp_target = address  # the same peer, as recvfrom spells it (IPv6 4-tuple)
        elif target is None or arrival < self._learning_until:
            self._rtp_target = address
            self._rtcp_target = _rtcp_address_for(address, self._rtcp_mux)
        else:
            self.unexpected_source_packets += 1

    def _new_remote_source(self, ssrc: int) -> None:
        """A new remote SSRC (first packet, or the peer restarted its stream): fresh stats."""
        if self._reception is not None:
            self._lost_by_earlier_sources += max(self._reception.cumulative_lost, 0)
        self._remote_ssrc = ssrc
        self._reception = rtcp.ReceptionStats(ssrc, self._clock_rate)

    def _receive_rtcp(self, data: bytes, address: Address) -> None:
        """Every datagram on the odd port, and RTCP demuxed from the even one."""
        try:
            packets = rtcp.parse_rtcp(data)
        except ValueError:
            self.malformed_rtcp_packets += 1
            return
        self.rtcp_packets_received += 1
        arrival = self._now()
        for packet in packets:
            if isinstance(packet, rtcp.SenderReport):
                if self._reception is not None and packet.ssrc == self._remote_ssrc:
                    self._reception.on_sender_report(packet, arrival)
                self._take_report_blocks(packet.reports, arrival)
            elif isinstance(packet, rtcp.ReceiverReport):
                self._take_report_blocks(packet.reports, arrival)
            elif isinstance(packet, rtcp.Goodbye):
                try:
                    self._on_rtcp_bye(list(packet.ssrcs), packet.reason)
                except Exception:
                    self._callback_failed("on_rtcp_bye")

    def _take_report_blocks(self, blocks: Sequence[rtcp.ReportBlock], arrival: float) -> None:
        """RTT from the block about our stream (RFC 3550 §6.4.1); kept only if 0..10 s."""
        for block in blocks:
            if block.ssrc == self.ssrc:
                rtt = rtcp.round_trip_time(block, arrival + self._unix_offset)
                if rtt is not None:
                    self._round_trip_time = rtt

    def _socket_error(self, error: OSError) -> None:
        self.socket_errors += 1

    def _callback_failed(self, name: str) -> None:
        self.callback_errors += 1
        if self.callback_errors == 1:
            logger.exception(
                "%s of RTP port %d raised; counting further errors", name, self.local_port
            )

    # ------------------------------------------------------------------ outbound

    def send(
        self,
        payload: bytes | bytearray | memoryview,
        payload_type: int,
        timestamp: int,
        marker: bool = False,
    ) -> bool:
        """Send one RTP packet with our SSRC and next sequence number.

        Goes to the SDP's address from the start (a receive-only peer or a recorder may never
        send); returns False, sending nothing, without a target or after close. `timestamp` is
        in RTP clock units and may be passed unwrapped.
        """
        target = self._rtp_target
        if target is None or self._closed:
            return False
        sequence = self._sequence
        self._sequence = (sequence + 1) & 0xFFFF
        second = (payload_type & 0x7F) | 0x80 if marker else payload_type & 0x7F
        header = _pack_header(0x80, second, sequence, timestamp & 0xFFFFFFFF, self.ssrc)
        self._rtp_transport.sendto(header + payload, target)  # type: ignore[union-attr]
        self.sent_packets += 1
        self.sent_bytes += len(payload)
        self._last_timestamp = timestamp
        return True

    def forward(self, packet: RtpPacket, payload_type: int) -> bool:
        """Passthrough: resend `packet` with our PT, SSRC and sequence; timestamp, marker and
        payload kept (CSRCs, extension and padding dropped). Same result as `send`."""
        target = self._rtp_target
        if target is None or self._closed:
            return False
        sequence = self._sequence
        self._sequence = (sequence + 1) & 0xFFFF
        timestamp = packet.timestamp
        payload = packet.payload
        second = (payload_type & 0x7F) | 0x80 if packet.marker else payload_type & 0x7F
        header = _pack_header(0x80, second, sequence, timestamp, self.ssrc)
        self._rtp_transport.sendto(header + payload, target)  # type: ignore[union-attr]
        self.sent_packets += 1
        self.sent_bytes += len(payload)
        self._last_timestamp = timestamp
        return True

    # ------------------------------------------------------------------ DTMF injection

    @property
    def dtmf_busy(self) -> bool:
        """True while an injected digit still has packets to send."""
        return self._dtmf_index < len(self._dtmf_queue)

    def start_dtmf(
        self, digit: str, duration_ms: int, volume: int, payload_type: int, clock_rate: int
    ) -> None:
        """Queue the RFC 4733 packets of one digit; `tick` sends them `DTMF_PTIME_S` apart.

        The event timestamp continues our audio timeline (one frame after the last packet we
        sent) so the peer can place it; with no audio sent yet it is random, as in rtpbridge.
        Raises EngineError "DTMF injection already in progress" while busy, and
        TelephoneEventError (a ValueError) for a bad digit, duration or volume.
        """
        if self.dtmf_busy:
            raise endpoint_error("DTMF injection already in progress")
        packets = dtmf_packets(digit, duration_ms, volume, clock_rate, round(DTMF_PTIME_S * 1000))
        if self._last_timestamp is None:
            self._dtmf_timestamp = secrets.randbits(32)
        else:
            self._dtmf_timestamp = self._last_timestamp + round(clock_rate * DTMF_PTIME_S)
        self._dtmf_queue = packets
        self._dtmf_index = 0
        self._dtmf_started_at = None
        self._dtmf_payload_type = payload_type

    def cancel_dtmf(self) -> None:
        """Drop the rest of an injected digit (no end packet is sent)."""
        self._dtmf_queue = []
        self._dtmf_index = 0

    def _send_due_dtmf(self, now: float) -> None:
        """Packet i goes out at first tick + i x ptime; an event timestamp is not audio time,
        so `_last_timestamp` (SR and the next digit's timestamp) is kept."""
        if self._dtmf_started_at is None:
            self._dtmf_started_at = now
        queue = self._dtmf_queue
        audio_timestamp = self._last_timestamp
        while self._dtmf_index < len(queue):
            if self._dtmf_started_at + self._dtmf_index * DTMF_PTIME_S > now + _DTMF_SLACK_S:
                break
            packet = queue[self._dtmf_index]
            self._dtmf_index += 1
            timestamp = self._dtmf_timestamp + packet.timestamp_offset
            self.send(packet.payload, self._dtmf_payload_type, timestamp, packet.marker)
        self._last_timestamp = audio_timestamp
        if self._dtmf_index >= len(queue):
            self.cancel_dtmf()

    # ------------------------------------------------------------------ periodic work and RTCP

    def tick(self, now: float) -> None:
        """Called by the media clock every frame: due digit packets, then a due RTCP report."""
        if self._dtmf_queue:
            self._send_due_dtmf(now)
        if now >= self._next_report_at and self._send_report(now):
            self._next_report_at = now + self._rtcp_interval_s

    def _report_packet(self, now: float) -> bytes:
        """SR (sender info, one report block about the peer) + SDES CNAME."""
        reports = () if self._reception is None else (self._reception.report_block(now),)
        return rtcp.build_sender_report(
            self.ssrc,
            rtcp.ntp_timestamp(now + self._unix_offset),
            self._last_timestamp or 0,
            self.sent_packets,
            self.sent_bytes,
            reports,
            cname=self.cname,
        )

    def _send_rtcp(self, data: bytes) -> None:
        if self._rtcp_mux:
            self._rtp_transport.sendto(data, self._rtcp_target)  # type: ignore[union-attr]
        else:
            self._rtcp_transport.sendto(data, self._rtcp_target)  # type: ignore[union-attr]
        self.rtcp_packets_sent += 1

    @property
    def _in_contact(self) -> bool:
        """RTP has flowed either way, so RTCP has something to report."""
        return self._remote_ssrc is not None or self.sent_packets > 0

    def _send_report(self, now: float) -> bool:
        """Send an SR once RTP has flowed either way (to the RTCP address); True if sent."""
        if not self._in_contact or self._rtcp_target is None or self._closed:
            return False
        self._send_rtcp(self._report_packet(now))
        return True

    def send_bye(self, reason: str | None = None) -> bool:
        """Send SR + SDES + BYE once RTP has flowed either way; True if sent. `close` calls it."""
        if not self._in_contact or self._rtcp_target is None or self._closed:
            return False
        self._send_rtcp(self._report_packet(self._now()) + rtcp.build_goodbye([self.ssrc], reason))
        return True

    # ------------------------------------------------------------------ stats and close

    def stats(self) -> dict[str, Any]:
        """inbound/outbound/rtt_ms in the shape of rtpbridge §3.17 (bytes = payload bytes)."""
        reception = self._reception
        lost = self._lost_by_earlier_sources
        jitter_ms = 0.0
        if reception is not None:
            lost += max(reception.cumulative_lost, 0)
            jitter_ms = round(reception.jitter_ms, 3)
        ago = 0
        if self.received_packets:
            ago = max(round((self._now() - self._last_received) * 1000), 0)
        rtt = self._round_trip_time
        return {
            "inbound": {
                "packets": self.received_packets,
                "bytes": self.received_bytes,
                "packets_lost": lost,
                "jitter_ms": jitter_ms,
                "last_received_ms_ago": ago,
            },
            "outbound": {"packets": self.sent_packets, "bytes": self.sent_bytes},
            "rtt_ms": None if rtt is None else round(rtt * 1000, 3),
        }

    def close(self, reason: str | None = None) -> None:
        """Send BYE if the peer is known, close both sockets; idempotent.

        The ports go back to the allocator once the loop has really closed the sockets (one
        loop iteration later); await `wait_closed` to be sure.
        """
        if self._closed:
            return
        self.send_bye(reason)
        self._closed = True
        self.cancel_dtmf()
        for transport in (self._rtp_transport, self._rtcp_transport):
            if transport is not None:
                transport.close()

    async def wait_closed(self) -> None:
        """Wait until the sockets are closed and the port pair is released."""
        await asyncio.shield(self._released)

    def _socket_lost(self) -> None:
        self._open_sockets -= 1
        if self._open_sockets == 0:
            asyncio.get_running_loop().call_soon(self._release)

    def _release(self) -> None:
        self._pair.release()
        if not self._released.done():
            self._released.set_result(None)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"target={self._rtp_target}"
        return f"RtpTransport(port={self.local_port}, ssrc={self.ssrc:08x}, {state})"
