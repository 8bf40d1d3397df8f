"""The ws.v1 binding on picows: the transport of a call on the fast listener.

picows parses frames in C and calls back per frame, with no task per message: about half
aiohttp's CPU per audio frame. `PicowsTransport` gives the runtime the same `Transport`
semantics as `websocket.WebSocketTransport`: ordered text and binary, one cached close, 1006 for
a lost link, 1009 for a message over the limit (fragmented messages are joined up to it), a ping
every `heartbeat_s` and 1006 when no pong came within half of it. The listener that makes these
is `picows_listener`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, cast

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType
from picows import WSTransport as _PicowsSocket

from callbridge.rtvbp.transport_base import (
    CLOSE_ABNORMAL,
    CLOSE_GOING_AWAY,
    CLOSE_NO_STATUS,
    CLOSE_NORMAL,
    CLOSE_TIMEOUT_S,
    BinaryReceiver,
    CachedClose,
    MessageKind,
    TransportClosedError,
    TransportMessage,
    check_close_code,
    close_reason_bytes,
)

__all__ = ["PICOWS_LOG", "PicowsTransport"]
INBOUND_HIGH_MESSAGES = 256
"""Unread messages at which the socket stops being read (the peer's sends then wait in TCP)."""
INBOUND_LOW_MESSAGES = 64


class _PicowsLog(logging.LoggerAdapter[logging.Logger]):
    """picows logs every connection at INFO and every peer's protocol error at ERROR, which
    would let anyone flood the log; the close codes report those. They become DEBUG; records
    with a traceback (a bug in a callback) keep their level."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if not kwargs.get("exc_info"):
            level = min(level, logging.DEBUG)
        super().log(level, msg, *args, **kwargs)


PICOWS_LOG = _PicowsLog(logging.getLogger("callbridge.rtvbp.picows"))
_LOST = TransportMessage(MessageKind.CLOSE, close_code=CLOSE_ABNORMAL)
_BINARY = WSMsgType.BINARY
"""Bound once: an enum member looked up per frame costs more than the rest of the check."""


def _wire_code(code: int) -> WSCloseCode:
    """picows types close codes as its enum but sends any integer (4000-4999 included)."""
    return cast(WSCloseCode, code)


class PicowsTransport(WSListener, CachedClose):
    """The runtime's `DirectAudioTransport` over one picows server connection.

    Sends write the frame at once (picows is synchronous), so concurrent senders are ordered by
    call order; the only wait is for the socket to drain when the peer reads too slowly. With a
    binary receiver set, audio goes from picows' frame callback to it with no task in between.
    """

    def __init__(self, max_message_bytes: int, heartbeat_s: float | None) -> None:
        self._socket: _PicowsSocket | None = None
        self._max_message_bytes = max_message_bytes
        self._heartbeat_s = heartbeat_s
        self._heartbeat: asyncio.TimerHandle | None = None
        self._pong_awaited = False
        self._received: deque[TransportMessage] = deque()
        self._binary_receiver: BinaryReceiver | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._fragments: list[bytes] = []
        self._fragments_size = 0
        self._fragment_kind = MessageKind.BINARY
        self._close_message: TransportMessage | None = None
        self._peer_close: TransportMessage | None = None
        self._sendable = False
        """False before the 101 and from the first close (either side) or failure on."""
        self._reading_paused = False
        self.disconnected = asyncio.get_running_loop().create_future()

    # -- picows callbacks ------------------------------------------------------------------

    def on_ws_connected(self, transport: _PicowsSocket) -> None:
        self._socket = transport
        self._sendable = True
        if self._heartbeat_s:
            self._heartbeat = asyncio.get_running_loop().call_later(
                self._heartbeat_s, self._send_ping
            )

    def on_ws_frame(self, transport: _PicowsSocket, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is _BINARY and frame.fin:
            receiver = self._binary_receiver
            if receiver is not None and self._sendable and not self._received:
                receiver(frame.get_payload_as_bytes())
            else:
                self._deliver(TransportMessage(MessageKind.BINARY, frame.get_payload_as_bytes()))
        elif kind is WSMsgType.TEXT and frame.fin:
            self._deliver(TransportMessage(MessageKind.TEXT, frame.get_payload_as_bytes()))
        elif kind is WSMsgType.PONG:
            self._pong_awaited = False
        elif kind is WSMsgType.CLOSE:
            self._on_close_frame(transport, frame)
        elif kind is WSMsgType.PING:
            return  # answered by picows
        else:
            self._on_fragment(transport, frame)

    def on_ws_disconnected(self, transport: _PicowsSocket) -> None:
        self._sendable = False
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._close_message is None:
            self._close_message = self._ended(transport)
        self._deliver(self._close_message)
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if not self.disconnected.done():
            self.disconnected.set_result(None)

    def pause_writing(self) -> None:
        if self._drained is None or self._drained.done():
            self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- receiving -------------------------------------------------------------------------

    def _deliver(self, message: TransportMessage) -> None:
        received = self._received
        received.append(message)
        if len(received) >= INBOUND_HIGH_MESSAGES and not self._reading_paused:
            self._pause_reading(True)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_fragment(self, transport: _PicowsSocket, frame: WSFrame) -> None:
        """A frame of a fragmented message: collected up to the message size limit."""
        kind = frame.msg_type
        if kind is not WSMsgType.CONTINUATION:
            if self._fragments:
                self._fail(transport, 1002, "new message inside a fragmented one")
                return
            self._fragment_kind = MessageKind.TEXT if kind is WSMsgType.TEXT else MessageKind.BINARY
        elif not self._fragments and not self._fragments_size:
            self._fail(transport, 1002, "continuation without a message")
            return
        self._fragments_size += frame.payload_size
        if self._fragments_size > self._max_message_bytes:
            self._fail(transport, 1009, "message too big")
            return
        self._fragments.append(frame.get_payload_as_bytes())
        if frame.fin:
            data = b"".join(self._fragments)
            self._fragments.clear()
            self._fragments_size = 0
            self._deliver(TransportMessage(self._fragment_kind, data))

    def _on_close_frame(self, transport: _PicowsSocket, frame: WSFrame) -> None:
        """The peer's close: answered at once when ours was sent, else when it is read (as
        aiohttp does), so what was sent to us before it can still be answered."""
        code = int(frame.get_close_code().value) if frame.payload_size >= 2 else CLOSE_NO_STATUS
        self._peer_close = TransportMessage(
            MessageKind.CLOSE, close_code=code, close_reason=frame.get_close_reason() or ""
        )
        if transport.is_close_frame_sent:
            transport.disconnect()
        else:
            self._deliver(self._peer_close)

    def _answer_close(self, code: int) -> None:
        self._sendable = False
        socket = self._socket
        if socket is not None and not socket.is_disconnected:
            if not socket.is_close_frame_sent:
                socket.send_close(_wire_code(CLOSE_NORMAL if code == CLOSE_NO_STATUS else code))
            socket.disconnect()

    def _fail(self, transport: _PicowsSocket, code: int, reason: str) -> None:
        """Our side fails the connection (1002, 1009): the code is reported like aiohttp's."""
        self._sendable = False
        if self._close_message is None:
            self._close_message = TransportMessage(
                MessageKind.CLOSE, close_code=code, close_reason=reason
            )
        transport.send_close(_wire_code(code), reason.encode())
        transport.disconnect()

    def _ended(self, transport: _PicowsSocket) -> TransportMessage:
        """How a connection ended that our own close() did not end: a failure picows sent
        (1002, 1009, ...), else the peer's close, else a lost link."""
        handshake = transport.close_handshake
        if handshake is not None and handshake.sent is not None:
            code = int(handshake.sent.code.value)
            if code not in (CLOSE_NORMAL, CLOSE_GOING_AWAY) and not handshake.recv_then_sent:
                return TransportMessage(MessageKind.CLOSE, close_code=code)
        return self._peer_close or _LOST

    def _send_ping(self) -> None:
        socket = self._socket
        if socket is None or socket.is_disconnected or self._heartbeat_s is None:
            return
        loop = asyncio.get_running_loop()
        if self._pong_awaited:
            self._sendable = False
            self._close_message = self._close_message or _LOST
            socket.disconnect(graceful=False)
            return
        self._pong_awaited = True
        socket.send_ping()
        self._heartbeat = loop.call_later(self._heartbeat_s / 2, self._check_pong)

    def _check_pong(self) -> None:
        if self._pong_awaited:
            self._send_ping()  # still awaited: the link is lost
        elif self._heartbeat_s is not None:
            self._heartbeat = asyncio.get_running_loop().call_later(
                self._heartbeat_s / 2, self._send_ping
            )

    def set_binary_receiver(self, receiver: BinaryReceiver | None) -> None:
        """Binary messages to `receiver` as they arrive, while nothing waits to be read."""
        self._binary_receiver = receiver

    async def receive(self) -> TransportMessage:
        """The next text or binary message, or the (cached) close; never raises for link loss."""
        while not self._received:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            await waiter
        received = self._received
        message = received[0]
        if message.kind is not MessageKind.CLOSE:
            received.popleft()
            if self._reading_paused and len(received) <= INBOUND_LOW_MESSAGES:
                self._pause_reading(False)
            return message
        if self._close_message is None:  # the peer's close, read only now
            self._close_message = message
            self._answer_close(message.close_code)
        return self._close_message

    def _pause_reading(self, paused: bool) -> None:
        socket = self._socket
        if socket is None or socket.is_disconnected:
            return
        self._reading_paused = paused
        if paused:
            socket.underlying_transport.pause_reading()
        else:
            socket.underlying_transport.resume_reading()

    # -- sending ---------------------------------------------------------------------------

    async def send_text(self, data: bytes) -> None:
        """Send one text message; `data` is UTF-8 JSON (sent as is)."""
        socket = self._socket
        if not self._sendable or socket is None:
            raise TransportClosedError("WebSocket is closed")
        socket.send(WSMsgType.TEXT, data)
        if self._drained is not None and not self._drained.done():
            await self._drained

    async def send_binary(self, data: bytes) -> None:
        """Send one binary message (one audio frame); no shared helper: no extra coroutine."""
        socket = self._socket
        if not self._sendable or socket is None:
            raise TransportClosedError("WebSocket is closed")
        socket.send(_BINARY, data)
        if self._drained is not None and not self._drained.done():
            await self._drained

    def send_binary_nowait(self, data: bytes) -> bool:
        """Write one binary message now; False, with nothing written, while the socket drains."""
        socket = self._socket
        if not self._sendable or socket is None:
            raise TransportClosedError("WebSocket is closed")
        drained = self._drained
        if drained is not None and not drained.done():
            return False
        socket.send(_BINARY, data)
        return True

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close after everything already sent; waits up to `CLOSE_TIMEOUT_S` for the peer."""
        check_close_code(code)
        socket = self._socket
        if self._close_message is None:
            self._close_message = TransportMessage(
                MessageKind.CLOSE, close_code=code, close_reason=reason
            )
            self._received.clear()  # like aiohttp: after our close, receive() reports it at once
            self._deliver(self._close_message)
            self._pause_reading(False)  # the peer's close frame must get through
            if self._sendable and socket is not None:
                socket.send_close(_wire_code(code), close_reason_bytes(reason))
            self._sendable = False
        if socket is None:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await asyncio.shield(self.disconnected)
        except TimeoutError:
            socket.disconnect(graceful=False)

    def abort(self) -> None:
        """Drop the connection without a close handshake (the peer sees 1006)."""
        if self._socket is not None:
            self._socket.disconnect(graceful=False)
