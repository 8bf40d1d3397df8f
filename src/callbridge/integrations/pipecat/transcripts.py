"""The pipeline's transcripts as RTVBP transcript events, shown in babelforce's voice console.

An observer rather than a processor, so it sees the frames wherever they travel (a context
aggregator consumes ``TranscriptionFrame`` before it would reach the transport):

- a ``TranscriptionFrame`` (the caller's finished utterance, from the STT service) becomes
  ``input.transcript``;
- a ``TTSTextFrame`` becomes ``output.transcript.delta`` when the output transport passes it on,
  that is when its audio is played, so text cut off by a barge-in is never reported as said;
- the bot stopping speaking, or being interrupted, closes its utterance with
  ``output.transcript.done``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    InterruptionFrame,
    TranscriptionFrame,
    TTSTextFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection

from callbridge.integrations.pipecat.transport import CallbridgeTransport
from callbridge.rtvbp.errors import RtvbpError

logger = logging.getLogger(__name__)


class TranscriptObserver(BaseObserver):
    """Sends the transcripts of a pipeline on `transport` to its call's voice peer.

    Opt in with ``PipelineWorker(pipeline, observers=[TranscriptObserver(transport)])``.
    """

    def __init__(self, transport: CallbridgeTransport, **kwargs: Any) -> None:
        super().__init__(observe_every_push=True, **kwargs)
        self._call = transport.call
        self._output = transport.output()
        self._speaking = False

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        if isinstance(frame, TranscriptionFrame):
            if data.first_push and frame.text:
                await self._send(self._call.input_transcript(frame.text))
        elif isinstance(frame, InterruptionFrame):
            if data.first_push:
                await self._done()
        elif data.source is self._output and data.direction == FrameDirection.DOWNSTREAM:
            if isinstance(frame, TTSTextFrame) and frame.text:
                text = frame.text
                if self._speaking and not frame.includes_inter_frame_spaces:
                    text = " " + text
                self._speaking = True
                await self._send(self._call.output_transcript_delta(text))
            elif isinstance(frame, BotStoppedSpeakingFrame):
                await self._done()

    async def _done(self) -> None:
        if self._speaking:
            self._speaking = False
            await self._send(self._call.output_transcript_done())

    async def _send(self, event: Awaitable[None]) -> None:
        try:
            await event
        except RtvbpError as error:
            logger.debug("call %s: transcript event not sent: %r", self._call.info.id, error)
