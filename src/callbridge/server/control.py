"""The rtpbridge-compatible control WebSocket: connections, their event queues and writer.

Each connection reads one request, has its method run (the table is in `control_methods`), answers,
writes out every event queued so far, and only then reads the next request. It is bound to at most
one media session, which it orphans when it goes away. Events reach it through a sink that never
blocks: a bounded normal queue and a bounded critical queue; what does not fit is dropped, counted
and reported as `events.dropped`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from typing import TYPE_CHECKING, Any, Final

from aiohttp import WSCloseCode, WSMsgType, web
from prometheus_client import CollectorRegistry, Counter, Gauge

from callbridge.engine.errors import EngineError
from callbridge.rtvbp.profiles import CREDENTIAL_PREFIX
from callbridge.server import control_messages as wire
from callbridge.server.config import Settings
from callbridge.server.control_access import offered_subprotocols
from callbridge.server.control_context import ControlContext
from callbridge.server.control_methods import dispatch
from callbridge.server.errors import INTERNAL_ERROR, ControlError
from callbridge.server.http_api import install_fallback, json_response

if TYPE_CHECKING:
    from callbridge.engine.manager import SessionManager

__all__ = [
    "ControlConnection",
    "ControlServer",
    "control_server",
    "setup_control",
    "shutdown_control",
]

log = logging.getLogger(__name__)

CONTROL_SUBPROTOCOL: Final = "callbridge.control"
"""Selected when offered: a browser that sends its token as a `bearer.<base64url>` subprotocol
must offer this too, since a browser needs the server to select one of its offers."""

ORPHAN_NOTICE_TIMEOUT_S: Final = 1.0
"""How long the best-effort `session.orphaned` notice may take on a dying socket."""


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
        self.call_subscribers: set[ControlContext] = set()
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
        offered = offered_subprotocols(request)
        if CONTROL_SUBPROTOCOL not in offered and any(
            token.startswith(CREDENTIAL_PREFIX) for token in offered
        ):  # aiohttp would log an offer it cannot answer, credential included
            return json_response(
                {"error": f"a bearer subprotocol needs {CONTROL_SUBPROTOCOL} offered too"},
                status=400,
            )
        websocket = web.WebSocketResponse(
            protocols=(CONTROL_SUBPROTOCOL,),
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
            try:
                await websocket.prepare(request)
            except ConnectionError:
                log.info("control connection from %s reset during the upgrade", request.remote)
                # The half-prepared WebSocket cannot be finished; aiohttp writes this answer to
                # the dead socket, which it does quietly.
                return json_response({"error": "connection reset"}, status=400)
            await connection.run()
        finally:
            self.connections.discard(connection)
            self.metrics.connections.dec()
        return websocket

    def announce_call(self, data: dict[str, Any]) -> None:
        """A call was parked on the media ingress: tell every subscribed connection."""
        for subscriber in list(self.call_subscribers):
            subscriber.emit("call.incoming", data, True)

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
        self.websocket = websocket
        self.number = number
        self.peer = peer
        self.context = ControlContext(
            server.manager, server.settings, self.emit, server.call_subscribers, number
        )
        """What the control methods see of this connection, its session binding included."""
        self.dropped = 0
        """Events dropped since the last `events.dropped` notice."""
        settings = server.settings
        self._normal_capacity = settings.event_channel_size
        self._critical_capacity = settings.critical_event_channel_size
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
        except ConnectionError as error:
            log.info("control connection %d: %s", self.number, type(error).__name__)
        finally:
            self._open = False
            self.context.unsubscribe_calls()
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
        session, self.context.session = self.context.session, None
        if session is None or not session.alive:
            return None
        try:
            self.server.manager.orphan(session)
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
            result = await dispatch(self.context, request)
        except (ControlError, EngineError) as error:
            return wire.encode_message(wire.error_response(request.id, error.code, error.message))
        except Exception:
            log.exception("control connection %d: %s failed", self.number, request.method)
            return wire.encode_message(
                wire.error_response(request.id, INTERNAL_ERROR, "internal error")
            )
        return wire.encode_message(wire.Response(request.id, result))


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
