"""An Application answering rtvbp.webrtc.v1, with aiortc as the voice's audio."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import numpy as np
import pytest

from callbridge.media import stun
from callbridge.media.g711 import ulaw_decode
from callbridge.media.rtp import build_rtp
from callbridge.media.srtp import SrtpKey, SrtpSession
from callbridge.rtvbp.application import Application, Call
from callbridge.rtvbp.envelope import Request, encode_frame
from callbridge.rtvbp.voice import VoiceCall
from callbridge.rtvbp.voice_recorder import WavCallRecorder
from callbridge.rtvbp.webrtc import WEBRTC_PROFILE, WebRtcOptions
from callbridge.rtvbp.webrtc_media import PEER_CLOSE_GRACE_S, WebRtcMedia
from callbridge.rtvbp.webrtc_transport import WebRtcTransport
from tests.conftest import serve_application, wait_until
from tests.engine.engine_peers import dominant_frequency, sine_pcm
from tests.rtvbp.webrtc_peers import OFFER, AiortcVoice


class Agent:
    """Plays `seconds` of a 440 Hz tone at once (the transport paces it) and keeps what it hears."""

    def __init__(self, seconds: float = 2.0, hang_up_after_s: float | None = None) -> None:
        self.seconds = seconds
        self.hang_up_after_s = hang_up_after_s
        self.heard: list[bytes] = []
        self.calls: list[Call] = []
        self.transports: list[WebRtcTransport] = []

    async def __call__(self, call: Call) -> None:
        self.calls.append(call)
        transport = call.session._transport
        assert isinstance(transport, WebRtcTransport)
        self.transports.append(transport)

        async def listen() -> None:
            async for frame in call.audio():
                self.heard.append(frame)

        call.spawn(listen())
        await call.send_audio(sine_pcm(440, 8000, int(8000 * self.seconds)))
        if self.hang_up_after_s is not None:
            await asyncio.sleep(self.hang_up_after_s)
            await call.hangup("agent done")
        await call.wait_ended()

    def frequency(self, seconds: float = 1.0) -> float:
        pcm = b"".join(self.heard[-int(seconds * 50) :])
        return dominant_frequency(np.frombuffer(pcm, "<i2"), 8000)


@pytest.fixture
async def voice_factory() -> AsyncIterator[list[AiortcVoice]]:
    voices: list[AiortcVoice] = []
    yield voices
    for voice in voices:
        await voice.close()


async def dial(url: str, voices: list[AiortcVoice]) -> AiortcVoice:
    voice = await AiortcVoice.open(url)
    voices.append(voice)
    return voice


async def answered(url: str, voices: list[AiortcVoice]) -> AiortcVoice:
    """A voice whose media is connecting and whose call the application answered."""
    voice = await dial(url, voices)
    await voice.connect_media()
    await voice.initialize()
    return voice


async def test_tone_both_ways_then_the_voice_hangs_up(voice_factory: list[AiortcVoice]) -> None:
    agent = Agent(seconds=2.0)
    application = Application(agent)
    async with serve_application(application) as url:
        voice = await dial(url, voice_factory)
        await voice.connect_media()
        result = await voice.initialize()
        assert result.audio_codec is not None and result.audio_codec.sample_rate == 8000
        await wait_until(lambda: voice.audio.loud_seconds() >= 1.9, timeout=10)
        assert voice.audio.frequency() == pytest.approx(440, rel=0.01)
        await wait_until(lambda: len(agent.heard) >= 100, timeout=10)
        assert agent.frequency() == pytest.approx(1000, rel=0.01)
        transport = agent.transports[0]
        # Burst in, paced out: nothing was dropped, and it took real time to play.
        assert transport.media.frames_dropped == 0 and transport.media.frames_sent == 100
        await voice.hangup()
        await agent.calls[0].wait_ended()
        await wait_until(lambda: transport.media.closed)
        assert agent.calls[0].hangup_reason == "caller"


async def test_the_application_hangs_up(voice_factory: list[AiortcVoice]) -> None:
    agent = Agent(seconds=0.5, hang_up_after_s=1.0)
    async with serve_application(Application(agent)) as url:
        voice = await answered(url, voice_factory)
        info = await asyncio.wait_for(voice.session.wait_closed(), 10)
        assert info.orderly and voice.hangups == ["agent done"]
        assert agent.transports[0].media.closed
        assert voice.audio.frequency() == pytest.approx(440, rel=0.01)


async def test_the_voice_vanishing_ends_the_call_and_frees_the_media(
    voice_factory: list[AiortcVoice],
) -> None:
    agent = Agent(seconds=0.2)
    async with serve_application(Application(agent)) as url:
        voice = await answered(url, voice_factory)
        await wait_until(lambda: len(agent.heard) >= 10, timeout=10)
        # No close frame, no DTLS close_notify, no RTCP BYE: the TCP connection just drops.
        voice.connected.transport._socket._conn.transport.abort()  # type: ignore[union-attr]
        reason = await asyncio.wait_for(agent.calls[0].wait_ended(), 10)
        assert reason is not None
        assert agent.transports[0].media.closed


async def test_the_voice_closing_only_its_media_ends_the_call(
    voice_factory: list[AiortcVoice],
) -> None:
    """aiortc's DTLS close_notify with the WebSocket left open: the call fails after a grace
    period instead of living on with no audio."""
    agent = Agent(seconds=0.2)
    async with serve_application(Application(agent)) as url:
        voice = await answered(url, voice_factory)
        await wait_until(lambda: len(agent.heard) >= 10, timeout=10)
        await voice.audio.close()
        media = agent.transports[0].media
        await wait_until(lambda: media.peer_closed, timeout=5)
        reason = await asyncio.wait_for(agent.calls[0].wait_ended(), PEER_CLOSE_GRACE_S + 5)
        assert reason == "connection lost (1011)" and media.closed
        info = await asyncio.wait_for(voice.session.wait_closed(), 5)
        assert info.code == 1011 and "closed the WebRTC media" in info.reason


# -------------------------------------------------------------------------------- bad input


async def refused(url: str, voices: list[AiortcVoice], request: Request) -> tuple[int, str, int]:
    """Send `request` first: the error code and message, and the WebSocket's close code."""
    voice = await dial(url, voices)
    response = await voice.request_raw(request)
    assert response.error is not None
    closing = await voice.connected.transport.receive()
    return response.error.code, response.error.message, closing.close_code


