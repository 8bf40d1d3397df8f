"""`callbridge call`: a voice-peer simulator for testing RTVBP applications (agents, IVRs).

It dials the application like babelforce Cloud would, streams caller audio in real time (a tone,
a WAV file or silence), plays the application's audio out of a playout buffer at real time
(optionally into a WAV file), presses DTMF keys, pings for round-trip time, and hangs up after a
while. A live progress line shows what is happening; a summary follows. The exit status is 0 when
the call ended in an orderly way, 1 on any protocol failure.

Audio goes in binary WebSocket frames (``rtvbp.v1``), or over WebRTC (``rtvbp.webrtc.v1``:
control stays on the WebSocket, audio is PCMU/8000 over DTLS-SRTP, L16/8000 on our side).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import statistics
import sys
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

import msgspec

from callbridge.media.audiofile import AudioFileReader
from callbridge.media.errors import MediaError
from callbridge.media.tones import ToneGenerator
from callbridge.rtvbp import babelforce_v1 as bf
from callbridge.rtvbp.errors import RtvbpError
from callbridge.rtvbp.voice import EndReason, VoiceCall, new_call_info
from callbridge.rtvbp.webrtc import WEBRTC_PROFILE, WebRtcOptions
from callbridge.rtvbp.websocket import ConnectError

FRAME_SECONDS = 0.020
WEBRTC_SAMPLE_RATE = 8000


class CallTransport(StrEnum):
    """How the call's audio travels; control is always on the WebSocket."""

    WEBSOCKET = "websocket"
    """Binary WebSocket frames, profile rtvbp.v1 (or the headerless legacy handshake)."""
    WEBRTC = "webrtc"
    """WebRTC (PCMU/8000 over DTLS-SRTP), profile rtvbp.webrtc.v1 offered alone."""


_TRANSPORT_SUMMARY = {
    CallTransport.WEBSOCKET: "websocket",
    CallTransport.WEBRTC: "webrtc (PCMU/8000 over DTLS-SRTP)",
}


@dataclass
class CallOptions:
    """Everything `callbridge call` can be told; see its --help for the meaning of each."""

    url: str
    sample_rate: int = 8000
    tone_hz: float | None = 440.0
    wav: Path | None = None
    save: Path | None = None
    dtmf: str = ""
    dtmf_delay_s: float = 1.0
    dtmf_gap_ms: int = 300
    hangup_after_s: float | None = None
    bearer_token: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    headerless: bool = False
    transport: CallTransport = CallTransport.WEBSOCKET
    media_address: str | None = None
    """Our WebRTC host candidate (None: 127.0.0.1); only with the webrtc transport."""
    from_number: str = "+4910002000"
    to_number: str = "+4910003000"
    application_id: str = "callbridge-simulator"
    metadata: dict[str, Any] | None = None
    ping_interval_s: float = 2.0
    connect_timeout_s: float = 10.0
    progress: bool = True


@dataclass
class CallReport:
    """What happened on the call: the figures of the final summary."""

    transport: CallTransport = CallTransport.WEBSOCKET
    codec: str = "-"
    seconds: float = 0.0
    frames_sent: int = 0
    frames_played: int = 0
    frames_silent: int = 0
    rtts_ms: list[int] = field(default_factory=list)
    digits_sent: str = ""
    events: dict[str, int] = field(default_factory=dict)
    end: EndReason | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.end is not None and self.end.kind != "failed"

    def summary(self) -> str:
        rtt = (
            f"p50 {statistics.median(self.rtts_ms):.0f} ms, max {max(self.rtts_ms)} ms"
            if self.rtts_ms
            else "not measured"
        )
        events = ", ".join(f"{name} x{count}" for name, count in sorted(self.events.items()))
        end = (
            "-"
            if self.end is None
            else f"{self.end.kind}" + (f" ({self.end.detail})" if self.end.detail else "")
        )
        lines = [
            f"codec        {self.codec}",
            f"transport    {_TRANSPORT_SUMMARY[self.transport]}",
            f"duration     {self.seconds:.1f} s",
            f"sent         {self.frames_sent} frames",
            f"received     {self.frames_played - self.frames_silent} frames of audio"
            f" ({self.frames_silent} silent ticks)",
            f"rtt          {rtt}",
            f"dtmf sent    {self.digits_sent or '-'}",
            f"events       {events or '-'}",
            f"ended        {end}",
        ]
        if self.error:
            lines.append(f"error        {self.error}")
        return "\n".join(lines)


