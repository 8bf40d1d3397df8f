"""The runtime's `Transport` for webrtcws.v1: control on the WebSocket, audio over WebRTC.

Text messages go to and come from the WebSocket exactly as over ws.v1; binary messages (20 ms
L16 frames) go to and come from `WebRtcMedia`. One pump task reads the WebSocket into the same
inbound queue the media feeds, so `receive()` waits on one queue. A ``transport.*`` request
after the handshake is answered with an error here and never reaches the catalog.

Close order (both roles): stop the media and close the association (DTLS close_notify, socket),
then flush and close the WebSocket. When the media fails for good the WebSocket is closed with
1011 and the reason, and `receive()` reports that close.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Final

from callbridge.rtvbp.envelope import ErrorBody, Request, Response, decode_frame, encode_frame
from callbridge.rtvbp.errors import BAD_REQUEST
from callbridge.rtvbp.transport_base import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    MessageKind,
    Transport,
    TransportClosedError,
    TransportMessage,
)
from callbridge.rtvbp.webrtc_media import FRAME_BYTES, WebRtcMedia

__all__ = ["MAX_INBOUND_FRAMES", "TRANSPORT_METHOD_PREFIX", "WebRtcTransport"]

logger = logging.getLogger(__name__)

TRANSPORT_METHOD_PREFIX: Final = "transport."
MAX_INBOUND_FRAMES: Final = 250
"""Inbound audio frames held while the session reader is busy (5 s); then the newest drop."""
_TRANSPORT_MARKER: Final = b'"transport.'


class WebRtcTransport:
    """`Transport` over `control` (the upgraded WebSocket) and `media` (configured, connecting).

    `audio_frames_dropped`: inbound frames lost because the queue was full;
    `transport_requests_refused`: ``transport.*`` requests answered with an error.
    """

    def __init__(self, control: Transport, media: WebRtcMedia) -> None:
        self.control = control
        self.media = media
        self.audio_frames_dropped = self.transport_requests_refused = 0
        self._inbox: deque[TransportMessage] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._close_message: TransportMessage | None = None
        self._closing: asyncio.Task[None] | None = None
        self._pump = asyncio.create_task(self._pump_control(), name="rtvbp-webrtc-control")

    @classmethod
    def attach(cls, control: Transport, media: WebRtcMedia) -> WebRtcTransport:
        """Route `media`'s audio and failures into a new transport."""
        transport = cls(control, media)
        media.on_audio = transport._deliver_audio
        media.on_failed = transport._media_failed
        return transport

    # -- Transport -------------------------------------------------------------------------

    async def send_text(self, data: bytes) -> None:
        await self.control.send_text(data)

    async def send_binary(self, data: bytes) -> None:
        """Queue one 320-byte L16 frame for the paced PCMU sender."""
        if self._close_message is not None or self.media.closed:
            raise TransportClosedError("WebRTC transport is closed")
        if len(data) != FRAME_BYTES:
            raise ValueError(f"webrtcws.v1 carries {FRAME_BYTES}-byte frames, got {len(data)}")
        self.media.send_frame(data)

    async def receive(self) -> TransportMessage:
        inbox = self._inbox
        while not inbox:
            if self._close_message is not None:
                return self._close_message
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return inbox.popleft()

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Media first, then the WebSocket (flushed); idempotent."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close(code, reason))
        await asyncio.shield(self._closing)

    # -- internals -------------------------------------------------------------------------

    def clear_outbound(self) -> int:
        """Drop audio queued for pacing that has not left yet (barge-in); frames dropped."""
        return self.media.clear_queued()

    async def _close(self, code: int, reason: str) -> None:
        self.media.close()
        try:
            await self.control.close(code, reason)
        finally:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
            self._ended(TransportMessage(MessageKind.CLOSE, close_code=code, close_reason=reason))

    def _deliver_audio(self, frame: bytes) -> None:
        """Hot path: one inbound frame from the media, on the event loop."""
        inbox = self._inbox
        if len(inbox) >= MAX_INBOUND_FRAMES:
            self.audio_frames_dropped += 1
            return
        inbox.append(TransportMessage(MessageKind.BINARY, frame))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _media_failed(self, reason: str) -> None:
        logger.info("WebRTC media failed: %s", reason)
        if self._closing is None:
            self._closing = asyncio.ensure_future(
                self._close(CLOSE_INTERNAL_ERROR, f"WebRTC media failed: {reason}")
            )

    def _ended(self, message: TransportMessage) -> None:
        if self._close_message is None:
            self._close_message = message
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _pump_control(self) -> None:
        control = self.control
        while True:
            message = await control.receive()
            kind = message.kind
            if kind is MessageKind.CLOSE:
                self.media.close()
                self._ended(message)
                return
            if kind is MessageKind.TEXT and _TRANSPORT_MARKER in message.data:
                if await self._refused_transport_request(message.data):
                    continue
            self._inbox.append(message)
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    async def _refused_transport_request(self, data: bytes) -> bool:
        """Answer a ``transport.*`` request after the handshake with an error; True if it was."""
        try:
            frame = decode_frame(data)
        except Exception:
            return False  # the session counts and drops what does not decode
        if not isinstance(frame, Request) or not frame.method.startswith(TRANSPORT_METHOD_PREFIX):
            return False
        self.transport_requests_refused += 1
        error = ErrorBody(BAD_REQUEST, f"{frame.method} is only allowed before the session starts")
        try:
            await self.control.send_text(encode_frame(Response(frame.id, error=error)))
        except TransportClosedError:
            pass
        return True
