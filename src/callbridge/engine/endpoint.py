"""The endpoint base class: identity, direction, state, and its two media roles.

An endpoint is a *source* when it produces audio into the session (it owns a `SourceChain` that
fans its PCM out) and a *destination* when routing feeds it (`deliver` for generated frames,
`forward` for passthrough packets). Subclasses: RTP, file, tone, bridge.

Times are monotonic seconds (`time.monotonic`, the media clock's time base).
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any, ClassVar, Final

from callbridge.engine.errors import INVALID_PARAMS, EngineError
from callbridge.engine.pipeline import OutputFormat, OutputStream, SourceChain
from callbridge.engine.routing import RouteNode, RoutingTable

if TYPE_CHECKING:
    from callbridge.engine.session import MediaSession

__all__ = ["DIRECTIONS", "STATES", "Endpoint", "check_direction"]

DIRECTIONS: Final = frozenset({"sendrecv", "sendonly", "recvonly"})
STATES: Final = frozenset(
    {"new", "buffering", "connecting", "connected", "playing", "paused", "disconnected", "finished"}
)


def check_direction(direction: str) -> None:
    """INVALID_PARAMS for anything but sendrecv, sendonly and recvonly."""
    if direction not in DIRECTIONS:
        raise EngineError(INVALID_PARAMS, f"unknown direction {direction!r}")


class Endpoint:
    """One leg of a session. Subclasses set `kind` and override the media hooks they need."""

    kind: ClassVar[str] = ""
    is_rtp: ClassVar[bool] = False
    """Carries RTP packets that passthrough can forward as they are."""
    is_bridge: ClassVar[bool] = False
    watches_media: ClassVar[bool] = False
    """Subject to `endpoint.media_timeout` while connected (RTP and bridge)."""
    needs_tick: ClassVar[bool] = False
    """`tick` is called every frame (RTP: RTCP, DTMF injection, jitter; file and tone)."""
    generates: ClassVar[bool] = False
    """Produces frames on the media clock (file, tone): `tick` is called every frame."""

    def __init__(self, session: MediaSession, direction: str, state: str) -> None:
        self.id = str(uuid.uuid4())
        self.session = session
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
        """The codec reported by session.info (rtpbridge §1.4)."""
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

    # -- media hooks ---------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """One media clock frame (only called when `generates`)."""

    def deliver(self, payload: bytes, now: float) -> None:
        """Send one generated frame (encoded in `output_format`) to this endpoint's peer."""

    def plan_changed(self, table: RoutingTable) -> None:
        """Routing was rebuilt; pick up new passthrough targets and decode needs."""

    def housekeeping(self, now: float) -> None:
        """About once a second (or `housekeeping_interval_s`): slow timers such as DTMF ends."""

    def close(self) -> None:
        """Release sockets, tasks and decoders; idempotent."""
        self.closed = True
