"""Test support for rtvbp.webrtc.v1: aiortc as the independent media peer of either role.

The control side of these peers is a plain RTVBP session on a WebSocket; the audio is aiortc's
(PCMU negotiated from our SDP, resampled by aiortc), so what our side hears and sends is judged
by a WebRTC stack written elsewhere. Importing `tests.engine.webrtc_peers` keeps aioice on
loopback.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import numpy as np
from aiohttp import web
from aiortc import RTCSessionDescription

from callbridge.rtvbp import babelforce_v1 as bf
from callbridge.rtvbp.catalog import Role
from callbridge.rtvbp.envelope import Request, Response, decode_frame, encode_frame
from callbridge.rtvbp.session import CloseInfo, EventHandler, IncomingRequest, RtvbpSession
from callbridge.rtvbp.transport_base import MessageKind
from callbridge.rtvbp.voice import new_call_info
from callbridge.rtvbp.websocket import Connected, WebSocketTransport, connect
from tests.conftest import serve_app
from tests.engine.engine_peers import dominant_frequency
from tests.engine.webrtc_peers import AiortcPeer

OFFER = "transport.webrtc.offer"


def tone_share(
    samples: np.ndarray[Any, Any],
    rate: int,
    frequency: float,
    tolerance_hz: float = 20.0,
    window_s: float = 0.2,
) -> float:
    """The share (0 to 1) of the `window_s` windows of `samples` whose strongest frequency is
    within `tolerance_hz` of `frequency`; 0 when there is not one whole window."""
    size = int(window_s * rate)
    count = len(samples) // size
    if count == 0:
        return 0.0
    near = sum(
        abs(dominant_frequency(samples[index * size : (index + 1) * size], rate) - frequency)
        <= tolerance_hz
        for index in range(count)
    )
    return near / count


class AiortcAudio(AiortcPeer):
    """aiortc sending a tone; what it hears is PCMU that its decoder hands over at 8 kHz."""

    rate = 8000

    def loud_seconds(self) -> float:
        """How much of what was heard is the tone (not silence), seconds."""
        return len(self.loud()) / self.rate

    def loud(self) -> np.ndarray[Any, Any]:
        """What was heard of the tone, silence left out."""
        return np.concatenate(
            [chunk for chunk in self.heard if np.abs(chunk).max() > 1000] or [np.zeros(0)]
        )

    def frequency(self) -> float:
        return dominant_frequency(self.loud(), self.rate)


class AiortcVoice:
    """The voice role with aiortc audio: offers over the WebSocket, then runs the catalog."""

    def __init__(self, connected: Connected, audio: AiortcAudio) -> None:
        self.connected = connected
        self.audio = audio
        self.session = RtvbpSession(Role.VOICE, bf.CATALOG, connected.transport)
        self.hangups: list[str | None] = []
        self.session.handle("call.hangup", self._on_hangup)

    @classmethod
    async def open(cls, url: str, frequency: float = 1000.0) -> AiortcVoice:
        connected = await connect(url, profiles=["rtvbp.webrtc.v1"])
        return cls(connected, AiortcAudio(frequency))

    async def offer(self) -> Response:
        """Send aiortc's offer as transport.webrtc.offer and return the response frame."""
        connection = self.audio.connection
        await connection.setLocalDescription(await connection.createOffer())
        params = msgspec.json.encode({"sdp": connection.localDescription.sdp})
        return await self.request_raw(Request("offer-1", OFFER, params))

    async def request_raw(self, request: Request) -> Response:
        transport = self.connected.transport
        await transport.send_text(encode_frame(request))
        frame = decode_frame((await transport.receive()).data)
        assert isinstance(frame, Response)
        return frame

    async def connect_media(self) -> None:
        response = await self.offer()
        assert response.error is None, response.error
        answer = msgspec.json.decode(response.result)["sdp"]
        await self.audio.connection.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    async def initialize(self) -> bf.SessionInitializeResponse:
        self.session.start()
        request = bf.SessionInitializeRequest(
            application=bf.AppInfo(id="webrtc-test"),
            call=new_call_info(),
            audio_codec_offerings=[bf.AudioCodec.l16(8000)],
            metadata=None,
        )
        result: bf.SessionInitializeResponse = await self.session.request(
            "session.initialize", request
        )
        await self.session.notify(
            "session.updated", bf.SessionUpdatedEvent(audio_codec=result.audio_codec)
        )
        return result

    async def hangup(self) -> None:
        await self.session.notify("call.hangup", bf.CallHangupEvent(reason="caller"))
        await self.session.request(
            "session.terminate", bf.SessionTerminateRequest(reason="caller"), terminal_ok=True
        )
        await self.session.close()

    async def _on_hangup(self, request: IncomingRequest) -> bf.CallHangupResponse:
        self.hangups.append(request.params.reason)
        return bf.CallHangupResponse()

    async def close(self) -> None:
        await self.audio.close()
        await self.session.close()
        await self.connected.close()


