"""The application side of one call: answer ``session.initialize``, follow the voice peer.

Shared by the SDK's `Application` and the media engine's inbound legs. The order is fixed here:
pick the codec among the offers, prepare where audio goes, open audio, answer, and only then
start what the call is for; so the first frame the voice peer sends after the answer is kept.
What differs between users (which codec, where audio goes, what starts once answered) is an
`AnsweringHooks` implementation.
"""

from __future__ import annotations

import enum
from typing import Any, Protocol

from callbridge.rtvbp import babelforce_v1 as bf
from callbridge.rtvbp.audio import l16_frame_bytes
from callbridge.rtvbp.audio_channel import AudioSink
from callbridge.rtvbp.catalog import Role
from callbridge.rtvbp.codecs import CodecChooser, select_codec
from callbridge.rtvbp.errors import BAD_REQUEST, RemoteError
from callbridge.rtvbp.exchange import EventHandler, IncomingRequest
from callbridge.rtvbp.session import CloseInfo, RtvbpSession

__all__ = ["VOICE_EVENTS", "AnswerState", "AnsweringHooks", "AnsweringRunner"]

VOICE_EVENTS = bf.CATALOG.events_emitted_by(Role.VOICE)
"""The events a voice peer emits (babelforce.v1): what an application receives."""


class AnsweringHooks(Protocol):
    """What one user of `AnsweringRunner` does at each step of a call."""

    def choose_codec(self, offer: bf.SessionInitializeRequest) -> CodecChooser:
        """The codec choice for this offer; raise RemoteError to refuse the call."""
        ...

    def prepare(self, offer: bf.SessionInitializeRequest, codec: bf.AudioCodec) -> AudioSink:
        """Make ready for the call in `codec` and say where its audio goes; raise RemoteError to
        refuse it."""
        ...

    def answered(self, offer: bf.SessionInitializeRequest, codec: bf.AudioCodec) -> None:
        """The answer is sent and audio flows both ways; raising abandons the call."""
        ...

    def abandoned(self) -> None:
        """The answer could not be sent or `answered` raised: undo `prepare`."""
        ...

    def terminated(self, reason: str | None) -> None:
        """The voice peer sent ``session.terminate`` (the session closes after the answer)."""
        ...

    def event(self, name: str, data: Any) -> None:
        """An event from the voice peer of an answered call, in receive order."""
        ...


class AnswerState(enum.Enum):
    WAITING = "waiting"
    ANSWERING = "answering"
    ANSWERED = "answered"


class AnsweringRunner:
    """Serves the application role of `session` for one call, calling `hooks` at each step.

    Registers the ``session.initialize`` and ``session.terminate`` handlers and the voice
    events on construction, so build it before the session starts.
    """

    def __init__(self, session: RtvbpSession, hooks: AnsweringHooks) -> None:
        self.session = session
        self.hooks = hooks
        self.state = AnswerState.WAITING
        session.handle("session.initialize", self._initialize)
        session.handle("session.terminate", self._terminate)
        for name in VOICE_EVENTS:
            session.on_event(name, self._event_receiver(name))

    async def serve(self) -> CloseInfo:
        """Run the session until it closes (by either side, or the link is lost)."""
        async with self.session:
            return await self.session.wait_closed()

    async def _initialize(self, request: IncomingRequest) -> None:
        offer: bf.SessionInitializeRequest = request.params
        if self.state is not AnswerState.WAITING:
            raise RemoteError(BAD_REQUEST, "session already initialized")
        hooks = self.hooks
        codec = select_codec(offer.audio_codec_offerings, hooks.choose_codec(offer))
        sink = hooks.prepare(offer, codec)
        self.state = AnswerState.ANSWERING
        session = self.session
        try:
            reply = request.defer()
            session.open_audio(l16_frame_bytes(int(codec.sample_rate), int(codec.channels)))
            session.on_audio(sink)
            await reply.resolve(bf.SessionInitializeResponse(audio_codec=codec))
            hooks.answered(offer, codec)
        except BaseException:
            session.on_audio(None)
            self.state = AnswerState.WAITING
            hooks.abandoned()
            raise
        self.state = AnswerState.ANSWERED

    async def _terminate(self, request: IncomingRequest) -> bf.SessionTerminateResponse:
        if self.state is AnswerState.ANSWERED:
            self.hooks.terminated(request.params.reason)
        return bf.SessionTerminateResponse()

    def _event_receiver(self, name: str) -> EventHandler:
        async def receive(data: Any) -> None:
            if self.state is AnswerState.ANSWERED:
                self.hooks.event(name, data)

        return receive