def offer_request(sdp_text: str) -> Request:
    return Request("offer-1", OFFER, msgspec.json.encode({"sdp": sdp_text}))


async def aiortc_offer(voices: list[AiortcVoice], url: str) -> tuple[AiortcVoice, str]:
    voice = await dial(url, voices)
    connection = voice.audio.connection
    await connection.setLocalDescription(await connection.createOffer())
    return voice, str(connection.localDescription.sdp)


async def test_a_catalog_request_before_the_offer_is_refused(
    voice_factory: list[AiortcVoice],
) -> None:
    async with serve_application(Application(Agent())) as url:
        request = Request("init-1", "session.initialize", b"{}")
        code, message, close_code = await refused(url, voice_factory, request)
    assert (code, close_code) == (400, 1002)
    assert "before transport.webrtc.offer" in message


@pytest.mark.parametrize(
    ("sdp_text", "expected"),
    [
        ("this is not SDP", "not valid SDP"),
        ("v=0\r\ns=-\r\nt=0 0\r\n", "no audio section"),
        ("v=0\r\n" + "a=x-padding:" + "x" * (600 * 1024) + "\r\n", "larger than"),
    ],
    ids=["garbage", "no-audio", "huge"],
)
async def test_bad_offers_get_a_clear_error(
    voice_factory: list[AiortcVoice], sdp_text: str, expected: str
) -> None:
    async with serve_application(Application(Agent())) as url:
        code, message, close_code = await refused(url, voice_factory, offer_request(sdp_text))
    assert (code, close_code) == (400, 1002)
    assert expected in message


