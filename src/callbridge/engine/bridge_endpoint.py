"""One side of an in-process bridge between two sessions (rtpbridge §3.16).

Audio routed into a bridge endpoint is 48000 Hz L16 (`L16_BRIDGE`, no encoding work); it is
handed synchronously to the partner endpoint in the other session, where it is a source like
any other. DTMF never crosses a bridge, and routing never connects two bridges of one session.
Removing one side removes the other; destroying one session leaves the other side in place
(connected, so it reports `endpoint.media_timeout` once audio stops).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from callbridge.engine.endpoint import Endpoint
from callbridge.engine.pipeline import OutputFormat
from callbridge.media.codecs import L16_BRIDGE

if TYPE_CHECKING:
    from callbridge.engine.session import MediaSession

__all__ = ["BridgeEndpoint"]

_FORMAT = OutputFormat(L16_BRIDGE)


class BridgeEndpoint(Endpoint):
    kind = "bridge"
    is_bridge = True
    watches_media = True

    def __init__(self, session: MediaSession, direction: str) -> None:
        super().__init__(session, direction, "connected")
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
        self.session.metrics.packets_routed_total += 1
        partner.receive(payload, now)

    def receive(self, pcm: bytes, now: float) -> None:
        """A frame from the partner: inbound audio of this endpoint."""
        self.last_inbound = now
        self.frames_received += 1
        if self.direction == "recvonly":
            return
        chain = self.chain
        if chain is not None and chain.active:
            chain.push(pcm, now)

    def remove_partner(self) -> None:
        """`endpoint.remove` on this side: the other side goes too (no event there)."""
        partner, self.partner = self.partner, None
        if partner is not None:
            partner.partner = None
            partner.session.discard(partner)

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        if self.partner is not None:
            self.partner.partner = None
            self.partner = None
