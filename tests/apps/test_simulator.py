"""The call simulator in process: WAV in, echo application, WAV out, report; over the WebSocket
and over WebRTC."""

from __future__ import annotations

import io
import wave
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

from callbridge.apps.echo import app as echo_app
from callbridge.apps.simulator import CallOptions, CallReport, CallTransport, run_call
from callbridge.rtvbp.application import Application, Call
from callbridge.rtvbp.websocket import accept
from tests.conftest import serve_app, serve_application


def write_tone_wav(path: Path, frequency_hz: float, seconds: float, rate: int) -> None:
    t = np.arange(int(seconds * rate)) / rate
    samples = (10000 * np.sin(2 * np.pi * frequency_hz * t)).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as recording:
        rate = recording.getframerate()
        return np.frombuffer(recording.readframes(recording.getnframes()), "<i2"), rate


def dominant_frequency(path: Path) -> tuple[float, float]:
    samples, rate = read_wav(path)
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


async def call_over_webrtc(application: Application, **options: Any) -> CallReport:
    """One simulated call over WebRTC (loopback media) to `application`, served in process."""
    async with serve_application(application) as url:
        return await run_call(
            CallOptions(
                url=url,
                transport=CallTransport.WEBRTC,
                media_address="127.0.0.1",
                progress=False,
                **options,
            )
        )


async def test_webrtc_tone_echoed_and_saved(tmp_path: Path) -> None:
    heard = tmp_path / "heard.wav"
    report = await call_over_webrtc(echo_app, tone_hz=700, save=heard, hangup_after_s=1.5)
    assert report.ok, report.summary()
    assert report.codec == "L16/8000/1"  # the SDK boundary; PCMU on the wire
    assert "transport    webrtc (PCMU/8000 over DTLS-SRTP)" in report.summary()
    assert "ended        hangup (hangup)" in report.summary()
    assert report.rtts_ms
    frequency, seconds = dominant_frequency(heard)
    assert abs(frequency - 700) < 15
    assert 1.4 <= seconds <= 1.6
    samples, rate = read_wav(heard)
    frame = rate // 50
    frames = samples[: len(samples) // frame * frame].reshape(-1, frame).astype(float)
    loud = np.sqrt((frames**2).mean(axis=1)) > 2000  # the tone is ~5600 RMS; PCMU is lossy
    assert loud.mean() > 0.8, f"only {loud.mean():.0%} of the saved call is audio"


class KeyRecorder:
    """Echoes the caller and records their keys; hangs up on '#'."""

    def __init__(self) -> None:
        self.digits: list[str] = []

    async def __call__(self, call: Call) -> None:
        async def keys() -> None:
            async for key in call.dtmf():
                self.digits.append(key.digit)
                if key.digit == "#":
                    await call.hangup("caller pressed #")

        call.spawn(keys())
        async for frame in call.audio():
            await call.send_audio(frame)


async def test_webrtc_dtmf_reaches_the_application() -> None:
    recorder = KeyRecorder()
    report = await call_over_webrtc(
        Application(recorder), dtmf="12#", dtmf_delay_s=0.3, dtmf_gap_ms=100
    )
    assert report.ok, report.summary()
    assert recorder.digits == ["1", "2", "#"]
    assert "dtmf sent    12#" in report.summary()
    assert "ended        application-hangup (caller pressed #)" in report.summary()
    assert report.frames_played - report.frames_silent > 0


async def test_webrtc_to_an_application_without_it_says_what_to_do() -> None:
    """An application that serves only rtvbp.v1 refuses the upgrade (400), as our stack does."""

    async def rtvbp_v1_only(request: web.Request) -> web.StreamResponse:
        accepted = await accept(request, supported_profiles=("rtvbp.v1",))
        await echo_app.run(accepted.transport)
        return accepted.response

    app = web.Application()
    app.router.add_get("/rtvbp", rtvbp_v1_only)
    async with serve_app(app) as address:
        url = f"ws://{address}/rtvbp"
        refused = await run_call(
            CallOptions(url=url, transport=CallTransport.WEBRTC, progress=False)
        )
        over_websocket = await run_call(CallOptions(url=url, hangup_after_s=0.3, progress=False))
    assert not refused.ok
    assert refused.error is not None
    assert "HTTP 400" in refused.error and "try --transport websocket" in refused.error
    assert "transport    webrtc" in refused.summary()
    assert over_websocket.ok, over_websocket.summary()
    assert "transport    websocket" in over_websocket.summary()


async def test_webrtc_refuses_what_it_cannot_carry() -> None:
    for options, message in [
        (CallOptions(url="ws://127.0.0.1:1/", sample_rate=16000), "8 kHz"),
        (CallOptions(url="ws://127.0.0.1:1/", headerless=True), "Sec-WebSocket-Protocol"),
        (CallOptions(url="ws://127.0.0.1:1/", media_address="nowhere"), "not an IP address"),
    ]:
        options.transport = CallTransport.WEBRTC
        report = await run_call(options)
        assert not report.ok and report.error is not None and message in report.error
    report = await run_call(CallOptions(url="ws://127.0.0.1:1/", media_address="127.0.0.1"))
    assert report.error is not None and "only applies to --transport webrtc" in report.error
