"""The one aiohttp server: RTVBP ingress, control WebSocket and HTTP API on one port.

Routes: the RTVBP ingress path of the SDK application (voice peers), the media ingress path
(voice peers joining media sessions, `rtvbp_ingress`), `/health`, `/metrics`,
`/sessions[/{id}]`, and the rtpbridge-compatible control WebSocket on every other path.
`serve()` runs until SIGTERM/SIGINT. The first signal starts a graceful drain: new connections
are refused, calls and media sessions in progress continue until they end or until
`shutdown_max_wait_secs` (new media sessions get SHUTTING_DOWN); a second signal stops at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import ssl
import time
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from callbridge.engine.manager import SessionManager
from callbridge.rtvbp.application import Application
from callbridge.rtvbp.auth import OriginPolicy
from callbridge.server.browser_page import setup_browser_page
from callbridge.server.config import RtvbpSettings, Settings, parse_listen_address
from callbridge.server.control import control_server, setup_control, shutdown_control
from callbridge.server.control_access import setup_control_access
from callbridge.server.http_api import setup_http_api
from callbridge.server.http_recordings import setup_http_recordings
from callbridge.server.rtvbp_fast import start_fast_listener
from callbridge.server.rtvbp_ingress import INGRESS, rtvbp_authenticator, setup_rtvbp_ingress

__all__ = [
    "MANAGER",
    "app_runner",
    "build_app",
    "configure_application",
    "exposure_warnings",
    "rtvbp_authenticator",
    "serve",
    "server_ssl_context",
    "setup_media_server",
]

logger = logging.getLogger("callbridge.server")


class _RefusedRequestFilter(logging.Filter):
    """aiohttp logs every malformed request it answers with 400 as "Error handling request" at
    ERROR with a traceback, so anyone who reaches the port could flood the log. Such a record
    becomes one line at INFO (or below); errors of handlers pass unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else None
        logger.log(
            min(record.levelno, logging.INFO),
            "malformed HTTP request from %s refused (%s)",
            remote,
            type(error).__name__,
        )
        return False


HTTP_LOGGER = logging.getLogger("callbridge.server.http")
"""What aiohttp's request handlers log (instead of `aiohttp.server`)."""
HTTP_LOGGER.addFilter(_RefusedRequestFilter())

MANAGER = web.AppKey("manager", SessionManager)


def configure_application(application: Application, settings: RtvbpSettings) -> None:
    """Apply the server's RTVBP policy (auth, origins, keepalive, limits) to `application`."""
    application.authenticator = rtvbp_authenticator(settings)
    application.origins = (
        OriginPolicy(settings.allowed_origins) if settings.allowed_origins else None
    )
    application.heartbeat_s = settings.heartbeat_secs or None
    application.request_timeout_s = settings.request_timeout_secs
    application.max_message_bytes = settings.max_message_kb * 1024


def build_app(settings: Settings, application: Application) -> web.Application:
    """The aiohttp application: `application` on the RTVBP path, voice peers joining media
    sessions on the media path, the media session server (control WebSocket and HTTP API)
    everywhere else. The media clock starts with the app."""
    configure_application(application, settings.rtvbp)
    application.webrtc = msgspec.structs.replace(  # rtvbp.webrtc.v1 media where RTP binds
        application.webrtc,
        media_address=settings.media_ip,
        consent_timeout_s=settings.webrtc_consent_timeout_secs,
        port_range=settings.rtp_port_range,
    )
    manager = SessionManager(settings.engine_config())
    app = web.Application()
    app[MANAGER] = manager
    app.router.add_get(settings.rtvbp.path, application.websocket_handler)
    setup_media_server(app, manager, settings)

    async def start_engine(app: web.Application) -> None:
        await manager.start()

    app.on_startup.append(start_engine)
    return app


def setup_media_server(app: web.Application, manager: SessionManager, settings: Settings) -> None:
    """The media session server on `app`: control-plane access first, then the HTTP API, the
    control WebSocket and the media ingress."""
    setup_control_access(app, settings)
    if settings.browser_page:
        setup_browser_page(app)
    setup_http_api(app, manager, settings)
    setup_http_recordings(app, settings)
    setup_control(app, manager, settings)
    setup_rtvbp_ingress(app, manager, settings, control_server(app).announce_call)


def app_runner(app: web.Application, **options: Any) -> web.AppRunner:
    """An AppRunner whose request handlers log through `HTTP_LOGGER`, without an access log (it
    would write query strings, where a careless client may put a token)."""
    return web.AppRunner(app, logger=HTTP_LOGGER, access_log=None, **options)


def server_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The listener's TLS context (TLS 1.2 or later), or None without a certificate."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return context


