"""The endpoint base class and the host interface: all an endpoint may ask of its session.

An endpoint is a *source* when it produces audio into the session (it owns a `SourceChain` that
fans its PCM out) and a *destination* when routing feeds it (`deliver` for generated frames,
packet kinds also forward packets as they came). What varies by kind is a method here that the
kinds override; the session calls these methods and never names a kind.

Times are monotonic seconds (`time.monotonic`, the media clock's time base).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar, Final, Protocol

from callbridge.engine.context import EngineContext
from callbridge.engine.errors import INVALID_PARAMS, EngineError, endpoint_error
from callbridge.engine.metrics import EngineMetrics
from callbridge.engine.pipeline import OutputFormat, OutputStream, SourceChain
from callbridge.engine.routing import RouteNode, RoutingTable

__all__ = ["DIRECTIONS", "STATES", "Endpoint", "EndpointHost", "check_direction"]

DIRECTIONS: Final = frozenset({"sendrecv", "sendonly", "recvonly"})
STATES: Final = frozenset(
    {"new", "buffering", "connecting", "connected", "playing", "paused", "disconnected", "finished"}
)


def check_direction(direction: str) -> None:
    """INVALID_PARAMS for anything but sendrecv, sendonly and recvonly."""
    if direction not in DIRECTIONS:
        raise EngineError(INVALID_PARAMS, f"unknown direction {direction!r}")


class EndpointHost(Protocol):
    """What an endpoint may ask of the session it is in (the session implements it)."""

    @property
    def id(self) -> str:
        """The session id."""
        ...

    @property
    def alive(self) -> bool:
        """False once the session is destroyed."""
        ...

    @property
    def end_reason(self) -> str:
        """Why the session ended (valid once it is no longer alive)."""
        ...

    @property
    def context(self) -> EngineContext:
        """What every session of the worker shares: config, clock, ports, metrics, downloads."""
        ...

    @property
    def metrics(self) -> EngineMetrics: ...

    @property
    def variables(self) -> dict[str, Any]:
        """Session variables (RTVBP applications read and write them)."""
        ...

    @property
    def endpoints(self) -> Mapping[str, Endpoint]:
        """The other endpoints of the session, by id (routing names destinations by id)."""
        ...

    def emit(self, name: str, data: dict[str, Any]) -> None:
        """Send an event to the controller, if one is bound."""
        ...

    def set_state(self, endpoint: Endpoint, new_state: str, *, event: bool = True) -> None:
        """Change the endpoint's state (with `endpoint.state_changed`) and re-route."""
        ...

    def routing_changed(self) -> None:
        """Something routing depends on changed (codecs after a renegotiation)."""
        ...

    def remove(self, endpoint: Endpoint) -> None:
        """Take the endpoint out of the session and close it, without any event."""
        ...

    def route_digit(self, source: Endpoint, digit: str, duration_ms: int) -> None:
        """A digit detected on `source`: it reaches every leg that hears `source`."""
        ...


