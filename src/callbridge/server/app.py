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
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from callbridge.engine.manager import SessionManager
from callbridge.rtvbp.application import Application
from callbridge.rtvbp.auth import OriginPolicy
from callbridge.server.config import RtvbpSettings, Settings, parse_listen_address
from callbridge.server.control import control_server, setup_control, shutdown_control
from callbridge.server.http_api import setup_http_api
from callbridge.server.rtvbp_ingress import rtvbp_authenticator, setup_rtvbp_ingress

__all__ = ["MANAGER", "build_app", "configure_application", "rtvbp_authenticator", "serve"]

logger = logging.getLogger("callbridge.server")

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
    manager = SessionManager(settings.engine_config())
    app = web.Application()
    app[MANAGER] = manager
    app.router.add_get(settings.rtvbp.path, application.websocket_handler)
    setup_http_api(app, manager, settings)
    setup_control(app, manager, settings)
    setup_rtvbp_ingress(app, manager, settings, control_server(app).announce_call)

    async def start_engine(app: web.Application) -> None:
        await manager.start()

    app.on_startup.append(start_engine)
    return app


async def serve(
    settings: Settings,
    application: Application,
    *,
    on_ready: Callable[[list[tuple[str, int]]], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Listen on every configured address until a signal (or `stop`) and a graceful drain."""
    app = build_app(settings, application)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    stop = stop or asyncio.Event()
    signals = _SignalState(stop)
    signals.install()
    try:
        for address in settings.listen:
            host, port = parse_listen_address(address)
            await web.TCPSite(runner, host, port, reuse_address=True).start()
        bound = [(str(info[0]), int(info[1])) for info in runner.addresses]
        for host, port in bound:
            shown = f"[{host}]" if ":" in host else host
            logger.info(
                "listening on http://%s:%d (RTVBP application ws://%s:%d%s, media sessions"
                " ws://%s:%d%s)",
                shown,
                port,
                shown,
                port,
                settings.rtvbp.path,
                shown,
                port,
                settings.rtvbp.media_path,
            )
        if on_ready is not None:
            on_ready(bound)
        await stop.wait()
        logger.info("shutting down: refusing new connections, draining calls in progress")
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
