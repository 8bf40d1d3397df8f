"""A media session: its endpoints, routing, events, timeouts, and the generic control methods.

All methods run on the worker's event loop; there is no task per session. The media clock calls
`_on_tick` every 20 ms while the session has work every frame (generators, jitter buffers,
digit injection, mixing; a session that only forwards packets natively has none),
`_on_periodic` every tenth frame while it has RTP endpoints (RTCP reports), and `housekeeping`
about once a second (timeouts, DTMF ends), each at a phase of its own.

The session names no endpoint kind: each kind's module creates its endpoints and adds them
through `slot()`; what varies by kind is a method of the endpoint. Events go to the `EventSink`
of the bound control connection; while orphaned they are discarded. Times are monotonic seconds.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from callbridge.engine.context import EngineContext
from callbridge.engine.dtmf_crossing import DtmfCrossing
from callbridge.engine.endpoint import Endpoint
from callbridge.engine.errors import (
    INVALID_PARAMS,
    SESSION_GONE,
    SESSION_NOT_FOUND,
    EngineError,
    endpoint_error,
)
from callbridge.engine.metrics import EngineMetrics
from callbridge.engine.pipeline import FrameConsumer
from callbridge.engine.plan import MediaPlan, build_plan
from callbridge.engine.routing import build_routing

__all__ = [
    "CRITICAL_EVENTS",
    "EndpointSlot",
    "EventSink",
    "MediaSession",
    "SessionObserver",
    "find_target",
]

EventSink = Callable[[str, dict[str, Any], bool], None]
"""(event name, data, critical) -> None; never blocks, never raises."""

CRITICAL_EVENTS: Final = frozenset(
    {
        "endpoint.state_changed",
        "recording.stopped",
        "endpoint.file.finished",
        "session.idle_timeout",
        "session.empty_timeout",
        "endpoint.rtvbp.ended",
        "call.incoming",
    }
)
"""Events queued ahead of the others and dropped last when a controller falls behind."""

MAX_ENDPOINTS_MESSAGE: Final = "MAX_ENDPOINTS_REACHED"
_PERIODIC_FRAMES: Final = 10
"""Endpoints with periodic work (RTCP reports, 5 s apart) are called every tenth frame."""

logger = logging.getLogger(__name__)


class SessionObserver(Protocol):
    """Session-level features that follow endpoints (recordings, detectors) implement this."""

    def endpoint_leaving(self, endpoint: Endpoint, reason: str) -> None:
        """`endpoint` is about to leave the session; `reason` is "endpoint_removed" (any removal)
        or what the caller of `remove` says (e.g. "endpoint_transferred")."""

    def session_ending(self, reason: str) -> None:
        """The session is being destroyed (`reason` as given to `teardown`)."""


def find_target(
    session: MediaSession,
    target_session_id: str,
    find_session: Callable[[str], MediaSession | None],
    self_message: str,
) -> MediaSession:
    """The other live session a request of `session` names (a bridge, a transfer):
    INVALID_PARAMS `self_message` when it is `session` itself, SESSION_NOT_FOUND when it is
    missing or ended. The request counts as activity of `session`, which must be alive."""
    session.touch()
    session.check_alive()
    if target_session_id == session.id:
        raise EngineError(INVALID_PARAMS, self_message)
    target = find_session(target_session_id)
    if target is None or not target.alive:
        raise EngineError(SESSION_NOT_FOUND, f"Session {target_session_id} not found")
    return target


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class EndpointSlot:
    """One reserved endpoint place in a session (`MediaSession.reserve` or `slot`): filled
    by `add`, or given back by `release`."""

    __slots__ = ("_done", "_session")

    def __init__(self, session: MediaSession) -> None:
        self._session = session
        self._done = False

    def add(self, endpoint: Endpoint) -> None:
        """Put the created endpoint into the session (once) and re-route."""
        if self._done:
            raise RuntimeError("endpoint slot already used")
        self._done = True
        self._session._insert(endpoint)

    def adopt(self, endpoint: Endpoint) -> None:
        """Put a live endpoint from another session in (a transfer, after its `rehost`)."""
        if self._done:
            raise RuntimeError("endpoint slot already used")
        self._done = True
        self._session._insert(endpoint, moved=True)

    def release(self) -> None:
        """Give the place back unless an endpoint took it; idempotent."""
        if not self._done:
            self._done = True
            self._session._reserved -= 1


class MediaSession:
    """One session: endpoints, their routing, and the generic control methods."""

    def __init__(self, context: EngineContext, sink: EventSink | None) -> None:
        self.id = str(uuid.uuid4())
        self.context = context
        self.metrics: EngineMetrics = context.metrics
        self.state = "active"
        self.alive = True
        self.created_at = datetime.now(UTC)
        self.endpoints: dict[str, Endpoint] = {}
        self.plan = MediaPlan()
        self._sink = sink
        self._reserved = 0
        """Endpoint slots taken by creations still in progress."""
        now = time.monotonic()
        self._last_command = now
        self._empty_since: float | None = now
        self._tick = 0
        self._tickers: tuple[Endpoint, ...] = ()
        self._periodic: tuple[Endpoint, ...] = ()
        self._every_frame = False
        """`_on_tick` is on the media clock's every-frame list."""
        self.dtmf = DtmfCrossing(self.endpoints, self._destinations_of)
        self.orphan_generation = 0
        """Bumped on every orphan/attach so a stale disconnect timer does nothing."""
        self.parked = False
        """Created for an incoming RTVBP call that no controller has claimed yet."""
        self.end_reason = "session destroyed"
        """Why the session ended (the hang-up reason its RTVBP legs are given)."""
        self.variables: dict[str, Any] = {}
        """Session variables: RTVBP applications read and write them (session.get/set)."""
        self.observers: list[SessionObserver] = []
        self.recordings: list[dict[str, Any]] = []
        """The session.info entries of the active recordings (kept by the recorder)."""
        self._audio_taps: dict[str, list[tuple[int, FrameConsumer]]] = {}
        self.vad_active: set[str] = set()
        """Endpoints with voice activity detection running (kept by the VAD monitors)."""
        context.clock.add_housekeeping(self.housekeeping)

    # -- binding and events ------------------------------------------------------------------

    def bind(self, sink: EventSink) -> None:
        """A control connection took the session (create or attach)."""
        self._sink = sink
        self.state = "active"
        self.parked = False
        self.orphan_generation += 1
        self.touch()

    def unbind(self) -> None:
        """The control connection dropped: events are discarded until the next attach."""
        self._sink = None
        self.state = "orphaned"
        self.orphan_generation += 1

    def emit(self, name: str, data: dict[str, Any]) -> None:
        """Send an event to the bound connection, if any."""
        sink = self._sink
        if sink is None or not self.alive:
            return
        try:
            sink(name, data, name in CRITICAL_EVENTS)
        except Exception:
            logger.exception("event sink raised for %s", name)

    def touch(self) -> None:
        """A command counts as activity for the idle timeout."""
        self._last_command = time.monotonic()

    # -- description -------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """The session.list entry; `calls` lists the calls (RTVBP legs) it holds, if any."""
        summary: dict[str, Any] = {
            "session_id": self.id,
            "state": self.state,
            "endpoint_count": len(self.endpoints),
            "created_at": _rfc3339(self.created_at),
        }
        calls = [
            call
            for endpoint in self.endpoints.values()
            if (call := endpoint.call_summary()) is not None
        ]
        if calls:
            summary["calls"] = calls
        return summary

    def info(self) -> dict[str, Any]:
        self.touch()
        return {
            "session_id": self.id,
            "state": self.state,
            "created_at": _rfc3339(self.created_at),
            "endpoints": [endpoint.info() for endpoint in self.endpoints.values()],
            "recordings": list(self.recordings),
            "vad_active": sorted(self.vad_active),
        }

    # -- endpoint bookkeeping (the host interface) -------------------------------------------

    def check_alive(self) -> None:
        """SESSION_GONE once the session is destroyed."""
        if not self.alive:
            raise EngineError(SESSION_GONE, "Session has been destroyed")

    def reserve(self) -> EndpointSlot:
        """One endpoint place for an endpoint being created; ENDPOINT_ERROR
        `MAX_ENDPOINTS_REACHED` when the session is full (reserved places count)."""
        self.check_alive()
        limit = self.context.config.max_endpoints_per_session
        if limit and len(self.endpoints) + self._reserved >= limit:
            raise endpoint_error(MAX_ENDPOINTS_MESSAGE)
        self._reserved += 1
        return EndpointSlot(self)

    @contextmanager
    def slot(self) -> Iterator[EndpointSlot]:
        """`reserve` for the block: the place is given back if the block ends without `add`."""
        place = self.reserve()
        try:
            yield place
        finally:
            place.release()

    def _insert(self, endpoint: Endpoint, *, moved: bool = False) -> None:
        self._reserved -= 1
        self.endpoints[endpoint.id] = endpoint
        self._empty_since = None
        if moved:
            self.dtmf.take_over(endpoint)
        else:
            self.metrics.endpoints_total += 1
            self.metrics.endpoints_active += 1
        self.rebuild_routing()

    def endpoint(self, endpoint_id: str) -> Endpoint:
        """The endpoint with this id; ENDPOINT_ERROR "Endpoint not found" otherwise."""
        self.check_alive()
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is None:
            raise endpoint_error("Endpoint not found")
        return endpoint

    def remove(self, endpoint: Endpoint, reason: str = "endpoint_removed") -> None:
        """Take an endpoint out and close it without any event of its own (failures, bridge
        partners); observers hear `reason` first, and its audio taps go with it."""
        if not self._take_out(endpoint, reason):
            return
        endpoint.close()
        self.metrics.endpoints_active -= 1
        if self.alive:
            self.rebuild_routing()

    def detach(self, endpoint: Endpoint, reason: str) -> None:
        """Take a live endpoint out *without* closing it, for another session to `adopt`
        (a transfer): observers hear `reason`, its audio taps and queued digits stay here."""
        if not self._take_out(endpoint, reason):
            return
        self.dtmf.hand_over(endpoint)
        self.rebuild_routing()

    def _take_out(self, endpoint: Endpoint, reason: str) -> bool:
        if endpoint.id not in self.endpoints:
            return False
        for observer in list(self.observers):
            observer.endpoint_leaving(endpoint, reason)
        del self.endpoints[endpoint.id]
        self._audio_taps.pop(endpoint.id, None)
        if not self.endpoints:
            self._empty_since = time.monotonic()
        return True

    def set_state(self, endpoint: Endpoint, new_state: str, *, event: bool = True) -> None:
        """Change an endpoint's state, emit `endpoint.state_changed`, rebuild routing."""
        old_state = endpoint.state
        if old_state == new_state:
            return
        endpoint.state = new_state
        if event:
            self.emit(
                "endpoint.state_changed",
                {"endpoint_id": endpoint.id, "old_state": old_state, "new_state": new_state},
            )
        self.rebuild_routing()

    def routing_changed(self) -> None:
        self.rebuild_routing()

    def route_digit(self, source: Endpoint, digit: str, duration_ms: int) -> None:
        self.dtmf.route(source, digit, duration_ms)
        self._update_clock()

    def rebuild_routing(self) -> None:
        """Recompute routes and the decoded path (on every add, remove, state change)."""
        if not self.alive:
            return
        table = build_routing(endpoint.route_node() for endpoint in self.endpoints.values())
        self.plan = build_plan(
            table,
            self.endpoints,
            self.plan,
            self.metrics,
            self.context.config.opus_complexity,
            self._audio_taps,
            self.context.config.opus_bit_rate,
        )
        endpoints = self.endpoints.values()
        self._tickers = tuple(endpoint for endpoint in endpoints if endpoint.needs_tick)
        periodic = tuple(endpoint for endpoint in endpoints if endpoint.has_periodic_work)
        if bool(periodic) != bool(self._periodic):
            if periodic:
                self.context.clock.add_periodic(self._on_periodic, _PERIODIC_FRAMES)
            else:
                self.context.clock.discard_periodic(self._on_periodic)
        self._periodic = periodic
        self._update_clock()

    def add_audio_tap(self, endpoint_id: str, rate: int, consumer: FrameConsumer) -> None:
        """Feed `consumer` every 20 ms frame the endpoint produces, resampled to `rate` Hz
        (the endpoint is decoded for it); re-routes."""
        self.endpoint(endpoint_id)
        self._audio_taps.setdefault(endpoint_id, []).append((rate, consumer))
        self.rebuild_routing()

    def remove_audio_tap(self, endpoint_id: str, consumer: FrameConsumer) -> None:
        """Stop feeding `consumer` (idempotent); re-routes."""
        taps = self._audio_taps.get(endpoint_id)
        if not taps:
            return
        taps[:] = [(rate, tap) for rate, tap in taps if tap is not consumer]
        if not taps:
            del self._audio_taps[endpoint_id]
        self.rebuild_routing()

    def _destinations_of(self, source_id: str) -> tuple[str, ...]:
        return self.plan.table.destinations.get(source_id, ())

    # -- media clock and housekeeping --------------------------------------------------------

    def _update_clock(self) -> None:
        """Be on the every-frame list exactly while there is work every frame."""
        wanted = self.alive and bool(self._tickers or self.plan.stages or not self.dtmf.idle)
        if wanted != self._every_frame:
            self._every_frame = wanted
            if wanted:
                self.context.clock.add(self._on_tick)
            else:
                self.context.clock.discard(self._on_tick)

    def _on_tick(self, now: float) -> None:
        if not self.alive:
            return
        tick = self._tick = self._tick + 1
        for endpoint in self._tickers:
            endpoint.tick(now)
        dtmf = self.dtmf
        if not dtmf.idle:
            dtmf.tick(now)
            if dtmf.idle:  # the one change of work that routing does not see
                self._update_clock()
        for stage in self.plan.stages:
            stage.run(tick, now)

    def _on_periodic(self, now: float) -> None:
        if self.alive:
            for endpoint in self._periodic:
                endpoint.periodic(now)

    def housekeeping(self, now: float) -> None:
        """Slow timers: DTMF ends, media timeouts, then idle and empty-session timeouts."""
        if not self.alive:
            return
        config = self.context.config
        media_timeout = config.media_timeout_s
        for endpoint in list(self.endpoints.values()):
            endpoint.housekeeping(now)
            if not endpoint.watches_media or endpoint.state != "connected":
                continue
            last = endpoint.last_inbound or endpoint.created_at
            elapsed = now - last
            if elapsed >= media_timeout and endpoint.media_timeout_reported_at != last:
                endpoint.media_timeout_reported_at = last
                self.emit(
                    "endpoint.media_timeout",
                    {"endpoint_id": endpoint.id, "duration_ms": int(elapsed * 1000)},
                )
        idle_timeout = config.session_idle_timeout_s
        if idle_timeout and now - self._last_activity(now) >= idle_timeout:
            self.emit(
                "session.idle_timeout",
                {"session_id": self.id, "idle_timeout_secs": _seconds(idle_timeout)},
            )
            self.teardown("session idle timeout")
            return
        empty_timeout = config.empty_session_timeout_s
        if empty_timeout and self._empty_since is not None and not self.endpoints:
            if now - self._empty_since >= empty_timeout:
                self.emit(
                    "session.empty_timeout",
                    {"session_id": self.id, "empty_timeout_secs": _seconds(empty_timeout)},
                )
                self.teardown("session empty timeout")

    def _last_activity(self, now: float) -> float:
        last = self._last_command
        for endpoint in self.endpoints.values():
            if endpoint.generates and endpoint.state == "playing":
                self._last_command = now  # playback is activity; idling counts from its end
                return now
            if endpoint.last_inbound > last:
                last = endpoint.last_inbound
        return last

    # -- generic control methods -------------------------------------------------------------

    async def accept_answer(self, endpoint_id: str, sdp: str) -> None:
        self.touch()
        self.endpoint(endpoint_id).accept_answer(sdp)

    async def remove_endpoint(self, endpoint_id: str) -> None:
        self.touch()
        endpoint = self.endpoint(endpoint_id)
        endpoint.removing()
        self.remove(endpoint)

    async def file_seek(self, endpoint_id: str, position_ms: int) -> None:
        self.touch()
        self.endpoint(endpoint_id).seek(position_ms)

    async def file_pause(self, endpoint_id: str) -> None:
        self.touch()
        self.endpoint(endpoint_id).pause()

    async def file_resume(self, endpoint_id: str) -> None:
        self.touch()
        self.endpoint(endpoint_id).resume()

    async def dtmf_inject(
        self, endpoint_id: str, digit: str, duration_ms: int, volume: int
    ) -> None:
        """Send one digit out of `endpoint_id` to its own peer (one injection at a time)."""
        self.touch()
        self.check_alive()
        if self.dtmf.busy:
            raise endpoint_error("DTMF injection already in progress")
        self.dtmf.inject(self.endpoint(endpoint_id), digit, duration_ms, volume)
        self._update_clock()

    def get_variables(self, keys: Sequence[str] | None) -> dict[str, Any]:
        """The session variables (all of them without keys; missing keys are left out)."""
        self.touch()
        if not keys:
            return dict(self.variables)
        return {key: self.variables[key] for key in keys if key in self.variables}

    def set_variables(self, data: Mapping[str, Any]) -> None:
        self.touch()
        self.variables.update(data)

    async def destroy(self, reason: str = "session destroyed") -> None:
        """Stop everything and free every socket; idempotent. Emits nothing.

        RTVBP legs are hung up with `reason` in the background (bounded, never waited for).
        """
        closing = list(self.endpoints.values())
        self.teardown(reason)
        for endpoint in closing:
            await endpoint.wait_closed()

    def teardown(self, reason: str = "session destroyed") -> None:
        """Synchronous destroy (timers and housekeeping use it); idempotent."""
        if not self.alive:
            return
        self.end_reason = reason
        for observer in list(self.observers):
            observer.session_ending(reason)
        self.alive = False
        self._sink = None
        clock = self.context.clock
        clock.discard(self._on_tick)
        clock.discard_periodic(self._on_periodic)
        clock.discard_housekeeping(self.housekeeping)
        self._every_frame = False
        for endpoint in list(self.endpoints.values()):
            endpoint.close()
        self.metrics.endpoints_active -= len(self.endpoints)
        self.endpoints.clear()
        self._tickers = ()
        self._periodic = ()
        self.dtmf.clear()
        self._audio_taps.clear()
        self.observers.clear()
        self.plan = MediaPlan()
        self.context.session_destroyed(self.id)


def _seconds(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value
