"""The session manager of one worker: the facade the control server calls.

It owns the worker's one media clock, the RTP port allocator, the URL cache and the metrics,
and keeps the session table. Everything runs on one event loop, so plain counters are exact
under concurrency (`max_sessions` admits exactly N of any number of concurrent creates).

Orphaning (as in rtpbridge): when a control connection drops, its session keeps its media and
waits `disconnect_timeout_s` for `attach`; the timer callback re-checks a generation counter,
so a timer from an earlier orphan episode never destroys a re-attached session.

Parking (incoming RTVBP calls): `park_session` makes a session that starts orphaned, for a
call that no controller owns yet; its timer is `rtvbp_park_timeout_s` and hangs the call up
("not claimed"). `serve_rtvbp_call` runs one incoming call (the server did the upgrade).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Final

from callbridge.engine.clock import MediaClock
from callbridge.engine.config import EngineConfig
from callbridge.engine.context import EngineContext
from callbridge.engine.downloads import DownloadCache
from callbridge.engine.errors import (
    MAX_SESSIONS_REACHED,
    SESSION_NOT_FOUND,
    SESSION_NOT_ORPHANED,
    SHUTTING_DOWN,
    EngineError,
)
from callbridge.engine.metrics import EngineMetrics
from callbridge.engine.ports import PortAllocator
from callbridge.engine.rtvbp_endpoint import webrtc_options
from callbridge.engine.rtvbp_incoming import CallListener, IncomingCall
from callbridge.engine.session import EventSink, MediaSession
from callbridge.rtvbp.transport_base import Transport
from callbridge.rtvbp.webrtc import answer_profile

__all__ = ["SessionManager"]

logger = logging.getLogger(__name__)

BACKGROUND_GRACE_S: Final = 1.0
"""Beyond the RTVBP close timeout, how long shutdown waits for background work to end."""


class SessionManager:
    """Creates, finds, orphans, re-attaches and destroys the media sessions of this worker."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.shutting_down = False
        self.metrics = EngineMetrics(rtpbridge_names=config.metrics_compat)
        self.clock = MediaClock(housekeeping_interval_s=config.housekeeping_interval_s)
        self.metrics.clock_skipped_frames = lambda: self.clock.stats.skipped_frames
        self.metrics.live_counters = self._live_counters
        self.ports = PortAllocator(*config.rtp_port_range)
        self.metrics.port_pairs_in_use = lambda: self.ports.in_use
        self.downloads = DownloadCache(
            config.cache_dir,
            max_concurrent=config.max_concurrent_downloads,
            max_bytes=config.max_file_download_bytes,
        )
        self.context = EngineContext(
            config=config,
            clock=self.clock,
            ports=self.ports,
            metrics=self.metrics,
            downloads=self.downloads,
            session_destroyed=self._session_destroyed,
        )
        self._sessions: dict[str, MediaSession] = {}
        self._orphan_timers: dict[str, asyncio.TimerHandle] = {}
        self._drained: asyncio.Event | None = None
        self._next_cache_cleanup = 0.0

    async def start(self) -> None:
        """Start the worker's 20 ms media clock (and empty the URL cache directory)."""
        self.downloads.prepare()
        self.clock.add_housekeeping(self._housekeeping)
        self.clock.start()

    async def shutdown(self, max_wait_s: float) -> None:
        """Refuse new sessions, destroy orphans now, wait up to `max_wait_s` for the rest.

        Sessions still alive after the wait are destroyed; then the clock stops.
        """
        self.shutting_down = True
        for session in list(self._sessions.values()):
            if session.state == "orphaned":
                await session.destroy("shutdown")
        if self._sessions and max_wait_s > 0:
            self._drained = asyncio.Event()
            try:
                await asyncio.wait_for(self._drained.wait(), max_wait_s)
            except TimeoutError:
                logger.warning("shutdown: %d sessions still active", len(self._sessions))
        for session in list(self._sessions.values()):
            await session.destroy("shutdown")
        await self._finish_background_tasks()
        self.clock.discard_housekeeping(self._housekeeping)
        self.clock.stop()
        self.context.close_forwarding()
        await self.downloads.close()

    # -- the facade ----------------------------------------------------------------------------

    def create_session(self, sink: EventSink | None) -> MediaSession:
        if self.shutting_down:
            raise EngineError(SHUTTING_DOWN, "Server is shutting down")
        limit = self.config.max_sessions
        if limit and len(self._sessions) >= limit:
            raise EngineError(MAX_SESSIONS_REACHED, f"Maximum sessions ({limit}) reached")
        if not self.clock.running:
            self.clock.add_housekeeping(self._housekeeping)
            self.clock.start()
        session = MediaSession(self.context, sink)
        self._sessions[session.id] = session
        self.metrics.sessions_total += 1
        self.metrics.sessions_active += 1
        return session

    def attach(self, session_id: str, sink: EventSink) -> MediaSession:
        session = self._sessions.get(session_id)
        if session is None or not session.alive:
            raise EngineError(SESSION_NOT_FOUND, f"Session {session_id} not found")
        if session.state != "orphaned":
            raise EngineError(SESSION_NOT_ORPHANED, "Session is bound to another connection")
        timer = self._orphan_timers.pop(session_id, None)
        if timer is not None:
            timer.cancel()
        session.bind(sink)
        return session

    def orphan(self, session: MediaSession) -> None:
        """The control connection of `session` dropped: start its disconnect timer."""
        self._orphan(session, self.config.disconnect_timeout_s, "session destroyed")

    def park_session(self) -> MediaSession:
        """A new orphaned session for an incoming call: `attach` claims it; unclaimed after
        `rtvbp_park_timeout_s`, it is destroyed and the call hung up with "not claimed"."""
        session = self.create_session(None)
        session.parked = True
        self._orphan(session, self.config.rtvbp_park_timeout_s, "not claimed")
        return session

    async def serve_rtvbp_call(
        self,
        transport: Transport,
        *,
        session_id: str | None,
        remote: str | None,
        on_parked: CallListener | None = None,
        profile_token: str | None = None,
    ) -> None:
        """Run one incoming RTVBP call (callbridge is the application) until it ends: it joins
        session `session_id`, or is parked (`on_parked` gets its `call.incoming` data).

        With `profile_token` ``rtvbp.webrtc.v1`` the peer's WebRTC offer is answered first
        (a refused offer ends the connection before anything joins or parks a session).
        """
        options = webrtc_options(self.config, self.config.rtvbp_initialize_timeout_s)
        answered = await answer_profile(transport, profile_token, options)
        if answered is None:
            return
        call = IncomingCall(
            self, answered, session_id=session_id, remote=remote, on_parked=on_parked
        )
        await call.run()

    def spawn(self, coroutine: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run `coroutine` as tracked background work (what an `IncomingCall` may spawn)."""
        return self.context.spawn(coroutine, name)

    def _orphan(self, session: MediaSession, timeout_s: float, reason: str) -> None:
        if not session.alive:
            return
        session.unbind()
        old = self._orphan_timers.pop(session.id, None)
        if old is not None:
            old.cancel()
        if self.shutting_down:
            session.teardown("shutdown")
            return
        generation = session.orphan_generation
        loop = asyncio.get_running_loop()
        self._orphan_timers[session.id] = loop.call_later(
            timeout_s, self._orphan_expired, session, generation, reason
        )

    def get(self, session_id: str) -> MediaSession | None:
        return self._sessions.get(session_id)

    def sessions(self) -> list[MediaSession]:
        return list(self._sessions.values())

    # -- internals -----------------------------------------------------------------------------

    def _orphan_expired(self, session: MediaSession, generation: int, reason: str) -> None:
        if session.orphan_generation != generation:
            return  # re-attached (and maybe orphaned again) since this timer was set
        self._orphan_timers.pop(session.id, None)
        if session.alive and session.state == "orphaned":
            session.teardown(reason)

    async def _finish_background_tasks(self) -> None:
        """Let RTVBP hang-ups finish (bounded), then cancel what is left."""
        tasks = set(self.context.tasks)
        if not tasks:
            return
        limit = self.config.rtvbp_close_timeout_s * 2 + BACKGROUND_GRACE_S
        _, pending = await asyncio.wait(tasks, timeout=limit)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def _session_destroyed(self, session_id: str) -> None:
        if self._sessions.pop(session_id, None) is None:
            return
        timer = self._orphan_timers.pop(session_id, None)
        if timer is not None:
            timer.cancel()
        self.metrics.sessions_active -= 1
        if not self._sessions and self._drained is not None:
            self._drained.set()

    def _live_counters(self) -> tuple[int, int]:
        malformed = unexpected = 0
        for session in self._sessions.values():
            for endpoint in session.endpoints.values():
                endpoint_malformed, endpoint_unexpected = endpoint.packet_counters()
                malformed += endpoint_malformed
                unexpected += endpoint_unexpected
        return malformed, unexpected

    def _housekeeping(self, now: float) -> None:
        """The worker's own slow timer (each session has its own on the clock)."""
        if now >= self._next_cache_cleanup:
            self._next_cache_cleanup = now + self.config.cache_cleanup_interval_s
            self.downloads.cleanup(now)
