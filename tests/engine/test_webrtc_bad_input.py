"""WebRTC endpoints under bad input: bad offers refused, strangers ignored, failures reported.

A raw UDP socket plays a hostile peer with the STUN codec (and, keyed by our own DTLS pieces,
a peer whose checks stop and resume); aiortc plays a peer whose certificate does not match its
SDP fingerprint, and one that vanishes or closes.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any

import pytest

from callbridge.engine.errors import EngineError
from callbridge.engine.manager import SessionManager
from callbridge.engine.offers import create_from_offer
from callbridge.engine.webrtc_endpoint import WebRtcEndpoint
from callbridge.media import stun
from callbridge.media.dtls import DtlsSession, local_certificate
from callbridge.media.rtp import build_rtp
from callbridge.media.webrtc_sdp import parse_webrtc
from tests.engine.engine_peers import EventLog, engine_config
from tests.engine.webrtc_peers import FINGERPRINT, AiortcPeer, browser_offer, connected, manager

__all__ = ["manager"]


class RawPeer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.put_nowait(data)


async def raw_peer() -> RawPeer:
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(RawPeer, local_addr=("127.0.0.1", 0))
    return peer


def binding_request(ufrag: str, password: str) -> bytes:
    return stun.build_stun(
        stun.BINDING_REQUEST,
        os.urandom(12),
        [(stun.USERNAME, f"{ufrag}:peer".encode()), (stun.USE_CANDIDATE, b"")],
        integrity_key=password.encode(),
    )


async def test_offers_that_cannot_work_are_refused(manager: SessionManager) -> None:
    session = manager.create_session(EventLog())
    for offer, message in [
        (browser_offer("a=rtpmap:0 PCMU/8000", "0"), "no Opus"),
        (browser_offer().replace("a=ice-pwd", "a=x"), "ICE credentials"),
        (browser_offer().replace("sha-256", "md5"), "fingerprint"),
        ("a=fingerprint:x\r\n" + "\x00\xff" * 1000, "ICE credentials"),
    ]:
        with pytest.raises(EngineError) as error:
            await create_from_offer(session, offer, "sendrecv")
        assert error.value.code == "ENDPOINT_ERROR" and message in error.value.message
    assert session.endpoints == {}


async def test_strangers_wrong_credentials_and_garbage_are_ignored(
    manager: SessionManager,
) -> None:
    events = EventLog()
    session = manager.create_session(events)
    endpoint_id, answer = await create_from_offer(session, browser_offer(), "sendrecv")
    endpoint = session.endpoints[endpoint_id]
    assert isinstance(endpoint, WebRtcEndpoint)
    port = int(re.search(r"m=audio (\d+)", answer).group(1))  # type: ignore[union-attr]
    ours = parse_webrtc(answer)
    assert ours.ice_ufrag and ours.ice_password
    peer = await raw_peer()
    target = ("127.0.0.1", port)
    peer.transport.sendto(b"\x16\xfe\xfd" + os.urandom(60), target)  # DTLS, unchecked peer
    peer.transport.sendto(binding_request(ours.ice_ufrag, "wrong-password-wrong-pass"), target)
    peer.transport.sendto(b"\x80" + os.urandom(100), target)
    peer.transport.sendto(b"\xff" * 30, target)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await peer.received.get()
    assert endpoint.ice.checks_rejected == 1 and endpoint.ice.selected is None

    peer.transport.sendto(binding_request(ours.ice_ufrag, ours.ice_password), target)
    async with asyncio.timeout(2):
        response = await peer.received.get()
    message = stun.parse_stun(response)
    assert message.message_type == stun.BINDING_SUCCESS
    assert message.check_integrity(response, ours.ice_password.encode())
    peer.transport.sendto(b"\x16\xfe\xfd" + os.urandom(60), target)  # garbage DTLS, checked peer
    await asyncio.sleep(0.3)
    assert endpoint.state in ("connecting", "disconnected")
    peer.transport.sendto(binding_request(ours.ice_ufrag, ours.ice_password), target)
    async with asyncio.timeout(2):
        while True:
            if stun.looks_like_stun(await peer.received.get()):
                break
    peer.transport.close()
    assert session.alive


async def test_wrong_fingerprint_fails_the_endpoint_with_an_event(manager: SessionManager) -> None:
    events = EventLog()
    session = manager.create_session(events)
    browser = AiortcPeer(1000.0)
    try:
        offer = await browser.offer()
        forged = re.sub(r"a=fingerprint:sha-256 \S+", f"a=fingerprint:sha-256 {FINGERPRINT}", offer)
        endpoint_id, answer = await create_from_offer(session, forged, "sendrecv")
        await browser.accept(answer)
        change = (await events.wait_for("endpoint.state_changed", within_s=10))[0]
        assert change == {
            "endpoint_id": endpoint_id,
            "old_state": "connecting",
            "new_state": "disconnected",
        }
        (entry,) = session.info()["endpoints"]
        assert "fingerprint" in entry["failure"]
        assert session.alive
    finally:
        await browser.close()


async def test_peer_closing_and_vanishing(manager: SessionManager) -> None:
    events = EventLog()
    session = manager.create_session(events)
    closing = AiortcPeer(500.0)
    vanishing = AiortcPeer(800.0)
    try:
        closing_id, answer = await create_from_offer(session, await closing.offer(), "sendrecv")
        await closing.accept(answer)
        await connected(events, closing_id)
        vanishing_id, answer = await create_from_offer(session, await vanishing.offer(), "sendrecv")
        await vanishing.accept(answer)
        await connected(events, vanishing_id)

        await closing.close()  # DTLS close_notify
        await events.wait_for("endpoint.state_changed", 3, within_s=5)
        assert events.named("endpoint.state_changed")[2] == {
            "endpoint_id": closing_id,
            "old_state": "connected",
            "new_state": "disconnected",
        }

        for transceiver in vanishing.connection.getTransceivers():  # gone without a word
            connection = transceiver.sender.transport.transport._connection
            for protocol in connection._protocols:
                protocol.transport.close()
        timeouts = await events.wait_for("endpoint.media_timeout", within_s=10)
        assert any(data["endpoint_id"] == vanishing_id for data in timeouts)
        await events.wait_for("endpoint.state_changed", 4, within_s=15)
        assert events.named("endpoint.state_changed")[3] == {
            "endpoint_id": vanishing_id,
            "old_state": "connected",
            "new_state": "disconnected",
        }
    finally:
        await vanishing.close()


async def test_consent_lapses_and_comes_back(tmp_path: Path) -> None:
    engine = SessionManager(engine_config(tmp_path, webrtc_consent_timeout_s=1.0))
    await engine.start()
    events = EventLog()
    session = engine.create_session(events)
    peer = await raw_peer()
    try:
        offer = browser_offer(fingerprint=local_certificate().fingerprint)
        endpoint_id, answer = await create_from_offer(session, offer, "sendrecv")
        ours = parse_webrtc(answer)
        assert ours.ice_ufrag and ours.ice_password
        target = ("127.0.0.1", int(re.search(r"m=audio (\d+)", answer).group(1)))  # type: ignore[union-attr]
        peer.transport.sendto(binding_request(ours.ice_ufrag, ours.ice_password), target)
        await peer.received.get()
        dtls = DtlsSession(local_certificate(), client=True)
        dtls.remote_fingerprint = local_certificate().fingerprint
        flights = dtls.start()
        while dtls.srtp is None:
            for flight in flights:
                peer.transport.sendto(flight, target)
            async with asyncio.timeout(3):
                flights = dtls.receive(await peer.received.get())
        for flight in flights:
            peer.transport.sendto(flight, target)
        states = await events.wait_for("endpoint.state_changed", 2, within_s=5)
        assert [change["new_state"] for change in states] == ["connected", "disconnected"]
        peer.transport.sendto(binding_request(ours.ice_ufrag, ours.ice_password), target)
        states = await events.wait_for("endpoint.state_changed", 3, within_s=3)
        assert states[2] == {
            "endpoint_id": endpoint_id,
            "old_state": "disconnected",
            "new_state": "connected",
        }
        # Replayed and tampered SRTP is dropped, counted by reason and in the metric.
        assert dtls.srtp is not None
        protected = dtls.srtp.protect(build_rtp(111, 1, 960, 0x4321, b"\x01" * 40))
        tampered = dtls.srtp.protect(build_rtp(111, 2, 1920, 0x4321, b"\x02" * 40))
        assert protected is not None and tampered is not None
        peer.transport.sendto(protected, target)
        peer.transport.sendto(protected, target)  # a replay
        peer.transport.sendto(tampered[:-1] + bytes([tampered[-1] ^ 1]), target)
        async with asyncio.timeout(3):
            while engine.metrics.srtp_errors_total < 2:
                await asyncio.sleep(0.02)
        counters = session.endpoints[endpoint_id].stats()["srtp"]
        assert isinstance(counters, dict)
        assert counters["replayed_packets"] == 1 and counters["authentication_failures"] == 1
        assert engine.metrics.srtp_errors_total == 2
    finally:
        peer.transport.close()
        await engine.shutdown(0)
