"""An incoming RTVBP call: a voice peer (babelforce Cloud, `callbridge call`) called callbridge,
which answers as the application and puts the call into a media session.

The server upgrades the WebSocket and hands the transport to `IncomingCall.run`. On
``session.initialize`` the call joins the media session the ingress path named or, without one,
is *parked* in a new orphaned session that a controller claims with `session.attach` (the
server announces it as `call.incoming`). The codec follows the session: the offered L16 rate
its endpoints already use, so nothing is resampled (a new session: the first offered L16).
A parked call nobody claims within `rtvbp_park_timeout_s` is hung up ("not claimed") and its
session destroyed; a parked call that ends takes its session with it. Over ``rtvbp.webrtc.v1``
(the server has answered the offer already) the codec is L16/8000, what PCMU carries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final, Protocol

from callbridge.engine.config import EngineConfig
from callbridge.engine.errors import EngineError
from callbridge.engine.rtvbp_control import preferred_rate
from callbridge.engine.rtvbp_inbound import InboundRtvbpEndpoint
from callbridge.engine.session import EndpointSlot, MediaSession
from callbridge.rtvbp import babelforce_v1 as bf
from callbridge.rtvbp.answering import AnsweringRunner, AnswerState
from callbridge.rtvbp.audio_channel import AudioSink
from callbridge.rtvbp.catalog import Role
from callbridge.rtvbp.codecs import CodecChooser, first_l16, narrowband_only, prefer_sample_rate
from callbridge.rtvbp.errors import INTERNAL, RemoteError, RtvbpError
from callbridge.rtvbp.session import CloseInfo, RtvbpSession
from callbridge.rtvbp.transport_base import CLOSE_GOING_AWAY, Transport
from callbridge.rtvbp.webrtc_transport import WebRtcTransport

__all__ = ["CallHost", "CallListener", "IncomingCall"]

logger = logging.getLogger(__name__)

CallListener = Callable[[dict[str, Any]], None]
"""Told about each parked call (the `call.incoming` data); never blocks, never raises."""

CLOSE_POLICY_VIOLATION: Final = 1008


class CallHost(Protocol):
    """All an incoming call asks of the worker that serves it."""

    @property
    def config(self) -> EngineConfig: ...

    def get(self, session_id: str) -> MediaSession | None:
        """The media session `session_id`, if it exists."""
        ...

    def park_session(self) -> MediaSession:
        """A new orphaned session for a call no controller owns yet."""
        ...

    def spawn(self, coroutine: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run `coroutine` as tracked background work."""
        ...


