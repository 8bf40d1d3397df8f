"""A Pipecat transport over one RTVBP call: input and output processors on a `callbridge.Call`.

Pipecat's telephony transports pair a websocket with a serializer for the provider's wire format.
Here the `Call` already speaks the wire (RTVBP over its WebSocket), so the processors talk to it
directly:

- input: the caller's 20 ms L16 frames, converted by the SDK's streaming resampler to the
  pipeline's input rate, become ``InputAudioRawFrame``; RTVBP ``dtmf`` becomes
  ``InputDTMFFrame``; the end of the call (``call.hangup``, ``session.terminate``, a lost
  connection) cancels the pipeline, since nobody is left to hear it;
- output: ``OutputAudioRawFrame`` of any length and rate goes to the caller paced at real time
  (a little ahead), so an interruption also stops what has not left yet; an
  ``InterruptionFrame`` becomes RTVBP barge-in (``audio.speech.started`` and
  ``audio.buffer.clear``); the pipeline ending (``EndFrame``, after its audio has played, or
  ``CancelFrame``) hangs up the call with the frame's reason.

Event handlers (Pipecat's ``@transport.event_handler(name)``):

- ``on_client_connected(transport, call)``: the pipeline started on the call;
- ``on_client_disconnected(transport, call)``: the call ended (``call.hangup_reason`` says why);
- ``on_audio_cleared(transport, cleared_bytes)``: a barge-in discarded that much unplayed audio
  (L16 bytes at the call's rate) at the voice peer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames.frames import (
    CancelFrame,
    CancelWorkerFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    StartFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams
from pydantic import model_validator

from callbridge.rtvbp.application import Call
from callbridge.rtvbp.errors import RtvbpError

logger = logging.getLogger(__name__)

SAMPLE_BYTES = 2
"""L16: two bytes per sample, mono."""


class CallbridgeParams(TransportParams):
    """`TransportParams` with telephony defaults: audio both ways, no silence at the end.

    ``audio_in_sample_rate`` / ``audio_out_sample_rate`` default to the pipeline's rates
    (``PipelineParams``); the call's own rate is converted to and from them. Audio is mono
    (other channel counts are refused).

    Parameters:
        hangup_on_end: Hang up the call when the pipeline ends or is cancelled while the call is
            still up (the reason is the ``EndFrame``/``CancelFrame`` reason). When False the call
            stays up, e.g. for a handler that moves it to the next IVR step afterwards.
    """

    audio_in_enabled: bool = True
    audio_out_enabled: bool = True
    audio_out_end_silence_secs: int = 0
    hangup_on_end: bool = True

    @model_validator(mode="after")
    def _check_mono(self) -> CallbridgeParams:
        if self.audio_in_channels != 1 or self.audio_out_channels != 1:
            raise ValueError("RTVBP calls carry mono audio: audio_in/out_channels must be 1")
        return self


class CallbridgeInputTransport(BaseInputTransport):
    """The caller's side of the call, into the pipeline: audio, DTMF, and the end of the call."""

    def __init__(
        self, transport: CallbridgeTransport, params: CallbridgeParams, **kwargs: Any
    ) -> None:
        super().__init__(params, **kwargs)
        self._transport = transport
        self._call = transport.call
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        if not self._tasks:
            await self._transport._call_event_handler("on_client_connected", self._call)
            if self._params.audio_in_enabled:
                self._tasks.append(self.create_task(self._receive_audio(), "audio"))
            self._tasks.append(self.create_task(self._receive_dtmf(), "dtmf"))
        await self.set_transport_ready(frame)

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)
        await self._stop_tasks()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._stop_tasks()

    async def cleanup(self) -> None:
        await super().cleanup()  # type: ignore[no-untyped-call]
        await self._stop_tasks()

    async def _stop_tasks(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            await self.cancel_task(task)

    async def _receive_audio(self) -> None:
        rate = self.sample_rate
        async for pcm in self._call.audio(sample_rate=rate):
            await self.push_audio_frame(
                InputAudioRawFrame(audio=pcm, sample_rate=rate, num_channels=1)
            )

    async def _receive_dtmf(self) -> None:
        """DTMF until the call ends (the iterator ends with it), then end the pipeline."""
        async for event in self._call.dtmf():
            try:
                button = KeypadEntry(event.digit)
            except ValueError:
                logger.warning(
                    "call %s: DTMF %r has no Pipecat key", self._call.info.id, event.digit
                )
                continue
            await self.push_frame(InputDTMFFrame(button=button))
        await self._transport._call_event_handler("on_client_disconnected", self._call)
        reason = f"call ended: {self._call.hangup_reason or 'closed'}"
        await self.push_frame(CancelWorkerFrame(reason=reason), FrameDirection.UPSTREAM)


class CallbridgeOutputTransport(BaseOutputTransport):
    """The pipeline's audio to the caller, barge-in, and the hang-up when the pipeline ends."""

    def __init__(
        self, transport: CallbridgeTransport, params: CallbridgeParams, **kwargs: Any
    ) -> None:
        super().__init__(params, **kwargs)
        self._transport = transport
        self._call = transport.call
        self._hangup_on_end = params.hangup_on_end
        self._played_until = 0.0
        """time.monotonic() at which the audio sent so far will have played at the voice peer."""
        self.audio_bytes_cleared = 0
        """Unplayed audio discarded by barge-ins on this call, in L16 bytes at the call's rate."""

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)
        await self._end_call(frame.reason or "pipeline ended", after_playout=True)

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._end_call(frame.reason or "pipeline cancelled", after_playout=False)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InterruptionFrame):
            await self._barge_in()

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        """Send one chunk to the caller, returning once it is due to play (real-time pacing)."""
        if self._call.ended:
            return False
        started = time.monotonic()
        try:
            await self._call.send_audio(frame.audio, sample_rate=frame.sample_rate, realtime=True)
        except RtvbpError:
            return False
        duration = len(frame.audio) / (SAMPLE_BYTES * frame.sample_rate)
        self._played_until = max(self._played_until, started) + duration
        return True

    async def _barge_in(self) -> None:
        if self._call.ended:
            return
        try:
            await self._call.speech_started()
            cleared = await self._call.clear_audio()
        except RtvbpError as error:
            logger.debug("call %s: barge-in failed: %r", self._call.info.id, error)
            return
        self._played_until = time.monotonic()
        self.audio_bytes_cleared += cleared
        logger.debug(
            "call %s: barge-in cleared %d bytes (%.0f ms)",
            self._call.info.id,
            cleared,
            cleared * 1000 / (SAMPLE_BYTES * self._call.sample_rate),
        )
        await self._transport._call_event_handler("on_audio_cleared", cleared)

    async def _end_call(self, reason: object, *, after_playout: bool) -> None:
        if not self._hangup_on_end or self._call.ended:
            return
        try:
            if after_playout:
                await self._call.flush_audio()
                await asyncio.sleep(max(0.0, self._played_until - time.monotonic()))
            await self._call.hangup(str(reason))
        except RtvbpError as error:
            logger.debug("call %s: hang-up failed: %r", self._call.info.id, error)


class CallbridgeTransport(BaseTransport):
    """One RTVBP call as a Pipecat transport: ``Pipeline([transport.input(), ...,
    transport.output()])``.

    `call` is the `callbridge.Call` handed to an application's handler; its identity
    (``call.info.from_``, ``call.info.to``, ``call.info.id``, ``call.application_id``,
    ``call.metadata``) is there for the pipeline to use, as ``transport.call``.
    """

    def __init__(
        self,
        call: Call,
        params: CallbridgeParams | None = None,
        *,
        input_name: str | None = None,
        output_name: str | None = None,
    ) -> None:
        super().__init__(input_name=input_name, output_name=output_name)
        self.call = call
        self._params = params or CallbridgeParams()
        self._input = CallbridgeInputTransport(self, self._params, name=self._input_name)
        self._output = CallbridgeOutputTransport(self, self._params, name=self._output_name)
        for event in ("on_client_connected", "on_client_disconnected", "on_audio_cleared"):
            self._register_event_handler(event)

    def input(self) -> CallbridgeInputTransport:
        return self._input

    def output(self) -> CallbridgeOutputTransport:
        return self._output
