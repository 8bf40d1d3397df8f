"""Who may use the control plane (the control WebSocket and the HTTP API), decided before any
handler runs: a refused WebSocket upgrade is answered with HTTP 401 or 403 and creates nothing.

Every path is guarded except the RTVBP ingress paths, which authenticate voice peers themselves,
`/health` (a liveness probe that reveals nothing) and, when the settings say so, `/metrics`.
A guarded request:

1. with an Origin header (a browser) whose Origin is not allowed: 403 (with `browser_page` on,
   the page's own origin is allowed when Host is an address, see `ControlAccess._own_page`);
2. when authentication is on, without an acceptable bearer token: 401 (`Authorization: Bearer`,
   or for browsers the `bearer.<base64url>` WebSocket subprotocol; never the query string, which
   ends up in proxy logs and browser history);
3. with a read-only token, on the control WebSocket or with a method that changes state: 403.

Neither the logs nor the responses ever contain a token; they say what was wrong with it.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from aiohttp import hdrs, web

from callbridge.rtvbp.auth import (
    AuthRequest,
    BabelforceCloudValidator,
    OriginPolicy,
    StaticTokenAuthenticator,
    bearer_token,
)
from callbridge.rtvbp.errors import AuthError
from callbridge.server.browser_page import BROWSER_PAGE_PATH
from callbridge.server.config import ControlSettings, Settings
from callbridge.server.http_api import json_response

__all__ = ["ControlAuthenticator", "Scope", "setup_control_access"]

log = logging.getLogger(__name__)

OPEN_PATHS: Final = frozenset({"/health"})
READ_METHODS: Final = frozenset({hdrs.METH_GET, hdrs.METH_HEAD, hdrs.METH_OPTIONS})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Scope(enum.IntEnum):
    """What a token allows; a higher scope includes the lower ones."""

    READ = 1
    """The HTTP API's reads (GET, HEAD)."""
    CONTROL = 2
    """Everything: the control WebSocket and every HTTP method."""


class ControlAuthenticator:
    """Maps a bearer token to its scope: static tokens first, then the JWT validator."""

    def __init__(self, settings: ControlSettings) -> None:
        self._static: list[tuple[StaticTokenAuthenticator, Scope]] = [
            (StaticTokenAuthenticator(token.get_secret_value() for token in tokens), scope)
            for tokens, scope in (
                (settings.tokens, Scope.CONTROL),
                (settings.read_tokens, Scope.READ),
            )
            if tokens
        ]
        self._jwt: BabelforceCloudValidator | None = None
        if settings.jwt_public_keys:
            any_audience = "*" in settings.jwt_audiences
            self._jwt = BabelforceCloudValidator(
                settings.jwt_public_keys,
                accounts=() if any_audience else settings.jwt_audiences,
                allow_any_account=any_audience,
                issuer=settings.jwt_issuer,
                subject=settings.jwt_subject,
            )
        self._scopes = {
            settings.jwt_control_scope: Scope.CONTROL,
            settings.jwt_read_scope: Scope.READ,
        }

    def __repr__(self) -> str:
        return f"ControlAuthenticator(static={len(self._static)}, jwt={self._jwt is not None})"

    async def scope(self, request: AuthRequest) -> Scope | None:
        """The scope `request`'s token grants: AuthError (401) for a token that is not accepted,
        None (403) for a valid JWT that grants no control-plane scope."""
        token, _ = bearer_token(request)
        for authenticator, scope in self._static:
            try:
                await authenticator(request)
            except AuthError:
                continue
            return scope
        if self._jwt is None or token.count(".") != 2:  # a JWT is header.claims.signature
            raise AuthError("bearer token not accepted")
        return self._jwt_scope(self._jwt.validate(token))

    def _jwt_scope(self, claims: Mapping[str, Any]) -> Scope | None:
        """The highest scope named in the ``scope`` claim (space-separated, or a list)."""
        claimed = claims.get("scope", "")
        names = claimed.split() if isinstance(claimed, str) else claimed
        if not isinstance(names, list):
            return None
        granted = [
            self._scopes[name] for name in names if isinstance(name, str) and name in self._scopes
        ]
        return max(granted, default=None)


