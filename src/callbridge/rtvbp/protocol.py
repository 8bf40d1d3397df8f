"""The state of one RTVBP session, without I/O: frames and times in, bytes and decisions out.

`RtvbpProtocol` knows the outgoing requests still waiting for an answer, classifies every
inbound text frame (undecodable: dropped and counted; a response: resolved at once; a request
or an event: queued for serial dispatch in receive order), decides how each request is answered
(a role's frozen rejection, unknown method 501, bad params 400, the automatic ping answer, a
handler that returned nothing 500), which operations close the session once answered, how the
session ended, and when audio may flow and in which frame size.

It never waits, never reads a clock and owns no socket: the caller passes the receive time of
each frame and sends the bytes it gets back. `session.RtvbpSession` runs it on asyncio.
What it hands back are NamedTuples: several are built per control message.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from callbridge.rtvbp.audio_channel import InboundAudio, SessionStats
from callbridge.rtvbp.catalog import Catalog, OperationSpec, Role, decode_payload
from callbridge.rtvbp.envelope import Event, Frame, Request, Response, decode_frame, encode_frame
from callbridge.rtvbp.errors import (
    BAD_REQUEST,
    INTERNAL,
    NOT_IMPLEMENTED,
    PayloadError,
    RemoteError,
    RtvbpError,
    SessionClosedError,
)
from callbridge.rtvbp.exchange import (
    NO_REPLY_MESSAGE,
    EventHandler,
    RequestHandler,
    encode_or_empty,
    result_of,
)
from callbridge.rtvbp.transport_base import ORDERLY_CLOSE_CODES

__all__ = [
    "TERMINAL_CLOSE_REASON",
    "CloseInfo",
    "EventDispatch",
    "Inbound",
    "OutgoingRequest",
    "RequestDispatch",
    "ResponseReceived",
    "RtvbpProtocol",
    "unique_ids",
]

logger = logging.getLogger(__name__)

TERMINAL_CLOSE_REASON = "Closed"
"""Close reason after answering a terminal operation (as the Go and TS SDKs send it)."""

ResultHook = Callable[[Any], None]


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


class OutgoingRequest(NamedTuple):
    """A request to send: its id (the key of its answer) and its text frame."""

    request_id: str
    data: bytes


class ResponseReceived(NamedTuple):
    """The answer to outgoing request `request_id` arrived (its result hook already ran)."""

    request_id: str
    response: Response


class Inbound(NamedTuple):
    """A request or event waiting for dispatch; `received_at_ms` is ping's t1 for a request."""

    frame: Request | Event
    received_at_ms: int


class RequestDispatch(NamedTuple):
    """How to answer one inbound request.

    With `error`, answer it at once with that error. Otherwise call `handler` with `params`
    (decoded by the catalog), or, when `answer_ping` is set, answer with `ping_result`.
    A successful answer to a `terminal` request closes the session.
    """

    request: Request
    received_at_ms: int
    terminal: bool
    handler: RequestHandler | None = None
    params: Any = None
    answer_ping: bool = False
    error: RemoteError | None = None


class EventDispatch(NamedTuple):
    """Call `handler` with `data` (the event's payload decoded by the catalog)."""

    name: str
    handler: EventHandler
    data: Any


class _PendingRequest:
    """An outgoing request until `forget`: answered once its response arrived or the session
    closed (later responses are ignored)."""

    __slots__ = ("answered", "on_result", "spec")

    def __init__(self, spec: OperationSpec, on_result: ResultHook | None) -> None:
        self.spec = spec
        self.on_result = on_result
        self.answered = False


