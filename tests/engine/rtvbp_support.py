"""Test support for RTVBP legs in media sessions: a talking RTP phone, RTVBP applications
(an SDK echo agent and raw misbehaving ones), spectra of what was heard.

Imported by tests/engine and tests/server (not a conftest, so each test says what it uses).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import numpy as np
from aiohttp import WSMsgType, web

from callbridge.media.g711 import ulaw_decode, ulaw_encode
from callbridge.media.telephone_event import build_telephone_event, digit_to_event
from callbridge.rtvbp.application import Application, Call
from callbridge.rtvbp.errors import RtvbpError
from callbridge.rtvbp.voice import VoiceCall
from tests.conftest import serve_app
from tests.engine.engine_peers import RtpPeer

FRAME_S = 0.020


def tone_frame(frequency: float, sample_rate: int, index: int, amplitude: float = 8000) -> bytes:
    """Frame number `index` (20 ms) of a continuous sine, L16 little-endian."""
    samples = sample_rate // 50
    times = np.arange(index * samples, (index + 1) * samples) / sample_rate
    return (np.sin(2 * np.pi * frequency * times) * amplitude).astype("<i2").tobytes()


def strongest(pcm: bytes, sample_rate: int, count: int = 1) -> list[float]:
    """The `count` strongest frequencies (Hz) of `pcm`, strongest first, 40 Hz apart."""
    data = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    data -= data.mean()
    spectrum = np.abs(np.fft.rfft(data * np.hanning(len(data))))
    peaks: list[float] = []
    for index in np.argsort(spectrum)[::-1]:
        frequency = float(index * sample_rate / len(data))
        if all(abs(frequency - peak) > 40 for peak in peaks):
            peaks.append(frequency)
        if len(peaks) == count:
            break
    return peaks


def rms(pcm: bytes) -> float:
    data = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(data * data))) if len(data) else 0.0


async def echo(call: Call) -> None:
    """The echo agent: the caller hears themself."""
    async for frame in call.audio():
        await call.send_audio(frame)


class Phone:
    """A PCMU phone on a real UDP socket that talks in real time and keeps what it hears.

    `source(index)` gives frame `index` as 8 kHz L16 (None: silence). `heard` holds
    (arrival monotonic time, decoded L16) of every PCMU packet received; `sent_at[index]` the
    send time of frame `index`.
    """

    def __init__(self, peer: RtpPeer) -> None:
        self.peer = peer
        self.source: Callable[[int], bytes | None] = lambda index: None
        self.heard: list[tuple[float, bytes]] = []
        self.events: list[Any] = []
        self.sent_at: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._collector: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls) -> Phone:
        return cls(await RtpPeer.open())

    def start(self) -> None:
        self._task = asyncio.create_task(self._talk())
        self._collector = asyncio.create_task(self._listen())

    def say(self, frequency: float | None, amplitude: float = 8000) -> None:
        """From now on: a continuous sine (None: silence)."""
        if frequency is None:
            self.source = lambda index: None
        else:
            self.source = lambda index: tone_frame(frequency, 8000, index, amplitude)

    async def _talk(self) -> None:
        index = 0
        next_at = time.monotonic()
        silence = bytes(320)
        while True:
            pcm = self.source(index)
            self.sent_at.append(time.monotonic())
            self.peer.send(ulaw_encode(pcm if pcm is not None else silence), 0)
            index += 1
            next_at += FRAME_S
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _listen(self) -> None:
        queue = self.peer.queue
        while True:
            data, _ = await queue.get()
            arrival = time.monotonic()
            if len(data) < 12 or 192 <= data[1] <= 223:
                continue
            payload_type = data[1] & 0x7F
            if payload_type == 0:
                self.heard.append((arrival, ulaw_decode(data[12:])))
            else:
                self.events.append((payload_type, data[12:]))

    def press(self, digit: str, duration_ms: int = 100) -> None:
        """Send an RFC 4733 digit (PT 101) as a phone does: updates, then three end packets."""
        timestamp = self.peer.timestamp
        event = digit_to_event(digit)
        steps = max(1, duration_ms // 20)
        for step in range(1, steps + 1):
            end = step == steps
            payload = build_telephone_event(event, end, 10, step * 160)
            for _ in range(3 if end else 1):
                self.peer.send(payload, 101, marker=step == 1, timestamp=timestamp, samples=0)

    def heard_pcm(self, since: float = 0.0) -> bytes:
        return b"".join(pcm for arrival, pcm in self.heard if arrival >= since)

    def digits_heard(self) -> list[int]:
        """Event codes of the RFC 4733 packets received (each digit several times)."""
        return [payload[0] for payload_type, payload in self.events if payload_type == 101]

    async def close(self) -> None:
        for task in (self._task, self._collector):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self.peer.close()


@asynccontextmanager
async def raw_rtvbp_server(
    answer: Callable[[dict[str, Any]], dict[str, Any] | None],
    *,
    method: str = "session.initialize",
    protocols: tuple[str, ...] = ("rtvbp.v1",),
) -> AsyncIterator[str]:
    """A misbehaving RTVBP application speaking one of `protocols`: `answer(request)` gives the
    response frame to send to each `method` request (None: never answer); every other message
    goes unanswered. Yields its ws:// URL."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(protocols=protocols)
        await socket.prepare(request)
        async for message in socket:
            if message.type is not WSMsgType.TEXT:
                continue
            frame = msgspec.json.decode(message.data)
            if frame.get("method") == method:
                reply = answer(frame)
                if reply is not None:
                    await socket.send_str(msgspec.json.encode(reply).decode())
        return socket

    app = web.Application()
    app.router.add_get("/agent", handler)
    async with serve_app(app) as address:
        yield f"ws://{address}/agent"


