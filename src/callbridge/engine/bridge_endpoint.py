"""One side of an in-process bridge between two sessions.

Audio routed into a bridge endpoint is 48000 Hz L16 (`L16_BRIDGE`, no encoding work); it is
handed synchronously to the partner endpoint in the other session, where it is a source like
any other. DTMF never crosses a bridge, and routing never connects two bridges of one session.
Removing one side removes the other; destroying one session leaves the other side in place
(connected, so it reports `endpoint.media_timeout` once audio stops).
"""

from __future__ import annotations

from collections.abc import Callable

from callbridge.engine.endpoint import Endpoint, EndpointHost, check_direction
from callbridge.engine.errors import endpoint_error
from callbridge.engine.pipeline import OutputFormat
from callbridge.engine.session import MediaSession, find_target
from callbridge.media.codecs import L16_BRIDGE

__all__ = ["BridgeEndpoint", "bridge"]

_FORMAT = OutputFormat(L16_BRIDGE)


async def bridge(
    session: MediaSession,
    target_session_id: str,
    direction: str,
    find_session: Callable[[str], MediaSession | None],
) -> tuple[str, str]:
    """`session.bridge`: a pair of bridge endpoints, in `session` and in the target session
    (`find_session` looks it up); returns (mine, theirs). Neither is added unless both fit."""
    check_direction(direction)
    target = find_target(
        session, target_session_id, find_session, "Cannot bridge a session to itself"
    )
    with session.slot() as mine_slot, target.slot() as theirs_slot:
        mine = BridgeEndpoint(session, direction)
        theirs = BridgeEndpoint(target, direction)
        mine.partner, theirs.partner = theirs, mine
        mine_slot.add(mine)
        theirs_slot.add(theirs)
    return mine.id, theirs.id


class BridgeEndpoint(Endpoint):
    kind = "bridge"
    is_bridge = True
    watches_media = True

    def __init__(self, host: EndpointHost, direction: str) -> None:
        super().__init__(host, direction, "connected")
        self.partner: BridgeEndpoint | None = None
        self.frames_received = 0
        self.frames_sent = 0

    @property
    def codec(self) -> str:
        return "L16/48000"

    @property
    def wire_codec(self) -> str:
        return "l16/48000"

    @property
    def source_rate(self) -> int:
        return L16_BRIDGE.sample_rate

    @property
    def output_format(self) -> OutputFormat:
        return _FORMAT

    def deliver(self, payload: bytes, now: float) -> None:
        """A 48 kHz frame routed into this side goes out of the partner into its session."""
        partner = self.partner
        if partner is None:
            return
        self.frames_sent += 1
        self.host.metrics.packets_routed_total += 1
        partner.receive(payload, now)

    def receive(self, pcm: bytes, now: float) -> None:
        """A frame from the partner: inbound audio of this endpoint."""
        self.last_inbound = now
        self.frames_received += 1
        if self.direction != "recvonly":
            self.produce(pcm, now)

    def check_transfer(self, target: EndpointHost) -> None:
        """A bridge may move, but not into the session of its partner (a loop to itself)."""
        partner = self.partner
        if partner is not None and partner.host is target:
            raise endpoint_error("Cannot transfer a bridge endpoint into the session it bridges to")

    def removing(self) -> None:
        """`endpoint.remove` on this side: the other side goes too (no event there)."""
        partner, self.partner = self.partner, None
        if partner is not None:
            partner.partner = None
            partner.host.remove(partner)

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        if self.partner is not None:
            self.partner.partner = None
            self.partner = None
