"""Pipecat pipelines on real RTVBP calls: an aiohttp server running `pipecat_application`,
dialled by callbridge's VoiceCall over loopback sockets."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from pipecat.frames.frames import (
    EndWorkerFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    OutputAudioRawFrame,
    StartFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from callbridge import AudioCodec, Call, CallInfo, VoiceCall
from callbridge.integrations.pipecat import (
    PIPELINE_ERROR,
    CallbridgeTransport,
    TranscriptObserver,
    pipecat_application,
)
from callbridge.rtvbp import babelforce_v1 as bf
from callbridge.rtvbp.application import Application
from tests.conftest import serve_application, wait_until

SOURCE = Path(__file__).resolve().parents[2] / "src" / "callbridge"
FRAME_SECONDS = 0.02


def tone(frequency: float, seconds: float, rate: int) -> bytes:
    time = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * frequency * time) * 8000).astype("<i2").tobytes()


def peak_frequency(pcm: bytes, rate: int) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


class Echo(FrameProcessor):
    """The caller's audio straight back, at the pipeline's input rate."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            await self.push_frame(OutputAudioRawFrame(frame.audio, frame.sample_rate, 1))
        else:
            await self.push_frame(frame, direction)


class Keys(FrameProcessor):
    """Records DTMF; `on_key` reacts to it from inside the pipeline."""

    def __init__(self, on_key: Callable[[FrameProcessor, str], Awaitable[None]] | None = None):
        super().__init__()
        self.digits: list[str] = []
        self.on_key = on_key

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputDTMFFrame):
            self.digits.append(frame.button.value)
            if self.on_key is not None:
                await self.on_key(self, frame.button.value)
        await self.push_frame(frame, direction)


class Speaker(FrameProcessor):
    """Says `audio` (one frame of any length and rate) when the pipeline starts."""

    def __init__(self, audio: OutputAudioRawFrame) -> None:
        super().__init__()
        self.audio = audio

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(self.audio)


class Bots:
    """A factory for `pipecat_application` that keeps what it built, for the test to inspect."""

    def __init__(
        self,
        processors: Callable[[], Sequence[FrameProcessor]],
        *,
        transcripts: bool = False,
        in_rate: int = 16000,
        out_rate: int = 24000,
    ) -> None:
        self.processors = processors
        self.transcripts = transcripts
        self.params = PipelineParams(audio_in_sample_rate=in_rate, audio_out_sample_rate=out_rate)
        self.workers: list[PipelineWorker] = []
        self.transports: list[CallbridgeTransport] = []
        self.built: list[Sequence[FrameProcessor]] = []
        self.cleared: list[int] = []

    async def __call__(self, call: Call) -> PipelineWorker:
        transport = CallbridgeTransport(call)

        @transport.event_handler("on_audio_cleared")
        async def on_audio_cleared(transport: CallbridgeTransport, cleared: int) -> None:
            self.cleared.append(cleared)

        processors = self.processors()
        pipeline = Pipeline([transport.input(), *processors, transport.output()])
        observers = [TranscriptObserver(transport)] if self.transcripts else []
        worker = PipelineWorker(
            pipeline, params=self.params, observers=observers, enable_rtvi=False
        )
        self.transports.append(transport)
        self.built.append(processors)
        self.workers.append(worker)
        return worker

    def application(self) -> Application:
        return pipecat_application(self)


