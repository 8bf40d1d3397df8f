"""An RTVBP leg in a media session: the media core shared by both roles.

Outbound (`rtvbp_outbound`), callbridge is the *voice* peer and dials an RTVBP application;
inbound (`rtvbp_inbound`), a voice peer called callbridge, which is the *application*. Either
way the leg carries L16 little-endian audio at the negotiated rate in exact 20 ms frames:

* As a source it ticks: each media clock frame takes at most one frame the peer sent (outbound:
  from the playout buffer the application fills, often faster than real time; inbound: from a
  short queue of what the voice peer streams in real time) and pushes it into its `SourceChain`.
* As a destination `deliver()` is synchronous on the clock while WebSocket sends are not: frames
  go into a bounded queue that one writer task per endpoint drains (append and wake per frame,
  never a task per frame); when the socket stalls the oldest frames are dropped and counted.

Over ``rtvbp.webrtc.v1`` (`profile`) the control stays on the WebSocket and the audio moves to
WebRTC (PCMU, L16/8000 at this boundary): the SDK's offerer and answerer, on `media_ip`
(`webrtc_options`).

The leg ends when the RTVBP session does: the controller gets `endpoint.rtvbp.ended` with a
reason and the endpoint leaves the session. Removing the endpoint (or destroying the session)
ends the RTVBP session gracefully in a background task bounded by `rtvbp_close_timeout_s`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Final

import msgspec

from callbridge.engine.config import EngineConfig
from callbridge.engine.endpoint import Endpoint, EndpointHost
from callbridge.engine.errors import INVALID_PARAMS, EngineError, endpoint_error
from callbridge.engine.pipeline import OutputFormat
from callbridge.media.codecs import l16
from callbridge.media.tones import DTMF_TONE_HZ, dtmf_tone_frames
from callbridge.rtvbp import babelforce_v1 as bf
from callbridge.rtvbp.catalog import Role, encode_payload
from callbridge.rtvbp.errors import (
    PayloadError,
    RemoteError,
    RequestTimeoutError,
    RtvbpError,
    SessionClosedError,
)
from callbridge.rtvbp.session import RtvbpSession, now_ms
from callbridge.rtvbp.webrtc import WebRtcOptions

__all__ = ["End", "RtvbpEndpoint", "call_json", "payload_json", "webrtc_options"]

logger = logging.getLogger(__name__)

End = tuple[str, str | None]
"""Why a leg ended: (reason, detail), reason one of "hangup" (callbridge or its controller
ended it), "application-hangup", "voice-hangup" (the peer hung up), "application-move",
"closed" (the socket closed without a hang-up) or "failed"."""

MAX_QUEUED_FRAMES: Final = 25
"""Frames (500 ms) waiting for the socket before the oldest is dropped."""
MIN_DTMF_MS: Final = 40
MAX_DTMF_MS: Final = 10000
DEFAULT_DTMF_MS: Final = 160


def dtmf_duration_ms(pressed_at_ms: int, released_at_ms: int) -> int:
    """How long to play a digit reported with these times: clamped, 160 ms when unknown."""
    duration = released_at_ms - pressed_at_ms
    if duration <= 0:
        return DEFAULT_DTMF_MS
    return min(max(duration, MIN_DTMF_MS), MAX_DTMF_MS)


def webrtc_options(config: EngineConfig, offer_timeout_s: float) -> WebRtcOptions:
    """How a leg over ``rtvbp.webrtc.v1`` opens its media: on `media_ip`, as WebRTC endpoints
    do, on a port of `rtp_port_range`; connecting within the RTVBP connect timeout, consent as
    for WebRTC endpoints."""
    return WebRtcOptions(
        media_address=config.media_ip,
        port_range=config.rtp_port_range,
        offer_timeout_s=offer_timeout_s,
        connect_timeout_s=config.rtvbp_connect_timeout_s,
        consent_timeout_s=config.webrtc_consent_timeout_s,
    )


def payload_json(value: Any) -> Any:
    """A catalog payload as the plain JSON value it is on the wire (for control events)."""
    return msgspec.json.decode(encode_payload(value))


def call_json(call: bf.CallInfo) -> dict[str, str]:
    return {"id": call.id, "session_id": call.session_id, "from": call.from_, "to": call.to}


def _terminal_end(method: str, params: Any) -> End | None:
    """How a terminal operation the controller calls ends the leg, if it succeeds."""
    if method in ("call.hangup", "session.terminate"):
        return ("hangup", params.reason)
    if method == "application.move":
        return ("application-move", params.application_id)
    return None


class RtvbpEndpoint(Endpoint):
    """The media core of an RTVBP leg; `rtvbp_outbound` and `rtvbp_inbound` add the roles."""

    kind = "rtvbp"
    needs_tick = True
    role: ClassVar[Role]
    """callbridge's role on this leg (the peer has the other one)."""

    def __init__(
        self,
        host: EndpointHost,
        direction: str,
        state: str,
        *,
        call: bf.CallInfo,
        application_id: str,
        metadata: dict[str, Any] | None,
        profile: str,
    ) -> None:
        super().__init__(host, direction, state)
        self.profile = profile
        """The RTVBP profile token: ``rtvbp.v1`` (audio on the WebSocket) or
        ``rtvbp.webrtc.v1`` (audio over WebRTC)."""
        self.call_info = call
        self.application_id = application_id
        self.metadata = metadata
        self.rtvbp: RtvbpSession | None = None
        """The RTVBP session once it runs (outbound: after session.initialize)."""
        self.audio_codec: bf.AudioCodec | None = None
        self.sample_rate = 0
        """Negotiated L16 rate in Hz; 0 until negotiated."""
        self.end: End | None = None
        """Why the leg ended or is ending, once known (the first cause wins)."""
        self.ended = False
        """The RTVBP session is over (the endpoint is then removed)."""
        self.frames_sent = 0
        self.frames_received = 0
        self.frames_dropped = 0
        """Frames dropped, oldest first, because the socket did not keep up."""
        self.last_cleared_bytes = 0
        """Bytes the last `audio.buffer.clear` dropped on this side, before they were sent."""
        self._format: OutputFormat | None = None
        self._outgoing: deque[bytes] = deque()
        self._controls: deque[Callable[[], Awaitable[None]]] = deque()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._inband: deque[bytes] = deque()
        self._inband_playing = False
        self._dtmf_seq = 0

    # -- description ---------------------------------------------------------------------------

    @property
    def codec(self) -> str | None:
        return f"L16/{self.sample_rate}" if self.sample_rate else None

    @property
    def source_rate(self) -> int | None:
        return self.sample_rate or None

    @property
    def output_format(self) -> OutputFormat | None:
        return self._format

    def describe(self) -> dict[str, Any]:
        """The `rtvbp` part of the session.info entry: who is on the other end, and how."""
        return {
            "role": self.role.value,
            "profile": self.profile,
            "call": call_json(self.call_info),
            "application_id": self.application_id,
            "metadata": self.metadata,
            "codec": None if self.audio_codec is None else self.audio_codec.id,
        }

    def info(self) -> dict[str, Any]:
        entry = super().info()
        entry["rtvbp"] = self.describe()
        return entry

    def call_summary(self) -> dict[str, Any] | None:
        """This leg in session.list: enough to pick a parked call to claim."""
        return {
            "endpoint_id": self.id,
            "role": self.role.value,
            "state": self.state,
            "call": call_json(self.call_info),
            "application_id": self.application_id,
        }

    # -- media ---------------------------------------------------------------------------------

    def start_media(
        self, codec: bf.AudioCodec, send_audio: Callable[[bytes], Awaitable[None]]
    ) -> None:
        """Audio is negotiated: become a source and destination at its rate; start the writer."""
        self.audio_codec = codec
        self.sample_rate = int(codec.sample_rate)
        self._format = OutputFormat(l16(self.sample_rate, "little"))
        self._writer = self.host.context.spawn(
            self._write_loop(send_audio), name=f"rtvbp-writer-{self.id}"
        )

    def deliver(self, payload: bytes, now: float) -> None:
        """Queue one routed frame for the peer (hot path: no await, no allocation but the item)."""
        if self._writer is None or self._inband_playing:
            return
        outgoing = self._outgoing
        if len(outgoing) >= MAX_QUEUED_FRAMES:
            outgoing.popleft()
            self.frames_dropped += 1
        outgoing.append(payload)
        self._wake.set()

    def tick(self, now: float) -> None:
        if self._inband_playing:
            self._play_inband()
        frame = self._read_frame()
        if frame is None:
            return
        self.last_inbound = now
        self.frames_received += 1
        if self.direction != "recvonly":
            self.produce(frame, now)

    def _read_frame(self) -> bytes | None:
        """The peer's next frame to play this tick, or None."""
        raise NotImplementedError

    def clear_outgoing(self) -> int:
        """Drop the frames not sent yet (barge-in); returns the bytes dropped."""
        dropped = sum(len(frame) for frame in self._outgoing)
        self._outgoing.clear()
        return dropped

    async def _write_loop(self, send_audio: Callable[[bytes], Awaitable[None]]) -> None:
        outgoing = self._outgoing
        controls = self._controls
        wake = self._wake
        try:
            while True:
                if controls:
                    await self._send_control(controls.popleft())
                elif outgoing:
                    await send_audio(outgoing.popleft())
                    self.frames_sent += 1
                else:
                    wake.clear()
                    await wake.wait()
        except RtvbpError:
            return  # the session is closing; its owner reports the end

    async def _send_control(self, send: Callable[[], Awaitable[None]]) -> None:
        try:
            await send()
        except SessionClosedError:
            raise
        except RtvbpError as error:
            logger.debug("endpoint %s: control message not sent: %s", self.id, error)

    def queue_control(self, send: Callable[[], Awaitable[None]]) -> None:
        """Send a control message from the clock's context, in order, ahead of queued audio."""
        if self._writer is None or self.closed:
            return
        self._controls.append(send)
        self._wake.set()

    # -- DTMF ----------------------------------------------------------------------------------

    def hear_digit(self, digit: str, duration_ms: int, *, from_packets: bool) -> bool:
        self.send_digit(digit, duration_ms)
        return False

    def send_digit(self, digit: str, duration_ms: int) -> None:
        """A digit toward the peer: a `dtmf` event to an application, or in-band tones to a
        voice peer (an application may not send `dtmf` events in RTVBP)."""
        rtvbp = self.rtvbp
        if rtvbp is None or self.state != "connected" or digit not in DTMF_TONE_HZ:
            return
        if self.role is Role.VOICE:
            released_at = now_ms()
            event = bf.DtmfEvent(
                seq=self._next_seq(),
                pressed_at=max(released_at - duration_ms, 0),
                released_at=released_at,
                digit=digit,
            )
            self.queue_control(lambda: rtvbp.notify("dtmf", event))
        else:
            self._inband.extend(dtmf_tone_frames(digit, duration_ms, self.sample_rate))
            self._inband_playing = True

    def inject_dtmf(self, digit: str, duration_ms: int, volume: int) -> bool:
        """`endpoint.dtmf.inject` on this leg: toward its own peer, its own way (no RFC 4733,
        so the session's injection slot stays free)."""
        digit = digit.upper()
        if digit not in DTMF_TONE_HZ:
            raise EngineError(INVALID_PARAMS, f"invalid DTMF digit {digit!r}")
        if self.state != "connected":
            raise endpoint_error("RTVBP endpoint is not connected")
        self.send_digit(digit, min(max(duration_ms, MIN_DTMF_MS), MAX_DTMF_MS))
        return False

    def _play_inband(self) -> None:
        inband = self._inband
        if not inband:
            self._inband_playing = False  # audio resumes from the next tick
            return
        outgoing = self._outgoing
        outgoing.clear()
        outgoing.append(inband.popleft())
        self._wake.set()

    def _next_seq(self) -> int:
        seq = self._dtmf_seq
        self._dtmf_seq += 1
        return seq

    # -- control from the controller -----------------------------------------------------------

    async def request(self, method: str, params: Any) -> Any:
        """Call `method` on the peer (already validated against the catalog); its result.

        A terminal operation that succeeds ends the leg. `audio.buffer.clear` also drops the
        frames this side has not sent yet and counts them in `len`.
        """
        rtvbp = self._connected()
        end = _terminal_end(method, params)
        claimed = end is not None and self.end is None
        if claimed:
            self.end = end
        local = 0
        if method == "audio.buffer.clear":
            local = self.last_cleared_bytes = self.clear_outgoing()
        try:
            result = await rtvbp.request(method, params, terminal_ok=True)
        except RemoteError as error:
            if claimed:
                self.end = None
            raise endpoint_error(f"peer answered {error.code}: {error.message}") from None
        except RequestTimeoutError as error:
            if claimed:
                self.end = None
            raise endpoint_error(str(error)) from None
        except PayloadError as error:
            raise endpoint_error(
                f"peer answered {method} with an invalid result: {error}"
            ) from None
        except RtvbpError:
            raise endpoint_error(f"the RTVBP session closed before {method} was answered") from None
        if isinstance(result, bf.AudioBufferClearResponse):
            result = bf.AudioBufferClearResponse(len=result.len + local)
        elif isinstance(result, bf.ApplicationMoveResponse) and result.next_application_id:
            self.end = ("application-move", result.next_application_id)
        return result

    async def notify(self, event: str, data: Any) -> None:
        """Emit `event` to the peer (validated against the catalog); `dtmf` gets this leg's seq."""
        rtvbp = self._connected()
        if isinstance(data, bf.DtmfEvent):
            data = msgspec.structs.replace(data, seq=self._next_seq())
        try:
            await rtvbp.notify(event, data)
        except RtvbpError as error:
            raise endpoint_error(f"could not send {event}: {error}") from None

    def _connected(self) -> RtvbpSession:
        rtvbp = self.rtvbp
        if rtvbp is None or self.state != "connected" or self.ended:
            raise endpoint_error("RTVBP endpoint is not connected")
        return rtvbp

    # -- events from the peer ------------------------------------------------------------------

    def received_event(self, name: str, data: Any) -> None:
        """Every RTVBP event from the peer goes to the controller; a digit also crosses legs."""
        host = self.host
        if self.closed or not host.alive:
            return
        host.emit(
            "rtvbp.event", {"endpoint_id": self.id, "event": name, "data": payload_json(data)}
        )
        if isinstance(data, bf.DtmfEvent) and data.digit in DTMF_TONE_HZ:
            duration_ms = dtmf_duration_ms(data.pressed_at, data.released_at)
            host.metrics.dtmf_events_total += 1
            host.emit(
                "dtmf", {"endpoint_id": self.id, "digit": data.digit, "duration_ms": duration_ms}
            )
            host.route_digit(self, data.digit, duration_ms)

    # -- ending --------------------------------------------------------------------------------

    def finish(self, reason: str, detail: str | None) -> None:
        """The RTVBP session is over: tell the controller why, then leave the session."""
        self.ended = True
        if self.closed:
            return  # removed by the controller or its session destroyed: nothing to report
        self.host.emit(
            "endpoint.rtvbp.ended", {"endpoint_id": self.id, "reason": reason, "detail": detail}
        )
        self.host.remove(self)

    def close(self) -> None:
        """Leave the media path now; end the RTVBP session in the background (bounded)."""
        if self.closed:
            return
        super().close()
        self._outgoing.clear()
        self._inband.clear()
        self._inband_playing = False
        host = self.host
        reason = "removed" if host.alive else host.end_reason
        host.context.spawn(self._end_leg(reason), name=f"rtvbp-close-{self.id}")

    async def _end_leg(self, reason: str) -> None:
        writer = self._writer
        if writer is not None:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
        timeout_s = self.host.context.config.rtvbp_close_timeout_s
        try:
            if not self.ended:
                async with asyncio.timeout(timeout_s):
                    await self._hang_up(reason)
        except (TimeoutError, RtvbpError, OSError) as error:
            logger.debug("endpoint %s: graceful end failed: %r", self.id, error)
        finally:
            try:
                async with asyncio.timeout(timeout_s):
                    await self._shut_down()
            except (TimeoutError, RtvbpError, OSError) as error:
                logger.debug("endpoint %s: close failed: %r", self.id, error)

    async def _hang_up(self, reason: str) -> None:
        """End the RTVBP session the way this role does (callbridge ends the call)."""
        raise NotImplementedError

    async def _shut_down(self) -> None:
        """Close the RTVBP session without any exchange and stop its tasks; idempotent."""
        raise NotImplementedError
