"""The rtpbridge-compatible control WebSocket (specs/rtpbridge.md §1, §2).

Each connection reads one request, handles it, answers, writes out every event queued so far,
and only then reads the next request. It is bound to at most one media session, which it orphans
when it goes away. Events reach it through a sink that never blocks: a bounded normal queue and a
bounded critical queue; what does not fit is dropped, counted and reported as `events.dropped`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import msgspec
from aiohttp import WSCloseCode, WSMsgType, web
from prometheus_client import CollectorRegistry, Counter, Gauge

from callbridge.engine.bridge_endpoint import bridge
from callbridge.engine.errors import EngineError
from callbridge.engine.file_endpoint import create_with_file
from callbridge.engine.offers import create_from_offer, create_offer
from callbridge.engine.tone_endpoint import create_tone
from callbridge.server import control_messages as wire
from callbridge.server.config import Settings
from callbridge.server.control_rtvbp import RTVBP_METHODS
from callbridge.server.errors import (
    ENDPOINT_ERROR,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    NO_SESSION,
    RECORDING_ERROR,
    SESSION_ALREADY_BOUND,
    SESSION_GONE,
    SESSION_NOT_FOUND,
    SHUTTING_DOWN,
    STATS_ERROR,
    UNKNOWN_METHOD,
    VAD_ERROR,
    ControlError,
)
from callbridge.server.http_api import install_fallback, json_response

if TYPE_CHECKING:
    from callbridge.engine.manager import SessionManager
    from callbridge.engine.session import MediaSession

__all__ = [
    "NOT_IMPLEMENTED",
    "ControlConnection",
    "ControlServer",
    "control_server",
    "setup_control",
    "shutdown_control",
]

log = logging.getLogger(__name__)

NO_SESSION_MESSAGE: Final = "No session bound. Call session.create or session.attach first."
ORPHAN_NOTICE_TIMEOUT_S: Final = 1.0
"""How long the best-effort `session.orphaned` notice may take on a dying socket."""

NOT_IMPLEMENTED: Final[Mapping[str, str]] = {
    "endpoint.ice_restart": ENDPOINT_ERROR,
    "endpoint.srtp_rekey": ENDPOINT_ERROR,
    "endpoint.transfer": ENDPOINT_ERROR,
    "recording.start": RECORDING_ERROR,
    "recording.stop": RECORDING_ERROR,
    "vad.start": VAD_ERROR,
    "vad.stop": VAD_ERROR,
    "stats.subscribe": STATS_ERROR,
    "stats.unsubscribe": STATS_ERROR,
}
"""rtpbridge methods not served yet, with the code of their family, so clients get a stable
answer (`"<method> is not implemented yet"`) rather than UNKNOWN_METHOD. Session-bound like the
rest: NO_SESSION comes first."""


class _Disconnected(Exception):
    """The socket can no longer be written to."""


class ControlMetrics:
    """Connection-side metrics, registered next to the engine's (one registry per manager)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events_dropped = Counter(
            "callbridge_events_dropped",
            "Control events dropped because a connection's event queues were full.",
            registry=registry,
        )
        self.connections = Gauge(
            "callbridge_control_connections",
            "Open control WebSocket connections.",
            registry=registry,
        )


