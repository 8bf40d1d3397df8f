"""The UDP shell of one plain RTP endpoint: its even/odd port pair around an `RtpStream`.

`RtpTransport` owns the sockets; the stream (callbridge.media.rtp_stream) holds everything else
that every plain RTP endpoint needs below routing: RTCP demux, RTP parse, symmetric-RTP learning
(sending starts at once to the SDP's address), own SSRC and sequence numbers, reception stats,
RTCP SR/BYE/RTT and RFC 4733 digit injection. The engine's RtpEndpoint wraps the transport.
`secure` puts an `SrtpSession` between the stream and the sockets: the stream's sinks then
protect before `sendto`, and the sockets' handlers unprotect before the stream sees a datagram
(what fails is dropped there, so it never moves the symmetric-RTP target).

Hot path: `datagram_received` is bound straight to `_receive_rtp`, which hands the datagram to
the stream and the packet it returns (views of the datagram) to `on_packet` synchronously;
`send` is the stream's own `send`, whose sink is the socket's `sendto`. Given a
`ForwardingPlane` (callbridge.engine.forwarding), the RTP socket is read by the plane instead:
what it does not forward natively reaches `_receive_rtp` the same way, and the transport takes
its rules back (`NativeLink`) before anything in Python reads or changes its state.
Periodic work (RTCP, digit packets) runs from `tick(now)`, called by the engine's single 20 ms
media clock with `now` on the same monotonic clock as the `now` given to `open`. Times are
seconds unless the name says otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Final

from callbridge.engine.errors import endpoint_error
from callbridge.engine.forwarding import ForwardingPlane, NativeLink
from callbridge.engine.ports import PortAllocator, PortPair
from callbridge.media.rtp import RtpPacket, is_rtcp
from callbridge.media.rtp_stream import (
    DTMF_PTIME_S,
    LEARNING_WINDOW_S,
    RTCP_INTERVAL_S,
    Address,
    DtmfBusyError,
    RtpStream,
    Transmit,
)
from callbridge.media.srtp import SrtpSession

__all__ = [
    "DTMF_PTIME_S",
    "LEARNING_WINDOW_S",
    "RTCP_INTERVAL_S",
    "Address",
    "PacketHandler",
    "RtcpByeHandler",
    "RtpTransport",
]

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


class _StreamCounter:
    """A counter of the transport's stream, readable on the transport under the same name."""

    def __set_name__(self, owner: type[RtpTransport], name: str) -> None:
        self._name = name

    def __get__(self, transport: RtpTransport, owner: type[RtpTransport] | None = None) -> int:
        count: int = getattr(transport.stream, self._name)
        return count


