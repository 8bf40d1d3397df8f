"""HTTP API on the shared listener, as rtpbridge serves it: health, metrics, session inspection.

Also owns the fallback for requests that match no route: a WebSocket upgrade on an unknown path
goes to the control protocol (when `setup_control` registered it), anything else gets rtpbridge's
JSON 404 or 405. The fallback is a middleware, so it works whatever order routes are added in.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec
from aiohttp import hdrs, web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from callbridge.server.config import Settings

if TYPE_CHECKING:
    from callbridge.engine.manager import SessionManager

__all__ = ["Fallback", "install_fallback", "json_response", "setup_http_api"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(
    data: object, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON body encoded with msgspec (engine dicts may hold UUIDs or datetimes)."""
    return web.Response(
        body=msgspec.json.encode(data),
        status=status,
        headers=headers,
        content_type="application/json",
    )


class Fallback:
    """Answers requests no route matched; one per application."""

    def __init__(self) -> None:
        self.websocket_handler: Handler | None = None
        """Serves a WebSocket upgrade on an unknown path (the control protocol)."""
        self.reserved_paths: set[str] = set()
        """Paths other modules serve (the RTVBP ingress): never the control protocol."""

    async def respond(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        error = request.match_info.http_exception
        if error is None:
            return await handler(request)
        if error.status == 405:
            allow = error.headers.get(hdrs.ALLOW, "")
            return json_response(
                {"error": "method not allowed"}, status=405, headers={hdrs.ALLOW: allow}
            )
        if (
            self.websocket_handler is not None
            and request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
            and request.path not in self.reserved_paths
        ):
            return await self.websocket_handler(request)
        return json_response({"error": "not found"}, status=404)


_FALLBACK = web.AppKey("callbridge_fallback", Fallback)


def install_fallback(app: web.Application) -> Fallback:
    """The application's fallback, added as a middleware on first use."""
    if _FALLBACK in app:
        return app[_FALLBACK]
    fallback = Fallback()
    app[_FALLBACK] = fallback

    @web.middleware
    async def unmatched_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await fallback.respond(request, handler)

    app.middlewares.append(unmatched_requests)
    return fallback


class _HttpApi:
    def __init__(self, manager: SessionManager) -> None:
        self._manager = manager

    async def health(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def metrics(self, request: web.Request) -> web.Response:
        try:
            body = generate_latest(self._manager.metrics.registry)
        except Exception:
            log.exception("metrics encoding failed")
            return json_response({"error": "metrics encoding failed"}, status=500)
        return web.Response(body=body, headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_PLAIN_0_0_4})

    async def sessions(self, request: web.Request) -> web.Response:
        return json_response([session.summary() for session in self._manager.sessions()])

    async def session(self, request: web.Request) -> web.Response:
        try:
            session_id = str(uuid.UUID(request.match_info["session_id"]))
        except ValueError:
            return json_response({"error": "invalid session ID"}, status=400)
        session = self._manager.get(session_id)
        if session is None or not session.alive:
            return json_response({"error": "session not found"}, status=404)
        session.touch()
        return json_response(session.info())


def setup_http_api(app: web.Application, manager: SessionManager, settings: Settings) -> None:
    """Add `/health`, `/metrics`, `/sessions` and `/sessions/{id}` (GET only) to `app`."""
    install_fallback(app)
    api = _HttpApi(manager)
    app.router.add_get("/health", api.health, allow_head=False)
    app.router.add_get("/metrics", api.metrics, allow_head=False)
    app.router.add_get("/sessions", api.sessions, allow_head=False)
    app.router.add_get("/sessions/{session_id}", api.session, allow_head=False)
