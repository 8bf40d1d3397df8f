"""The voice peer's default recorder: a stereo WAV of both directions, aligned on the clock."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from callbridge.rtvbp import babelforce_v1 as bf
from callbridge.rtvbp.application import Application, Call
from callbridge.rtvbp.errors import RemoteError
from callbridge.rtvbp.voice import VoiceCall
from callbridge.rtvbp.voice_recorder import WavCallRecorder
from tests.conftest import serve_application
from tests.engine.engine_peers import dominant_frequency, sine_pcm
from tests.engine.recording_support import read_wav

RATE = 16000
FRAME = RATE // 50


def test_a_voice_call_records_by_default() -> None:
    assert WavCallRecorder().directory.name == "callbridge-voice-recordings"


async def test_both_directions_in_one_stereo_file(tmp_path: Path) -> None:
    outcomes: dict[str, Any] = {}

    async def agent(call: Call) -> None:
        recording_id = await call.start_recording(["support"])
        outcomes["id"] = recording_id
        for index in range(75):  # 1.5 s of 1000 Hz, sent ahead; the voice side plays it
            await call.send_audio(sine_pcm(1000, RATE, FRAME, index * FRAME))
        await asyncio.sleep(1.6)
        await call.stop_recording(recording_id)
        try:
            await call.stop_recording(recording_id)
        except RemoteError as error:
            outcomes["again"] = error.code
        await call.hangup("done")

    recorder = WavCallRecorder(tmp_path)
    async with serve_application(Application(agent)) as url:
        voice = await VoiceCall.dial(url, codecs=[bf.AudioCodec.l16(RATE)], recorder=recorder)
        start = time.monotonic()
        index = 0
        while not voice.ended and index < 100:
            await voice.send_audio(sine_pcm(440, RATE, FRAME, index * FRAME))
            voice.read_frame()
            index += 1
            await asyncio.sleep(max(0.0, start + index * 0.02 - time.monotonic()))
        await voice.wait_ended()
    assert outcomes == {"id": "recording-1", "again": 500}
    path = recorder.paths["recording-1"]
    assert path.name == f"{voice.call.id}-recording-1.wav"
    rate, samples = read_wav(path)
    assert rate == RATE and samples.shape[1] == 2
    assert len(samples) >= RATE
    assert abs(dominant_frequency(samples[:, 0], rate) - 440) < 15
    assert abs(dominant_frequency(samples[:, 1], rate) - 1000) < 15
