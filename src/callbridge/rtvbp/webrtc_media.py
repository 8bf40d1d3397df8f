"""The audio half of the webrtcws.v1 binding: one UDP socket carrying STUN, DTLS and SRTP.

Datagrams are told apart by their first byte (RFC 7983): 0-3 STUN, 20-63 DTLS, 128-191
SRTP/SRTCP. The answerer is ICE-lite (`IceLite` answers the offerer's checks); the offerer also
runs `IceChecks` toward the answer's candidates, because a lite answerer never checks. DTLS runs
only with the address ICE selected; once it has keyed SRTP, audio flows: PCMU payload type 0,
160 bytes per 20 ms on the wire, 320 bytes of L16 at 8 kHz at the SDK boundary (G.711 by table
lookup, no per-sample Python). RTCP from the peer is dropped unread.

Outgoing frames are paced: the session may hand over audio faster than real time (as over a
WebSocket, where the peer buffers it), so frames wait in a bounded queue and leave one per
20 ms from a loop timer. No task per frame and no logging on the per-frame path.
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final

from callbridge.media import stun
from callbridge.media.dtls import DtlsError, DtlsSession, local_certificate
from callbridge.media.g711 import ulaw_decode, ulaw_encode
from callbridge.media.ice_checks import IceChecks
from callbridge.media.ice_lite import IceLite
from callbridge.media.jitter import JitterBuffer, Release
from callbridge.media.pcm import FrameChunker
from callbridge.media.rtp import RtpError, parse_rtp
from callbridge.media.srtp import SrtpSession

__all__ = [
    "FRAME_BYTES",
    "MAX_QUEUED_FRAMES",
    "PAYLOAD_BYTES",
    "PEER_CLOSE_GRACE_S",
    "WebRtcMedia",
]

FRAME_BYTES: Final = 320
"""One 20 ms frame of L16 at 8 kHz mono: what the session sends and receives."""
PAYLOAD_BYTES: Final = 160
"""The same 20 ms as PCMU on the wire."""
PCMU_PAYLOAD_TYPE: Final = 0
FRAME_SECONDS: Final = 0.020
MAX_QUEUED_FRAMES: Final = 3000
"""Outgoing audio held for pacing (60 s); beyond it the oldest frames are dropped, counted."""
PEER_CLOSE_GRACE_S: Final = 5.0
"""After the peer's DTLS close_notify, how long it may keep the WebSocket open (the binding
closes the media first, then the WebSocket) before the media counts as failed."""
_HOUSEKEEPING_S: Final = 1.0
REORDER_PACKETS: Final = 2
"""Inbound packets held behind a missing one before it counts as lost."""
REORDER_MS: Final = 40.0
"""How long the oldest of them may wait for it."""
_RTP_HEADER: Final = struct.Struct("!BBHII")

Address = tuple[Any, ...]
AudioSink = Callable[[bytes], None]
FailureSink = Callable[[str], None]


def _ignore(_: object) -> None:
    """What audio and failures go to until an owner attaches."""


class WebRtcMedia(asyncio.DatagramProtocol):
    """One audio association; `configure` it with the peer's SDP values, then it connects.

    The owner sets `on_audio` and `on_failed`: `on_audio` gets each inbound 20 ms L16 frame
    (synchronously, on the event loop); `on_failed` is told once why the media stopped for good
    (DTLS failure, a fingerprint that does not match, no connection in time, lapsed consent, a
    peer that closed DTLS but left the WebSocket open for `PEER_CLOSE_GRACE_S`).
    `secured` resolves when SRTP is keyed; frames handed over before that wait for it.
    Counters: `frames_dropped` (outgoing: queue full, media closed), `packets_dropped`
    (inbound: before the keys, failed SRTP, not PCMU, malformed),
    `datagrams_ignored` (DTLS from an address ICE did not select, anything unknown); `reorder`
    is the inbound reorder buffer (its `reordered`, `late`, `duplicate`, `lost` counters).
    Inbound packets are put back in sequence order: in-order packets play at once, after a gap
    later ones wait up to `REORDER_PACKETS` packets or `REORDER_MS` for the missing one.
    """

    def __init__(self, *, connect_timeout_s: float, consent_timeout_s: float) -> None:
        now = time.monotonic()
        self.ice = IceLite(now, consent_timeout_s=consent_timeout_s)
        self.checks: IceChecks | None = None
        self.dtls: DtlsSession | None = None
        self.srtp: SrtpSession | None = None
        self.secured: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.on_audio: AudioSink = _ignore
        self.on_failed: FailureSink = _ignore
        self._connect_deadline = now + connect_timeout_s
        self._consent_timeout_s = consent_timeout_s
        self._socket: asyncio.DatagramTransport | None = None
        self._target: Address | None = None
        self._ssrc = int.from_bytes(os.urandom(4), "big")
        self._sequence = int.from_bytes(os.urandom(2), "big")
        self._timestamp = int.from_bytes(os.urandom(4), "big")
        self._queue: deque[bytes] = deque()
        self._pacer: asyncio.TimerHandle | None = None
        self._next_send_at = 0.0
        self._dtls_timer: asyncio.TimerHandle | None = None
        self._check_timer: asyncio.TimerHandle | None = None
        self._housekeeping: asyncio.TimerHandle | None = None
        self._inbound = FrameChunker(FRAME_BYTES)
        self.reorder: JitterBuffer[memoryview] = JitterBuffer(
            depth_packets=REORDER_PACKETS, max_delay_ms=REORDER_MS
        )
        self.failure: str | None = None
        self.closed = False
        self.peer_closed = False
        self._peer_closed_at = 0.0
        self.frames_sent = self.frames_dropped = 0
        self.packets_received = self.packets_dropped = self.datagrams_ignored = 0

    @classmethod
    async def open(
        cls,
        address: str,
        *,
        port_range: tuple[int, int] | None = None,
        connect_timeout_s: float = 10.0,
        consent_timeout_s: float = 30.0,
    ) -> WebRtcMedia:
        """Bind a UDP socket on `address`, on a free port of `port_range` (inclusive; None: any
        free port); OSError when that is impossible."""
        media = cls(connect_timeout_s=connect_timeout_s, consent_timeout_s=consent_timeout_s)
        loop = asyncio.get_running_loop()
        bound = _bind_in_range(address, port_range)
        transport, _ = await loop.create_datagram_endpoint(lambda: media, sock=bound)
        media._socket = transport
        return media

    @property
    def local_port(self) -> int:
        assert self._socket is not None
        return int(self._socket.get_extra_info("sockname")[1])

    @property
    def ssrc(self) -> int:
        return self._ssrc

    def configure(
        self,
        *,
        remote_ufrag: str,
        remote_password: str,
        remote_fingerprint: str,
        dtls_client: bool,
        candidates: Sequence[Address] = (),
    ) -> None:
        """Start connecting: answer the peer's checks, run ours toward `candidates` if any."""
        self.ice.set_remote(remote_ufrag)
        self.dtls = DtlsSession(local_certificate(), client=dtls_client)
        self.dtls.remote_fingerprint = remote_fingerprint
        if candidates:
            self.checks = IceChecks(
                self.ice.local, remote_ufrag, remote_password, candidates, time.monotonic()
            )
            self._run_checks()
        self._schedule_housekeeping()

    # ------------------------------------------------------------------ asyncio protocol

    def error_received(self, exc: Exception) -> None:
        """ICMP errors (a peer port that closed) are left to consent and the WebSocket."""

    def datagram_received(self, data: bytes, addr: Address) -> None:
        """Hot path: demux by the first byte."""
        if not data or self.closed:
            return
        first = data[0]
        if 127 < first < 192:
            self._receive_srtp(data)
        elif first < 4:
            self._receive_stun(data, addr)
        elif 19 < first < 64:
            self._receive_dtls(data, addr)
        else:
            self.datagrams_ignored += 1

    # ------------------------------------------------------------------ inbound

    def _receive_srtp(self, data: bytes) -> None:
        srtp = self.srtp
        if srtp is None or 191 < data[1] < 224:  # not keyed yet, or RTCP (not used)
            self.packets_dropped += srtp is None
            return
        plain = srtp.unprotect(data, time.monotonic())
        if plain is None:
            self.packets_dropped += 1
            return
        try:
            packet = parse_rtp(plain)
        except RtpError:
            self.packets_dropped += 1
            return
        if packet.payload_type != PCMU_PAYLOAD_TYPE or not packet.payload:
            self.packets_dropped += 1
            return
        self.packets_received += 1
        released = self.reorder.push(packet.sequence, packet.payload, time.monotonic(), packet.ssrc)
        self._play(released)

    def _play(self, released: Release[memoryview]) -> None:
        """Released packets in order; a lost one is skipped (the handler hears a gap)."""
        for _, payload in released:
            if payload is None:
                continue
            pcm = ulaw_decode(payload)
            if len(pcm) == FRAME_BYTES and not self._inbound.pending_bytes:
                self.on_audio(pcm)
                continue
            for frame in self._inbound.push(pcm):
                self.on_audio(frame)

    def _receive_stun(self, data: bytes, address: Address) -> None:
        try:
            message = stun.parse_stun(data)
        except stun.StunError:
            self.ice.checks_rejected += 1
            return
        now = time.monotonic()
        if message.message_type == stun.BINDING_REQUEST:
            reply = self.ice.receive(data, address, now)
            if reply is None:
                return
            self._sendto(reply.response, address)
            if self.checks is None and (reply.nominated or self._target is None):
                self._select(address)
        elif self.checks is not None and self.checks.receive(message, data, now):
            selected = self.checks.selected
            if selected is not None and self._target != selected:
                self._select(selected)

    def _select(self, address: Address) -> None:
        first = self._target is None
        self._target = address
        dtls = self.dtls
        if first and dtls is not None and dtls.client:
            self._send_dtls(dtls.start())

    def _receive_dtls(self, data: bytes, address: Address) -> None:
        dtls = self.dtls
        if dtls is None or address != self._target:
            self.datagrams_ignored += 1
            return
        try:
            flights = dtls.receive(data)
        except DtlsError as error:
            self._fail(str(error))
            return
        self._send_dtls(flights)
        if dtls.closed_by_peer and not self.peer_closed:
            self.peer_closed = True
            self._peer_closed_at = time.monotonic()
            self._queue.clear()
        if dtls.srtp is not None and self.srtp is None:
            self.srtp = dtls.srtp
            self._cancel(self._dtls_timer)
            if not self.secured.done():
                self.secured.set_result(None)
            if self._queue:  # audio handed over while the handshake ran
                self._resume_pacing()

    # ------------------------------------------------------------------ outbound

    def send_frame(self, frame: bytes) -> None:
        """Queue one 320-byte L16 frame; it leaves within its 20 ms slot, in order."""
        queue = self._queue
        if self.closed or self.peer_closed:
            self.frames_dropped += 1
            return
        if len(queue) >= MAX_QUEUED_FRAMES:
            queue.popleft()
            self.frames_dropped += 1
        queue.append(frame)
        if self._pacer is None and self.srtp is not None:
            self._resume_pacing()

    def _resume_pacing(self) -> None:
        """Send the first queued frame now; the ones after it follow every 20 ms."""
        now = time.monotonic()
        if self._next_send_at < now:  # the line was idle: the gap is silence
            skipped = int((now - self._next_send_at) / FRAME_SECONDS) if self.frames_sent else 0
            self._timestamp = (self._timestamp + skipped * PAYLOAD_BYTES) & 0xFFFFFFFF
            self._next_send_at = now
        self._send_next()

    def clear_queued(self) -> int:
        """Drop the frames that have not left yet (barge-in); returns how many."""
        dropped = len(self._queue)
        self._queue.clear()
        return dropped

    def _send_next(self) -> None:
        self._pacer = None
        queue = self._queue
        if not queue:
            return
        frame = queue.popleft()
        srtp = self.srtp
        target = self._target
        if srtp is None or target is None or self._socket is None:
            self.frames_dropped += 1
        else:
            header = _RTP_HEADER.pack(
                0x80, PCMU_PAYLOAD_TYPE, self._sequence, self._timestamp, self._ssrc
            )
            protected = srtp.protect(header + ulaw_encode(frame))
            if protected is None:
                self.frames_dropped += 1
            else:
                self._socket.sendto(protected, target)
                self.frames_sent += 1
            self._sequence = (self._sequence + 1) & 0xFFFF
        self._timestamp = (self._timestamp + PAYLOAD_BYTES) & 0xFFFFFFFF
        self._next_send_at += FRAME_SECONDS
        if queue:
            loop = asyncio.get_running_loop()
            self._pacer = loop.call_at(self._loop_time(loop, self._next_send_at), self._send_next)

    @staticmethod
    def _loop_time(loop: asyncio.AbstractEventLoop, monotonic_at: float) -> float:
        return loop.time() + (monotonic_at - time.monotonic())

    def _sendto(self, data: bytes, address: Address) -> None:
        if self._socket is not None and not self.closed:
            self._socket.sendto(data, address)

    def _send_dtls(self, flights: list[bytes]) -> None:
        target = self._target
        if target is not None:
            for flight in flights:
                self._sendto(flight, target)
        self._schedule_dtls_timer()

    # ------------------------------------------------------------------ timers

    def _schedule_dtls_timer(self) -> None:
        self._cancel(self._dtls_timer)
        self._dtls_timer = None
        dtls = self.dtls
        if dtls is None or self.closed or self.srtp is not None:
            return
        delay = dtls.timeout()
        if delay is not None:
            self._dtls_timer = asyncio.get_running_loop().call_later(delay, self._retransmit)

    def _retransmit(self) -> None:
        self._dtls_timer = None
        dtls = self.dtls
        if dtls is None or self._target is None or self.closed:
            return
        try:
            flights = dtls.handle_timeout()
        except DtlsError as error:
            self._fail(str(error))
            return
        self._send_dtls(flights)

    def _run_checks(self) -> None:
        checks = self.checks
        if checks is None or self.closed:
            return
        for datagram, address in checks.due(time.monotonic()):
            self._sendto(datagram, address)
        loop = asyncio.get_running_loop()
        self._check_timer = loop.call_at(self._loop_time(loop, checks.next_due()), self._run_checks)

    def _schedule_housekeeping(self) -> None:
        if not self.closed:
            loop = asyncio.get_running_loop()
            self._housekeeping = loop.call_later(_HOUSEKEEPING_S, self._housekeep)

    def _housekeep(self) -> None:
        now = time.monotonic()
        if self.reorder.held:
            self._play(self.reorder.tick(now))  # the end of a talk spurt behind a gap
        if self.srtp is None and now > self._connect_deadline:
            self._fail("WebRTC media did not connect in time (ICE or DTLS)")
            return
        checks = self.checks
        lapsed = (
            checks.silent_for(now) > self._consent_timeout_s
            if checks is not None
            else self.ice.consent_expired(now)
        )
        if self.peer_closed:
            if now - self._peer_closed_at > PEER_CLOSE_GRACE_S:
                self._fail("the peer closed the WebRTC media (DTLS) but not the WebSocket")
                return
        elif self.srtp is not None and lapsed:
            self._fail("WebRTC consent expired: the peer stopped answering ICE checks")
            return
        self._schedule_housekeeping()

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()

    # ------------------------------------------------------------------ end

    def _fail(self, reason: str) -> None:
        if self.failure is not None or self.closed:
            return
        self.failure = reason
        self.close()
        if not self.secured.done():
            self.secured.set_exception(ConnectionError(reason))
            self.secured.exception()  # retrieved: a failure nobody awaits is not an error
        self.on_failed(reason)

    def close(self) -> None:
        """Stop sending, tell the peer (DTLS close_notify), close the socket; idempotent."""
        if self.closed:
            return
        dtls = self.dtls
        if dtls is not None and self._target is not None and self.failure is None:
            for flight in dtls.close():
                self._sendto(flight, self._target)
        self.closed = True
        self._queue.clear()
        for timer in (self._pacer, self._dtls_timer, self._check_timer, self._housekeeping):
            self._cancel(timer)
        if not self.secured.done():
            self.secured.cancel()
        if self._socket is not None:
            self._socket.close()


def _bind_in_range(address: str, port_range: tuple[int, int] | None) -> socket.socket:
    """A non-blocking UDP socket bound on `address`: any free port, or the first free one of
    `port_range` from a random start (ports that other sockets hold are skipped)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    first, last = port_range or (0, 0)
    count = last - first + 1
    start = secrets.randbelow(count) if port_range else 0
    for step in range(count):
        port = first + (start + step) % count if port_range else 0
        candidate = socket.socket(family, socket.SOCK_DGRAM)
        try:
            candidate.bind((address, port))
        except OSError as error:
            candidate.close()
            if error.errno == errno.EADDRINUSE and port_range:
                continue
            raise
        candidate.setblocking(False)
        return candidate
    raise OSError(errno.EADDRINUSE, f"no free UDP port in {first}-{last}")
