"""Test support for rtvbp.webrtc.v1: aiortc as the independent media peer of either role.

The control side of these peers is a plain RTVBP session on a WebSocket; the audio is aiortc's
(PCMU negotiated from our SDP, resampled by aiortc), so what our side hears and sends is judged
by a WebRTC stack written elsewhere. Importing `tests.engine.webrtc_peers` keeps aioice on
loopback.
"""

from __future__ import annotations

import msgspec
import numpy as np
from aiortc import RTCSessionDescription

from callbridge.rtvbp import babelforce_v1 as bf
from callbridge.rtvbp.catalog import Role
from callbridge.rtvbp.envelope import Request, Response, decode_frame, encode_frame
from callbridge.rtvbp.session import IncomingRequest, RtvbpSession
from callbridge.rtvbp.voice import new_call_info
from callbridge.rtvbp.websocket import Connected, connect
from tests.engine.engine_peers import dominant_frequency
from tests.engine.webrtc_peers import AiortcPeer

OFFER = "transport.webrtc.offer"


class AiortcAudio(AiortcPeer):
    """aiortc sending a tone; what it hears is PCMU that its decoder hands over at 8 kHz."""

    rate = 8000

    def loud_seconds(self) -> float:
        """How much of what was heard is the tone (not silence), seconds."""
        loud = sum(len(chunk) for chunk in self.heard if np.abs(chunk).max() > 1000)
        return loud / self.rate

    def frequency(self) -> float:
        loud = [chunk for chunk in self.heard if np.abs(chunk).max() > 1000]
        return dominant_frequency(np.concatenate(loud), self.rate)


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
