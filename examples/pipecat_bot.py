"""A Pipecat bot on RTVBP calls that needs no cloud service: a spoken prompt, an echo, a DTMF menu.

    pip install 'callbridge[pipecat]'
    callbridge serve examples.pipecat_bot:app
    callbridge call ws://127.0.0.1:9100/rtvbp --dtmf "1*#" --dtmf-delay 3 --save heard.wav

The prompt is spoken by espeak-ng when it is installed, else it is a short tone. Keys: 1 beeps,
* mutes or unmutes the echo, 0 interrupts the bot (barge-in), # says goodbye and hangs up.
examples/pipecat_agent.py is the same transport with speech-to-text, an LLM and text-to-speech.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import subprocess
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
from pipecat.frames.frames import (
    EndWorkerFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    OutputAudioRawFrame,
    StartFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

import callbridge
from callbridge.integrations.pipecat import CallbridgeTransport, pipecat_application

RATE = 16000
"""The pipeline's audio rate; the transport converts the call's rate (8 kHz on a phone line)."""

PROMPT = "Press 1 for a beep, star to mute the echo, hash to hang up."


def tone(frequency: float, seconds: float, rate: int = RATE) -> bytes:
    instants = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * frequency * instants) * 8000).astype("<i2").tobytes()


@functools.cache
def prompt_audio() -> tuple[bytes, int]:
    """The prompt and its rate: espeak-ng speaking at its own rate (converted by the transport),
    or a tone."""
    if shutil.which("espeak-ng"):
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "prompt.wav"
            subprocess.run(["espeak-ng", "-w", str(path), PROMPT], check=True, timeout=30)
            with wave.open(str(path)) as speech:
                return speech.readframes(speech.getnframes()), speech.getframerate()
    return tone(660, 0.3) + tone(880, 0.3), RATE


class EchoMenu(FrameProcessor):
    """Plays the prompt, then echoes the caller; DTMF keys drive a small menu."""

    def __init__(self, prompt: tuple[bytes, int]) -> None:
        super().__init__()
        self.prompt, self.prompt_rate = prompt
        self.echo = True
        self.echo_from = 0.0
        """time.monotonic() when the prompt has played; the caller is not echoed before."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            if self.echo and time.monotonic() >= self.echo_from:
                await self.push_frame(OutputAudioRawFrame(frame.audio, frame.sample_rate, 1))
        elif isinstance(frame, InputDTMFFrame):
            await self.key(frame.button.value)
        else:
            await self.push_frame(frame, direction)
            if isinstance(frame, StartFrame):
                await self.push_frame(OutputAudioRawFrame(self.prompt, self.prompt_rate, 1))
                prompt_seconds = len(self.prompt) / (2 * self.prompt_rate)
                self.echo_from = time.monotonic() + prompt_seconds

    async def key(self, digit: str) -> None:
        if digit == "1":
            await self.push_frame(OutputAudioRawFrame(tone(1000, 0.2), RATE, 1))
        elif digit == "*":
            self.echo = not self.echo
        elif digit == "0":
            await self.broadcast_interruption()
        elif digit == "#":
            self.echo = False
            await self.push_frame(OutputAudioRawFrame(tone(520, 0.4), RATE, 1))
            await self.push_frame(EndWorkerFrame(reason="caller pressed #"))


async def bot(call: callbridge.Call) -> PipelineWorker:
    print(f"call {call.info.id} from {call.info.from_} to {call.info.to}, {call.codec.id}")
    transport = CallbridgeTransport(call)
    menu = EchoMenu(await asyncio.to_thread(prompt_audio))
    pipeline = Pipeline([transport.input(), menu, transport.output()])
    params = PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE)
    return PipelineWorker(pipeline, params=params, enable_rtvi=False)


app = pipecat_application(bot)
