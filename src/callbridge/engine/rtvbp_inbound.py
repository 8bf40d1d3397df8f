"""An inbound RTVBP leg: a voice peer (babelforce Cloud, `callbridge call`) called callbridge,
which answers as the application and puts the call into a media session.

The server upgrades the WebSocket and hands the transport to `IncomingCall.run`. On
``session.initialize`` the call joins the media session the ingress path named or, without one,
is *parked* in a new orphaned session that a controller claims with `session.attach` (the
server announces it as `call.incoming`). The codec follows the session: the offered L16 rate
its endpoints already use, so nothing is resampled (a new session: the first offered L16).
A parked call nobody claims within `rtvbp_park_timeout_s` is hung up ("not claimed") and its
session destroyed; a parked call that ends takes its session with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from callbridge.engine.endpoint import EndpointHost
from callbridge.engine.errors import EngineError
from callbridge.engine.rtvbp_control import preferred_rate
from callbridge.engine.rtvbp_endpoint import RtvbpEndpoint, call_json
from callbridge.engine.session import MediaSession
from callbridge.rtvbp import babelforce_v1 as bf
from callbridge.rtvbp.application import first_l16, prefer_sample_rate, select_codec
from callbridge.rtvbp.audio import l16_frame_bytes
from callbridge.rtvbp.catalog import Role
from callbridge.rtvbp.errors import BAD_REQUEST, INTERNAL, RemoteError, RtvbpError
from callbridge.rtvbp.session import IncomingRequest, RtvbpSession
from callbridge.rtvbp.transport_base import CLOSE_GOING_AWAY, Transport

if TYPE_CHECKING:
    from callbridge.engine.manager import SessionManager

__all__ = ["CallListener", "InboundRtvbpEndpoint", "IncomingCall"]

logger = logging.getLogger(__name__)

CallListener = Callable[[dict[str, Any]], None]
"""Told about each parked call (the `call.incoming` data); never blocks, never raises."""

MAX_INBOUND_FRAMES: Final = 10
"""Frames (200 ms) from the voice peer waiting for the clock; older ones are dropped."""
TRIM_AFTER_TICKS: Final = 50
"""A queue that kept a spare frame this many ticks in a row drops one (latency trim)."""
VOICE_EVENTS: Final = ("session.updated", "dtmf", "call.hangup", "audio.info")
CLOSE_POLICY_VIOLATION: Final = 1008


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
    ) -> None:
        super().__init__(
            host,
            direction,
            "connected",
            call=request.call,
            application_id=request.application.id,
            metadata=request.metadata,
        )
        self.rtvbp = rtvbp
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


class IncomingCall:
    """One voice peer on the media ingress, from the upgrade until its leg is over."""

    def __init__(
        self,
        manager: SessionManager,
        transport: Transport,
        *,
        session_id: str | None,
        remote: str | None,
        on_parked: CallListener | None,
    ) -> None:
        self.manager = manager
        self.session_id = session_id
        """The media session the ingress path named; None parks the call in a new one."""
        self.remote = remote
        self.on_parked = on_parked
        self.endpoint: InboundRtvbpEndpoint | None = None
        self.target: MediaSession | None = None
        """The media session the call joined."""
        self._initializing = False
        config = manager.config
        self.rtvbp = RtvbpSession(
            Role.APPLICATION,
            bf.CATALOG,
            transport,
            request_timeout_s=config.rtvbp_request_timeout_s,
        )
        self.rtvbp.handle("session.initialize", self._initialize)
        self.rtvbp.handle("session.terminate", self._terminate)
        for name in VOICE_EVENTS:
            self.rtvbp.on_event(name, self._event_receiver(name))

    async def run(self) -> None:
        """Serve the RTVBP session until it closes, then end the leg."""
        rtvbp = self.rtvbp
        loop = asyncio.get_running_loop()
        overdue = loop.call_later(
            self.manager.config.rtvbp_initialize_timeout_s, self._initialize_overdue
        )
        info = None
        try:
            async with rtvbp:
                info = await rtvbp.wait_closed()
        finally:
            overdue.cancel()
            self._finish(info is not None and info.orderly, None if info is None else info.code)

    def _finish(self, orderly: bool, code: int | None) -> None:
        endpoint = self.endpoint
        if endpoint is None:
            return
        lost = ("failed", f"connection lost ({code})" if code else "connection lost")
        endpoint.finish(*(endpoint.end or (("closed", None) if orderly else lost)))
        session = self.target
        if session is not None and session.parked and session.alive:
            session.teardown("call ended")  # nobody claimed it: the session was only this call

    def _initialize_overdue(self) -> None:
        if self.endpoint is None and not self._initializing and not self.rtvbp.closed:
            self.manager.context.spawn(
                self.rtvbp.close(CLOSE_POLICY_VIOLATION, "no session.initialize"),
                name="rtvbp-initialize-overdue",
            )

    async def _initialize(self, request: IncomingRequest) -> None:
        params: bf.SessionInitializeRequest = request.params
        if self.endpoint is not None or self._initializing:
            raise RemoteError(BAD_REQUEST, "session already initialized")
        target = None
        if self.session_id is not None:
            target = self.manager.get(self.session_id)
            if target is None or not target.alive:
                raise RemoteError(INTERNAL, f"media session {self.session_id} no longer exists")
        rate = None if target is None else preferred_rate(target)
        chooser = first_l16 if rate is None else prefer_sample_rate(rate)
        codec = select_codec(params.audio_codec_offerings, chooser)
        parked = target is None
        try:
            if target is None:
                target = self.manager.park_session()
            with target.slot() as slot:
                self._initializing = True
                try:
                    endpoint = await self._answer(request, params, codec, target)
                finally:
                    self._initializing = False
                slot.add(endpoint)
        except EngineError as error:
            if parked and target is not None:
                target.teardown("call refused")
            raise RemoteError(INTERNAL, error.message) from None
        except BaseException:
            if parked and target is not None:
                target.teardown("call ended")
            raise
        self.endpoint = endpoint
        self.target = target
        logger.info(
            "call %s from %s joined session %s as endpoint %s (%s)",
            params.call.id,
            self.remote,
            target.id,
            endpoint.id,
            codec.id,
        )
        data = endpoint.incoming_call()
        if parked:
            if self.on_parked is not None:
                self.on_parked(data)
        else:
            target.emit("call.incoming", data)

    async def _answer(
        self,
        request: IncomingRequest,
        params: bf.SessionInitializeRequest,
        codec: bf.AudioCodec,
        target: MediaSession,
    ) -> InboundRtvbpEndpoint:
        """Open audio and answer; the caller puts the leg into the session (its slot is held)."""
        rtvbp = self.rtvbp
        endpoint = InboundRtvbpEndpoint(
            target, "sendrecv", rtvbp=rtvbp, request=params, remote=self.remote
        )
        reply = request.defer()
        rtvbp.open_audio(l16_frame_bytes(int(codec.sample_rate), int(codec.channels)))
        rtvbp.on_audio(endpoint.receive_frame)
        try:
            await reply.resolve(bf.SessionInitializeResponse(audio_codec=codec))
        except BaseException:
            rtvbp.on_audio(None)
            raise
        if not target.alive:  # destroyed while the answer was being sent
            rtvbp.on_audio(None)
            self.manager.context.spawn(
                rtvbp.close(CLOSE_GOING_AWAY, "media session ended"), name="rtvbp-gone"
            )
            raise RtvbpError(f"media session {target.id} ended during session.initialize")
        endpoint.start_media(codec, rtvbp.send_audio)
        return endpoint

    async def _terminate(self, request: IncomingRequest) -> bf.SessionTerminateResponse:
        endpoint = self.endpoint
        if endpoint is not None and endpoint.end is None:
            endpoint.end = ("voice-hangup", request.params.reason)
        return bf.SessionTerminateResponse()

    def _event_receiver(self, name: str) -> Callable[[Any], Any]:
        async def receive(data: Any) -> None:
            endpoint = self.endpoint
            if endpoint is None:
                return
            if isinstance(data, bf.CallHangupEvent) and endpoint.end is None:
                endpoint.end = ("voice-hangup", data.reason or "hangup")
            endpoint.received_event(name, data)

        return receive
