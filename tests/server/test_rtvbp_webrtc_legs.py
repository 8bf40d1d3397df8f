"""RTVBP legs over rtvbp.webrtc.v1 in media sessions: a real server, a real UDP PCMU phone,
the SDK's `VoiceCall` dialling the media path and the SDK's `Application` dialled by
`endpoint.create_rtvbp`, all with their audio over WebRTC (ICE, DTLS-SRTP, PCMU) on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec
import pytest

from callbridge.engine.rtvbp_inbound import InboundRtvbpEndpoint
from callbridge.rtvbp.application import Application, Call
from callbridge.rtvbp.envelope import Request, encode_frame
from callbridge.rtvbp.webrtc import WEBRTC_PROFILE
from callbridge.rtvbp.webrtc_transport import WebRtcTransport
from tests.conftest import serve_application, wait_until
from tests.engine.engine_peers import sine_pcm
from tests.engine.rtvbp_support import Caller, answer_with, raw_rtvbp_server, rms, strongest
from tests.rtvbp.webrtc_peers import OFFER, AiortcVoice
from tests.server.test_rtvbp_media import leg, phone_in, settled

if TYPE_CHECKING:
    from tests.server.conftest import ControlClient, ServerHandle, StartServer

WEBRTC = (WEBRTC_PROFILE,)


def offer_request(sdp_text: str) -> Request:
    return Request("offer-1", OFFER, msgspec.json.encode({"sdp": sdp_text}))


class ToneAgent:
    """An SDK agent that plays `seconds` of a 1000 Hz tone at once (WebRTC paces it) and keeps
    what it hears and the digits it gets."""

    def __init__(self, seconds: float = 3.0) -> None:
        self.seconds = seconds
        self.heard: list[tuple[float, bytes]] = []
        self.digits: list[str] = []
        self.calls: list[Call] = []

    async def __call__(self, call: Call) -> None:
        self.calls.append(call)

        async def digits() -> None:
            async for event in call.dtmf():
                self.digits.append(event.digit)

        call.spawn(digits())
        call.spawn(call.send_audio(sine_pcm(1000, 8000, int(8000 * self.seconds))))
        async for frame in call.audio():
            self.heard.append((time.monotonic(), frame))

    def heard_pcm(self, since: float) -> bytes:
        return b"".join(frame for arrival, frame in self.heard if arrival >= since)


# --- inbound: a voice peer dials the media path with rtvbp.webrtc.v1 --------------------------


@pytest.mark.parametrize("media_listener", ["aiohttp", "picows"], indirect=True)
async def test_inbound_webrtc_leg_bridged_to_a_phone(
    server: ServerHandle, bound: ControlClient
) -> None:
    """Tones both ways, DTMF both ways, barge-in, a second offer refused, then the hang-up."""
    session_id = (await bound.result("session.info"))["session_id"]
    phone_id, phone = await phone_in(bound)
    caller = await Caller.dial(f"{server.media_url}/{session_id}", profiles=WEBRTC)
    assert isinstance(caller.voice.session._transport, WebRtcTransport)
    incoming = await bound.next_event("call.incoming")
    leg_id = incoming["endpoint_id"]
    assert incoming["codec"] == "L16/8000"
    endpoint = leg(server, session_id, leg_id)
    assert isinstance(endpoint, InboundRtvbpEndpoint) and endpoint.webrtc is not None
    assert 41000 <= endpoint.webrtc.media.local_port <= 41999  # the server's rtp_port_range
    info = await bound.result("session.info")
    entry = next(entry for entry in info["endpoints"] if entry["endpoint_id"] == leg_id)
    assert entry["rtvbp"]["profile"] == WEBRTC_PROFILE and entry["rtvbp"]["role"] == "application"

    caller.say(440)
    phone.say(880)
    await asyncio.sleep(1.2)
    now = time.monotonic()
    assert abs(strongest(phone.heard_pcm(since=now - 0.6), 8000)[0] - 440) < 15
    assert abs(strongest(caller.heard_pcm(since=now - 0.6), 8000)[0] - 880) < 15
    assert endpoint.webrtc.media.packets_received > 40

    # A second offer mid-call is refused; the call goes on.
    again = offer_request("v=0\r\n")
    await caller.voice.session._transport.control.send_text(encode_frame(again))
    webrtc = endpoint.webrtc
    await wait_until(lambda: webrtc.transport_requests_refused == 1)

    await caller.voice.send_dtmf("5", hold_ms=120)  # a dtmf event -> RFC 4733 to the phone
    pressed = await bound.next_event("dtmf")
    assert (pressed["endpoint_id"], pressed["digit"]) == (leg_id, "5")
    await wait_until(lambda: 5 in phone.digits_heard())

    phone.say(None)
    caller.say(None)
    await asyncio.sleep(0.3)
    pressed_at = time.monotonic()
    phone.press("9", 200)  # RFC 4733 from the phone -> in-band tones over WebRTC
    assert (await bound.next_event("dtmf"))["endpoint_id"] == phone_id
    await asyncio.sleep(0.5)
    tones = [frame for arrival, frame in caller.heard if arrival >= pressed_at and rms(frame) > 500]
    assert len(tones) >= 8
    low, high = sorted(strongest(b"".join(tones), 8000, 2))
    assert abs(low - 852) < 20 and abs(high - 1477) < 20

    cleared = await bound.result(
        "endpoint.rtvbp.request", {"endpoint_id": leg_id, "method": "audio.buffer.clear"}
    )
    assert cleared["result"]["len"] >= endpoint.last_cleared_bytes >= 0

    heard_before = len(phone.heard)
    phone.say(700)
    await asyncio.sleep(0.6)
    assert len(phone.heard) > heard_before and not caller.voice.ended

    await caller.voice.hangup("caller left")
    assert await bound.next_event("endpoint.rtvbp.ended") == {
        "endpoint_id": leg_id,
        "reason": "voice-hangup",
        "detail": "caller left",
    }
    assert endpoint.webrtc.media.closed
    await caller.stop()
    await phone.close()
    await settled(server)


async def test_inbound_webrtc_leg_counts_as_session_activity(start_server: StartServer) -> None:
    """Only the WebRTC leg is in the session: its audio keeps the idle timeout away."""
    server = await start_server(session_idle_timeout_secs=1)
    controller = await server.connect()
    session_id = (await controller.result("session.create"))["session_id"]
    caller = await Caller.dial(f"{server.media_url}/{session_id}", profiles=WEBRTC)
    await controller.next_event("call.incoming")
    await asyncio.sleep(2.0)
    assert server.manager.get(session_id) is not None
    await caller.voice.hangup()
    await controller.next_event("endpoint.rtvbp.ended")
    await caller.stop()
    await controller.result("session.destroy")
    await settled(server)


@pytest.mark.parametrize(
    ("transform", "expected"),
    [
        (lambda offer: "this is not SDP", "not valid SDP"),
        (
            lambda offer: "\r\n".join(
                line.replace(" 96 9 0 8", " 96 9 8")
                for line in offer.split("\r\n")
                if "PCMU" not in line
            ),
            "no PCMU",
        ),
    ],
    ids=["garbage", "no-pcmu"],
)
async def test_bad_inbound_offers_are_refused_and_leave_nothing(
    server: ServerHandle, transform: Callable[[str], str], expected: str
) -> None:
    voice = await AiortcVoice.open(server.media_url)
    try:
        connection = voice.audio.connection
        await connection.setLocalDescription(await connection.createOffer())
        offer = transform(connection.localDescription.sdp)
        response = await voice.request_raw(offer_request(offer))
        assert response.error is not None
        assert response.error.code == 400 and expected in response.error.message
        closing = await voice.connected.transport.receive()
        assert closing.close_code == 1002
    finally:
        await voice.close()
    assert server.manager.sessions() == []
    await settled(server)


async def test_inbound_media_that_never_connects_fails_the_leg_only(
    start_server: StartServer,
) -> None:
    """The offer is answered and the call initialized, but no ICE check ever comes: the leg
    ends `failed` with the reason; the session and its phone go on."""
    server = await start_server(rtvbp={"connect_timeout_secs": 1})
    controller = await server.connect()
    session_id = (await controller.result("session.create"))["session_id"]
    phone_id, phone = await phone_in(controller)
    voice = await AiortcVoice.open(f"{server.media_url}/{session_id}")
    try:
        response = await voice.offer()  # the answer is never applied: aiortc sends no checks
        assert response.error is None
        await voice.initialize()
        leg_id = (await controller.next_event("call.incoming"))["endpoint_id"]
        ended = await controller.next_event("endpoint.rtvbp.ended")
        assert (ended["endpoint_id"], ended["reason"]) == (leg_id, "failed")
        assert "did not connect in time" in ended["detail"]
    finally:
        await voice.close()
    info = await controller.result("session.info")
    assert [entry["endpoint_id"] for entry in info["endpoints"]] == [phone_id]
    tone_id = (await controller.result("endpoint.create_tone", {"tone": "sine", "frequency": 600}))[
        "endpoint_id"
    ]
    heard_from = time.monotonic()
    await asyncio.sleep(0.6)
    assert abs(strongest(phone.heard_pcm(since=heard_from + 0.2), 8000)[0] - 600) < 15
    await controller.result("endpoint.remove", {"endpoint_id": tone_id})
    await phone.close()
    await controller.result("session.destroy")
    await settled(server)


# --- outbound: endpoint.create_rtvbp with the webrtc profile ----------------------------------


async def test_outbound_webrtc_leg_bridged_to_a_phone(
    server: ServerHandle, bound: ControlClient
) -> None:
    agent = ToneAgent()
    async with serve_application(Application(agent)) as url:
        phone_id, phone = await phone_in(bound)
        phone.say(440)
        created = await bound.result(
            "endpoint.create_rtvbp", {"url": url, "profile": WEBRTC_PROFILE}
        )
        leg_id = created["endpoint_id"]
        changed = await bound.next_event("endpoint.state_changed")
        assert (changed["endpoint_id"], changed["new_state"]) == (leg_id, "connected")
        info = await bound.result("session.info")
        entry = next(entry for entry in info["endpoints"] if entry["endpoint_id"] == leg_id)
        assert entry["codec"] == "L16/8000" and entry["rtvbp"]["profile"] == WEBRTC_PROFILE
        assert entry["rtvbp"]["role"] == "voice"
        [call] = agent.calls
        assert isinstance(call.session._transport, WebRtcTransport)

        await asyncio.sleep(1.2)
        now = time.monotonic()
        assert abs(strongest(agent.heard_pcm(since=now - 0.6), 8000)[0] - 440) < 15
        assert abs(strongest(phone.heard_pcm(since=now - 0.6), 8000)[0] - 1000) < 15

        phone.press("7", 100)  # RFC 4733 -> a dtmf event to the agent
        assert (await bound.next_event("dtmf"))["endpoint_id"] == phone_id
        await bound.result(
            "endpoint.dtmf.inject", {"endpoint_id": leg_id, "digit": "3", "duration_ms": 100}
        )
        await wait_until(lambda: agent.digits == ["7", "3"])

        await bound.result("endpoint.remove", {"endpoint_id": leg_id})
        assert await call.wait_ended() == "removed"
        await phone.close()
        await settled(server)


async def test_create_rtvbp_profile_errors(bound: ControlClient) -> None:
    for params, fragment in (
        ({"url": "ws://127.0.0.1/", "profile": "rtvbp.v2"}, "profile must be one of"),
        ({"url": "ws://127.0.0.1/", "profile": 1}, "profile"),
        (
            {"url": "ws://127.0.0.1/", "profile": WEBRTC_PROFILE, "codecs": [16000]},
            "L16/8000 (PCMU) only",
        ),
    ):
        error = await bound.error("endpoint.create_rtvbp", params)
        assert error["code"] == "INVALID_PARAMS" and fragment in error["message"], error
    assert (await bound.result("session.info"))["endpoints"] == []


FAKE_FINGERPRINT = ":".join(["AB"] * 32)


def dead_answer(port: int) -> str:
    """A well-formed WebRTC answer whose only candidate is a UDP port nobody listens on."""
    return "\r\n".join(
        [
            "v=0",
            "o=- 1 1 IN IP4 127.0.0.1",
            "s=-",
            "t=0 0",
            "a=ice-lite",
            "m=audio 9 UDP/TLS/RTP/SAVPF 0",
            "c=IN IP4 127.0.0.1",
            "a=mid:0",
            "a=rtpmap:0 PCMU/8000",
            "a=ice-ufrag:deadbeef",
            "a=ice-pwd:0123456789abcdef01234567",
            f"a=fingerprint:sha-256 {FAKE_FINGERPRINT}",
            "a=setup:passive",
            "a=rtcp-mux",
            "a=sendrecv",
            f"a=candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host",
            "",
        ]
    )


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("garbage", "the answer is not valid SDP"),
        (dead_answer(9), "did not connect in time"),
    ],
    ids=["garbage-answer", "media-never-connects"],
)
async def test_outbound_webrtc_failures_end_the_leg(
    start_server: StartServer, answer: str, expected: str
) -> None:
    server = await start_server(rtvbp={"connect_timeout_secs": 1})
    controller = await server.connect()
    await controller.result("session.create")
    phone_id, phone = await phone_in(controller)
    async with raw_rtvbp_server(
        answer_with({"sdp": answer}), method=OFFER, protocols=WEBRTC
    ) as url:
        created = await controller.result(
            "endpoint.create_rtvbp", {"url": url, "profile": WEBRTC_PROFILE}
        )
        ended = await controller.next_event("endpoint.rtvbp.ended")
    assert (ended["endpoint_id"], ended["reason"]) == (created["endpoint_id"], "failed")
    assert "WebRTC negotiation failed" in ended["detail"] and expected in ended["detail"]
    info = await controller.result("session.info")
    assert [entry["endpoint_id"] for entry in info["endpoints"]] == [phone_id]
    await phone.close()
    await controller.result("session.destroy")
    await settled(server)
