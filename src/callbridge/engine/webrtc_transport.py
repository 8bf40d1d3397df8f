"""The UDP shell of one WebRTC endpoint: one socket carrying STUN, DTLS and SRTP (RFC 7983).

`WebRtcTransport` is an `RtpTransport` (same stream, counters, DTMF pacing and RTCP) on a
single socket with rtcp-mux. Each datagram is demuxed by its first byte: 0-3 STUN goes to the
ICE-lite agent (valid checks are answered, a nomination moves the media target), 20-63 DTLS to
the handshake, 128-191 SRTP/SRTCP is unprotected with one libsrtp call and then handled exactly
as plain RTP. Outgoing RTP and RTCP are protected with one libsrtp call in the stream's sink.
Nothing but checks goes out before the handshake has keyed SRTP.

The only timer is the DTLS retransmission timer while the handshake runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from callbridge.engine.ports import PortAllocator, PortPair
from callbridge.engine.rtp_transport import Address, PacketHandler, RtcpByeHandler, RtpTransport
from callbridge.media.dtls import DtlsError, DtlsSession, local_certificate
from callbridge.media.ice_lite import IceLite
from callbridge.media.rtp_stream import LEARNING_WINDOW_S, RTCP_INTERVAL_S

__all__ = ["WebRtcEvents", "WebRtcTransport"]

logger = logging.getLogger(__name__)


class WebRtcEvents:
    """What the transport tells its endpoint (the endpoint overrides these)."""

    def secured(self) -> None:
        """DTLS is done and SRTP keyed: media may flow."""

    def failed(self, reason: str) -> None:
        """The handshake failed or the peer's certificate is not the one it announced."""

    def peer_closed(self) -> None:
        """The peer sent a DTLS close_notify."""

    def srtp_dropped(self) -> None:
        """An inbound SRTP/SRTCP packet failed to unprotect (tampered, wrong key, replayed,
        malformed); `srtp` counted it by reason."""