def answer_with(result: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """An answer that carries `result`, whatever the request asked."""

    def answer(frame: dict[str, Any]) -> dict[str, Any]:
        return {"version": "1", "response": frame["id"], "result": result}

    return answer


def codec_answer(rate: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """An initialize answer that picks L16 at `rate`, offered or not."""
    codec = {
        "id": f"L16/{rate}/1",
        "name": "L16",
        "sample_rate": rate,
        "bit_depth": 16,
        "channels": 1,
    }
    return answer_with({"audio_codec": codec})


def echo_application(**options: Any) -> Application:
    return Application(echo, **options)


class Caller:
    """A voice peer (`VoiceCall`) that talks and listens in real time, like a phone would.

    `say(frequency)` sets what it sends; `listening = False` stops reading the playout buffer
    (audio then accumulates there, as with a slow player); `heard` keeps (time, frame).
    """

    def __init__(self, voice: VoiceCall) -> None:
        self.voice = voice
        self.frequency: float | None = None
        self.listening = True
        self.heard: list[tuple[float, bytes]] = []
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def dial(cls, url: str, **options: Any) -> Caller:
        caller = cls(await VoiceCall.dial(url, **options))
        caller._task = asyncio.create_task(caller._run())
        return caller

    def say(self, frequency: float | None) -> None:
        self.frequency = frequency

    async def _run(self) -> None:
        voice = self.voice
        rate = voice.sample_rate
        silence = bytes(voice.frame_bytes)
        index = 0
        next_at = time.monotonic()
        while not voice.ended:
            frequency = self.frequency
            frame = silence if frequency is None else tone_frame(frequency, rate, index)
            try:
                await voice.send_audio(frame)
            except RtvbpError:
                return
            if self.listening:
                played = voice.read_frame()
                if played is not None:
                    self.heard.append((time.monotonic(), played))
            index += 1
            next_at += FRAME_S
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def heard_pcm(self, since: float = 0.0) -> bytes:
        return b"".join(frame for arrival, frame in self.heard if arrival >= since)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.voice.close()
