"""The byte-level duplex an RTVBP session runs over (one WebSocket, or an in-memory pair in tests).

A transport carries one ordered stream of text (control JSON) and binary (audio) messages in each
direction. It knows nothing about frames, catalogs or audio formats.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import NamedTuple, Protocol, runtime_checkable

from callbridge.rtvbp.errors import SessionClosedError

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_NO_STATUS = 1005
CLOSE_ABNORMAL = 1006
CLOSE_INTERNAL_ERROR = 1011

ORDERLY_CLOSE_CODES = frozenset({CLOSE_NORMAL, CLOSE_GOING_AWAY})
"""Close codes that mean an orderly end of the session; any other code is a failure."""
CLOSE_TIMEOUT_S = 5.0
"""How long a close waits for the peer's close frame (Go and TS SDKs: 5 s teardown)."""
MAX_CLOSE_REASON_BYTES = 123
"""RFC 6455: a close frame's payload is at most 125 bytes, two of them the code."""
_RESERVED_CLOSE_CODES = frozenset({1004, 1005, 1006, 1015})
"""Codes that only report a condition locally and must never be sent in a close frame."""


def check_close_code(code: int) -> None:
    """ValueError for a code no close frame may carry."""
    if code in _RESERVED_CLOSE_CODES or not 1000 <= code <= 4999:
        raise ValueError(f"close code {code} cannot be sent")


def close_reason_bytes(reason: str) -> bytes:
    """`reason` as UTF-8, cut at a character boundary to fit a close frame."""
    encoded = reason.encode("utf-8")
    if len(encoded) <= MAX_CLOSE_REASON_BYTES:
        return encoded
    return encoded[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore").encode("utf-8")


class MessageKind(enum.Enum):
    TEXT = "text"
    BINARY = "binary"
    CLOSE = "close"


class TransportMessage(NamedTuple):
    """One received message; a CLOSE carries the close code and reason (1006 when the link broke).

    A NamedTuple rather than a dataclass because one is built per 20 ms audio frame.
    """

    kind: MessageKind
    data: bytes = b""
    close_code: int = 0
    close_reason: str = ""


class CachedClose:
    """`closed` and `close_code` of a transport that reports one cached close message."""

    __slots__ = ()
    _close_message: TransportMessage | None

    @property
    def closed(self) -> bool:
        """True from the moment either side started the close (or the link broke)."""
        return self._close_message is not None

    @property
    def close_code(self) -> int | None:
        """The code the connection ended with: the peer's, ours if we closed first, or 1006."""
        return None if self._close_message is None else self._close_message.close_code


class TransportClosedError(SessionClosedError):
    """A send on a transport that is closed or closing."""


class Transport(Protocol):
    """Ordered duplex of text and binary messages.

    - Messages are delivered in the order the send calls were made, text and binary interleaved.
    - `receive()` returns a CLOSE message once the link is closed (by either side, or lost: code
      1006), and keeps returning it on every later call; it should not raise.
    - `close()` flushes queued outgoing messages, then performs the close handshake; it is
      idempotent. Sends after close raise `TransportClosedError` (or another exception).
    """

    async def send_text(self, data: bytes) -> None:
        """Send one text message; `data` is UTF-8 JSON."""
        ...

    async def send_binary(self, data: bytes) -> None:
        """Send one binary message (one audio frame)."""
        ...

    async def receive(self) -> TransportMessage:
        """Wait for the next message."""
        ...

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Flush, then close with `code` (WebSocket close codes)."""
        ...


BinaryReceiver = Callable[[bytes], None]
"""Takes one binary message as it arrives, on the transport's own callback; must not block."""


@runtime_checkable
class DirectAudioTransport(Transport, Protocol):
    """A transport whose audio needs no task per message: binary messages go straight from the
    socket's callback to a receiver, and a binary send writes at once without awaiting.

    - After `set_binary_receiver(receiver)`, a binary message that arrives while no earlier
      message waits to be read goes to `receiver` at once instead of to `receive()`; one that
      arrives behind an unread message queues and comes from `receive()`, so the order of text
      and binary stays the order of arrival. Once the link is closing nothing goes to
      `receiver`.
    - `send_binary_nowait` writes one binary message now, ordered with the other sends by call
      order, and returns True. While the peer reads slower than we send (where `send_binary`
      would wait for the socket to drain) it writes nothing and returns False, so what waits
      for the peer stays bounded. Raises `TransportClosedError` once the link is closing.
    """

    def set_binary_receiver(self, receiver: BinaryReceiver | None) -> None:
        """Deliver binary messages to `receiver` as they arrive (None: through `receive()`)."""
        ...

    def send_binary_nowait(self, data: bytes) -> bool:
        """Write one binary message now; False (nothing written) while the socket is full."""
        ...