class WebRtcTransport(RtpTransport):
    """One WebRTC endpoint's socket; `ice` answers checks, `dtls` exists once the role is set.

    Counters beyond `RtpTransport`'s: `unkeyed_packets` (SRTP/SRTCP before the handshake gave
    keys, dropped; what fails to unprotect later is counted by `srtp`), `dtls_ignored` (DTLS
    from an address that passed no check).
    """

    def __init__(
        self,
        pair: PortPair,
        on_packet: PacketHandler,
        on_rtcp_bye: RtcpByeHandler,
        events: WebRtcEvents,
        ice: IceLite,
        now: Callable[[], float],
    ) -> None:
        super().__init__(
            pair, on_packet, on_rtcp_bye, now, LEARNING_WINDOW_S, RTCP_INTERVAL_S, None
        )
        self.ice = ice
        self.dtls: DtlsSession | None = None
        self._events = events
        self._sendto: Callable[[bytes, Address], None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.unkeyed_packets = self.dtls_ignored = 0
        self.stream.set_remote(None, None, True)

    @classmethod
    async def open_single(
        cls,
        allocator: PortAllocator,
        media_ip: str,
        *,
        on_packet: PacketHandler,
        on_rtcp_bye: RtcpByeHandler,
        events: WebRtcEvents,
        ice: IceLite,
        now: Callable[[], float],
    ) -> WebRtcTransport:
        """Take a port (the odd port of its pair stays reserved but closed) and start receiving.

        Raises PortAllocationError (an EngineError) when no port can be bound.
        """
        pair = allocator.allocate(media_ip)
        pair.rtcp_socket.close()
        transport = cls(pair, on_packet, on_rtcp_bye, events, ice, now)
        loop = asyncio.get_running_loop()
        try:
            udp_socket, _ = await loop.create_datagram_endpoint(
                transport._protocol_for(transport._receive_datagram), sock=pair.rtp_socket
            )
        except BaseException:
            pair.rtp_socket.close()
            pair.release()
            raise
        transport._sendto = udp_socket.sendto
        transport.stream.transmit_rtp = transport._transmit
        transport._sockets.append(udp_socket)
        transport._open_sockets = 1
        return transport

    # ------------------------------------------------------------------ DTLS role

    def start_dtls(self, *, client: bool, remote_fingerprint: str | None) -> None:
        """Set our DTLS role; a client starts once ICE has a checked address."""
        self.dtls = DtlsSession(local_certificate(), client=client)
        self.dtls.remote_fingerprint = remote_fingerprint
        if client and self.ice.selected is not None:
            self._send_dtls(self.dtls.start(), self.ice.selected)

    def set_remote_fingerprint(self, fingerprint: str) -> None:
        """The fingerprint from an answer, which may come after the handshake ended."""
        dtls = self.dtls
        if dtls is None or dtls.srtp is not None:
            return
        dtls.remote_fingerprint = fingerprint
        self._guarded(dtls.verify)

    @property
    def secured(self) -> bool:
        return self.srtp is not None

    # ------------------------------------------------------------------ inbound

    def _receive_datagram(self, data: bytes, address: Address) -> None:
        """Hot path: every datagram on the socket, demuxed by its first byte."""
        if not data:
            return
        first = data[0]
        if 127 < first < 192:
            srtp = self.srtp
            if srtp is None:
                self.unkeyed_packets += 1
                return
            plain = srtp.unprotect(data, self._now())
            if plain is None:
                self._events.srtp_dropped()
                return
            self._receive_rtp(plain, address)
        elif first < 4:
            self._receive_stun(data, address)
        elif 19 < first < 64:
            self._receive_dtls(data, address)
        else:
            self.stream.malformed_packets += 1

    def _receive_stun(self, data: bytes, address: Address) -> None:
        ice = self.ice
        had_address = ice.selected is not None
        reply = ice.receive(data, address, self._now())
        if reply is None:
            return
        assert self._sendto is not None
        self._sendto(reply.response, address)
        if reply.nominated and self.stream.rtp_target != address:
            self.stream.set_remote((address[0], address[1]), None, True)
            self.reopen_learning_window()
        dtls = self.dtls
        if not had_address and dtls is not None and dtls.client:
            self._send_dtls(dtls.start(), address)

    def _receive_dtls(self, data: bytes, address: Address) -> None:
        dtls = self.dtls
        if dtls is None or self.ice.selected is None:
            self.dtls_ignored += 1
            return
        flights = self._guarded(lambda: dtls.receive(data))
        if flights:
            self._send_dtls(flights, address)
        if dtls.closed_by_peer:
            dtls.closed_by_peer = False
            self._events.peer_closed()
        self._check_secured()

    def _guarded(self, step: Callable[[], list[bytes] | None]) -> list[bytes] | None:
        """Run a DTLS step; a DtlsError fails the endpoint (once) instead of propagating."""
        try:
            result = step()
        except DtlsError as error:
            self._cancel_timer()
            self.dtls = None
            self._events.failed(str(error))
            return None
        self._check_secured()
        return result

    def _check_secured(self) -> None:
        dtls = self.dtls
        if dtls is None or dtls.srtp is None or self.srtp is not None:
            self._schedule_timer()
            return
        self._cancel_timer()
        self.srtp = dtls.srtp
        self._events.secured()

    # ------------------------------------------------------------------ outbound

    def _transmit(self, datagram: bytes, address: Address) -> None:
        """The stream's sink: one libsrtp call, then the socket."""
        srtp = self.srtp
        sendto = self._sendto
        if srtp is None or sendto is None:
            return
        protected = srtp.protect(datagram)
        if protected is not None:
            sendto(protected, address)

    def _send_dtls(self, flights: list[bytes], address: Address) -> None:
        sendto = self._sendto
        if sendto is None or self.stream.closed:
            return
        for flight in flights:
            sendto(flight, address)
        self._schedule_timer()

    # ------------------------------------------------------------------ DTLS retransmission

    def _schedule_timer(self) -> None:
        self._cancel_timer()
        dtls = self.dtls
        if dtls is None or self.stream.closed:
            return
        delay = dtls.timeout()
        if delay is not None:
            self._timer = asyncio.get_running_loop().call_later(delay, self._retransmit)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _retransmit(self) -> None:
        self._timer = None
        dtls = self.dtls
        target = self.ice.selected
        if dtls is None or target is None:
            return
        flights = self._guarded(dtls.handle_timeout)
        if flights:
            self._send_dtls(flights, target)
        else:
            self._schedule_timer()

    # ------------------------------------------------------------------ close

    def close(self, reason: str | None = None) -> None:
        """BYE (protected) and close_notify to the peer if it is known, then close the socket."""
        if self.stream.closed:
            return
        self._cancel_timer()
        dtls = self.dtls
        target = self.ice.selected
        self.stream.close(self._now(), reason)
        if dtls is not None and target is not None and self._sendto is not None:
            for flight in dtls.close():
                self._sendto(flight, target)
        for udp_socket in self._sockets:
            udp_socket.close()