def check_options(options: CallOptions) -> None:
    """Refuse what the transport cannot carry, before dialling; the ValueError says why."""
    if options.transport != CallTransport.WEBRTC:
        if options.media_address is not None:
            raise ValueError("--media-address only applies to --transport webrtc")
        return
    if options.sample_rate != WEBRTC_SAMPLE_RATE:
        raise ValueError(
            f"WebRTC audio is 8 kHz (PCMU/8000): --transport webrtc needs --rate 8000,"
            f" not {options.sample_rate}"
        )
    if options.headerless:
        raise ValueError(
            "--headerless cannot be used with --transport webrtc: the rtvbp.webrtc.v1 profile"
            " is chosen by Sec-WebSocket-Protocol"
        )
    if options.media_address is not None:
        try:
            ipaddress.ip_address(options.media_address)
        except ValueError:
            raise ValueError(
                f"--media-address {options.media_address!r} is not an IP address"
            ) from None


def input_frames(options: CallOptions) -> Iterator[bytes]:
    """Caller audio: the audio file (then silence), a tone, or silence; 20 ms frames forever.

    The file is opened here, before the call, so a bad file fails before dialling.
    """
    source: AudioFileReader | ToneGenerator | None = None
    if options.wav is not None:
        source = AudioFileReader(options.wav, sample_rate=options.sample_rate)
    elif options.tone_hz is not None:
        source = ToneGenerator("sine", options.tone_hz, sample_rate=options.sample_rate)
    return _frames_then_silence(source, bytes(options.sample_rate // 50 * 2))


def _frames_then_silence(
    source: AudioFileReader | ToneGenerator | None, silence: bytes
) -> Iterator[bytes]:
    if isinstance(source, AudioFileReader):
        with source:
            while (frame := source.read_frame()) is not None:
                yield frame
    elif source is not None:
        while (frame := source.next_frame()) is not None:
            yield frame
    while True:
        yield silence


async def run_call(options: CallOptions, output: TextIO = sys.stderr) -> CallReport:
    """Place one simulated call and return its report (never raises for call failures)."""
    report = CallReport(transport=options.transport)
    try:
        check_options(options)
        frames = input_frames(options)
        call = await VoiceCall.dial(
            options.url,
            call=new_call_info(options.from_number, options.to_number),
            application_id=options.application_id,
            metadata=options.metadata,
            codecs=[bf.AudioCodec.l16(options.sample_rate)],
            bearer_token=options.bearer_token,
            headers=options.headers or None,
            profiles=_profiles(options),
            connect_timeout_s=options.connect_timeout_s,
            webrtc=_webrtc_options(options),
        )
    except (RtvbpError, OSError, MediaError, ValueError) as error:
        report.error = _dial_failure(error, options)
        return report
    report.codec = call.codec.id if call.codec else "-"
    recording = _open_wav(options.save, options.sample_rate) if options.save else None
    started = time.monotonic()
    helpers = [
        asyncio.create_task(_press_keys(call, options, report)),
        asyncio.create_task(_measure_rtt(call, options, report)),
        asyncio.create_task(_count_events(call, report)),
    ]
    try:
        await _stream(call, options, frames, report, recording, started, output)
    except RtvbpError as error:
        if not call.ended:
            report.error = f"{type(error).__name__}: {error}"
    finally:
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        if recording is not None:
            recording.close()
        if not call.ended:
            with contextlib.suppress(RtvbpError):
                await call.hangup("hangup")
        await call.close()
        report.end = await call.wait_ended()
        report.seconds = time.monotonic() - started
        if options.progress:
            output.write("\n")
    return report


def _profiles(options: CallOptions) -> tuple[str, ...] | None:
    if options.transport == CallTransport.WEBRTC:
        return (WEBRTC_PROFILE,)  # alone: an application offered both picks rtvbp.v1
    return None if options.headerless else ("rtvbp.v1",)


def _webrtc_options(options: CallOptions) -> WebRtcOptions | None:
    if options.transport != CallTransport.WEBRTC:
        return None
    webrtc = WebRtcOptions(connect_timeout_s=options.connect_timeout_s)
    if options.media_address is None:
        return webrtc
    return msgspec.structs.replace(webrtc, media_address=options.media_address)


def _dial_failure(error: Exception, options: CallOptions) -> str:
    """The error line; a 400 to a WebRTC offer says what to do about it."""
    text = f"{type(error).__name__}: {error}"
    if (
        options.transport == CallTransport.WEBRTC
        and isinstance(error, ConnectError)
        and error.status == 400
    ):
        text += f"; the application does not serve {WEBRTC_PROFILE}: try --transport websocket"
    return text


async def _stream(
    call: VoiceCall,
    options: CallOptions,
    frames: Iterator[bytes],
    report: CallReport,
    recording: wave.Wave_write | None,
    started: float,
    output: TextIO,
) -> None:
    """The real-time loop: one caller frame out and one application frame played per 20 ms."""
    silence = bytes(call.frame_bytes)
    next_tick = started
    next_progress = started
    while not call.ended:
        now = time.monotonic()
        if options.hangup_after_s is not None and now - started >= options.hangup_after_s:
            await call.hangup("hangup")
            return
        await call.send_audio(next(frames))
        report.frames_sent += 1
        played = call.read_frame()
        report.frames_played += 1
        if played is None:
            report.frames_silent += 1
        if recording is not None:
            recording.writeframes(played or silence)
        if options.progress and now >= next_progress:
            next_progress = now + 0.5
            _show_progress(call, report, now - started, output)
        next_tick += FRAME_SECONDS
        delay = next_tick - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.2:
            next_tick = time.monotonic()


def _show_progress(call: VoiceCall, report: CallReport, elapsed: float, output: TextIO) -> None:
    buffered = call.playout.buffered_ms if call.playout else 0.0
    rtt = f"{report.rtts_ms[-1]} ms" if report.rtts_ms else "-"
    output.write(
        f"\r{elapsed:6.1f} s  sent {report.frames_sent}  heard"
        f" {report.frames_played - report.frames_silent}  buffer {buffered:.0f} ms"
        f"  rtt {rtt}  dtmf {report.digits_sent or '-'}   "
    )
    output.flush()


async def _press_keys(call: VoiceCall, options: CallOptions, report: CallReport) -> None:
    if not options.dtmf:
        return
    await asyncio.sleep(options.dtmf_delay_s)
    for digit in options.dtmf:
        await call.send_dtmf(digit)
        report.digits_sent += digit
        await asyncio.sleep(options.dtmf_gap_ms / 1000)


async def _measure_rtt(call: VoiceCall, options: CallOptions, report: CallReport) -> None:
    if options.ping_interval_s <= 0:
        return
    last: int | None = None
    while not call.ended:
        with contextlib.suppress(RtvbpError):
            last = await call.session.ping(rtt_ms=last)
            report.rtts_ms.append(last)
        await asyncio.sleep(options.ping_interval_s)


async def _count_events(call: VoiceCall, report: CallReport) -> None:
    async for event in call.events():
        name = type(event).__name__.removesuffix("Event")
        report.events[name] = report.events.get(name, 0) + 1


def _open_wav(path: Path, sample_rate: int) -> wave.Wave_write:
    recording = wave.open(str(path), "wb")
    recording.setnchannels(1)
    recording.setsampwidth(2)
    recording.setframerate(sample_rate)
    return recording
