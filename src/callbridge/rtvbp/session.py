"""Asyncio runtime of one RTVBP session over a `Transport`, for either role.

The session state and every decision live in `protocol.RtvbpProtocol`; this layer adds the
tasks, futures, timeouts and transport I/O. A reader task resolves responses immediately and
feeds audio to the audio sink; requests and events go through one serial dispatcher task in
receive order. Because responses bypass the dispatcher, a handler may await a nested request
without deadlock; slow work defers its response so the dispatcher keeps moving.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any

from callbridge.rtvbp.audio_channel import AudioSink, SessionStats
from callbridge.rtvbp.catalog import Catalog, Role
from callbridge.rtvbp.envelope import Event, Request, Response
from callbridge.rtvbp.errors import (
    INTERNAL,
    RemoteError,
    RequestTimeoutError,
    SessionClosedError,
)
from callbridge.rtvbp.exchange import (
    NO_REPLY_MESSAGE,
    DeferredResponse,
    EventHandler,
    IncomingRequest,
    RequestHandler,
    now_ms,
    result_of,
)
from callbridge.rtvbp.protocol import (
    TERMINAL_CLOSE_REASON,
    CloseInfo,
    ResponseReceived,
    RtvbpProtocol,
    unique_ids,
)
from callbridge.rtvbp.transport_base import (
    CLOSE_ABNORMAL,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NO_STATUS,
    CLOSE_NORMAL,
    CLOSE_TIMEOUT_S,
    DirectAudioTransport,
    MessageKind,
    Transport,
    TransportMessage,
)

__all__ = [
    "NO_REPLY_MESSAGE",
    "TERMINAL_CLOSE_REASON",
    "AudioSink",
    "CloseInfo",
    "DeferredResponse",
    "EventHandler",
    "IncomingRequest",
    "RequestHandler",
    "RtvbpSession",
    "SessionStats",
    "Transport",
    "TransportMessage",
    "now_ms",
    "unique_ids",
]

logger = logging.getLogger(__name__)

AUDIO_BACKLOG_FRAMES = 50
"""Frames of `send_audio_nowait` that may wait for a transport without a synchronous send
(1 s of 20 ms frames); beyond, they are dropped and counted."""


class RtvbpSession:
    """One RTVBP session in `role`, speaking `catalog` over `transport`.

    Use `async with session:` (or `start()` then `close()`). Register handlers before starting.
    """

    def __init__(
        self,
        role: Role,
        catalog: Catalog,
        transport: Transport,
        *,
        request_timeout_s: float = 5.0,
        id_factory: Callable[[], str] | None = None,
    ) -> None:
        self.role = role
        self.catalog = catalog
        self.request_timeout_s = request_timeout_s
        self.protocol = RtvbpProtocol(role, catalog, id_factory=id_factory)
        self.stats = self.protocol.stats
        self._transport = transport
        self._waiters: dict[str, asyncio.Future[Response]] = {}
        self._inbox_ready = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._direct = transport if isinstance(transport, DirectAudioTransport) else None
        self._audio_backlog: deque[bytes] = deque()
        """Frames of `send_audio_nowait` waiting for `_audio_writer` (transports without
        `send_binary_nowait` only)."""
        self._audio_writer: asyncio.Task[None] | None = None
        self._audio_queued = asyncio.Event()
        self._audio_written = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Spawn the reader and dispatcher tasks."""
        if self._reader is not None:
            raise RuntimeError("session already started")
        if self.protocol.closed:
            raise SessionClosedError("session is closed")
        if self._direct is not None:
            self._direct.set_binary_receiver(self.protocol.audio.receive)
        self._reader = asyncio.create_task(self._read_loop(), name="rtvbp-reader")
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="rtvbp-dispatcher")

    async def __aenter__(self) -> RtvbpSession:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.close()
        else:
            await self.close(CLOSE_INTERNAL_ERROR, "internal error")

    @property
    def closed(self) -> bool:
        """True from the moment closing starts (no more sends)."""
        return self.protocol.closed

    @property
    def close_info(self) -> CloseInfo | None:
        return self.protocol.close_info

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Flush and close the transport, fail pending requests, stop the tasks; idempotent."""
        if not self._begin_close(code, reason, by_peer=False):
            await self.wait_closed()
            return
        try:
            await self._audio_backlog_sent(CLOSE_TIMEOUT_S)
            await self._transport.close(code, reason)
        except Exception as error:
            logger.debug("transport close failed: %r", error)
        finally:
            await self._stop_tasks()

    async def wait_closed(self) -> CloseInfo:
        """Wait until the session is closed (by either side or by transport loss)."""
        await self._closed.wait()
        current = asyncio.current_task()
        tasks = [
            task
            for task in (self._reader, self._dispatcher)
            if task is not None and task is not current and not task.done()
        ]
        if tasks:
            await asyncio.wait(tasks)
        info = self.protocol.close_info
        assert info is not None
        return info

    # -- handlers --------------------------------------------------------------------------

    def handle(self, method: str, handler: RequestHandler) -> None:
        """Answer requests for `method` with `handler` (replaces a previous one)."""
        self.protocol.handle(method, handler)

    def on_event(self, name: str, handler: EventHandler) -> None:
        """Deliver events `name` to `handler` (replaces a previous one); others are ignored."""
        self.protocol.on_event(name, handler)

    # -- outgoing control ------------------------------------------------------------------

    async def request(
        self,
        method: str,
        params: Any = None,
        *,
        timeout_s: float | None = None,
        terminal_ok: bool = False,
        on_result: Callable[[Any], None] | None = None,
    ) -> Any:
        """Call `method` on the peer and return its result decoded with the catalog's type.

        `params` is the catalog's params Struct (None sends `{}`); `timeout_s` defaults to
        `request_timeout_s`. Raises RemoteError for an error response, RequestTimeoutError,
        SessionClosedError, PayloadError for a result that does not decode. With `terminal_ok`,
        a terminal operation interrupted by an orderly close (1000/1001) returns None instead of
        raising: the peer may close before answering (a call.hangup crossed by session.terminate).
        `on_result` runs on the reader with the result of a successful response, before any
        later message is read (e.g. to open audio the moment session.initialize succeeds).
        """
        protocol = self.protocol
        spec = protocol.operation(method)
        if self._reader is None:
            raise RuntimeError("session not started")
        outgoing = protocol.send_request(method, params, on_result)
        request_id = outgoing.request_id
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = future
        limit = self.request_timeout_s if timeout_s is None else timeout_s
        try:
            await self._send_text(outgoing.data)
            async with asyncio.timeout(limit):
                response = await future
        except TimeoutError:
            raise RequestTimeoutError(f"{method} got no response within {limit} s") from None
        except SessionClosedError:
            if terminal_ok and protocol.interrupted_terminal_ok(method):
                return None
            raise
        finally:
            del self._waiters[request_id]
            protocol.forget(request_id)
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()
        return result_of(spec, response)

    async def notify(self, event: str, data: Any = None) -> None:
        """Emit `event` with `data` (the catalog's data Struct; None sends `{}`)."""
        await self._send_text(self.protocol.send_event(event, data))

    async def ping(
        self, *, rtt_ms: int | None = None, data: Any = None, timeout_s: float | None = None
    ) -> int:
        """Send a catalog `ping` and return the round-trip time in ms (pass it as the next rtt)."""
        spec = self.protocol.operation("ping")
        t0 = now_ms()
        await self.request(
            "ping", spec.params_type(t0=t0, rtt=rtt_ms, data=data), timeout_s=timeout_s
        )
        return now_ms() - t0

    # -- audio -----------------------------------------------------------------------------

    def open_audio(self, frame_bytes: int) -> None:
        """Allow binary audio both ways, in frames of `frame_bytes` (20 ms of L16 at 8 kHz: 320)."""
        self.protocol.open_audio(frame_bytes)

    @property
    def audio_frame_bytes(self) -> int:
        """Bytes per audio frame, 0 while audio is not open."""
        return self.protocol.audio.frame_bytes

    def on_audio(self, sink: AudioSink | None) -> None:
        """Deliver each inbound audio frame to `sink`, synchronously: on the transport's own
        callback when it is a `DirectAudioTransport` (picows), else on the reader task."""
        self.protocol.audio.sink = sink

    async def send_audio(self, frame: bytes) -> None:
        """Send one exact audio frame; partial or oversized frames are refused."""
        protocol = self.protocol
        protocol.check_audio_frame(frame)
        if self._audio_backlog:
            await self._audio_backlog_sent(None)  # after the frames sent without waiting
        try:
            await self._transport.send_binary(frame)
        except Exception as error:
            raise SessionClosedError(f"audio send failed: {error!r}") from error
        protocol.audio_frame_sent(frame)

    def send_audio_nowait(self, frame: bytes) -> bool:
        """Send one exact audio frame without waiting (e.g. from an audio sink), in order with
        `send_audio`. False when it was dropped because the peer reads slower than we send
        (counted in `stats.audio_frames_out_dropped`): real-time audio cannot wait.

        A `DirectAudioTransport` writes it at once; on others it waits for a writer task, at most
        `AUDIO_BACKLOG_FRAMES` of them.
        """
        protocol = self.protocol
        protocol.check_audio_frame(frame)
        direct = self._direct
        if direct is None:
            return self._queue_audio(frame)
        try:
            sent = direct.send_binary_nowait(frame)
        except Exception as error:
            raise SessionClosedError(f"audio send failed: {error!r}") from error
        if sent:
            protocol.audio_frame_sent(frame)
        else:
            protocol.stats.audio_frames_out_dropped += 1
        return sent

    # -- internals -------------------------------------------------------------------------

    async def _send_frame(self, frame: Response) -> None:
        await self._send_text(self.protocol.send_frame(frame))

    async def _send_text(self, data: bytes) -> None:
        try:
            await self._transport.send_text(data)
        except SessionClosedError:
            raise
        except Exception as error:
            raise SessionClosedError(f"send failed: {error!r}") from error

    def _begin_close(self, code: int, reason: str, *, by_peer: bool) -> bool:
        """Record the close and fail pending requests; False when already closing."""
        failed = self.protocol.close(code, reason, by_peer=by_peer)
        if failed is None:
            return False
        logger.debug("session closing: code=%s by_peer=%s", code, by_peer)
        for request_id in failed:
            future = self._waiters.get(request_id)
            if future is not None and not future.done():
                future.set_exception(
                    SessionClosedError(
                        f"session closed ({code}) before {request_id!r} was answered"
                    )
                )
        return True

    def _queue_audio(self, frame: bytes) -> bool:
        backlog = self._audio_backlog
        if len(backlog) >= AUDIO_BACKLOG_FRAMES:
            self.stats.audio_frames_out_dropped += 1
            return False
        backlog.append(frame)
        self._audio_written.clear()
        if self._audio_writer is None:
            self._audio_writer = asyncio.create_task(self._write_audio(), name="rtvbp-audio")
        self._audio_queued.set()
        return True

    async def _write_audio(self) -> None:
        """Send the backlog of `send_audio_nowait` on a transport that only sends awaiting."""
        backlog = self._audio_backlog
        queued = self._audio_queued
        try:
            while True:
                while backlog:
                    frame = backlog[0]
                    await self._transport.send_binary(frame)
                    backlog.popleft()
                    self.protocol.audio_frame_sent(frame)
                self._audio_written.set()
                queued.clear()
                await queued.wait()
        except Exception as error:
            logger.debug("audio send failed: %r", error)
        finally:
            backlog.clear()
            self._audio_written.set()

    async def _audio_backlog_sent(self, timeout_s: float | None) -> None:
        """Wait until the frames of `send_audio_nowait` still in the backlog are sent."""
        if not self._audio_backlog:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await self._audio_written.wait()
        except TimeoutError:
            logger.debug("audio backlog not sent within %s s", timeout_s)

    async def _stop_tasks(self) -> None:
        current = asyncio.current_task()
        tasks = [
            task
            for task in (self._reader, self._dispatcher, self._audio_writer)
            if task is not None and task is not current and not task.done()
        ]
        try:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)
        finally:
            self._closed.set()

    async def _read_loop(self) -> None:
        transport = self._transport
        protocol = self.protocol
        audio = protocol.audio
        binary, text = MessageKind.BINARY, MessageKind.TEXT  # bound once: looked up per frame
        while True:
            try:
                message = await transport.receive()
            except Exception as error:
                logger.debug("transport receive failed: %r", error)
                message = TransportMessage(MessageKind.CLOSE, close_code=CLOSE_ABNORMAL)
            kind = message.kind
            if kind is binary:
                audio.receive(message.data)
            elif kind is text:
                received = protocol.receive_text(message.data, now_ms())
                if type(received) is ResponseReceived:
                    self._resolve(received)
                elif received is not None:
                    self._inbox_ready.set()
            else:
                break
        code = message.close_code or CLOSE_NO_STATUS
        if not self._begin_close(code, message.close_reason, by_peer=True):
            return
        try:
            await transport.close()
        except Exception as error:
            logger.debug("transport close after peer close failed: %r", error)
        finally:
            await self._stop_tasks()

    def _resolve(self, received: ResponseReceived) -> None:
        future = self._waiters.get(received.request_id)
        if future is not None and not future.done():
            future.set_result(received.response)

    async def _close_terminal(self) -> None:
        await self.close(CLOSE_NORMAL, TERMINAL_CLOSE_REASON)

    async def _dispatch_loop(self) -> None:
        protocol = self.protocol
        ready = self._inbox_ready
        while not protocol.closed:
            inbound = protocol.next_inbound()
            if inbound is None:
                ready.clear()
                await ready.wait()
                continue
            frame = inbound.frame
            if isinstance(frame, Request):
                await self._dispatch_request(frame, inbound.received_at_ms)
            else:
                await self._dispatch_event(frame)

    async def _dispatch_request(self, request: Request, received_at_ms: int) -> None:
        protocol = self.protocol
        dispatch = protocol.dispatch_request(request, received_at_ms)
        reply = DeferredResponse(
            request.id, self._send_frame, self._close_terminal if dispatch.terminal else None
        )
        try:
            if dispatch.error is not None:
                raise dispatch.error
            handler = dispatch.handler or self._answer_ping
            incoming = IncomingRequest(
                request.id, request.method, dispatch.params, received_at_ms, reply
            )
            result = await handler(incoming)
            if incoming.deferred or reply.done:
                return
            await reply.resolve(protocol.required_result(result))
        except RemoteError as error:
            await self._answer_error(reply, error.code, error.message, error.data)
        except Exception as error:
            await self._answer_error(reply, INTERNAL, str(error) or type(error).__name__, None)

    async def _answer_error(
        self, reply: DeferredResponse, code: int, message: str, data: Any
    ) -> None:
        if reply.done or self.protocol.closed:
            return
        try:
            await reply.reject(code, message, data)
        except SessionClosedError:
            pass
        except Exception as error:
            logger.debug("could not send error response: %r", error)

    async def _dispatch_event(self, event: Event) -> None:
        dispatch = self.protocol.dispatch_event(event)
        if dispatch is None:
            return
        try:
            await dispatch.handler(dispatch.data)
        except Exception:
            logger.warning("handler for event %s failed", dispatch.name, exc_info=True)

    async def _answer_ping(self, request: IncomingRequest) -> Any:
        return self.protocol.ping_result(request.params, request.received_at_ms, now_ms())
