"""The fast RTVBP listener (`rtvbp.fast_listen`): both RTVBP paths on picows.

It answers exactly what the shared aiohttp listener answers on the same paths: the SDK
application on `rtvbp.path`, the media ingress on `rtvbp.media_path[/{session_id}]` (400 for a
malformed id, 404 for an unknown session, 503 while shutting down or at `max_sessions`, as
JSON), then the Origin check, authentication and subprotocol negotiation of `upgrade`. Every
other path is 404: HTTP and the control WebSocket are served by the shared listener only.
"""

from __future__ import annotations

import json
import ssl

from callbridge.rtvbp.application import Application
from callbridge.rtvbp.picows_listener import (
    FastListener,
    Upgrade,
    UpgradeRequest,
    check_request,
    start_listener,
)
from callbridge.rtvbp.picows_websocket import PicowsTransport
from callbridge.rtvbp.upgrade import UpgradeRefused
from callbridge.server.config import Settings, parse_listen_address
from callbridge.server.rtvbp_ingress import RtvbpIngress, parse_session_id

__all__ = ["start_fast_listener"]


def _json_refusal(status: int, error: str) -> UpgradeRefused:
    return UpgradeRefused(status, json.dumps({"error": error}), content_type="application/json")


class _Router:
    """Decides each upgrade on the fast listener."""

    def __init__(self, settings: Settings, application: Application, ingress: RtvbpIngress):
        self.application = application
        self.ingress = ingress
        self.application_path = settings.rtvbp.path
        self.media_path = settings.rtvbp.media_path.rstrip("/") or "/"

    async def __call__(self, request: UpgradeRequest) -> Upgrade:
        path = request.head.path
        if path == self.application_path:
            return await self.application.decide_upgrade(request)
        if path == self.media_path:
            return await self._media(request, None)
        prefix = self.media_path.rstrip("/") + "/"
        if path.startswith(prefix) and "/" not in path[len(prefix) :]:
            session_id = parse_session_id(path[len(prefix) :])
            if session_id is None:
                raise _json_refusal(400, "invalid session ID")
            return await self._media(request, session_id)
        raise UpgradeRefused(404, "Not Found")

    async def _media(self, request: UpgradeRequest, session_id: str | None) -> Upgrade:
        ingress = self.ingress
        refused = ingress.refusal(session_id)
        if refused is not None:
            raise _json_refusal(*refused)
        profile, auth = await check_request(
            request, authenticator=ingress.authenticator, origins=ingress.origins
        )

        async def serve(transport: PicowsTransport) -> None:
            await ingress.serve_call(
                transport, profile_token=profile.token, remote=request.remote, session_id=session_id
            )

        settings = ingress.settings
        return Upgrade(
            profile,
            auth,
            serve,
            heartbeat_s=settings.heartbeat_secs or None,
            max_message_bytes=settings.max_message_kb * 1024,
        )


async def start_fast_listener(
    settings: Settings,
    application: Application,
    ingress: RtvbpIngress,
    ssl_context: ssl.SSLContext | None,
) -> FastListener | None:
    """The fast listener on `rtvbp.fast_listen` (None when that is empty)."""
    if not settings.rtvbp.fast_listen:
        return None
    return await start_listener(
        _Router(settings, application, ingress),
        [parse_listen_address(address) for address in settings.rtvbp.fast_listen],
        ssl_context=ssl_context,
    )
