"""An inbound RTVBP leg: a voice peer (babelforce Cloud, `callbridge call`) called callbridge,
which answers as the application (`rtvbp_incoming.IncomingCall`); this is its media leg.

Over ``rtvbp.webrtc.v1`` the audio toward the voice peer also waits in the WebRTC pacer (a frame
or so): ``audio.buffer.clear`` drops that too and counts it.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Final

from callbridge.engine.endpoint import EndpointHost
from callbridge.engine.rtvbp_endpoint import RtvbpEndpoint, call_json
from callbridge.rtvbp import babelforce_v1 as bf
from callbridge.rtvbp.catalog import Role
from callbridge.rtvbp.session import RtvbpSession
from callbridge.rtvbp.transport_base import Transport
from callbridge.rtvbp.webrtc import WEBRTC_PROFILE
from callbridge.rtvbp.webrtc_media import FRAME_BYTES
from callbridge.rtvbp.webrtc_transport import WebRtcTransport

__all__ = ["InboundRtvbpEndpoint"]

MAX_INBOUND_FRAMES: Final = 10
"""Frames (200 ms) from the voice peer waiting for the clock; older ones are dropped."""
TRIM_AFTER_TICKS: Final = 50
"""A queue that kept a spare frame this many ticks in a row drops one (latency trim)."""


class InboundRtvbpEndpoint(RtvbpEndpoint):
    """The leg of a voice peer that called in (callbridge is the application)."""

    role = Role.APPLICATION

    def __init__(
        self,
        host: EndpointHost,
        direction: str,
        *,
        rtvbp: RtvbpSession,
        request: bf.SessionInitializeRequest,
        remote: str | None,
        transport: Transport,
    ) -> None:
        webrtc = transport if isinstance(transport, WebRtcTransport) else None
        super().__init__(
            host,
            direction,
            "connected",
            call=request.call,
            application_id=request.application.id,
            metadata=request.metadata,
            profile="rtvbp.v1" if webrtc is None else WEBRTC_PROFILE,
        )
        self.rtvbp = rtvbp
        self.webrtc = webrtc
        """The WebRTC transport the session runs over, or None (audio on the WebSocket)."""
        self.remote = remote
        self.frames_trimmed = 0
        """Frames dropped to keep the inbound queue short (jitter that did not come back)."""
        self._incoming: deque[bytes] = deque()
        self._spare_ticks = 0

    def describe(self) -> dict[str, Any]:
        description = super().describe()
        description["remote"] = self.remote
        return description

    def incoming_call(self) -> dict[str, Any]:
        """The `call.incoming` event data."""
        return {
            "session_id": self.host.id,
            "endpoint_id": self.id,
            "call": call_json(self.call_info),
            "application_id": self.application_id,
            "metadata": self.metadata,
            "codec": self.codec,
            "remote": self.remote,
        }

    def receive_frame(self, frame: bytes) -> None:
        """One frame from the voice peer, on the RTVBP reader (hot path)."""
        incoming = self._incoming
        if len(incoming) >= MAX_INBOUND_FRAMES:
            incoming.popleft()
            self.frames_dropped += 1
        incoming.append(frame)

    def clear_outgoing(self) -> int:
        dropped = super().clear_outgoing()
        if self.webrtc is not None:
            dropped += self.webrtc.clear_outbound() * FRAME_BYTES
        return dropped

    def _read_frame(self) -> bytes | None:
        incoming = self._incoming
        if not incoming:
            self._spare_ticks = 0
            return None
        if len(incoming) > 1:
            self._spare_ticks += 1
            if self._spare_ticks >= TRIM_AFTER_TICKS:
                incoming.popleft()
                self.frames_trimmed += 1
                self._spare_ticks = 0
        else:
            self._spare_ticks = 0
        return incoming.popleft()

    async def _hang_up(self, reason: str) -> None:
        rtvbp = self.rtvbp
        if rtvbp is None or rtvbp.closed:
            return
        self.end = self.end or ("hangup", reason)
        await rtvbp.request("call.hangup", bf.CallHangupRequest(reason=reason), terminal_ok=True)

    async def _shut_down(self) -> None:
        if self.rtvbp is not None:
            await self.rtvbp.close()
