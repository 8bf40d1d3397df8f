"""An in-memory transport pair with WebSocket semantics, for tests and in-process bridging."""

from __future__ import annotations

import asyncio
from collections import deque

from callbridge.rtvbp.transport_base import (
    CLOSE_ABNORMAL,
    CLOSE_NORMAL,
    MessageKind,
    TransportClosedError,
    TransportMessage,
)


class _Inbox:
    """Unbounded FIFO of received messages that one reader awaits."""

    __slots__ = ("_messages", "_waiter")

    def __init__(self) -> None:
        self._messages: deque[TransportMessage] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put(self, message: TransportMessage) -> None:
        self._messages.append(message)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def clear(self) -> None:
        self._messages.clear()

    async def get(self) -> TransportMessage:
        while not self._messages:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._messages.popleft()


class _Link:
    """State shared by both ends: the first close wins and both ends see its code and reason."""

    __slots__ = ("close_message",)

    def __init__(self) -> None:
        self.close_message: TransportMessage | None = None


class MemoryTransport:
    """One end of an in-memory duplex; build both ends with `MemoryTransport.pair()`.

    Like a WebSocket: messages arrive in send order; a close by either end is delivered to both
    ends after the messages already in flight; `abort()` simulates an abrupt connection loss
    (in-flight messages are lost, both ends see close code 1006).
    """

    def __init__(self, link: _Link, inbox: _Inbox) -> None:
        self._link = link
        self._inbox = inbox
        self._peer: MemoryTransport | None = None

    @classmethod
    def pair(cls) -> tuple[MemoryTransport, MemoryTransport]:
        link = _Link()
        first = cls(link, _Inbox())
        second = cls(link, _Inbox())
        first._peer = second
        second._peer = first
        return first, second

    @property
    def closed(self) -> bool:
        return self._link.close_message is not None

    @property
    def close_code(self) -> int | None:
        """The code of the close that ended the link, whichever end sent it; None while open."""
        message = self._link.close_message
        return None if message is None else message.close_code

    @property
    def close_reason(self) -> str | None:
        message = self._link.close_message
        return None if message is None else message.close_reason

    async def send_text(self, data: bytes) -> None:
        self._deliver(TransportMessage(MessageKind.TEXT, bytes(data)))

    async def send_binary(self, data: bytes) -> None:
        self._deliver(TransportMessage(MessageKind.BINARY, bytes(data)))

    async def receive(self) -> TransportMessage:
        message = await self._inbox.get()
        if message.kind is MessageKind.CLOSE:
            self._inbox.put(message)
        return message

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        self._end(TransportMessage(MessageKind.CLOSE, close_code=code, close_reason=reason))

    def abort(self) -> None:
        """Break the link without a close handshake: pending messages are lost, code 1006."""
        message = TransportMessage(MessageKind.CLOSE, close_code=CLOSE_ABNORMAL)
        if self._link.close_message is None:
            self._inbox.clear()
            self._other()._inbox.clear()
        self._end(message)

    def _deliver(self, message: TransportMessage) -> None:
        if self._link.close_message is not None:
            raise TransportClosedError("memory transport is closed")
        self._other()._inbox.put(message)

    def _end(self, message: TransportMessage) -> None:
        if self._link.close_message is not None:
            return
        self._link.close_message = message
        self._other()._inbox.put(message)
        self._inbox.put(message)

    def _other(self) -> MemoryTransport:
        if self._peer is None:
            raise RuntimeError("MemoryTransport must be created with MemoryTransport.pair()")
        return self._peer