class RtvbpProtocol:
    """One RTVBP session in `role` speaking `catalog`, as a state machine without I/O."""

    def __init__(
        self, role: Role, catalog: Catalog, *, id_factory: Callable[[], str] | None = None
    ) -> None:
        self.role = role
        self.catalog = catalog
        self.stats = SessionStats()
        self.audio = InboundAudio(self.stats)
        """The inbound audio gate: feed binary messages to `audio.receive`."""
        self._new_id = id_factory or unique_ids()
        self._handlers: dict[str, RequestHandler] = {}
        self._event_handlers: dict[str, EventHandler] = {}
        self._pending: dict[str, _PendingRequest] = {}
        self._inbox: deque[Inbound] = deque()
        self._close_info: CloseInfo | None = None

    # -- registration ------------------------------------------------------------------------

    def operation(self, method: str) -> OperationSpec:
        """The catalog's spec of `method`; ValueError for a method not in the catalog."""
        try:
            return self.catalog.operations[method]
        except KeyError:
            raise ValueError(f"method {method!r} is not in catalog {self.catalog.name}") from None

    def handle(self, method: str, handler: RequestHandler) -> None:
        """Answer requests for `method` with `handler`; refused where the role's answer is
        frozen (a voice session answers ``session.terminate`` with 501)."""
        rejection = self.operation(method).rejection_for(self.role)
        if rejection is not None:
            raise ValueError(
                f"a {self.role} session answers {method} with a frozen {rejection.code}"
            )
        self._handlers[method] = handler

    def on_event(self, name: str, handler: EventHandler) -> None:
        """Deliver events `name` to `handler` (replaces a previous one); others are ignored."""
        self._event(name)
        self._event_handlers[name] = handler

    # -- outgoing ------------------------------------------------------------------------------

    def send_request(
        self, method: str, params: Any = None, on_result: ResultHook | None = None
    ) -> OutgoingRequest:
        """A new request for `method` (`params`: the catalog's Struct, None sends `{}`); its id
        stays taken until `forget`, and its response is expected until it arrives or `close`.

        `on_result` runs with the decoded result of a successful response as it is received,
        before any later frame is classified.
        """
        spec = self.operation(method)
        self._require_open()
        request_id = self._new_id()
        if request_id in self._pending:
            raise RtvbpError(f"duplicate outgoing request id {request_id!r}")
        data = encode_frame(Request(request_id, method, encode_or_empty(params)))
        self._pending[request_id] = _PendingRequest(spec, on_result)
        return OutgoingRequest(request_id, data)

    def forget(self, request_id: str) -> None:
        """Done with `request_id` (answered, timed out or abandoned): a response is ignored."""
        self._pending.pop(request_id, None)

    def send_event(self, name: str, data: Any = None) -> bytes:
        """The text frame of event `name` with `data` (the catalog's Struct; None sends `{}`)."""
        self._event(name)
        self._require_open()
        return encode_frame(Event(self._new_id(), name, encode_or_empty(data)))

    def send_frame(self, frame: Frame) -> bytes:
        """The text frame of `frame` (a response); SessionClosedError once closing started."""
        self._require_open()
        return encode_frame(frame)

    # -- inbound -------------------------------------------------------------------------------

    def receive_text(self, data: bytes, received_at_ms: int) -> ResponseReceived | Inbound | None:
        """Classify one text message received at `received_at_ms` (epoch ms).

        A response to a pending request is resolved (ResponseReceived); a request or event is
        queued for `next_inbound` (Inbound); an undecodable frame or an unexpected response
        returns None and is counted.
        """
        try:
            frame = decode_frame(data)
        except Exception as error:
            self.stats.control_messages_dropped += 1
            logger.debug("dropped undecodable control message: %s", error)
            return None
        if isinstance(frame, Response):
            return self._resolve(frame)
        inbound = Inbound(frame, received_at_ms)
        self._inbox.append(inbound)
        return inbound

    def next_inbound(self) -> Inbound | None:
        """The oldest request or event not dispatched yet; None when none is waiting or the
        session is closing (nothing more is dispatched)."""
        if self._close_info is not None or not self._inbox:
            return None
        return self._inbox.popleft()

    def dispatch_request(self, request: Request, received_at_ms: int) -> RequestDispatch:
        """How to answer `request`: the checks in the order peers expect their errors."""
        method = request.method
        spec = self.catalog.operations.get(method)
        terminal = spec is not None and spec.terminal
        rejection = None if spec is None else spec.rejection_for(self.role)
        if rejection is not None:
            error = RemoteError(rejection.code, rejection.message)
            return RequestDispatch(request, received_at_ms, terminal, error=error)
        handler = self._handlers.get(method)
        answer_ping = handler is None and method == "ping"
        if spec is None or (handler is None and not answer_ping):
            error = RemoteError(NOT_IMPLEMENTED, f"unknown method: {method}")
            return RequestDispatch(request, received_at_ms, terminal, error=error)
        try:
            params = decode_payload(spec.params_type, request.params)
        except PayloadError as payload_error:
            error = RemoteError(BAD_REQUEST, payload_error.message)
            return RequestDispatch(request, received_at_ms, terminal, error=error)
        return RequestDispatch(
            request, received_at_ms, terminal, handler, params, answer_ping=answer_ping
        )

    def dispatch_event(self, event: Event) -> EventDispatch | None:
        """Whom to give `event` to; None for an event nobody handles or whose data do not
        decode (counted in `events_dropped`)."""
        handler = self._event_handlers.get(event.event)
        if handler is None:
            return None
        spec = self.catalog.events[event.event]
        try:
            data = decode_payload(spec.data_type, event.data)
        except PayloadError as error:
            self.stats.events_dropped += 1
            logger.debug("dropped event %s with invalid data: %s", event.event, error.message)
            return None
        return EventDispatch(event.event, handler, data)

    def ping_result(self, params: Any, received_at_ms: int, now_ms: int) -> Any:
        """The automatic answer to a ping received at `received_at_ms`, sent at `now_ms`."""
        if not params.t0:
            raise RemoteError(BAD_REQUEST, "t0 must be non-zero")
        result_type = self.catalog.operations["ping"].result_type
        return result_type(
            t0=params.t0, t1=received_at_ms, t2=now_ms, owd=now_ms - params.t0, data=params.data
        )

    @staticmethod
    def required_result(result: Any) -> Any:
        """A handler's result, which must be something: None (no answer, no deferral) is a 500."""
        if result is None:
            raise RemoteError(INTERNAL, NO_REPLY_MESSAGE)
        return result

    # -- audio ---------------------------------------------------------------------------------

    def open_audio(self, frame_bytes: int) -> None:
        """Allow binary audio both ways, in frames of `frame_bytes`."""
        self.audio.open(frame_bytes)

    def check_audio_frame(self, frame: bytes) -> None:
        """Refuse an audio send while closed, before audio is open, or not one exact frame."""
        frame_bytes = self.audio.frame_bytes
        if self._close_info is not None:
            raise SessionClosedError("session is closed")
        if not frame_bytes:
            raise RtvbpError(
                "audio is not open: call open_audio() once session.initialize succeeded"
            )
        if len(frame) != frame_bytes:
            raise ValueError(f"audio frame is {len(frame)} bytes, expected exactly {frame_bytes}")

    def audio_frame_sent(self, frame: bytes) -> None:
        stats = self.stats
        stats.audio_frames_out += 1
        stats.audio_bytes_out += len(frame)

    # -- close ---------------------------------------------------------------------------------

    @property
    def close_info(self) -> CloseInfo | None:
        return self._close_info

    @property
    def closed(self) -> bool:
        """True from the moment closing starts (no more sends, no more dispatch)."""
        return self._close_info is not None

    def close(self, code: int, reason: str, *, by_peer: bool) -> tuple[str, ...] | None:
        """Record how the session ends; returns the ids of the requests that will now never be
        answered, or None when closing had already started."""
        if self._close_info is not None:
            return None
        self._close_info = CloseInfo(code, reason, by_peer)
        failed = tuple(key for key, pending in self._pending.items() if not pending.answered)
        for key in failed:
            self._pending[key].answered = True
        return failed

    def interrupted_terminal_ok(self, method: str) -> bool:
        """An unanswered terminal request is fine when the session ended orderly: the peer may
        close before answering (a call.hangup crossed by session.terminate)."""
        info = self._close_info
        return self.operation(method).terminal and info is not None and info.orderly

    # -- internals -----------------------------------------------------------------------------

    def _event(self, name: str) -> None:
        if name not in self.catalog.events:
            raise ValueError(f"event {name!r} is not in catalog {self.catalog.name}")

    def _require_open(self) -> None:
        if self._close_info is not None:
            raise SessionClosedError(f"session is closed ({self._close_info.code})")

    def _resolve(self, response: Response) -> ResponseReceived | None:
        request_id = response.response
        pending = self._pending.get(request_id)
        if pending is None or pending.answered:
            self.stats.responses_ignored += 1
            return None
        pending.answered = True
        hook = pending.on_result
        if hook is not None and response.error is None:
            try:
                hook(result_of(pending.spec, response))
            except Exception:
                logger.exception("result hook of %s failed", pending.spec.method)
        return ResponseReceived(request_id, response)