def exposure_warnings(settings: Settings, host: str, tls: bool) -> list[str]:
    """What is unprotected on a listener bound to `host` (nothing on loopback)."""
    try:
        if ipaddress.ip_address(host).is_loopback:
            return []
    except ValueError:
        pass
    warnings = []
    if not settings.control.authentication:
        warnings.append(
            f"control plane on {host} has NO authentication: anyone who reaches this address"
            " controls every media session; set control.tokens or control.jwt_public_keys"
        )
    if settings.rtvbp.auth == "none":
        warnings.append(
            f"RTVBP ingress on {host} has NO authentication: anyone who reaches this address can"
            " place calls; set rtvbp.auth"
        )
    if not tls:
        warnings.append(
            f"listening on {host} WITHOUT TLS: tokens and control messages cross the network"
            " in clear text; set tls_cert_file and tls_key_file"
        )
    return warnings


async def serve(
    settings: Settings,
    application: Application,
    *,
    on_ready: Callable[[list[tuple[str, int]]], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Listen on every configured address until a signal (or `stop`) and a graceful drain."""
    app = build_app(settings, application)
    ssl_context = server_ssl_context(settings)
    runner = app_runner(app, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    stop = stop or asyncio.Event()
    signals = _SignalState(stop)
    signals.install()
    fast = None
    try:
        for address in settings.listen:
            host, port = parse_listen_address(address)
            listener = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=ssl_context)
            await listener.start()
        bound = [(str(info[0]), int(info[1])) for info in runner.addresses]
        http, websocket = ("https", "wss") if ssl_context else ("http", "ws")
        for host, port in bound:
            shown = f"[{host}]" if ":" in host else host
            logger.info(
                "listening on %s://%s:%d (RTVBP application %s://%s:%d%s, media sessions"
                " %s://%s:%d%s)",
                http,
                shown,
                port,
                websocket,
                shown,
                port,
                settings.rtvbp.path,
                websocket,
                shown,
                port,
                settings.rtvbp.media_path,
            )
            for warning in exposure_warnings(settings, host, ssl_context is not None):
                logger.warning("%s", warning)
        fast = await start_fast_listener(settings, application, app[INGRESS], ssl_context)
        for host, port in [] if fast is None else fast.addresses:
            shown = f"[{host}]" if ":" in host else host
            logger.info(
                "fast RTVBP listener on %s://%s:%d (%s and %s)",
                websocket,
                shown,
                port,
                settings.rtvbp.path,
                settings.rtvbp.media_path,
            )
        if on_ready is not None:
            on_ready(bound)
        await stop.wait()
        logger.info("shutting down: refusing new connections, draining calls in progress")
        if fast is not None:
            fast.stop_accepting()
        for site in list(runner.sites):
            await site.stop()
        draining: asyncio.Future[Any] = asyncio.gather(
            _drain(application, settings.shutdown_max_wait_secs, signals.forced),
            shutdown_control(app),
        )
        forced: asyncio.Future[Any] = asyncio.create_task(signals.forced.wait())
        await asyncio.wait({draining, forced}, return_when=asyncio.FIRST_COMPLETED)
        forced.cancel()
        if not draining.done():
            draining.cancel()
            await asyncio.gather(draining, return_exceptions=True)
            await app[MANAGER].shutdown(0)
    finally:
        signals.remove()
        if fast is not None:
            await fast.close()
        await runner.cleanup()
        logger.info("stopped")


async def _drain(application: Application, max_wait_s: float, forced: asyncio.Event) -> None:
    deadline = time.monotonic() + max_wait_s
    next_report = 0.0
    while application.active_calls and not forced.is_set():
        now = time.monotonic()
        if now >= deadline:
            logger.warning(
                "drain timed out after %.0f s with %d calls still up",
                max_wait_s,
                len(application.active_calls),
            )
            return
        if now >= next_report:
            logger.info("waiting for %d calls to end", len(application.active_calls))
            next_report = now + 10
        try:
            await asyncio.wait_for(forced.wait(), timeout=0.5)
        except TimeoutError:
            pass


class _SignalState:
    """First SIGTERM/SIGINT: graceful stop; second: stop draining now."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop
        self.forced = asyncio.Event()
        self._installed: list[int] = []

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for number in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(number, self._on_signal)
                self._installed.append(number)
            except (NotImplementedError, RuntimeError):
                pass

    def remove(self) -> None:
        loop = asyncio.get_running_loop()
        for number in self._installed:
            loop.remove_signal_handler(number)
        self._installed.clear()

    def _on_signal(self) -> None:
        if self.stop.is_set():
            logger.warning("second signal: stopping now")
            self.forced.set()
        else:
            self.stop.set()