async def test_offer_params_that_are_not_an_sdp_object_are_refused(
    voice_factory: list[AiortcVoice],
) -> None:
    async with serve_application(Application(Agent())) as url:
        request = Request("offer-1", OFFER, b'{"sdp": 42}')
        code, message, _ = await refused(url, voice_factory, request)
    assert code == 400 and '{"sdp"' in message


async def test_an_offer_without_pcmu_is_refused(voice_factory: list[AiortcVoice]) -> None:
    async with serve_application(Application(Agent())) as url:
        _, offer = await aiortc_offer(voice_factory, url)
        without_pcmu = "\r\n".join(
            line.replace(" 96 9 0 8", " 96 9 8")
            for line in offer.split("\r\n")
            if "PCMU" not in line
        )
        code, message, close_code = await refused(url, voice_factory, offer_request(without_pcmu))
    assert (code, close_code) == (400, 1002) and "no PCMU" in message


async def test_no_offer_in_time_closes_the_connection(voice_factory: list[AiortcVoice]) -> None:
    application = Application(Agent(), webrtc=WebRtcOptions(offer_timeout_s=0.3))
    async with serve_application(application) as url:
        voice = await dial(url, voice_factory)
        closing = await asyncio.wait_for(voice.connected.transport.receive(), 5)
    assert closing.close_code == 1002


async def test_a_second_offer_is_refused_and_the_call_goes_on(
    voice_factory: list[AiortcVoice],
) -> None:
    agent = Agent(seconds=1.0)
    async with serve_application(Application(agent)) as url:
        voice = await answered(url, voice_factory)
        again = offer_request(voice.audio.connection.localDescription.sdp)
        await voice.connected.transport.send_text(encode_frame(again))
        transport = agent.transports[0]
        await wait_until(lambda: transport.transport_requests_refused == 1)
        # The error response reached the voice (an answer to no request of its session).
        await wait_until(lambda: voice.session.stats.responses_ignored >= 1)
        await wait_until(lambda: voice.audio.loud_seconds() >= 0.9, timeout=10)
        assert not voice.session.closed and agent.calls[0].hangup_reason is None


async def test_garbage_dtls_from_a_stranger_is_ignored(voice_factory: list[AiortcVoice]) -> None:
    agent = Agent(seconds=1.0)
    async with serve_application(Application(agent)) as url:
        voice = await answered(url, voice_factory)
        media = agent.transports[0].media
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            stranger.sendto(b"\x16\xfe\xfd" + b"\xff" * 60, ("127.0.0.1", media.local_port))
            await wait_until(lambda: media.datagrams_ignored >= 1)
        await wait_until(lambda: voice.audio.loud_seconds() >= 0.9, timeout=10)
        assert not media.closed and not voice.session.closed