class AiortcApplication:
    """The application role with aiortc audio, for one call: an aiohttp WebSocket server that
    answers the voice's offer with aiortc (which then plays a tone and records what it hears),
    and runs the catalog as a plain RTVBP session that picks L16/8000.

    `offers` keeps the offer SDP, `digits` the ``dtmf`` events, `events` the name of every event
    from the voice, `terminations` the reasons of ``session.terminate``; `closed` is set once
    the session is over (its `CloseInfo` in `close_info`). `hang_up` ends the call properly,
    `vanish` abruptly.
    """

    def __init__(self, frequency: float = 440.0) -> None:
        self.frequency = frequency
        self.audio: AiortcAudio | None = None
        self.session: RtvbpSession | None = None
        self.offers: list[str] = []
        self.digits: list[bf.DtmfEvent] = []
        self.events: list[str] = []
        self.terminations: list[str] = []
        self.closed = asyncio.Event()
        self.close_info: CloseInfo | None = None
        self._request: web.Request | None = None

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        """Listen on loopback; yields the ws:// URL; closes the call's media on the way out."""
        app = web.Application()
        app.router.add_get("/rtvbp", self._handler)
        try:
            async with serve_app(app) as address:
                yield f"ws://{address}/rtvbp"
        finally:
            if self.audio is not None:
                await self.audio.close()

    async def _handler(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(protocols=("rtvbp.webrtc.v1",))
        await socket.prepare(request)
        self._request = request
        transport = WebSocketTransport(socket)
        message = await transport.receive()
        if message.kind is not MessageKind.TEXT:
            return socket
        offer = decode_frame(message.data)
        assert isinstance(offer, Request) and offer.method == OFFER, offer
        sdp = msgspec.json.decode(offer.params)["sdp"]
        self.offers.append(sdp)
        self.audio = AiortcAudio(self.frequency)
        answer = await self.audio.answer(sdp)
        result = msgspec.json.encode({"sdp": answer})
        await transport.send_text(encode_frame(Response(offer.id, result=result)))
        session = RtvbpSession(Role.APPLICATION, bf.CATALOG, transport)
        self.session = session
        session.handle("session.initialize", self._on_initialize)
        session.handle("session.terminate", self._on_terminate)
        for name in bf.CATALOG.events_emitted_by(Role.VOICE):
            session.on_event(name, self._receiver(name))
        session.start()
        try:
            self.close_info = await session.wait_closed()
        finally:
            self.closed.set()
        return socket

    async def _on_initialize(self, request: IncomingRequest) -> bf.SessionInitializeResponse:
        offered: list[bf.AudioCodec] = request.params.audio_codec_offerings
        codec = bf.AudioCodec.l16(8000)
        assert codec in offered, offered
        return bf.SessionInitializeResponse(audio_codec=codec)

    async def _on_terminate(self, request: IncomingRequest) -> bf.SessionTerminateResponse:
        self.terminations.append(request.params.reason)
        return bf.SessionTerminateResponse()

    def _receiver(self, name: str) -> EventHandler:
        async def receive(data: Any) -> None:
            self.events.append(name)
            if isinstance(data, bf.DtmfEvent):
                self.digits.append(data)

        return receive

    async def hang_up(self, reason: str) -> None:
        """The catalog's hang-up: ``call.hangup`` to the voice, which closes once it answers."""
        assert self.session is not None
        await self.session.request(
            "call.hangup", bf.CallHangupRequest(reason=reason), terminal_ok=True
        )
        await self.closed.wait()

    async def vanish(self, close_code: int | None = None) -> None:
        """Gone without a hang-up: aiortc's peer connection closes, then the WebSocket closes
        with `close_code`, or (None) the TCP connection just drops (no close frame)."""
        assert self.audio is not None and self.session is not None
        await self.audio.close()
        if close_code is not None:
            await self.session.close(close_code, "application gone")
            return
        assert self._request is not None and self._request.transport is not None
        self._request.transport.abort()
