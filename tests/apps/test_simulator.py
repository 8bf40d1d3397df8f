"""The call simulator in process: WAV in, echo application, WAV out, report."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np

from callbridge.apps.echo import app as echo_app
from callbridge.apps.simulator import CallOptions, run_call
from tests.conftest import serve_application


def write_tone_wav(path: Path, frequency_hz: float, seconds: float, rate: int) -> None:
    t = np.arange(int(seconds * rate)) / rate
    samples = (10000 * np.sin(2 * np.pi * frequency_hz * t)).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())


def dominant_frequency(path: Path) -> tuple[float, float]:
    with wave.open(str(path), "rb") as recording:
        rate = recording.getframerate()
        samples = np.frombuffer(recording.readframes(recording.getnframes()), "<i2")
    spectrum = np.abs(np.fft.rfft(samples.astype(float)))
    return float(np.argmax(spectrum) * rate / len(samples)), len(samples) / rate


async def test_wav_in_echo_wav_out(tmp_path: Path) -> None:
    source = tmp_path / "caller.wav"
    write_tone_wav(source, 700, 1.0, 16000)  # resampled to the 8 kHz call by the reader
    heard = tmp_path / "heard.wav"
    progress = io.StringIO()
    async with serve_application(echo_app) as url:
        report = await run_call(
            CallOptions(url=url, wav=source, save=heard, hangup_after_s=1.0, progress=True),
            output=progress,
        )
    assert report.ok, report.summary()
    assert report.codec == "L16/8000/1"
    assert 45 <= report.frames_sent <= 55
    assert report.frames_played - report.frames_silent >= 40
    frequency, seconds = dominant_frequency(heard)
    assert abs(frequency - 700) < 15
    assert 0.9 <= seconds <= 1.1
    assert "sent" in progress.getvalue() and "buffer" in progress.getvalue()
    assert "ended        hangup (hangup)" in report.summary()


async def test_missing_wav_is_a_clear_error(tmp_path: Path) -> None:
    async with serve_application(echo_app) as url:
        report = await run_call(
            CallOptions(url=url, wav=tmp_path / "absent.wav", hangup_after_s=0.2, progress=False)
        )
    assert not report.ok
    assert report.error is not None and "absent.wav" in report.error