class RtpTransport:
    """One plain RTP endpoint's port pair around its `stream`. Create it with `open`.

    Counters (read them): those of `RtpStream` (`received_packets`/`received_bytes`,
    `sent_packets`/`sent_bytes`, `malformed_packets`, `malformed_rtcp_packets`,
    `unexpected_source_packets`, `rtcp_packets_received`/`rtcp_packets_sent`), and
    `socket_errors` (e.g. ICMP port unreachable) and `callback_errors` (on_packet/on_rtcp_bye
    raised: logged once, counted).
    """

    received_packets = _StreamCounter()
    received_bytes = _StreamCounter()
    sent_packets = _StreamCounter()
    sent_bytes = _StreamCounter()
    malformed_packets = _StreamCounter()
    malformed_rtcp_packets = _StreamCounter()
    unexpected_source_packets = _StreamCounter()
    rtcp_packets_received = _StreamCounter()
    rtcp_packets_sent = _StreamCounter()

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
        opened_at = now()
        self.stream: Final = RtpStream(
            opened_at,
            unix_offset=time.time() - opened_at,
            learning_window_s=learning_window_s,
            rtcp_interval_s=rtcp_interval_s,
            cname=cname,
        )
        """The RTP/RTCP state; its sinks are bound to the sockets by `open`."""
        self._receive = self.stream.receive_rtp
        self.send: Callable[[bytes | bytearray | memoryview, int, int, bool], bool] = (
            self.stream.send
        )
        """`RtpStream.send`: one RTP packet with our SSRC and next sequence number, or False."""
        self.tick: Callable[[float], None] = self.stream.tick
        """`RtpStream.tick`: due digit packets, then a due RTCP report."""
        self.native: NativeLink | None = None
        """Our socket in the native forwarding plane, when it reads the RTP port."""
        self._rtp_receiver: Callable[[bytes, Address], None] = self._receive_rtp
        self._sockets: list[asyncio.DatagramTransport] = []
        self._protocols: list[_SocketProtocol] = []
        self.srtp: SrtpSession | None = None
        """The SRTP contexts once `secure` was called."""
        self._open_sockets = 0
        self._released: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._socket_errors = self.callback_errors = 0
        self.rtcp_tap: Callable[[bytes, float], None] | None = None
        """Sees every inbound RTCP datagram (either port) while a recording captures it."""

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
        plane: ForwardingPlane | None = None,
    ) -> RtpTransport:
        """Take a port pair bound to `media_ip` and start receiving on both ports; with
        `plane`, the RTP port is read by the native forwarding plane (`now` must then be
        `time.monotonic`, the plane's clock).

        Raises PortAllocationError (an EngineError) when no pair can be bound.
        """
        pair = allocator.allocate(media_ip)
        loop = asyncio.get_running_loop()
        transport = cls(
            pair, on_packet, on_rtcp_bye, now, learning_window_s, rtcp_interval_s, cname
        )
        sockets = [
            (transport._receive_rtp, pair.rtp_socket),
            (transport._receive_rtcp, pair.rtcp_socket),
        ]
        if plane is not None:
            transport._take_native(plane)
            sockets = sockets[1:]
        try:
            for receive, udp_socket in sockets:
                socket_transport, protocol = await loop.create_datagram_endpoint(
                    transport._protocol_for(receive), sock=udp_socket
                )
                transport._sockets.append(socket_transport)
                transport._protocols.append(protocol)
                transport._open_sockets += 1
            if plane is None:
                transport.stream.transmit_rtp = transport._sockets[0].sendto
            transport.stream.transmit_rtcp = transport._sockets[-1].sendto
        except BaseException:
            if transport.native is not None:
                transport.native.close()
                transport.native = None
            if not transport._sockets:
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

    # ------------------------------------------------------------------ SRTP

    def secure(self, srtp: SrtpSession, on_drop: Callable[[], None]) -> None:
        """From now on protect what goes out and unprotect what comes in with `srtp`;
        `on_drop()` is called for every inbound datagram it drops. Called once."""
        if self.srtp is not None:
            raise ValueError("the transport is already secured")
        self.srtp = srtp
        now = self._now

        def unprotecting(
            unprotect: Callable[[bytes, float], bytes | None],
            receive: Callable[[bytes, Address], None],
        ) -> Callable[[bytes, Address], None]:
            def receive_protected(data: bytes, address: Address) -> None:
                """Hot path under SRTP: one libsrtp call, then the plain path."""
                plain = unprotect(data, now())
                if plain is None:
                    on_drop()
                else:
                    receive(plain, address)

            return receive_protected

        def protecting(protect: Callable[[bytes], bytes | None], transmit: Transmit) -> Transmit:
            def transmit_protected(datagram: bytes, address: Address) -> None:
                protected = protect(datagram)
                if protected is not None:
                    transmit(protected, address)

            return transmit_protected

        if self.native is not None:
            self.native.wanted = False
            self.native.release()
        rtp_receive = unprotecting(srtp.unprotect, self._receive_rtp)
        self._protocols[-1].datagram_received = unprotecting(
            srtp.unprotect_rtcp, self._receive_rtcp
        )
        if self.native is None:
            self._protocols[0].datagram_received = rtp_receive
        else:
            self._rtp_receiver = rtp_receive
        self.stream.transmit_rtp = protecting(srtp.protect, self.stream.transmit_rtp)
        self.stream.transmit_rtcp = protecting(srtp.protect_rtcp, self._sockets[-1].sendto)

    # ------------------------------------------------------------------ state and setup

    @property
    def local_port(self) -> int:
        """Our RTP port (even); RTCP is on `local_port + 1` unless rtcp-mux is used."""
        return self._pair.rtp_port

    @property
    def closed(self) -> bool:
        return self.stream.closed

    def set_remote(
        self, rtp_addr: tuple[str, int] | None, rtcp_addr: tuple[str, int] | None, rtcp_mux: bool
    ) -> None:
        """Targets from the negotiated SDP; see `RtpStream.set_remote`."""
        self.touch_native()
        self.stream.set_remote(rtp_addr, rtcp_addr, rtcp_mux)

    def set_clock_rate(self, clock_rate: int, *, event_payload_type: int | None = None) -> None:
        """The inbound audio RTP clock (Hz) for jitter; see `RtpStream.set_clock_rate`."""
        self.touch_native()
        self.stream.set_clock_rate(clock_rate, event_payload_type=event_payload_type)

    def reopen_learning_window(self) -> None:
        """Let the target follow the peer's source again for one window (e.g. after a re-offer)."""
        self.touch_native()
        self.stream.reopen_learning_window(self._now())

    # ------------------------------------------------------------------ inbound

    def _receive_rtp(self, data: bytes, address: Address) -> None:
        """Hot path: every datagram on the even port (RTCP is demuxed by the stream)."""
        arrival = self._now()
        packet = self._receive(data, address, arrival)
        if packet is None:
            if self.rtcp_tap is not None and is_rtcp(data):
                self.rtcp_tap(data, arrival)
            self._report_goodbyes()
            return
        try:
            self._on_packet(packet, arrival)
        except Exception:
            self._callback_failed("on_packet")

    def _receive_rtcp(self, data: bytes, address: Address) -> None:
        """Every datagram on the odd port."""
        arrival = self._now()
        self.stream.receive_rtcp(data, arrival)
        if self.rtcp_tap is not None:
            self.rtcp_tap(data, arrival)
        self._report_goodbyes()

    def _report_goodbyes(self) -> None:
        for goodbye in self.stream.take_goodbyes():
            try:
                self._on_rtcp_bye(list(goodbye.ssrcs), goodbye.reason)
            except Exception:
                self._callback_failed("on_rtcp_bye")

    def _socket_error(self, error: OSError) -> None:
        self._socket_errors += 1

    def _callback_failed(self, name: str) -> None:
        self.callback_errors += 1
        if self.callback_errors == 1:
            logger.exception(
                "%s of RTP port %d raised; counting further errors", name, self.local_port
            )

    # ------------------------------------------------------------------ DTMF injection

    @property
    def dtmf_busy(self) -> bool:
        """True while an injected digit still has packets to send."""
        return self.stream.dtmf_busy

    def start_dtmf(
        self, digit: str, duration_ms: int, volume: int, payload_type: int, clock_rate: int
    ) -> None:
        """Queue the RFC 4733 packets of one digit; `tick` sends them `DTMF_PTIME_S` apart.

        Raises EngineError "DTMF injection already in progress" while busy, and
        TelephoneEventError (a ValueError) for a bad digit, duration or volume.
        """
        self.touch_native()
        try:
            self.stream.start_dtmf(digit, duration_ms, volume, payload_type, clock_rate)
        except DtmfBusyError as error:
            raise endpoint_error(str(error)) from None

    def cancel_dtmf(self) -> None:
        """Drop the rest of an injected digit (no end packet is sent)."""
        self.stream.cancel_dtmf()

    # ------------------------------------------------------------------ native forwarding

    def _take_native(self, plane: ForwardingPlane) -> None:
        udp_socket = self._pair.rtp_socket
        self.native = NativeLink(plane, udp_socket.fileno(), self.stream)
        plane.add(self.native.descriptor, self._hand_up)
        self._raw_sendto = udp_socket.sendto
        self.stream.transmit_rtp = self._transmit_native
        self.send = self._send_native
        self.tick = self._tick_native

    def _transmit_native(self, datagram: bytes, address: Address) -> None:
        try:
            self._raw_sendto(datagram, address)
        except OSError:
            self._socket_errors += 1

    def _send_native(
        self,
        payload: bytes | bytearray | memoryview,
        payload_type: int,
        timestamp: int,
        marker: bool = False,
    ) -> bool:
        native = self.native
        if native is not None and native.sending:
            native.touch(receiving=False)
        return self.stream.send(payload, payload_type, timestamp, marker)

    def _tick_native(self, now: float) -> None:
        native = self.native
        if native is not None and native.armed and self.stream.report_due(now):
            native.touch()
        self.stream.tick(now)

    def _hand_up(self, data: bytes, address: Address) -> None:
        """What the plane did not forward, in arrival order: the ordinary path. The sender rule
        may stay (packets toward our peer keep flowing) unless the peer's address moved."""
        native = self.native
        assert native is not None
        native.touch(sending=False)
        target = self.stream.rtp_target
        self._rtp_receiver(data, address)
        if native.sending and self.stream.rtp_target != target:
            native.release(receiving=False)

    def touch_native(self) -> None:
        """Python is about to read or change our state: the plane gives its part back."""
        if self.native is not None:
            self.native.touch()

    @property
    def socket_errors(self) -> int:
        """Send and receive errors the sockets reported (e.g. ICMP port unreachable)."""
        native_errors = 0 if self.native is None else self.native.errors
        return self._socket_errors + native_errors

    # ------------------------------------------------------------------ stats and close

    def stats(self) -> dict[str, Any]:
        """`RtpStream.stats` now."""
        self.touch_native()
        return self.stream.stats(self._now())

    def close(self, reason: str | None = None) -> None:
        """Send BYE if the peer is known, close both sockets; idempotent.

        The ports go back to the allocator once the loop has really closed the sockets (one
        loop iteration later); await `wait_closed` to be sure.
        """
        if self.stream.closed:
            return
        if self.native is not None:
            self.native.close()
        self.stream.close(self._now(), reason)
        if self.native is not None:
            self._pair.rtp_socket.close()
        for udp_socket in self._sockets:
            udp_socket.close()

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
        return f"RtpTransport(port={self.local_port}, {self.stream!r})"