class ControlServer:
    """The control endpoint of one application: connection limit, open connections, shutdown."""

    def __init__(self, manager: SessionManager, settings: Settings) -> None:
        self.manager = manager
        self.settings = settings
        self.metrics = ControlMetrics(manager.metrics.registry)
        self.connections: set[ControlConnection] = set()
        self.call_subscribers: set[ControlConnection] = set()
        """Connections that asked for `call.incoming` (calls.subscribe)."""
        self._numbers = itertools.count(1)
        self._shutdown_lock = asyncio.Lock()
        self._shut_down = False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one control WebSocket until it closes."""
        limit = self.settings.max_connections
        if limit and len(self.connections) >= limit:
            log.warning("control connection from %s refused: %d open", request.remote, limit)
            return json_response({"error": "too many connections"}, status=503)
        websocket = web.WebSocketResponse(
            max_msg_size=self.settings.ws_max_message_size_kb * 1024,
            heartbeat=self.settings.ws_ping_interval_secs,
            autoclose=False,
            compress=False,
        )
        if not websocket.can_prepare(request).ok:
            return json_response({"error": "bad WebSocket handshake"}, status=400)
        connection = ControlConnection(self, websocket, next(self._numbers), request.remote)
        self.connections.add(connection)
        self.metrics.connections.inc()
        try:
            await websocket.prepare(request)
            await connection.run()
        finally:
            self.connections.discard(connection)
            self.metrics.connections.dec()
        return websocket

    def announce_call(self, data: dict[str, Any]) -> None:
        """A call was parked on the media ingress: tell every subscribed connection."""
        for connection in list(self.call_subscribers):
            connection.emit("call.incoming", data, True)

    async def shutdown(self) -> None:
        """Drain sessions (bounded by shutdown_max_wait_secs) while connections keep working,
        then close the connections that are still open."""
        async with self._shutdown_lock:
            if self._shut_down:
                return
            wait_s = self.settings.shutdown_max_wait_secs
            log.info("control: shutting down, waiting up to %g s for sessions to end", wait_s)
            await self.manager.shutdown(wait_s)
            self._shut_down = True
            await asyncio.gather(
                *(connection.close_socket() for connection in list(self.connections))
            )


class ControlConnection:
    """One control WebSocket: at most one bound session, its event queues and its writer."""

    def __init__(
        self,
        server: ControlServer,
        websocket: web.WebSocketResponse,
        number: int,
        peer: str | None,
    ) -> None:
        self.server = server
        self.manager = server.manager
        self.websocket = websocket
        self.number = number
        self.peer = peer
        self.session: MediaSession | None = None
        self.dropped = 0
        """Events dropped since the last `events.dropped` notice."""
        settings = server.settings
        self._normal_capacity = settings.event_channel_size
        self._critical_capacity = settings.critical_event_channel_size
        self._max_sdp_bytes = settings.max_sdp_size_kb * 1024
        self._normal: deque[bytes] = deque()
        self._critical: deque[bytes] = deque()
        self._events_waiting = asyncio.Event()
        self._send_lock = asyncio.Lock()
        """Held while a request is handled and while events are written: nothing interleaves."""
        self._open = True

    # --- events -------------------------------------------------------------------------

    def emit(self, name: str, data: dict[str, Any], critical: bool) -> None:
        """The session's EventSink: queue without blocking, drop and count when full."""
        if not self._open:
            return
        if critical and len(self._critical) < self._critical_capacity:
            queue = self._critical
        elif len(self._normal) < self._normal_capacity:
            queue = self._normal
        else:
            self.dropped += 1
            self.server.metrics.events_dropped.inc()
            return
        queue.append(wire.encode_event(name, data))
        self._events_waiting.set()

    async def _flush_events(self) -> None:
        """Write every queued event: the drop notice first, then critical, then normal."""
        while True:
            if self.dropped:
                payload = wire.encode_event("events.dropped", {"count": self.dropped})
                self.dropped = 0
            elif self._critical:
                payload = self._critical.popleft()
            elif self._normal:
                payload = self._normal.popleft()
            else:
                return
            await self._send(payload)

    async def _deliver_events(self) -> None:
        """Write events that arrive between requests."""
        try:
            while True:
                await self._events_waiting.wait()
                async with self._send_lock:
                    self._events_waiting.clear()
                    await self._flush_events()
        except _Disconnected:
            return

    async def _send(self, payload: bytes) -> None:
        try:
            await self.websocket.send_frame(payload, WSMsgType.TEXT)
        except (ConnectionError, RuntimeError) as error:
            raise _Disconnected from error

    # --- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        log.info("control connection %d opened from %s", self.number, self.peer)
        writer = asyncio.create_task(self._deliver_events(), name=f"control-events-{self.number}")
        try:
            await self._serve_requests()
        except _Disconnected:
            pass
        finally:
            self._open = False
            self.server.call_subscribers.discard(self)
            self._normal.clear()
            self._critical.clear()
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            orphaned = await self._release_session()
            if not self.websocket.closed:
                await self.websocket.close()
            log.info(
                "control connection %d closed%s",
                self.number,
                f"; session {orphaned} orphaned" if orphaned else "",
            )

    async def _serve_requests(self) -> None:
        websocket = self.websocket
        while True:
            message = await websocket.receive()
            if message.type is WSMsgType.TEXT:
                async with self._send_lock:
                    reply = await self._answer(message.data)
                    await self._send(reply)
                    await self._flush_events()
            elif message.type is WSMsgType.BINARY:
                continue
            else:
                if message.type is WSMsgType.ERROR:
                    log.info("control connection %d: %s", self.number, message.data)
                return

    async def _release_session(self) -> str | None:
        """Orphan the bound session and tell the (probably gone) client, best effort."""
        session, self.session = self.session, None
        if session is None or not session.alive:
            return None
        try:
            self.manager.orphan(session)
        except Exception:
            log.exception("orphaning session %s failed", session.id)
        if not self.websocket.closed:
            remaining_ms = round(self.server.settings.disconnect_timeout_secs * 1000)
            notice = wire.encode_event("session.orphaned", {"timeout_remaining_ms": remaining_ms})
            try:
                await asyncio.wait_for(
                    self.websocket.send_frame(notice, WSMsgType.TEXT), ORPHAN_NOTICE_TIMEOUT_S
                )
            except (ConnectionError, RuntimeError, TimeoutError):
                pass
        return session.id

    async def close_socket(self) -> None:
        """Close from the server side (shutdown) once the request in progress, if any, has been
        answered; the connection's own loop then cleans up."""
        async with self._send_lock:
            await self.websocket.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")

    # --- requests -------------------------------------------------------------------------

    async def _answer(self, frame: str) -> bytes:
        request = wire.parse_request(frame)
        if isinstance(request, wire.ErrorResponse):
            return wire.encode_message(request)
        log.debug("control connection %d: %s", self.number, request.method[:100])
        try:
            result = await self._dispatch(request)
        except (ControlError, EngineError) as error:
            return wire.encode_message(wire.error_response(request.id, error.code, error.message))
        except Exception:
            log.exception("control connection %d: %s failed", self.number, request.method)
            return wire.encode_message(
                wire.error_response(request.id, INTERNAL_ERROR, "internal error")
            )
        return wire.encode_message(wire.Response(request.id, result))

    async def _dispatch(self, request: wire.Request) -> object:
        method = _METHODS.get(request.method)
        if method is not None:
            return await method(self, request.params)
        family = NOT_IMPLEMENTED.get(request.method)
        if family is None:
            raise ControlError(UNKNOWN_METHOD, f"unknown method {request.method[:100]!r}")
        self._bound_session()
        raise ControlError(family, f"{request.method} is not implemented yet")

    def _bound_session(self) -> MediaSession:
        """The bound session, checked before any params are parsed."""
        if self.session is None:
            raise ControlError(NO_SESSION, NO_SESSION_MESSAGE)
        return self.session

    def _command(
        self, raw: msgspec.Raw, params_type: type[wire.ParamsT]
    ) -> tuple[MediaSession, wire.ParamsT]:
        """The bound session (NO_SESSION first) and the method's decoded params."""
        session = self._bound_session()
        return session, wire.decode_params(raw, params_type)

    def _live(self, session: MediaSession) -> MediaSession:
        """The bound session if it still runs; every command counts as activity."""
        if not session.alive:
            raise ControlError(SESSION_GONE, f"session {session.id} has ended")
        session.touch()
        return session

    def _check_sdp(self, sdp: str) -> None:
        if len(sdp.encode()) > self._max_sdp_bytes:
            raise ControlError(INVALID_PARAMS, "SDP too large")

    def _already_bound(self) -> ControlError:
        assert self.session is not None
        return ControlError(
            SESSION_ALREADY_BOUND, f"connection is already bound to session {self.session.id}"
        )

    async def _session_create(self, raw: msgspec.Raw) -> object:
        if self.manager.shutting_down:
            raise ControlError(SHUTTING_DOWN, "server is shutting down")
        if self.session is not None:
            raise self._already_bound()
        self.session = self.manager.create_session(self.emit)
        log.info("session %s created (control connection %d)", self.session.id, self.number)
        return wire.SessionCreated(self.session.id)

    async def _session_attach(self, raw: msgspec.Raw) -> object:
        if self.session is not None:
            raise self._already_bound()
        params = wire.decode_params(raw, wire.AttachParams)
        self.session = self.manager.attach(str(params.session_id), self.emit)
        log.info("session %s attached (control connection %d)", self.session.id, self.number)
        return wire.EMPTY

    async def _session_destroy(self, raw: msgspec.Raw) -> object:
        session = self._bound_session()
        self.session = None
        if not session.alive:
            raise ControlError(SESSION_NOT_FOUND, f"session {session.id} not found")
        try:
            await session.destroy()
        except EngineError as error:
            if error.code == SESSION_GONE:
                raise ControlError(SESSION_NOT_FOUND, f"session {session.id} not found") from None
            raise
        log.info("session %s destroyed (control connection %d)", session.id, self.number)
        return wire.EMPTY

    async def _session_info(self, raw: msgspec.Raw) -> object:
        return self._live(self._bound_session()).info()

    async def _session_list(self, raw: msgspec.Raw) -> object:
        return wire.SessionList([session.summary() for session in self.manager.sessions()])

    async def _session_bridge(self, raw: msgspec.Raw) -> object:
        session, params = self._command(raw, wire.BridgeParams)
        target_id = str(params.target_session_id)
        if target_id == session.id:
            raise ControlError(INVALID_PARAMS, "cannot bridge a session to itself")
        endpoint_id, target_endpoint_id = await bridge(
            self._live(session), target_id, params.direction, self.manager.get
        )
        return wire.BridgeCreated(endpoint_id, target_endpoint_id)

    async def _create_from_offer(self, raw: msgspec.Raw) -> object:
        session, params = self._command(raw, wire.CreateFromOfferParams)
        self._check_sdp(params.sdp)
        endpoint_id, answer = await create_from_offer(
            self._live(session), params.sdp, params.direction
        )
        return wire.OfferAnswered(endpoint_id, answer)

    async def _create_offer(self, raw: msgspec.Raw) -> object:
        session, params = self._command(raw, wire.CreateOfferParams)
        endpoint_id, offer = await create_offer(
            self._live(session), params.kind, params.direction, params.codecs, params.srtp
        )
        return wire.OfferCreated(endpoint_id, offer)

    async def _accept_answer(self, raw: msgspec.Raw) -> object:
        session, params = self._command(raw, wire.AcceptAnswerParams)
        self._check_sdp(params.sdp)
        await self._live(session).accept_answer(str(params.endpoint_id), params.sdp)
        return wire.EMPTY

    async def _create_with_file(self, raw: msgspec.Raw) -> object:
        session, params = self._command(raw, wire.CreateWithFileParams)
        loop_count = 0 if isinstance(params.loop_count, msgspec.UnsetType) else params.loop_count
        endpoint_id = await create_with_file(
            self._live(session),
            params.source,
            start_ms=params.start_ms,
            loop_count=loop_count,
            cache_ttl_secs=params.cache_ttl_secs,
            shared=params.shared,
            timeout_ms=params.timeout_ms,
            headers=params.headers,
            gain_db=params.gain_db,
        )
        return wire.EndpointCreated(endpoint_id)

    async def _create_tone(self, raw: msgspec.Raw) -> object:
        session, params = self._command(raw, wire.CreateToneParams)
        endpoint_id = await create_tone(
            self._live(session), params.tone, params.frequency, params.duration_ms
        )
        return wire.ToneCreated(endpoint_id, params.tone)

    async def _remove_endpoint(self, raw: msgspec.Raw) -> object:
        session, params = self._command(raw, wire.EndpointParams)
        await self._live(session).remove_endpoint(str(params.endpoint_id))
        return wire.EMPTY

    async def _file_seek(self, raw: msgspec.Raw) -> object:
        session, params = self._command(raw, wire.FileSeekParams)
        await self._live(session).file_seek(str(params.endpoint_id), params.position_ms)
        return wire.EMPTY

    async def _file_pause(self, raw: msgspec.Raw) -> object:
        session, params = self._command(raw, wire.EndpointParams)
        await self._live(session).file_pause(str(params.endpoint_id))
        return wire.EMPTY

    async def _file_resume(self, raw: msgspec.Raw) -> object:
        session, params = self._command(raw, wire.EndpointParams)
        await self._live(session).file_resume(str(params.endpoint_id))
        return wire.EMPTY

    async def _dtmf_inject(self, raw: msgspec.Raw) -> object:
        session, params = self._command(raw, wire.DtmfInjectParams)
        await self._live(session).dtmf_inject(
            str(params.endpoint_id), params.digit, params.duration_ms, params.volume
        )
        return wire.EMPTY