class ControlAccess:
    """The middleware's policy: which paths it guards, the Origin allowlist, the tokens."""

    def __init__(self, settings: Settings) -> None:
        control = settings.control
        self.origins = OriginPolicy(control.allowed_origins)
        self.authenticator = ControlAuthenticator(control) if control.authentication else None
        self.open_paths = set(OPEN_PATHS)
        if control.public_metrics:
            self.open_paths.add("/metrics")
        self.browser_page = settings.browser_page
        if settings.browser_page:
            self.open_paths.add(BROWSER_PAGE_PATH)
        media_path = settings.rtvbp.media_path.rstrip("/")
        self._rtvbp_paths = {settings.rtvbp.path, media_path}
        self._rtvbp_prefix = media_path + "/"

    def guards(self, path: str) -> bool:
        """False for the RTVBP ingress paths, which have their own authentication."""
        return path not in self._rtvbp_paths and not path.startswith(self._rtvbp_prefix)

    async def check(self, request: web.Request) -> web.Response | None:
        """The refusal for `request`, or None when it may proceed."""
        if request.path in self.open_paths:
            return None
        origin = request.headers.get(hdrs.ORIGIN)
        if not self.origins.check(origin) and not self._own_page(request, origin):
            return _refuse(request, 403, "origin not allowed")
        if self.authenticator is None:
            return None
        upgrade = request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
        needed = Scope.READ if request.method in READ_METHODS and not upgrade else Scope.CONTROL
        auth_request = AuthRequest(
            headers=request.headers,
            offered_subprotocols=offered_subprotocols(request),
            remote=request.remote,
            path=request.path,
        )
        try:
            granted = await self.authenticator.scope(auth_request)
        except AuthError as error:
            return _refuse(request, 401, str(error))
        if granted is None:
            return _refuse(request, 403, "token grants no control-plane scope")
        if granted < needed:
            return _refuse(request, 403, "read-only token")
        return None

    def _own_page(self, request: web.Request, origin: str | None) -> bool:
        """True for the browser page served by this listener: its Origin is the request's own
        scheme and Host. Only when Host is an IP address or localhost: a hostile site can point
        its own DNS name at this address (DNS rebinding) and then be same-origin, so pages
        reached by a DNS name need that origin in `control.allowed_origins`."""
        if not self.browser_page or origin is None:
            return False
        if origin.strip().rstrip("/").lower() != f"{request.scheme}://{request.host}".lower():
            return False
        hostname = request.url.host or ""
        if hostname.lower() == "localhost":
            return True
        try:
            ipaddress.ip_address(hostname.strip("[]"))
        except ValueError:
            return False
        return True


def offered_subprotocols(request: web.Request) -> list[str]:
    """Every token of every Sec-WebSocket-Protocol line, in order."""
    return [
        token.strip()
        for line in request.headers.getall(hdrs.SEC_WEBSOCKET_PROTOCOL, ())
        for token in line.split(",")
        if token.strip()
    ]


def _refuse(request: web.Request, status: int, reason: str) -> web.Response:
    log.info(
        "control-plane %s %s from %s refused (%d): %s",
        request.method,
        request.path[:200],
        request.remote,
        status,
        reason,
    )
    headers: dict[str, str] = {}
    if status == 401:
        headers[hdrs.WWW_AUTHENTICATE] = 'Bearer realm="callbridge"'
    elif reason != "origin not allowed":
        headers[hdrs.WWW_AUTHENTICATE] = 'Bearer realm="callbridge", error="insufficient_scope"'
    error = "unauthorized" if status == 401 else "forbidden"
    return json_response({"error": error, "reason": reason}, status=status, headers=headers)


def setup_control_access(app: web.Application, settings: Settings) -> ControlAccess:
    """Guard the control plane of `app`. The middleware goes first, so it runs before anything
    routes a request (the fallback sends unmatched WebSocket upgrades to the control protocol)."""
    access = ControlAccess(settings)

    @web.middleware
    async def control_access(request: web.Request, handler: Handler) -> web.StreamResponse:
        if access.guards(request.path):
            refusal = await access.check(request)
            if refusal is not None:
                return refusal
        return await handler(request)

    app.middlewares.insert(0, control_access)
    return access
