"""A media session: its endpoints, routing, events, timeouts, and the control methods.

All methods run on the worker's event loop, one at a time per call site; there is no task per
session. The media clock calls `_on_tick` every 20 ms (generators, jitter buffers, RTCP, mixing)
and the manager calls `housekeeping` about once a second (timeouts, DTMF ends).

Events go to the `EventSink` of the bound control connection; while orphaned they are
discarded (rtpbridge §2). Times are monotonic seconds.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar

from callbridge.engine.bridge_endpoint import BridgeEndpoint
from callbridge.engine.endpoint import Endpoint, check_direction
from callbridge.engine.errors import (
    INVALID_PARAMS,
    SESSION_GONE,
    SESSION_NOT_FOUND,
    EngineError,
    endpoint_error,
)
from callbridge.engine.file_endpoint import FileEndpoint
from callbridge.engine.plan import MediaPlan, build_plan
from callbridge.engine.routing import build_routing
from callbridge.engine.rtp_endpoint import RtpEndpoint
from callbridge.engine.rtvbp_endpoint import RtvbpEndpoint
from callbridge.engine.session_rtvbp import SessionRtvbp
from callbridge.engine.tone_endpoint import ToneEndpoint

if TYPE_CHECKING:
    from callbridge.engine.context import EngineContext

__all__ = ["CRITICAL_EVENTS", "EventSink", "MediaSession"]

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

_EndpointT = TypeVar("_EndpointT", bound=Endpoint)
_RTCP_CHECK_FRAMES: Final = 10
"""RTP transports look for a due RTCP report every tenth frame (reports are 5 s apart)."""

logger = logging.getLogger(__name__)


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class MediaSession:
    """One session: endpoints, their routing, and the methods of the control protocol."""

    def __init__(self, context: EngineContext, sink: EventSink | None) -> None:
        self.id = str(uuid.uuid4())
        self.context = context
        self.metrics = context.metrics
        self.state = "active"
        self.alive = True
        self.created_at = datetime.now(UTC)
        self.endpoints: dict[str, Endpoint] = {}
        self.plan = MediaPlan()
        self._sink = sink
        self._reserved = 0
        """Endpoint slots taken by creations still awaiting their sockets."""
        now = time.monotonic()
        self._last_command = now
        self._empty_since: float | None = now
        self._tick = 0
        self._tickers: tuple[Endpoint, ...] = ()
        """Endpoints with work every frame: file and tone playout, RTP jitter buffers."""
        self._rtp: tuple[RtpEndpoint, ...] = ()
        self._injecting: set[RtpEndpoint] = set()
        """RTP endpoints sending an injected digit (their transport ticks every frame)."""
        self._rtcp_phase = random.randrange(_RTCP_CHECK_FRAMES)
        self.orphan_generation = 0
        """Bumped on every orphan/attach so a stale disconnect timer does nothing."""
        self.parked = False
        """Created for an incoming RTVBP call that no controller has claimed yet."""
        self.end_reason = "session destroyed"
        """Why the session ended (the hang-up reason its RTVBP legs are given)."""
        self.variables: dict[str, Any] = {}
        """Session variables: RTVBP applications read and write them (session.get/set)."""
        self.rtvbp = SessionRtvbp(self)
        context.clock.add(self._on_tick)

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
        """Send an event to the bound connection, if any (critical per rtpbridge's set)."""
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
        """The session.list entry; `calls` lists its RTVBP legs, when it has any."""
        summary: dict[str, Any] = {
            "session_id": self.id,
            "state": self.state,
            "endpoint_count": len(self.endpoints),
            "created_at": _rfc3339(self.created_at),
        }
        calls = self.rtvbp.calls()
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
            "recordings": [],
            "vad_active": [],
        }

    # -- endpoint bookkeeping ----------------------------------------------------------------

    def _check_alive(self) -> None:
        if not self.alive:
            raise EngineError(SESSION_GONE, "Session has been destroyed")

    def reserve_slot(self, message: str = "MAX_ENDPOINTS_REACHED") -> None:
        """Take one endpoint slot or raise ENDPOINT_ERROR; pair with `add` or `unreserve`."""
        self._check_alive()
        limit = self.context.config.max_endpoints_per_session
        if limit and len(self.endpoints) + self._reserved >= limit:
            raise endpoint_error(message)
        self._reserved += 1

    def unreserve(self) -> None:
        self._reserved -= 1

    def add(self, endpoint: _EndpointT) -> _EndpointT:
        """Insert a created endpoint (its slot was reserved) and rebuild routing."""
        self._reserved -= 1
        self.endpoints[endpoint.id] = endpoint
        self._empty_since = None
        self.metrics.endpoints_total += 1
        self.metrics.endpoints_active += 1
        self.rebuild_routing()
        return endpoint

    def endpoint(self, endpoint_id: str) -> Endpoint:
        """The endpoint with this id; ENDPOINT_ERROR "Endpoint not found" otherwise."""
        self._check_alive()
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is None:
            raise endpoint_error("Endpoint not found")
        return endpoint

    def discard(self, endpoint: Endpoint) -> None:
        """Remove and close an endpoint without any event (failures, bridge partners)."""
        if self.endpoints.pop(endpoint.id, None) is None:
            return
        endpoint.close()
        self.metrics.endpoints_active -= 1
        if not self.endpoints:
            self._empty_since = time.monotonic()
        if self.alive:
            self.rebuild_routing()

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

    def rebuild_routing(self) -> None:
        """Recompute routes and the decoded path (called on every add, remove, state change)."""
        if not self.alive:
            return
        table = build_routing(endpoint.route_node() for endpoint in self.endpoints.values())
        self.plan = build_plan(
            table, self.endpoints, self.plan, self.metrics, self.context.config.opus_complexity
        )
        self._tickers = tuple(
            endpoint for endpoint in self.endpoints.values() if endpoint.needs_tick
        )
        self._rtp = tuple(
            endpoint for endpoint in self.endpoints.values() if isinstance(endpoint, RtpEndpoint)
        )

    # -- media clock and housekeeping --------------------------------------------------------

    def _on_tick(self, now: float) -> None:
        if not self.alive:
            return
        tick = self._tick = self._tick + 1
        for endpoint in self._tickers:
            endpoint.tick(now)
        if self.rtvbp.pending_digits:
            self.rtvbp.start_pending_digit()
        if self._injecting:
            for endpoint in list(self._injecting):
                if not endpoint.transport_tick(now):
                    self._injecting.discard(endpoint)
        if tick % _RTCP_CHECK_FRAMES == self._rtcp_phase:
            for endpoint in self._rtp:
                endpoint.transport_tick(now)
        for stage in self.plan.stages:
            stage.run(self._tick, now)

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

    # -- control methods ---------------------------------------------------------------------

    async def create_from_offer(self, sdp: str, direction: str) -> tuple[str, str]:
        """A plain RTP endpoint answering `sdp`; returns (endpoint_id, sdp_answer)."""
        check_direction(direction)
        self.touch()
        self.reserve_slot()
        try:
            endpoint, answer = await RtpEndpoint.from_offer(self, sdp, direction)
        except BaseException:
            self.unreserve()
            raise
        self.add(endpoint)
        return endpoint.id, answer

    async def create_offer(
        self, kind: str, direction: str, codecs: list[str] | None, srtp: bool
    ) -> tuple[str, str]:
        """An RTP endpoint with our offer; routable once `accept_answer` is called."""
        check_direction(direction)
        self.touch()
        if kind == "webrtc":
            raise endpoint_error("WebRTC endpoints are not supported yet")
        if kind != "rtp":
            raise EngineError(INVALID_PARAMS, f"unknown endpoint type {kind!r}")
        if srtp:
            raise endpoint_error("SRTP is not supported yet")
        self.reserve_slot()
        try:
            endpoint, offer = await RtpEndpoint.with_offer(self, direction, codecs)
        except BaseException:
            self.unreserve()
            raise
        self.add(endpoint)
        return endpoint.id, offer

    async def accept_answer(self, endpoint_id: str, sdp: str) -> None:
        self.touch()
        endpoint = self.endpoint(endpoint_id)
        if not isinstance(endpoint, RtpEndpoint):
            raise endpoint_error("This endpoint type doesn't accept SDP answers")
        endpoint.accept_answer(sdp)

    async def create_with_file(
        self,
        source: str,
        *,
        start_ms: int = 0,
        loop_count: int | None = 0,
        cache_ttl_secs: int = 300,
        shared: bool = False,
        timeout_ms: int = 10000,
        headers: dict[str, str] | None = None,
        gain_db: float = 0.0,
    ) -> str:
        """A file playback endpoint (local path or http(s) URL); `shared` plays unshared."""
        self.touch()
        if loop_count is not None and not 0 <= loop_count <= 10000:
            raise EngineError(INVALID_PARAMS, "loop_count must be 0..10000 or null")
        if not 1 <= timeout_ms <= 60000:
            raise EngineError(INVALID_PARAMS, "timeout_ms must be 1..60000")
        if start_ms < 0:
            raise EngineError(INVALID_PARAMS, "start_ms must not be negative")
        self.reserve_slot()
        try:
            endpoint = FileEndpoint.create(
                self,
                source,
                start_ms=start_ms,
                loop_count=loop_count,
                cache_ttl_s=cache_ttl_secs,
                timeout_s=timeout_ms / 1000,
                headers=headers,
                gain_db=gain_db,
            )
        except BaseException:
            self.unreserve()
            raise
        self.add(endpoint)
        endpoint.started()
        return endpoint.id

    async def create_tone(self, tone: str, frequency: float | None, duration_ms: int | None) -> str:
        self.touch()
        self.reserve_slot("max endpoints reached")
        try:
            endpoint = ToneEndpoint(self, tone, frequency, duration_ms)
        except BaseException:
            self.unreserve()
            raise
        self.add(endpoint)
        return endpoint.id

    async def remove_endpoint(self, endpoint_id: str) -> None:
        self.touch()
        endpoint = self.endpoint(endpoint_id)
        if isinstance(endpoint, BridgeEndpoint):
            endpoint.remove_partner()
        self.discard(endpoint)

    async def file_seek(self, endpoint_id: str, position_ms: int) -> None:
        self.touch()
        self._file(endpoint_id).seek(position_ms)

    async def file_pause(self, endpoint_id: str) -> None:
        self.touch()
        self._file(endpoint_id).pause()

    async def file_resume(self, endpoint_id: str) -> None:
        self.touch()
        self._file(endpoint_id).resume()

    def _file(self, endpoint_id: str) -> FileEndpoint:
        endpoint = self.endpoint(endpoint_id)
        if not isinstance(endpoint, FileEndpoint):
            raise endpoint_error("Not a file endpoint")
        return endpoint

    async def dtmf_inject(
        self, endpoint_id: str, digit: str, duration_ms: int, volume: int
    ) -> None:
        """Send one RFC 4733 digit out of `endpoint_id` to its own peer (one at a time).

        An RTVBP leg sends it its own way: a `dtmf` event to an application, in-band tones to
        a voice peer.
        """
        self.touch()
        self._check_alive()
        if self.injecting:
            raise endpoint_error("DTMF injection already in progress")
        endpoint = self.endpoint(endpoint_id)
        if isinstance(endpoint, FileEndpoint | ToneEndpoint):
            raise endpoint_error("Cannot inject DTMF into file endpoint")
        if isinstance(endpoint, RtvbpEndpoint):
            endpoint.inject_digit(digit, duration_ms)
            return
        if not isinstance(endpoint, RtpEndpoint):
            raise endpoint_error("No telephone-event PT negotiated")
        self.start_injection(endpoint, digit, duration_ms, volume)

    @property
    def injecting(self) -> bool:
        """An RTP endpoint of this session is sending an injected digit."""
        return any(
            isinstance(endpoint, RtpEndpoint) and endpoint.injecting
            for endpoint in self.endpoints.values()
        )

    def start_injection(
        self, endpoint: RtpEndpoint, digit: str, duration_ms: int, volume: int
    ) -> None:
        """Start sending one RFC 4733 digit out of `endpoint` (the caller checked the slot)."""
        endpoint.inject_dtmf(digit, duration_ms, volume)
        self._injecting.add(endpoint)

    async def bridge(self, target_session_id: str, direction: str) -> tuple[str, str]:
        """A pair of bridge endpoints, here and in the target; returns (mine, theirs)."""
        check_direction(direction)
        self.touch()
        self._check_alive()
        if target_session_id == self.id:
            raise EngineError(INVALID_PARAMS, "Cannot bridge a session to itself")
        target = self.context.find_session(target_session_id)
        if target is None or not target.alive:
            raise EngineError(SESSION_NOT_FOUND, f"Session {target_session_id} not found")
        self.reserve_slot()
        try:
            target.reserve_slot()
        except EngineError:
            self.unreserve()  # roll back our side
            raise
        mine = BridgeEndpoint(self, direction)
        theirs = BridgeEndpoint(target, direction)
        mine.partner, theirs.partner = theirs, mine
        self.add(mine)
        target.add(theirs)
        return mine.id, theirs.id

    async def destroy(self, reason: str = "session destroyed") -> None:
        """Stop everything and free every socket; idempotent. Emits nothing.

        RTVBP legs are hung up with `reason` in the background (bounded, never waited for).
        """
        closing = [
            endpoint for endpoint in self.endpoints.values() if isinstance(endpoint, RtpEndpoint)
        ]
        self.teardown(reason)
        for endpoint in closing:
            await endpoint.wait_closed()

    def teardown(self, reason: str = "session destroyed") -> None:
        """Synchronous destroy (timers and housekeeping use it); idempotent."""
        if not self.alive:
            return
        self.end_reason = reason
        self.alive = False
        self._sink = None
        self.context.clock.discard(self._on_tick)
        for endpoint in list(self.endpoints.values()):
            endpoint.close()
        self.metrics.endpoints_active -= len(self.endpoints)
        self.endpoints.clear()
        self._tickers = ()
        self._rtp = ()
        self._injecting.clear()
        self.rtvbp.pending_digits.clear()
        self.plan = MediaPlan()
        self.context.session_destroyed(self)


def _seconds(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value