async def test_garbage_dtls_in_the_handshake_fails_the_call(
    voice_factory: list[AiortcVoice],
) -> None:
    """A peer that passes the ICE check and then sends garbage instead of a ClientHello: DTLS
    drops bad records, so the call fails when the handshake has not finished in time."""
    agent = Agent()
    application = Application(agent, webrtc=WebRtcOptions(connect_timeout_s=1.5))
    async with serve_application(application) as url:
        voice = await dial(url, voice_factory)
        response = await voice.offer()
        answer = msgspec.json.decode(response.result)["sdp"]
        ufrag = next(line[12:] for line in answer.split("\r\n") if line.startswith("a=ice-ufrag:"))
        password = next(line[10:] for line in answer.split("\r\n") if line.startswith("a=ice-pwd:"))
        port = int(next(line.split()[1] for line in answer.split("\r\n") if line.startswith("m=")))
        offer = voice.audio.connection.localDescription.sdp
        peer_ufrag = next(
            line[12:] for line in offer.split("\r\n") if line.startswith("a=ice-ufrag:")
        )
        check = stun.build_stun(
            stun.BINDING_REQUEST,
            b"0123456789ab",
            [(stun.USERNAME, f"{ufrag}:{peer_ufrag}".encode()), (stun.USE_CANDIDATE, b"")],
            integrity_key=password.encode(),
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as impostor:
            impostor.setblocking(False)
            impostor.sendto(check, ("127.0.0.1", port))
            loop = asyncio.get_running_loop()
            reply = stun.parse_stun(await asyncio.wait_for(loop.sock_recv(impostor, 2048), 5))
            assert reply.message_type == stun.BINDING_SUCCESS
            impostor.sendto(b"\x16\xfe\xfd" + b"\xff" * 60, ("127.0.0.1", port))
            closing = await asyncio.wait_for(voice.connected.transport.receive(), 10)
    assert closing.close_code == 1011 and "did not connect in time" in closing.close_reason


async def test_a_voice_call_dials_over_webrtc(tmp_path: Path) -> None:
    """VoiceCall as the offerer (it runs the ICE checks an ICE-lite answerer never sends)."""
    agent = Agent(seconds=2.0)
    async with serve_application(Application(agent)) as url:
        voice = await VoiceCall.dial(
            url, profiles=(WEBRTC_PROFILE,), recorder=WavCallRecorder(tmp_path)
        )
        try:
            assert isinstance(voice.session._transport, WebRtcTransport)
            tone = sine_pcm(1000, 8000, 8000)
            for start in range(0, len(tone), 320):
                await voice.send_audio(tone[start : start + 320])
                await asyncio.sleep(0.02)
            await wait_until(lambda: len(agent.heard) >= 40, timeout=10)
            assert agent.frequency(0.5) == pytest.approx(1000, rel=0.01)
            heard = []
            async for frame in voice.playout_frames():
                heard.append(frame)
                if len(heard) >= 75:
                    break
            pcm = np.frombuffer(b"".join(heard[-50:]), "<i2")
            assert dominant_frequency(pcm, 8000) == pytest.approx(440, rel=0.01)
        finally:
            await voice.hangup()
        await agent.calls[0].wait_ended()
        assert agent.calls[0].hangup_reason == "hangup"


async def test_media_ports_come_from_the_port_range() -> None:
    """A firewall that opens only a range: the media socket binds there, skipping busy ports,
    and says so when none is free."""
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    port = busy.getsockname()[1]
    try:
        media = await WebRtcMedia.open("127.0.0.1", port_range=(port, port + 1))
        assert media.local_port == port + 1
        media.close()
        with pytest.raises(OSError, match=f"no free UDP port in {port}-{port}"):
            await WebRtcMedia.open("127.0.0.1", port_range=(port, port))
    finally:
        busy.close()


async def test_inbound_audio_is_put_back_in_order() -> None:
    """Reordered packets play in sequence order, a duplicate once, a lost one is skipped
    (SRTP keyed by hand: what DTLS would give both sides)."""
    media = await WebRtcMedia.open("127.0.0.1")
    key = SrtpKey.generate()
    media.srtp = SrtpSession(SrtpKey.generate(), key)
    peer = SrtpSession(key)
    heard: list[int] = []
    media.on_audio = lambda pcm: heard.append(pcm[0] | pcm[1] << 8)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    marks = {sequence: bytes([0x80 + sequence]) * 160 for sequence in range(1, 12)}
    try:
        protected: dict[int, bytes] = {}
        for sequence in (1, 2, 4, 3, 5, 6, 8, 9, 10, 10, 11):
            if sequence not in protected:  # the duplicate is the same datagram again
                packet = build_rtp(0, sequence, 160 * sequence, 0x5EED, marks[sequence])
                datagram = peer.protect(packet)
                assert datagram is not None
                protected[sequence] = datagram
            sender.sendto(protected[sequence], ("127.0.0.1", media.local_port))
            await asyncio.sleep(0.005)
        await wait_until(lambda: len(heard) == 10)
        expected = [ulaw_decode(marks[n])[0] | ulaw_decode(marks[n])[1] << 8 for n in marks]
        assert heard == [value for n, value in zip(marks, expected, strict=True) if n != 7]
        assert media.reorder.reordered == 1 and media.reorder.lost == 1
        assert media.srtp.replayed_packets == 1  # the duplicate: SRTP's replay protection
    finally:
        sender.close()
        media.close()
