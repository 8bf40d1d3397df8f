"""One plain RTP stream without I/O: everything between an RTP port pair and the engine.

`RtpStream` takes datagrams in (bytes, source address, arrival time) and returns the parsed RTP
packet; RTCP it takes in as well (demuxed from the RTP port or from the RTCP port) and keeps
the figures it carries, queueing BYEs for `take_goodbyes`. Packets go out through two sinks,
`transmit_rtp(datagram, address)` and `transmit_rtcp(datagram, address)`, which the owner binds
to its sockets' `sendto` (a security layer such as SRTP would wrap them). `tick(now)` sends due
digit packets and RTCP reports.

It holds symmetric-RTP latching (sending starts at once to the SDP's address; the target
follows the peer's source during a learning window, later sources are only counted), the send
guard, our SSRC and sequence numbers, reception stats, RTCP SR/BYE and the round-trip time,
RFC 4733 digit pacing and the counters. It reads no clock: every time is passed in, in seconds
on one monotonic clock; NTP timestamps are that
clock plus `unix_offset`.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable, Sequence
from typing import Any, Final

from callbridge.media import rtcp
from callbridge.media.errors import MediaError
from callbridge.media.reception import ReceptionState, ReceptionStats
from callbridge.media.rtp import (
    RTP_FIXED_HEADER,
    RTP_MARKER,
    RTP_PLAIN_FIRST_OCTET,
    RtpPacket,
    parse_rtp_datagram,
)
from callbridge.media.telephone_event import DtmfPacket, dtmf_packets

__all__ = [
    "DEFAULT_CLOCK_RATE",
    "DTMF_PTIME_S",
    "LEARNING_WINDOW_S",
    "RTCP_INTERVAL_S",
    "Address",
    "DtmfBusyError",
    "ReceiveState",
    "RtpStream",
    "SendState",
    "Transmit",
]

LEARNING_WINDOW_S: Final = 5.0
"""Symmetric-RTP learning window after the start (and after `reopen_learning_window`)."""
RTCP_INTERVAL_S: Final = 5.0
"""Interval between our RTCP reports."""
DTMF_PTIME_S: Final = 0.020
"""Spacing of injected telephone-event packets."""
DEFAULT_CLOCK_RATE: Final = 8000
"""RTP clock (Hz) assumed for jitter until `set_clock_rate` is called (PCMU)."""

_pack_header: Final = RTP_FIXED_HEADER.pack
_DTMF_SLACK_S: Final = DTMF_PTIME_S / 2
"""A digit packet due within this much after `now` goes out in this tick (tick jitter)."""

Address = tuple[Any, ...]
"""A socket address as asyncio reports it: (host, port) or (host, port, flowinfo, scope_id)."""
Transmit = Callable[[bytes, Address], None]
"""A sink for one outgoing datagram and its target address."""
SendState = tuple[Address, int, int, int, int, int | None]
"""(destination, ssrc, next sequence, sent_packets, sent_bytes, last_timestamp)."""
ReceiveState = tuple[Address, int, int, ReceptionState, int, int, float]
"""(source, remote_ssrc, clock_rate, reception, received_packets, received_bytes,
last_received)."""


class DtmfBusyError(MediaError):
    """A digit was started while the previous one still has packets to send."""


def _not_bound(datagram: bytes, address: Address) -> None:
    """The sinks until the owner binds them: nothing can go out before there is a socket."""


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


class RtpStream:
    """The RTP/RTCP state of one plain RTP endpoint.

    Counters (plain attributes, read them): `received_packets`/`received_bytes` and
    `sent_packets`/`sent_bytes` (bytes = RTP payload, digits included); `malformed_packets`
    (RTP port datagrams that are neither RTP nor RTCP) and `malformed_rtcp_packets`, both
    dropped; `unexpected_source_packets` (RTP from another address after the learning window,
    still delivered); `rtcp_packets_received`/`rtcp_packets_sent`.
    """

    def __init__(
        self,
        now: float,
        *,
        unix_offset: float,
        learning_window_s: float = LEARNING_WINDOW_S,
        rtcp_interval_s: float = RTCP_INTERVAL_S,
        cname: str | None = None,
        transmit_rtp: Transmit = _not_bound,
        transmit_rtcp: Transmit = _not_bound,
    ) -> None:
        """Start the stream at `now`; `unix_offset` is added to such times to stamp NTP times."""
        self.transmit_rtp = transmit_rtp
        """Where datagrams for the RTP port go (RTCP too, under rtcp-mux)."""
        self.transmit_rtcp = transmit_rtcp
        """Where RTCP goes without rtcp-mux."""
        self.ssrc: Final = secrets.randbits(32)
        """Our SSRC on every packet we send."""
        self.cname: Final = cname or f"callbridge-{self.ssrc:08x}"
        self._sequence = secrets.randbits(16)
        self._unix_offset = unix_offset
        self._learning_window_s = learning_window_s
        self._rtcp_interval_s = rtcp_interval_s
        self._learning_until = now + learning_window_s
        self._next_report_at = now + rtcp_interval_s
        self._closed = False
        self._rtp_target: Address | None = None
        self._rtcp_target: Address | None = None
        self._rtcp_mux = False
        self._rtp_destination: Address | None = None
        self._rtcp_destination: Address | None = None
        self._clock_rate = DEFAULT_CLOCK_RATE
        self._event_payload_type = -1
        self._remote_ssrc: int | None = None
        self._reception: ReceptionStats | None = None
        self._lost_by_earlier_sources = 0
        self._last_received = 0.0
        self._last_timestamp: int | None = None
        self._round_trip_time: float | None = None
        self._goodbyes: list[rtcp.Goodbye] = []
        self._dtmf_queue: list[DtmfPacket] = []
        self._dtmf_started_at: float | None = None
        self._dtmf_index = self._dtmf_payload_type = self._dtmf_timestamp = 0
        self.received_packets = self.received_bytes = self.sent_packets = self.sent_bytes = 0
        self.malformed_packets = self.malformed_rtcp_packets = self.unexpected_source_packets = 0
        self.rtcp_packets_received = self.rtcp_packets_sent = 0

    # ------------------------------------------------------------------ state and setup

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

    def learning(self, now: float) -> bool:
        """True while the symmetric-RTP window is open (the target follows the peer's source)."""
        return now < self._learning_until

    def set_remote(
        self, rtp_addr: tuple[str, int] | None, rtcp_addr: tuple[str, int] | None, rtcp_mux: bool
    ) -> None:
        """Targets from the negotiated SDP; an address with port 0 counts as none.

        Without an explicit RTCP address (a=rtcp) RTCP goes to the RTP port + 1.
        """
        rtp_target = _normalize(rtp_addr)
        rtcp_target = _normalize(rtcp_addr)
        self._rtcp_mux = rtcp_mux
        if rtcp_mux or rtcp_target is None:
            rtcp_target = None if rtp_target is None else _rtcp_address_for(rtp_target, rtcp_mux)
        self._set_targets(rtp_target, rtcp_target)

    def set_clock_rate(self, clock_rate: int, *, event_payload_type: int | None = None) -> None:
        """The inbound audio RTP clock (Hz) for jitter; packets of `event_payload_type`
        (telephone-event, one timestamp per digit) are left out of the jitter estimate."""
        if clock_rate <= 0:
            raise ValueError(f"clock rate must be positive: {clock_rate}")
        self._clock_rate = clock_rate
        self._event_payload_type = -1 if event_payload_type is None else event_payload_type
        if self._reception is not None:
            self._reception.clock_rate = clock_rate

    def reopen_learning_window(self, now: float) -> None:
        """Let the target follow the peer's source again for one window (e.g. after a re-offer)."""
        self._learning_until = now + self._learning_window_s

    def _set_targets(self, rtp_target: Address | None, rtcp_target: Address | None) -> None:
        self._rtp_target = rtp_target
        self._rtcp_target = rtcp_target
        self._apply_send_guard()

    def _apply_send_guard(self) -> None:
        """The send guard, the one place that decides whether anything may go out.

        RTP goes to the target from the start: the SDP's address until a packet of the peer
        moves it (a receive-only peer, a recorder or a gateway waiting for media never sends
        first). RTCP waits until RTP has flowed either way, so it has something to report.
        Nothing goes out after close. The destinations are the targets while sending is
        allowed, else None; `send` and the RTCP reports only read them.
        """
        open_ = not self._closed
        in_contact = self._remote_ssrc is not None or self.sent_packets > 0
        self._rtp_destination = self._rtp_target if open_ else None
        self._rtcp_destination = self._rtcp_target if open_ and in_contact else None

    # ------------------------------------------------------------------ inbound

    def receive_rtp(self, data: bytes, address: Address, arrival: float) -> RtpPacket | None:
        """Hot path: one datagram that arrived on the RTP port.

        Returns the RTP packet (its payload a view of `data`), or None for RTCP (taken in as by
        `receive_rtcp`) and for a malformed datagram (counted and dropped).
        """
        try:
            packet = parse_rtp_datagram(data)
        except ValueError:
            self.malformed_packets += 1
            return None
        if packet is None:
            self.receive_rtcp(data, arrival)
            return None
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
            packet.payload_type != self._event_payload_type,  # positional: cheaper per packet
        )
        self.received_packets += 1
        self.received_bytes += len(packet.payload)
        self._last_received = arrival
        return packet

    def _source_moved(self, address: Address, arrival: float) -> None:
        """Symmetric RTP: follow a new source during the window, count it afterwards."""
        target = self._rtp_target
        if target is not None and address[0] == target[0] and address[1] == target[1]:
            self._set_targets(address, self._rtcp_target)  # as recvfrom spells it (IPv6 4-tuple)
        elif target is None or arrival < self._learning_until:
            self._set_targets(address, _rtcp_address_for(address, self._rtcp_mux))
        else:
            self.unexpected_source_packets += 1

    def _new_remote_source(self, ssrc: int) -> None:
        """A new remote SSRC (first packet, or the peer restarted its stream): fresh stats."""
        if self._reception is not None:
            self._lost_by_earlier_sources += max(self._reception.cumulative_lost, 0)
        self._remote_ssrc = ssrc
        self._reception = ReceptionStats(ssrc, self._clock_rate)
        self._apply_send_guard()

    def receive_rtcp(self, data: bytes, arrival: float) -> None:
        """One RTCP compound packet: take the peer's SR and its report blocks about our stream,
        queue its BYEs for `take_goodbyes`; a malformed one is counted and dropped."""
        try:
            packets = rtcp.parse_rtcp(data)
        except ValueError:
            self.malformed_rtcp_packets += 1
            return
        self.rtcp_packets_received += 1
        for packet in packets:
            if isinstance(packet, rtcp.SenderReport):
                if self._reception is not None and packet.ssrc == self._remote_ssrc:
                    self._reception.on_sender_report(packet, arrival)
                self._take_report_blocks(packet.reports, arrival)
            elif isinstance(packet, rtcp.ReceiverReport):
                self._take_report_blocks(packet.reports, arrival)
            elif isinstance(packet, rtcp.Goodbye):
                self._goodbyes.append(packet)

    def _take_report_blocks(self, blocks: Sequence[rtcp.ReportBlock], arrival: float) -> None:
        """The RTT from the block about our stream; kept only if plausible (0..10 s)."""
        for block in blocks:
            if block.ssrc == self.ssrc:
                rtt = rtcp.round_trip_time(block, arrival + self._unix_offset)
                if rtt is not None:
                    self._round_trip_time = rtt

    def take_goodbyes(self) -> list[rtcp.Goodbye]:
        """The RTCP BYEs received since the last call, in order."""
        goodbyes = self._goodbyes
        if goodbyes:
            self._goodbyes = []
        return goodbyes

    # ------------------------------------------------------------------ outbound

    def send(
        self,
        payload: bytes | bytearray | memoryview,
        payload_type: int,
        timestamp: int,
        marker: bool = False,
    ) -> bool:
        """Send one RTP packet with our SSRC and next sequence number.

        Returns False, sending nothing, while the send guard holds (see `_apply_send_guard`).
        `timestamp` is in RTP clock units and may be passed unwrapped.
        """
        destination = self._rtp_destination
        if destination is None:
            return False
        sequence = self._sequence
        self._sequence = (sequence + 1) & 0xFFFF
        second = (payload_type & 0x7F) | RTP_MARKER if marker else payload_type & 0x7F
        header = _pack_header(
            RTP_PLAIN_FIRST_OCTET, second, sequence, timestamp & 0xFFFFFFFF, self.ssrc
        )
        self.transmit_rtp(header + payload, destination)
        self.sent_packets += 1
        if self.sent_packets == 1:
            self._apply_send_guard()  # RTP has flowed: RTCP may go out too
        self.sent_bytes += len(payload)
        self._last_timestamp = timestamp
        return True

    # ------------------------------------------------------------------ handing over

    def export_send_state(self) -> SendState | None:
        """What a forwarding plane needs to send RTP as this stream, or None when it must not:
        the send guard holds, nothing went out yet (the first packet opens RTCP), or a digit
        is being injected. Until `import_send_state`, only the plane may send."""
        destination = self._rtp_destination
        if destination is None or not self.sent_packets or self.dtmf_busy:
            return None
        return (
            destination,
            self.ssrc,
            self._sequence,
            self.sent_packets,
            self.sent_bytes,
            self._last_timestamp,
        )

    def import_send_state(
        self, sequence: int, sent_packets: int, sent_bytes: int, last_timestamp: int | None
    ) -> None:
        """Continue after the plane's packets: its next sequence number and counters."""
        self._sequence = sequence & 0xFFFF
        self.sent_packets = sent_packets
        self.sent_bytes = sent_bytes
        self._last_timestamp = last_timestamp

    def export_receive_state(self) -> ReceiveState | None:
        """What a forwarding plane needs to take RTP in as this stream: only packets from the
        latched source with the known SSRC (anything else must reach `receive_rtp`). None
        before a source is known and valid."""
        reception = self._reception
        source = self._rtp_target
        if reception is None or source is None or self._remote_ssrc is None:
            return None
        state = reception.export_state()
        if state is None:
            return None
        return (
            source,
            self._remote_ssrc,
            self._clock_rate,
            state,
            self.received_packets,
            self.received_bytes,
            self._last_received,
        )

    def import_receive_state(
        self, reception: ReceptionState, packets: int, received_bytes: int, last_received: float
    ) -> None:
        """Continue after the packets the plane took in."""
        assert self._reception is not None
        self._reception.import_state(reception)
        self.received_packets = packets
        self.received_bytes = received_bytes
        self._last_received = last_received

    def report_due(self, now: float) -> bool:
        """True when `tick(now)` would send an RTCP report or a digit packet."""
        return bool(self._dtmf_queue) or now >= self._next_report_at

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
        sent) so the peer can place it; with no audio sent yet it is random. Raises
        DtmfBusyError while busy, and TelephoneEventError (a ValueError) for a bad digit,
        duration or volume.
        """
        if self.dtmf_busy:
            raise DtmfBusyError("DTMF injection already in progress")
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
        """Called every media frame: due digit packets, then a due RTCP report."""
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

    def _send_rtcp(self, data: bytes, destination: Address) -> None:
        transmit = self.transmit_rtp if self._rtcp_mux else self.transmit_rtcp
        transmit(data, destination)
        self.rtcp_packets_sent += 1

    def _send_report(self, now: float) -> bool:
        """Send an SR unless the send guard holds or there is no RTCP address; True if sent."""
        destination = self._rtcp_destination
        if destination is None:
            return False
        self._send_rtcp(self._report_packet(now), destination)
        return True

    def send_bye(self, now: float, reason: str | None = None) -> bool:
        """Send SR + SDES + BYE unless the send guard holds; True if sent. `close` calls it."""
        destination = self._rtcp_destination
        if destination is None:
            return False
        self._send_rtcp(
            self._report_packet(now) + rtcp.build_goodbye([self.ssrc], reason), destination
        )
        return True

    def close(self, now: float, reason: str | None = None) -> None:
        """Send BYE if the peer is known, then send nothing more; idempotent."""
        if self._closed:
            return
        self.send_bye(now, reason)
        self._closed = True
        self._apply_send_guard()
        self.cancel_dtmf()

    # ------------------------------------------------------------------ stats

    def stats(self, now: float) -> dict[str, Any]:
        """`inbound` (packets, bytes, packets_lost over every remote SSRC so far, jitter_ms,
        last_received_ms_ago), `outbound` (packets, bytes) and `rtt_ms` (None until measured);
        bytes count RTP payload only."""
        reception = self._reception
        lost = self._lost_by_earlier_sources
        jitter_ms = 0.0
        if reception is not None:
            lost += max(reception.cumulative_lost, 0)
            jitter_ms = round(reception.jitter_ms, 3)
        ago = 0
        if self.received_packets:
            ago = max(round((now - self._last_received) * 1000), 0)
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

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"target={self._rtp_target}"
        return f"RtpStream(ssrc={self.ssrc:08x}, {state})"
