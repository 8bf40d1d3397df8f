"""The media ingress: voice peers (babelforce Cloud, `callbridge call`) calling into media sessions.

* ``GET {media_path}``: the call is parked in a new session that a controller claims with
  `session.attach`; subscribed control connections get `call.incoming` (calls.subscribe).
* ``GET {media_path}/{session_id}``: the call joins that session (the controller created it
  and handed this URL to the telephony platform); its controller gets `call.incoming`.

Before the upgrade: 400 for a malformed session id, 404 for an unknown or ended session, 503
while shutting down or at `max_sessions`. Then exactly what the SDK path does: the Origin
check, the configured authentication (401), subprotocol negotiation (400). The call itself is
the engine's (`SessionManager.serve_rtvbp_call`); a peer that offered ``rtvbp.webrtc.v1`` alone
sends its WebRTC offer first and the leg's audio goes over WebRTC. A peer that negotiates
``rtvbp.demo.v1`` places no call: it gets the demo profile's echo service and nothing joins or
parks a session.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from callbridge.rtvbp.auth import (
    Authenticator,
    BabelforceCloudValidator,
    OriginPolicy,
    StaticTokenAuthenticator,
)
from callbridge.rtvbp.demo_profile import DEMO_PROFILE, serve_demo
from callbridge.rtvbp.profiles import SERVED_PROFILES
from callbridge.rtvbp.transport_base import Transport
from callbridge.rtvbp.websocket import accept
from callbridge.server.config import RtvbpSettings, Settings
from callbridge.server.http_api import install_fallback, json_response

if TYPE_CHECKING:
    from callbridge.engine.manager import SessionManager

__all__ = [
    "INGRESS",
    "RtvbpIngress",
    "parse_session_id",
    "rtvbp_authenticator",
    "setup_rtvbp_ingress",
]

logger = logging.getLogger(__name__)

CallAnnouncer = Callable[[dict[str, Any]], None]


def rtvbp_authenticator(settings: RtvbpSettings) -> Authenticator | None:
    """The authenticator the RTVBP settings ask for (None: no authentication)."""
    if settings.auth == "jwt":
        any_account = "*" in settings.allowed_accounts
        return BabelforceCloudValidator(
            settings.jwt_public_keys,
            accounts=() if any_account else settings.allowed_accounts,
            allow_any_account=any_account,
        )
    if settings.auth == "static":
        return StaticTokenAuthenticator(
            token.get_secret_value() for token in settings.static_tokens
        )
    return None


class RtvbpIngress:
    """The aiohttp handlers of the media ingress path."""

    def __init__(
        self, manager: SessionManager, settings: RtvbpSettings, announce: CallAnnouncer | None
    ) -> None:
        self.manager = manager
        self.settings = settings
        self.announce = announce
        self.authenticator = rtvbp_authenticator(settings)
        self.origins = OriginPolicy(settings.allowed_origins) if settings.allowed_origins else None

    def refusal(self, session_id: str | None) -> tuple[int, str] | None:
        """Why a call for `session_id` (None: a call to park) is refused before the upgrade:
        (HTTP status, error), or None. Shared by both listeners."""
        manager = self.manager
        if session_id is None:
            limit = manager.config.max_sessions
            if manager.shutting_down:
                return 503, "server is shutting down"
            if limit and len(manager.sessions()) >= limit:
                return 503, "too many sessions"
            return None
        session = manager.get(session_id)
        if session is None or not session.alive:
            return 404, "session not found"
        return None

    async def serve_call(
        self,
        transport: Transport,
        *,
        profile_token: str | None,
        remote: str | None,
        session_id: str | None,
    ) -> None:
        """Serve one upgraded connection (either listener): the call, or the demo echo."""
        if profile_token == DEMO_PROFILE:  # no call: nothing joins or parks a session
            await serve_demo(transport, request_timeout_s=self.settings.request_timeout_secs)
            return
        await self.manager.serve_rtvbp_call(
            transport,
            session_id=session_id,
            remote=remote,
            on_parked=self.announce,
            profile_token=profile_token,
        )

    async def park(self, request: web.Request) -> web.StreamResponse:
        """A call for a new session that a controller will claim."""
        return await self._serve(request, None)

    async def join(self, request: web.Request) -> web.StreamResponse:
        """A call for the session named in the path."""
        session_id = parse_session_id(request.match_info["session_id"])
        if session_id is None:
            return json_response({"error": "invalid session ID"}, status=400)
        return await self._serve(request, session_id)

    async def _serve(self, request: web.Request, session_id: str | None) -> web.StreamResponse:
        refused = self.refusal(session_id)
        if refused is not None:
            return json_response({"error": refused[1]}, status=refused[0])
        settings = self.settings
        accepted = await accept(
            request,
            supported_profiles=SERVED_PROFILES,
            authenticator=self.authenticator,
            origins=self.origins,
            heartbeat_s=settings.heartbeat_secs or None,
            max_message_bytes=settings.max_message_kb * 1024,
        )
        await self.serve_call(
            accepted.transport,
            profile_token=accepted.profile.token,
            remote=accepted.remote,
            session_id=session_id,
        )
        return accepted.response


def parse_session_id(text: str) -> str | None:
    """The canonical form of a session id from a URL path, or None when it is not a UUID."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


INGRESS = web.AppKey("rtvbp_ingress", RtvbpIngress)


def setup_rtvbp_ingress(
    app: web.Application,
    manager: SessionManager,
    settings: Settings,
    announce: CallAnnouncer | None = None,
) -> RtvbpIngress:
    """Serve the media ingress on `settings.rtvbp.media_path`; `announce` gets every parked
    call's `call.incoming` data (the control server's `announce_call`)."""
    ingress = app[INGRESS] = RtvbpIngress(manager, settings.rtvbp, announce)
    path = settings.rtvbp.media_path.rstrip("/") or "/"
    app.router.add_get(path, ingress.park, allow_head=False)
    app.router.add_get(f"{path.rstrip('/')}/{{session_id}}", ingress.join, allow_head=False)
    install_fallback(app).reserved_paths.add(path)
    return ingress