class IncomingCall:
    """One voice peer on the media ingress, from the upgrade until its leg is over."""

    def __init__(
        self,
        host: CallHost,
        transport: Transport,
        *,
        session_id: str | None,
        remote: str | None,
        on_parked: CallListener | None,
    ) -> None:
        self.host = host
        self.session_id = session_id
        """The media session the ingress path named; None parks the call in a new one."""
        self.remote = remote
        self.on_parked = on_parked
        self.endpoint: InboundRtvbpEndpoint | None = None
        self._target: MediaSession | None = None
        self._parked = False
        self._leg: InboundRtvbpEndpoint | None = None
        self._slot: EndpointSlot | None = None
        self.transport = transport
        self.rtvbp = RtvbpSession(
            Role.APPLICATION,
            bf.CATALOG,
            transport,
            request_timeout_s=host.config.rtvbp_request_timeout_s,
        )
        self._runner = AnsweringRunner(self.rtvbp, self)

    async def run(self) -> None:
        """Serve the RTVBP session until it closes, then end the leg."""
        loop = asyncio.get_running_loop()
        overdue = loop.call_later(
            self.host.config.rtvbp_initialize_timeout_s, self._initialize_overdue
        )
        info: CloseInfo | None = None
        try:
            info = await self._runner.serve()
        finally:
            overdue.cancel()
            self._finish(info)

    def _finish(self, info: CloseInfo | None) -> None:
        endpoint = self.endpoint
        if endpoint is None:
            return
        orderly = info is not None and info.orderly
        detail = "connection lost"
        if info is not None and info.code:  # the reason says why WebRTC media failed, say
            detail += f" ({info.code}: {info.reason})" if info.reason else f" ({info.code})"
        lost = ("failed", detail)
        endpoint.finish(*(endpoint.end or (("closed", None) if orderly else lost)))
        session = self._target
        if session is not None and session.parked and session.alive:
            session.teardown("call ended")  # nobody claimed it: the session was only this call

    def _initialize_overdue(self) -> None:
        if self._runner.state is AnswerState.WAITING and not self.rtvbp.closed:
            self.host.spawn(
                self.rtvbp.close(CLOSE_POLICY_VIOLATION, "no session.initialize"),
                name="rtvbp-initialize-overdue",
            )

    # -- answering hooks ----------------------------------------------------------------------

    def choose_codec(self, offer: bf.SessionInitializeRequest) -> CodecChooser:
        """The L16 rate the named session already uses (nothing resampled), else the first;
        over WebRTC the L16/8000 offer."""
        target = None
        if self.session_id is not None:
            target = self.host.get(self.session_id)
            if target is None or not target.alive:
                raise RemoteError(INTERNAL, f"media session {self.session_id} no longer exists")
        self._target = target
        if isinstance(self.transport, WebRtcTransport):
            return narrowband_only(first_l16)
        rate = None if target is None else preferred_rate(target)
        return first_l16 if rate is None else prefer_sample_rate(rate)

    def prepare(self, offer: bf.SessionInitializeRequest, codec: bf.AudioCodec) -> AudioSink:
        """Reserve the leg's slot (parking a new session without a named one)."""
        target = self._target
        parked = target is None
        try:
            if target is None:
                target = self.host.park_session()
            self._slot = target.reserve()
        except EngineError as error:
            if parked and target is not None:
                target.teardown("call refused")
            raise RemoteError(INTERNAL, error.message) from None
        self._target, self._parked = target, parked
        endpoint = InboundRtvbpEndpoint(
            target,
            "sendrecv",
            rtvbp=self.rtvbp,
            request=offer,
            remote=self.remote,
            transport=self.transport,
        )
        self._leg = endpoint
        return endpoint.receive_frame

    def answered(self, offer: bf.SessionInitializeRequest, codec: bf.AudioCodec) -> None:
        """Put the leg into its session, which may have ended while the answer was sent."""
        target, endpoint = self._target, self._leg
        assert target is not None and endpoint is not None
        if not target.alive:
            self.host.spawn(
                self.rtvbp.close(CLOSE_GOING_AWAY, "media session ended"), name="rtvbp-gone"
            )
            raise RtvbpError(f"media session {target.id} ended during session.initialize")
        endpoint.start_media(codec, self.rtvbp.send_audio)
        assert self._slot is not None
        self._slot.add(endpoint)
        self.endpoint = endpoint
        logger.info(
            "call %s from %s joined session %s as endpoint %s (%s)",
            offer.call.id,
            self.remote,
            target.id,
            endpoint.id,
            codec.id,
        )
        data = endpoint.incoming_call()
        if self._parked:
            if self.on_parked is not None:
                self.on_parked(data)
        else:
            target.emit("call.incoming", data)

    def abandoned(self) -> None:
        """Release the reserved slot (and the session parked for this call)."""
        target = self._target
        assert target is not None and self._slot is not None
        self._slot.release()
        if self._parked:
            target.teardown("call ended")

    def terminated(self, reason: str | None) -> None:
        endpoint = self.endpoint
        if endpoint is not None and endpoint.end is None:
            endpoint.end = ("voice-hangup", reason)

    def event(self, name: str, data: Any) -> None:
        endpoint = self.endpoint
        if endpoint is None:
            return
        if isinstance(data, bf.CallHangupEvent) and endpoint.end is None:
            endpoint.end = ("voice-hangup", data.reason or "hangup")
        endpoint.received_event(name, data)