class Endpoint:
    """One leg of a session. Subclasses set `kind` and override the hooks they need."""

    kind: ClassVar[str] = ""
    is_rtp: ClassVar[bool] = False
    """Carries RTP packets that passthrough can forward as they are."""
    is_bridge: ClassVar[bool] = False
    watches_media: ClassVar[bool] = False
    """Subject to `endpoint.media_timeout` while connected (RTP and bridge)."""
    needs_tick: ClassVar[bool] = False
    """`tick` is called every frame (file and tone playout, RTP jitter buffers)."""
    has_periodic_work: ClassVar[bool] = False
    """`periodic` is called every tenth frame (RTP: due RTCP reports)."""
    generates: ClassVar[bool] = False
    """Produces frames on the media clock (file, tone): playing counts as session activity."""

    def __init__(self, host: EndpointHost, direction: str, state: str) -> None:
        self.id = str(uuid.uuid4())
        self.host = host
        self.direction = direction
        self.state = state
        self.created_at = time.monotonic()
        self.last_inbound = 0.0
        """Monotonic time of the last inbound packet or frame; 0 before the first."""
        self.media_timeout_reported_at: float | None = None
        """`last_inbound` value for which a media timeout was already reported (one per episode)."""
        self.chain: SourceChain | None = None
        """The fan-out of this endpoint's audio while it is a decoded source."""
        self.output = OutputStream()
        """Timestamp continuity of what this endpoint sends, across passthrough and mixing."""
        self.closed = False

    # -- description ---------------------------------------------------------------------------

    @property
    def codec(self) -> str | None:
        """The codec session.info reports: the negotiated send codec, or None."""
        return None

    @property
    def wire_codec(self) -> str | None:
        """Codec identity for the passthrough decision, e.g. "pcmu/8000"; None if no audio."""
        return None

    @property
    def accepts_dtmf(self) -> bool:
        """Forwarded RFC 4733 packets can be sent to it."""
        return False

    @property
    def source_rate(self) -> int | None:
        """Sample rate of the PCM this endpoint produces as a source, Hz; None if none."""
        return None

    @property
    def output_format(self) -> OutputFormat | None:
        """What this endpoint consumes as a destination; None when it cannot receive audio."""
        return None

    @property
    def native_rate(self) -> int | None:
        """The highest PCM rate of this endpoint's own audio, Hz: what its partners must carry
        for nothing of it to be lost (Opus legs say 48000 whatever they code at); None if none."""
        output = self.output_format
        rates = [self.source_rate, None if output is None else output.sample_rate]
        known = [rate for rate in rates if rate]
        return max(known) if known else None

    def code_at(self, rate: int) -> None:
        """Code this endpoint's audio at `rate` Hz if its codec can choose (Opus); else nothing."""

    def route_node(self) -> RouteNode:
        return RouteNode(
            self.id,
            self.direction,
            self.state,
            is_bridge=self.is_bridge,
            is_rtp=self.is_rtp,
            wire_codec=self.wire_codec,
            accepts_dtmf=self.accepts_dtmf,
        )

    def info(self) -> dict[str, Any]:
        """The session.info entry of this endpoint."""
        return {
            "endpoint_id": self.id,
            "endpoint_type": self.kind,
            "direction": self.direction,
            "state": self.state,
            "codec": self.codec,
        }

    def call_summary(self) -> dict[str, Any] | None:
        """This endpoint as a call in session.list (RTVBP legs); None for other kinds."""
        return None

    @property
    def stats_codec(self) -> str:
        """The codec the `stats` event reports ("" before negotiation)."""
        return self.codec or ""

    def stats(self) -> dict[str, object]:
        """The `stats` event's measured part: `inbound`, `outbound` and `rtt_ms` as RTP kinds
        measure them; an empty dict reports zero counters and no RTT."""
        return {}

    def packet_counters(self) -> tuple[int, int]:
        """(malformed, unexpected-source) inbound datagrams so far, for the metrics."""
        return (0, 0)

    # -- media hooks ---------------------------------------------------------------------------

    def produce(self, pcm: bytes, now: float) -> None:
        """One 20 ms frame of this endpoint's audio into the session, if anyone hears it."""
        chain = self.chain
        if chain is not None and chain.active:
            chain.push(pcm, now)

    def tick(self, now: float) -> None:
        """One media clock frame (only called when `needs_tick`)."""

    def periodic(self, now: float) -> None:
        """Every tenth frame (only called when `has_periodic_work`)."""

    def deliver(self, payload: bytes, now: float) -> None:
        """Send one generated frame (encoded in `output_format`) to this endpoint's peer."""

    def plan_changed(self, table: RoutingTable) -> None:
        """Routing was rebuilt; pick up new passthrough targets and decode needs."""

    def housekeeping(self, now: float) -> None:
        """About once a second (`housekeeping_interval_s`): slow timers such as DTMF ends."""

    # -- DTMF ----------------------------------------------------------------------------------

    def hear_digit(self, digit: str, duration_ms: int, *, from_packets: bool) -> bool:
        """A digit pressed on a leg this endpoint hears; `from_packets` when it came as RFC
        4733 packets (which packet kinds already forward). True asks the session to inject it
        here as RFC 4733 when its one injection slot is free."""
        return False

    def inject_dtmf(self, digit: str, duration_ms: int, volume: int) -> bool:
        """`endpoint.dtmf.inject`: send a digit to this endpoint's own peer. True when it now
        takes the session's injection slot (paced by `pace_injection`)."""
        if self.generates:
            raise endpoint_error("Cannot inject DTMF into file endpoint")
        raise endpoint_error("No telephone-event PT negotiated")

    @property
    def injecting(self) -> bool:
        """An injected digit still has packets to send."""
        return False

    def pace_injection(self, now: float) -> bool:
        """Send the injected digit's packets that are due; True while some remain."""
        return False

    # -- control methods that only some kinds support ------------------------------------------

    def accept_answer(self, sdp: str) -> None:
        raise endpoint_error("This endpoint type doesn't accept SDP answers")

    def seek(self, position_ms: int) -> None:
        raise endpoint_error("Not a file endpoint")

    def pause(self) -> None:
        raise endpoint_error("Not a file endpoint")

    def resume(self) -> None:
        raise endpoint_error("Not a file endpoint")

    # -- transfer ------------------------------------------------------------------------------

    def check_transfer(self, target: EndpointHost) -> None:
        """`endpoint.transfer` to `target`: ENDPOINT_ERROR if this endpoint cannot move there.
        Called before anything moves; playout (file, tone) stays with its session."""
        if self.generates:
            raise endpoint_error(f"Cannot transfer a {self.kind} endpoint")

    def rehost(self, host: EndpointHost) -> None:
        """Belong to `host` from now on (a transfer): socket, peer, codecs, DTMF detector and
        media-timeout state stay as they are; kinds that keep per-session references swap
        them here."""
        self.host = host

    # -- lifetime ------------------------------------------------------------------------------

    def removing(self) -> None:
        """`endpoint.remove` is about to take this endpoint out (a bridge takes its partner)."""

    def close(self) -> None:
        """Release sockets, tasks and decoders; idempotent."""
        self.closed = True

    async def wait_closed(self) -> None:
        """Wait until the sockets are really released (after `close`)."""
