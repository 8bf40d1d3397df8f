"""WebRTC endpoints with aiortc as the peer: both offer directions, audio both ways, DTMF."""

from __future__ import annotations

import asyncio
import re
import secrets

import pytest

from callbridge.engine.endpoint import Endpoint
from callbridge.engine.errors import EngineError
from callbridge.engine.manager import SessionManager
from callbridge.engine.offers import create_from_offer, create_offer
from callbridge.engine.session import MediaSession
from callbridge.engine.webrtc_endpoint import WebRtcEndpoint
from callbridge.media.rtp import build_rtp, parse_rtp
from callbridge.media.telephone_event import dtmf_packets, parse_telephone_event
from tests.engine.engine_peers import EventLog, RtpPeer
from tests.engine.webrtc_peers import AiortcPeer, PcmuPhone, connected, manager

__all__ = ["manager"]


async def phone_leg(session: MediaSession, frequency: float) -> PcmuPhone:
    peer = await RtpPeer.open()
    _, answer = await create_from_offer(session, peer.offer("pcmu"), "sendrecv")
    peer.use(answer)
    phone = PcmuPhone(peer, frequency)
    phone.start()
    return phone


async def heard_from(endpoint: Endpoint) -> None:
    """Wait for the peer's first RTP (the engine sends nothing to a peer that has not sent)."""
    async with asyncio.timeout(5):
        while not endpoint.last_inbound:
            await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("offered_setup", "answered_setup"), [("actpass", "passive"), ("passive", "active")]
)
async def test_aiortc_offer_audio_both_ways(
    manager: SessionManager, offered_setup: str, answered_setup: str
) -> None:
    """Both DTLS roles: an actpass offer makes us the server, a passive one the client."""
    events = EventLog()
    session = manager.create_session(events)
    phone = await phone_leg(session, 440.0)
    browser = AiortcPeer(1000.0)
    try:
        offer = (await browser.offer()).replace("a=setup:actpass", f"a=setup:{offered_setup}")
        endpoint_id, answer = await create_from_offer(session, offer, "sendrecv")
        assert "a=ice-lite" in answer and f"a=setup:{answered_setup}" in answer
        endpoint = session.endpoints[endpoint_id]
        assert isinstance(endpoint, WebRtcEndpoint) and endpoint.state == "connecting"
        await browser.accept(answer)
        await connected(events, endpoint_id)
        assert endpoint.ice.selected is not None and endpoint.ice.selected[0] == "127.0.0.1"
        assert abs(await browser.heard_frequency() - 440.0) < 15
        assert abs(await phone.heard_frequency() - 1000.0) < 15
        assert session.info()["endpoints"][1]["endpoint_type"] == "webrtc"
    finally:
        await browser.close()
        await phone.stop()


async def test_create_offer_and_accept_answer_of_aiortc(manager: SessionManager) -> None:
    events = EventLog()
    session = manager.create_session(events)
    phone = await phone_leg(session, 600.0)
    browser = AiortcPeer(1500.0)
    try:
        endpoint_id, offer = await create_offer(session, "webrtc", "sendrecv", None, False)
        assert "a=setup:actpass" in offer and "opus/48000/2" in offer
        endpoint = session.endpoints[endpoint_id]
        endpoint.accept_answer(await browser.answer(offer))
        await connected(events, endpoint_id)
        assert abs(await browser.heard_frequency() - 600.0) < 15
        assert abs(await phone.heard_frequency() - 1500.0) < 15
        with pytest.raises(EngineError, match="telephone-event"):
            await session.dtmf_inject(endpoint_id, "5", 200, 10)  # aiortc has no DTMF
    finally:
        await browser.close()
        await phone.stop()


async def test_two_browsers_hear_each_other_by_opus_passthrough(manager: SessionManager) -> None:
    events = EventLog()
    session = manager.create_session(events)
    first, second = AiortcPeer(700.0), AiortcPeer(1200.0)
    try:
        for browser in (first, second):
            offer = await browser.offer()
            endpoint_id, answer = await create_from_offer(session, offer, "sendrecv")
            await browser.accept(answer)
            await connected(events, endpoint_id)
        assert session.plan.table.passthrough  # Opus to Opus: no decoding
        assert abs(await first.heard_frequency() - 1200.0) < 15
        assert abs(await second.heard_frequency() - 700.0) < 15
    finally:
        await first.close()
        await second.close()


def with_telephone_event(offer: str, payload_type: int = 101) -> str:
    """aiortc has no DTMF: offer telephone-event for it (it ignores the codec in the answer)."""
    audio = re.search(r"m=audio \S+ \S+ [^\r\n]+", offer)
    assert audio is not None
    line = audio.group(0)
    return offer.replace(
        line, f"{line} {payload_type}\r\na=rtpmap:{payload_type} telephone-event/48000", 1
    )


async def test_dtmf_both_ways_with_aiortc(manager: SessionManager) -> None:
    """Digits injected toward aiortc arrive as RFC 4733 through its SRTP; raw RFC 4733 that
    aiortc protects and sends is reported as `dtmf`."""
    events = EventLog()
    session = manager.create_session(events)
    browser = AiortcPeer(1000.0)
    try:
        offer = with_telephone_event(await browser.offer())
        endpoint_id, answer = await create_from_offer(session, offer, "sendrecv")
        assert "telephone-event/48000" in answer
        await browser.accept(answer)
        await connected(events, endpoint_id)
        await heard_from(session.endpoints[endpoint_id])
        transport = browser.connection.getTransceivers()[0].receiver.transport
        heard: list[bytes] = []
        handle = transport._handle_rtp_data

        async def recording(data: bytes, arrival_time_ms: int) -> None:
            heard.append(bytes(data))
            await handle(data, arrival_time_ms=arrival_time_ms)

        transport._handle_rtp_data = recording
        await session.dtmf_inject(endpoint_id, "9", 120, 10)
        await asyncio.sleep(0.6)
        digits = [parse_rtp(data) for data in heard if data[1] & 0x7F == 101]
        assert len(digits) >= 6 and digits[0].marker
        decoded = [parse_telephone_event(bytes(packet.payload)) for packet in digits]
        assert {event.event for event in decoded} == {9} and decoded[-1].end

        ssrc = secrets.randbits(32)
        for sequence, packet in enumerate(dtmf_packets("4", 160, 10, 48000)):
            await transport._send_rtp(
                build_rtp(
                    101,
                    sequence,
                    4800 + packet.timestamp_offset,
                    ssrc,
                    packet.payload,
                    marker=packet.marker,
                )
            )
            await asyncio.sleep(0.02)
        (digit,) = await events.wait_for("dtmf", within_s=3)
        assert digit == {"endpoint_id": endpoint_id, "digit": "4", "duration_ms": 160}
    finally:
        await browser.close()