_Method = Callable[[ControlConnection, msgspec.Raw], Awaitable[object]]

_METHODS: Final[Mapping[str, _Method]] = {
    "session.create": ControlConnection._session_create,
    "session.attach": ControlConnection._session_attach,
    "session.destroy": ControlConnection._session_destroy,
    "session.info": ControlConnection._session_info,
    "session.list": ControlConnection._session_list,
    "session.bridge": ControlConnection._session_bridge,
    "endpoint.create_from_offer": ControlConnection._create_from_offer,
    "endpoint.create_offer": ControlConnection._create_offer,
    "endpoint.accept_answer": ControlConnection._accept_answer,
    "endpoint.create_with_file": ControlConnection._create_with_file,
    "endpoint.create_tone": ControlConnection._create_tone,
    "endpoint.remove": ControlConnection._remove_endpoint,
    "endpoint.file.seek": ControlConnection._file_seek,
    "endpoint.file.pause": ControlConnection._file_pause,
    "endpoint.file.resume": ControlConnection._file_resume,
    "endpoint.dtmf.inject": ControlConnection._dtmf_inject,
    **RTVBP_METHODS,
}

_CONTROL = web.AppKey("callbridge_control", ControlServer)


def setup_control(app: web.Application, manager: SessionManager, settings: Settings) -> None:
    """Serve the control WebSocket on every path that no route claims (except the RTVBP
    ingress path), and drain sessions when the application shuts down."""
    server = ControlServer(manager, settings)
    app[_CONTROL] = server
    fallback = install_fallback(app)
    fallback.websocket_handler = server.handle
    fallback.reserved_paths.add(settings.rtvbp.path)
    app.on_shutdown.append(shutdown_control)


def control_server(app: web.Application) -> ControlServer:
    """The control endpoint `setup_control` added to `app` (open connections, metrics)."""
    return app[_CONTROL]


async def shutdown_control(app: web.Application) -> None:
    """Graceful shutdown (SIGTERM): refuse new sessions, let open connections keep working while
    sessions drain for at most shutdown_max_wait_secs, then close what is left. Idempotent."""
    server = app.get(_CONTROL)
    if server is not None:
        await server.shutdown()
