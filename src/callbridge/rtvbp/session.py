"""Asyncio runtime of one RTVBP session over a `Transport`, for either role.

Dispatch model (spec §3.4): a reader task resolves responses immediately and feeds audio to the
audio sink; requests and events go through one serial FIFO dispatcher task in receive order.
Because responses bypass the dispatcher, a handler may await a nested request without deadlock;
slow work defers its response so the dispatcher keeps moving.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from callbridge.rtvbp.audio_channel import AudioSink, InboundAudio, SessionStats
from callbridge.rtvbp.catalog import Catalog, OperationSpec, Role, decode_payload
from callbridge.rtvbp.envelope import Event, Request, Response, decode_frame, encode_frame
from callbridge.rtvbp.errors import (
    BAD_REQUEST,
    INTERNAL,
    NOT_IMPLEMENTED,
    PayloadError,
    RemoteError,
    RequestTimeoutError,
    RtvbpError,
    SessionClosedError,
)
from callbridge.rtvbp.exchange import (
    NO_REPLY_MESSAGE,
    DeferredResponse,
    EventHandler,
    IncomingRequest,
    RequestHandler,
    encode_or_empty,
    now_ms,
    result_of,
)
from callbridge.rtvbp.transport_base import (
    CLOSE_ABNORMAL,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NO_STATUS,
    CLOSE_NORMAL,
    ORDERLY_CLOSE_CODES,
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

TERMINAL_CLOSE_REASON = "Closed"
"""Close reason after answering a terminal operation (as the Go and TS SDKs send it)."""

HandlerT = TypeVar("HandlerT", bound=RequestHandler)
EventHandlerT = TypeVar("EventHandlerT", bound=EventHandler)


def unique_ids() -> Callable[[], str]:
    """Short request/event ids unique per session: a random prefix and a counter."""
    prefix = secrets.token_hex(4)
    counter = itertools.count(1)
    return lambda: f"{prefix}-{next(counter):x}"


@dataclass(frozen=True, slots=True)
class CloseInfo:
    """How the session ended: WebSocket close code, reason, and which side closed first."""

    code: int
    reason: str
    by_peer: bool

    @property
    def orderly(self) -> bool:
        """1000/1001 are an orderly end; any other code (1006 link lost, 1011, ...) a failure."""
        return self.code in ORDERLY_CLOSE_CODES


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
        self.stats = SessionStats()
        self._transport = transport
        self._new_id = id_factory or unique_ids()
        self._handlers: dict[str, RequestHandler] = {}
        self._event_handlers: dict[str, EventHandler] = {}
        self._pending: dict[str, asyncio.Future[Response]] = {}
        self._result_hooks: dict[str, tuple[OperationSpec, Callable[[Any], None]]] = {}
        self._inbox: asyncio.Queue[tuple[Request | Event, int]] = asyncio.Queue()
        self._audio = InboundAudio(self.stats)
        self._reader: asyncio.Task[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._close_info: CloseInfo | None = None
        self._closed = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Spawn the reader and dispatcher tasks."""
        if self._reader is not None:
            raise RuntimeError("session already started")
        if self._close_info is not None:
            raise SessionClosedError("session is closed")
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
        return self._close_info is not None

    @property
    def close_info(self) -> CloseInfo | None:
        return self._close_info

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Flush and close the transport, fail pending requests, stop the tasks; idempotent."""
        if not self._begin_close(CloseInfo(code, reason, by_peer=False)):
            await self.wait_closed()
            return
        try:
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
        assert self._close_info is not None
        return self._close_info

    # -- handlers --------------------------------------------------------------------------

    def handle(self, method: str, handler: RequestHandler) -> None:
        """Answer requests for `method` with `handler` (replaces a previous one)."""
        rejection = self._operation(method).rejection_for(self.role)
        if rejection is not None:
            raise ValueError(
                f"a {self.role} session answers {method} with a frozen {rejection.code}"
            )
        self._handlers[method] = handler

    def handler(self, method: str) -> Callable[[HandlerT], HandlerT]:
        """Decorator form of `handle`."""

        def register(handler: HandlerT) -> HandlerT:
            self.handle(method, handler)
            return handler

        return register

    def on_event(self, name: str, handler: EventHandler) -> None:
        """Deliver events `name` to `handler` (replaces a previous one); others are ignored."""
        if name not in self.catalog.events:
            raise ValueError(f"event {name!r} is not in catalog {self.catalog.name}")
        self._event_handlers[name] = handler

    def event_handler(self, name: str) -> Callable[[EventHandlerT], EventHandlerT]:
        """Decorator form of `on_event`."""

        def register(handler: EventHandlerT) -> EventHandlerT:
            self.on_event(name, handler)
            return handler

        return register

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
        spec = self._operation(method)
        if self._reader is None:
            raise RuntimeError("session not started")
        if self._close_info is not None:
            raise SessionClosedError(f"session is closed ({self._close_info.code})")
        request_id = self._new_id()
        if request_id in self._pending:
            raise RtvbpError(f"duplicate outgoing request id {request_id!r}")
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        if on_result is not None:
            self._result_hooks[request_id] = (spec, on_result)
        limit = self.request_timeout_s if timeout_s is None else timeout_s
        try:
            await self._send_frame(Request(request_id, method, encode_or_empty(params)))
            async with asyncio.timeout(limit):
                response = await future
        except TimeoutError:
            raise RequestTimeoutError(f"{method} got no response within {limit} s") from None
        except SessionClosedError:
            info = self._close_info
            if terminal_ok and spec.terminal and info is not None and info.orderly:
                return None
            raise
        finally:
            del self._pending[request_id]
            self._result_hooks.pop(request_id, None)
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()
        return result_of(spec, response)

    async def notify(self, event: str, data: Any = None) -> None:
        """Emit `event` with `data` (the catalog's data Struct; None sends `{}`)."""
        if event not in self.catalog.events:
            raise ValueError(f"event {event!r} is not in catalog {self.catalog.name}")
        await self._send_frame(Event(self._new_id(), event, encode_or_empty(data)))

    async def ping(
        self, *, rtt_ms: int | None = None, data: Any = None, timeout_s: float | None = None
    ) -> int:
        """Send a catalog `ping` and return the round-trip time in ms (pass it as the next rtt)."""
        spec = self._operation("ping")
        t0 = now_ms()
        await self.request(
            "ping", spec.params_type(t0=t0, rtt=rtt_ms, data=data), timeout_s=timeout_s
        )
        return now_ms() - t0

    # -- audio -----------------------------------------------------------------------------

    def open_audio(self, frame_bytes: int) -> None:
        """Allow binary audio both ways, in frames of `frame_bytes` (20 ms of L16 at 8 kHz: 320)."""
        self._audio.open(frame_bytes)

    @property
    def audio_frame_bytes(self) -> int:
        """Bytes per audio frame, 0 while audio is not open."""
        return self._audio.frame_bytes

    def on_audio(self, sink: AudioSink | None) -> None:
        """Deliver each inbound audio frame to `sink`, synchronously on the reader task."""
        self._audio.sink = sink

    async def send_audio(self, frame: bytes) -> None:
        """Send one exact audio frame; partial or oversized frames are refused."""
        frame_bytes = self._audio.frame_bytes
        if self._close_info is not None:
            raise SessionClosedError("session is closed")
        if not frame_bytes:
            raise RtvbpError(
                "audio is not open: call open_audio() once session.initialize succeeded"
            )
        if len(frame) != frame_bytes:
            raise ValueError(f"audio frame is {len(frame)} bytes, expected exactly {frame_bytes}")
        try:
            await self._transport.send_binary(frame)
        except Exception as error:
            raise SessionClosedError(f"audio send failed: {error!r}") from error
        self.stats.audio_frames_out += 1
        self.stats.audio_bytes_out += frame_bytes

    # -- internals -------------------------------------------------------------------------

    def _operation(self, method: str) -> OperationSpec:
        try:
            return self.catalog.operations[method]
        except KeyError:
            raise ValueError(f"method {method!r} is not in catalog {self.catalog.name}") from None

    async def _send_frame(self, frame: Request | Event | Response) -> None:
        if self._close_info is not None:
            raise SessionClosedError(f"session is closed ({self._close_info.code})")
        data = encode_frame(frame)
        try:
            await self._transport.send_text(data)
        except SessionClosedError:
            raise
        except Exception as error:
            raise SessionClosedError(f"send failed: {error!r}") from error

    def _begin_close(self, info: CloseInfo) -> bool:
        """Record the close and fail pending requests; False when already closing."""
        if self._close_info is not None:
            return False
        self._close_info = info
        logger.debug("session closing: code=%s by_peer=%s", info.code, info.by_peer)
        for request_id, future in self._pending.items():
            if not future.done():
                future.set_exception(
                    SessionClosedError(
                        f"session closed ({info.code}) before {request_id!r} was answered"
                    )
                )
        return True

    async def _stop_tasks(self) -> None:
        current = asyncio.current_task()
        tasks = [
            task
            for task in (self._reader, self._dispatcher)
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
        audio = self._audio
        while True:
            try:
                message = await transport.receive()
            except Exception as error:
                logger.debug("transport receive failed: %r", error)
                message = TransportMessage(MessageKind.CLOSE, close_code=CLOSE_ABNORMAL)
            kind = message.kind
            if kind is MessageKind.BINARY:
                audio.receive(message.data)
            elif kind is MessageKind.TEXT:
                self._receive_text(message.data)
            else:
                break
        info = CloseInfo(message.close_code or CLOSE_NO_STATUS, message.close_reason, by_peer=True)
        if not self._begin_close(info):
            return
        try:
            await transport.close()
        except Exception as error:
            logger.debug("transport close after peer close failed: %r", error)
        finally:
            await self._stop_tasks()

    def _receive_text(self, data: bytes) -> None:
        received_at_ms = now_ms()
        try:
            frame = decode_frame(data)
        except Exception as error:
            self.stats.control_messages_dropped += 1
            logger.debug("dropped undecodable control message: %s", error)
            return
        if isinstance(frame, Response):
            future = self._pending.get(frame.response)
            if future is None or future.done():
                self.stats.responses_ignored += 1
            else:
                hook = self._result_hooks.pop(frame.response, None)
                if hook is not None and frame.error is None:
                    self._run_result_hook(*hook, frame)
                future.set_result(frame)
            return
        self._inbox.put_nowait((frame, received_at_ms))

    def _run_result_hook(
        self, spec: OperationSpec, hook: Callable[[Any], None], response: Response
    ) -> None:
        try:
            hook(result_of(spec, response))
        except Exception:
            logger.exception("result hook of %s failed", spec.method)

    async def _close_terminal(self) -> None:
        await self.close(CLOSE_NORMAL, TERMINAL_CLOSE_REASON)

    async def _dispatch_loop(self) -> None:
        while self._close_info is None:
            frame, received_at_ms = await self._inbox.get()
            if isinstance(frame, Request):
                await self._dispatch_request(frame, received_at_ms)
            else:
                await self._dispatch_event(frame)

    async def _dispatch_request(self, request: Request, received_at_ms: int) -> None:
        method = request.method
        spec = self.catalog.operations.get(method)
        terminal = spec is not None and spec.terminal
        reply = DeferredResponse(
            request.id, self._send_frame, self._close_terminal if terminal else None
        )
        try:
            rejection = None if spec is None else spec.rejection_for(self.role)
            if rejection is not None:
                raise RemoteError(rejection.code, rejection.message)
            handler = self._handlers.get(method)
            if handler is None and method == "ping":
                handler = self._answer_ping
            if spec is None or handler is None:
                raise RemoteError(NOT_IMPLEMENTED, f"unknown method: {method}")
            try:
                params = decode_payload(spec.params_type, request.params)
            except PayloadError as error:
                raise RemoteError(BAD_REQUEST, error.message) from None
            incoming = IncomingRequest(request.id, method, params, received_at_ms, reply)
            result = await handler(incoming)
            if incoming.deferred or reply.done:
                return
            if result is None:
                raise RemoteError(INTERNAL, NO_REPLY_MESSAGE)
            await reply.resolve(result)
        except RemoteError as error:
            await self._answer_error(reply, error.code, error.message, error.data)
        except Exception as error:
            await self._answer_error(reply, INTERNAL, str(error) or type(error).__name__, None)

    async def _answer_error(
        self, reply: DeferredResponse, code: int, message: str, data: Any
    ) -> None:
        if reply.done or self._close_info is not None:
            return
        try:
            await reply.reject(code, message, data)
        except SessionClosedError:
            pass
        except Exception as error:
            logger.debug("could not send error response: %r", error)

    async def _dispatch_event(self, event: Event) -> None:
        handler = self._event_handlers.get(event.event)
        if handler is None:
            return
        spec = self.catalog.events[event.event]
        try:
            data = decode_payload(spec.data_type, event.data)
        except PayloadError as error:
            self.stats.events_dropped += 1
            logger.debug("dropped event %s with invalid data: %s", event.event, error.message)
            return
        try:
            await handler(data)
        except Exception:
            logger.warning("handler for event %s failed", event.event, exc_info=True)

    async def _answer_ping(self, request: IncomingRequest) -> Any:
        params = request.params
        if not params.t0:
            raise RemoteError(BAD_REQUEST, "t0 must be non-zero")
        t2 = now_ms()
        result_type = self.catalog.operations["ping"].result_type
        return result_type(
            t0=params.t0, t1=request.received_at_ms, t2=t2, owd=t2 - params.t0, data=params.data
        )