class Phone:
    """Plays what the application sends at real time, like a phone: one frame per 20 ms."""

    def __init__(self, voice: VoiceCall) -> None:
        self.voice = voice
        self.heard = bytearray()
        self.ticks_with_audio = 0
        self.most_buffered = 0
        self._task = asyncio.create_task(self._play())

    async def _play(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while not self.voice.ended:
            playout = self.voice.playout
            if playout is not None:
                self.most_buffered = max(self.most_buffered, len(playout))
            frame = self.voice.read_frame()
            if frame is not None:
                self.heard += frame
                self.ticks_with_audio += 1
            next_tick += FRAME_SECONDS
            await asyncio.sleep(max(0.0, next_tick - loop.time()))

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_echo_is_heard_at_the_right_pitch_in_real_time(rate: int) -> None:
    bots = Bots(lambda: [Echo()])
    async with serve_application(bots.application()) as url:
        voice = await VoiceCall.dial(url, codecs=[AudioCodec.l16(rate)])
        phone = Phone(voice)
        await voice.send_audio(tone(700, 1.0, rate))  # sent at once; the echo must pace itself
        await wait_until(lambda: len(phone.heard) >= rate * 2 * 0.9, timeout=3)
        await voice.hangup()
        await phone.stop()
    heard = bytes(phone.heard)
    assert abs(peak_frequency(heard[rate // 5 :], rate) - 700) < 5
    # Paced as it plays: never more than a few frames waiting at the phone.
    assert phone.most_buffered <= rate * 2 * 0.2


async def test_interruption_clears_exactly_the_unplayed_audio() -> None:
    async def interrupt_on_zero(processor: FrameProcessor, digit: str) -> None:
        if digit == "0":
            await processor.broadcast_interruption()

    speech = OutputAudioRawFrame(tone(500, 3.0, 24000), 24000, 1)  # 3 s, pipeline rate
    bots = Bots(lambda: [Keys(interrupt_on_zero), Speaker(speech)])
    async with serve_application(bots.application()) as url:
        voice = await VoiceCall.dial(url)
        phone = Phone(voice)
        await wait_until(lambda: len(phone.heard) >= 8000, timeout=3)  # 0.5 s heard
        await voice.send_dtmf("0")
        await wait_until(lambda: bool(bots.cleared), timeout=3)
        await asyncio.sleep(0.5)
        received = voice.session.stats.audio_bytes_in
        await voice.hangup()
        await phone.stop()
        events = voice.events()
        assert isinstance(await anext(events), bf.AudioSpeechStartedEvent)
    assert bots.cleared[0] > 0
    assert received == len(phone.heard) + bots.cleared[0]
    assert len(phone.heard) < 16000 * 1.5  # the rest of the 3 s was never sent
    assert bots.transports[0].output().audio_bytes_cleared == bots.cleared[0]
    assert abs(peak_frequency(bytes(phone.heard[1600:]), 8000) - 500) < 5


async def test_dtmf_and_call_identity_reach_the_pipeline() -> None:
    bots = Bots(lambda: [Keys()])
    identity = CallInfo(id="call-7", session_id="session-7", from_="+4930123", to="+4940456")
    async with serve_application(bots.application()) as url:
        voice = await VoiceCall.dial(url, call=identity, metadata={"language": "de"})
        for digit in "1#*0":
            await voice.send_dtmf(digit, hold_ms=20)
        keys = bots.built[0][0]
        assert isinstance(keys, Keys)
        await wait_until(lambda: len(keys.digits) == 4)
        assert keys.digits == ["1", "#", "*", "0"]
        call = bots.transports[0].call
        assert (call.info.from_, call.info.to, call.info.id) == ("+4930123", "+4940456", "call-7")
        assert call.metadata == {"language": "de"}
        await voice.hangup()


async def test_caller_hangup_ends_the_pipeline(
    task_baseline: Callable[[], Awaitable[None]],
) -> None:
    bots = Bots(lambda: [Echo()])
    application = bots.application()
    disconnected: list[str | None] = []
    async with serve_application(application) as url:
        voice = await VoiceCall.dial(url)
        await wait_until(lambda: bool(bots.transports))

        @bots.transports[0].event_handler("on_client_disconnected")
        async def on_disconnected(transport: CallbridgeTransport, call: Call) -> None:
            disconnected.append(call.hangup_reason)

        await voice.send_audio(tone(440, 0.2, 8000))
        await voice.hangup("caller left")
        await wait_until(lambda: bots.workers[0].has_finished() and not application.active_calls)
    assert disconnected == ["caller left"]
    await task_baseline()


async def test_pipeline_end_hangs_up_after_its_audio_played() -> None:
    async def goodbye(processor: FrameProcessor, digit: str) -> None:
        await processor.push_frame(OutputAudioRawFrame(tone(600, 0.5, 16000), 16000, 1))
        await processor.push_frame(EndWorkerFrame(reason="goodbye"))

    bots = Bots(lambda: [Keys(goodbye)])
    async with serve_application(bots.application()) as url:
        voice = await VoiceCall.dial(url)
        phone = Phone(voice)
        await voice.send_dtmf("#", hold_ms=20)
        end = await asyncio.wait_for(voice.wait_ended(), timeout=3)
        await phone.stop()
    assert (end.kind, end.detail) == ("application-hangup", "goodbye")
    assert bots.workers[0].has_finished()
    # The half second reached the phone before the hang-up, less what Pipecat's output keeps
    # back at the end of a stream that is not TTS (a partial 40 ms chunk, resampler tails).
    assert voice.session.stats.audio_bytes_in >= 8000 - 2 * 320
    assert len(phone.heard) >= voice.session.stats.audio_bytes_in - 4 * 320


async def test_fifty_calls_in_a_row_leak_no_task(
    task_baseline: Callable[[], Awaitable[None]],
) -> None:
    bots = Bots(lambda: [Echo()])
    application = bots.application()
    async with serve_application(application) as url:
        for _ in range(50):
            voice = await VoiceCall.dial(url, audio_info_interval_s=None)
            await voice.send_audio(tone(440, 0.1, 8000))
            await wait_until(lambda call=voice: bool(call.playout))
            await voice.hangup()
            await wait_until(lambda: not application.active_calls)
    assert len(bots.workers) == 50 and all(worker.has_finished() for worker in bots.workers)
    await task_baseline()


class Broken(FrameProcessor):
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            raise RuntimeError("boom: the model crashed")
        await self.push_frame(frame, direction)


async def test_a_pipeline_that_raises_ends_the_call_with_a_clear_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bots = Bots(lambda: [Broken()])
    with caplog.at_level(logging.ERROR, logger="callbridge.integrations.pipecat"):
        async with serve_application(bots.application()) as url:
            voice = await VoiceCall.dial(url)
            await voice.send_audio(tone(440, 0.1, 8000))
            end = await asyncio.wait_for(voice.wait_ended(), timeout=3)
    assert (end.kind, end.detail) == ("application-hangup", PIPELINE_ERROR)
    assert bots.workers[0].has_finished()
    [record] = [r for r in caplog.records if r.name.startswith("callbridge.integrations")]
    assert "boom: the model crashed" in record.getMessage()
    assert voice.call.id in record.getMessage()


async def test_transcripts_reach_the_voice_peer_when_opted_in() -> None:
    async def converse(processor: FrameProcessor, digit: str) -> None:
        await processor.push_frame(TranscriptionFrame("what time is it", "caller", "now"))
        for word in ("It", "is", "noon."):
            await processor.push_frame(TTSTextFrame(word, text_type="word"))
        await processor.push_frame(TTSAudioRawFrame(tone(300, 0.3, 24000), 24000, 1))
        await processor.push_frame(TTSStoppedFrame())

    bots = Bots(lambda: [Keys(converse)], transcripts=True)
    async with serve_application(bots.application()) as url:
        voice = await VoiceCall.dial(url)
        phone = Phone(voice)
        await voice.send_dtmf("5", hold_ms=20)
        events = voice.events()
        received = [await asyncio.wait_for(anext(events), timeout=3) for _ in range(5)]
        await voice.hangup()
        await phone.stop()
    assert received == [
        bf.InputTranscriptEvent(delta="what time is it"),
        bf.OutputTranscriptDeltaEvent(delta="It"),
        bf.OutputTranscriptDeltaEvent(delta=" is"),
        bf.OutputTranscriptDeltaEvent(delta=" noon."),
        bf.OutputTranscriptDoneEvent(text=None),
    ]


def test_the_core_never_imports_pipecat() -> None:
    probe = "import sys, callbridge, callbridge.server.cli; print('pipecat' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
    for path in SOURCE.rglob("*.py"):
        if "integrations" in path.relative_to(SOURCE).parts:
            continue
        text = path.read_text()
        assert "pipecat" not in text and "callbridge.integrations" not in text, path
