"""RTP endpoints end to end with real UDP peers: negotiation, passthrough, robustness."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from callbridge.engine.errors import EngineError
from callbridge.engine.manager import SessionManager
from callbridge.engine.offers import create_from_offer, create_offer
from callbridge.engine.session import MediaSession
from callbridge.media.sdp import parse_sdp
from tests.engine.engine_peers import EventLog, RtpPeer, manager

__all__ = ["manager"]


async def rtp_leg(
    session: MediaSession, codecs: str = "pcmu", event_pt: int | None = 101
) -> tuple[str, RtpPeer]:
    peer = await RtpPeer.open()
    endpoint_id, answer = await create_from_offer(session, peer.offer(codecs, event_pt), "sendrecv")
    peer.use(answer)
    return endpoint_id, peer


async def activate(first: RtpPeer, second: RtpPeer, types: tuple[int, int] = (0, 0)) -> None:
    """Each peer sends one packet (its source is learned), then both inboxes are emptied."""
    first.send(b"\xff" * 160, types[0])
    await asyncio.sleep(0.02)
    second.send(b"\xff" * 160, types[1])
    await first.receive()
    first.drain()
    second.drain()


async def test_passthrough_keeps_payload_and_remaps_payload_type(manager: SessionManager) -> None:
    session = manager.create_session(EventLog())
    _, alice = await rtp_leg(session, "pcmu")
    _, bob = await rtp_leg(session, "pcmu/0,opus")
    await activate(alice, bob)
    payloads = [bytes([index]) * 160 for index in range(10)]
    for index, payload in enumerate(payloads):
        alice.send(payload, marker=index == 0)
    received = await bob.collect(10)
    assert [bytes(packet.payload) for packet in received] == payloads
    assert {packet.payload_type for packet in received} == {0}
    assert received[0].marker
    steps = {(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(received)}
    assert steps == {160}
    assert len({packet.ssrc for packet in received}) == 1
    assert received[0].ssrc != alice.ssrc
    alice.close()
    bob.close()


async def test_passthrough_maps_dynamic_payload_types(manager: SessionManager) -> None:
    session = manager.create_session(EventLog())
    _, alice = await rtp_leg(session, "opus/111")
    _, bob = await rtp_leg(session, "opus/96", event_pt=101)
    await activate(alice, bob, (111, 96))
    alice.send(b"opus-frame", 111, samples=960)
    packet = await bob.receive()
    assert packet.payload_type == 96
    assert bytes(packet.payload) == b"opus-frame"
    alice.close()
    bob.close()


async def test_answer_lists_supported_codecs_and_telephone_event(manager: SessionManager) -> None:
    session = manager.create_session(EventLog())
    peer = await RtpPeer.open()
    endpoint_id, answer = await create_from_offer(session, peer.offer("g722,pcmu"), "sendrecv")
    description = parse_sdp(answer)
    assert [codec.name for codec in description.codecs] == ["G722", "PCMU", "telephone-event"]
    info = session.info()["endpoints"][0]
    assert info.pop("inbound")["dropped"] == {
        "malformed": 0,
        "malformed_rtcp": 0,
        "late": 0,
        "duplicate": 0,
    }
    assert info == {
        "endpoint_id": endpoint_id,
        "endpoint_type": "rtp",
        "direction": "sendrecv",
        "state": "connected",
        "codec": "G722",
    }
    peer.close()


async def test_lenient_offers_get_telephone_event_only(manager: SessionManager) -> None:
    session = manager.create_session(EventLog())
    _, empty_answer = await create_from_offer(session, "", "sendrecv")
    assert [codec.name for codec in parse_sdp(empty_answer).codecs] == ["telephone-event"]
    peer = await RtpPeer.open()
    _, answer = await create_from_offer(session, peer.offer("", event_pt=None), "sendrecv")
    assert [codec.name for codec in parse_sdp(answer).codecs] == ["telephone-event"]
    assert [entry["codec"] for entry in session.info()["endpoints"]] == [None, None]
    peer.close()


async def test_incomplete_webrtc_offers_are_refused(manager: SessionManager) -> None:
    session = manager.create_session(EventLog())
    webrtc = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:abcd\r\n"
    with pytest.raises(EngineError) as error:
        await create_from_offer(session, webrtc, "sendrecv")
    assert error.value.code == "ENDPOINT_ERROR" and "WebRTC" in error.value.message
    assert session.endpoints == {}


async def test_create_offer_is_routable_only_after_accept_answer(manager: SessionManager) -> None:
    events = EventLog()
    session = manager.create_session(events)
    _, alice = await rtp_leg(session, "pcmu")
    endpoint_id, offer = await create_offer(session, "rtp", "sendrecv", ["pcmu", "nonsense"], False)
    names = [codec.name for codec in parse_sdp(offer).codecs]
    assert names == ["PCMU", "telephone-event"]
    assert session.endpoints[endpoint_id].state == "connecting"
    bob = await RtpPeer.open()
    bob.use(offer)
    bob.send(b"\xff" * 160)
    alice.send(b"\x01" * 160)
    await asyncio.sleep(0.1)
    assert bob.drain() == [] and alice.drain() == []
    with pytest.raises(EngineError, match="no codecs from the original offer"):
        await session.accept_answer(endpoint_id, bob.answer_to(offer).replace("PCMU", "GSM"))
    with pytest.raises(EngineError, match="no connection address"):
        await session.accept_answer(
            endpoint_id, bob.answer_to(offer).replace("c=IN IP4 127.0.0.1\r\n", "")
        )
    await session.accept_answer(endpoint_id, bob.answer_to(offer))
    assert events.named("endpoint.state_changed") == [
        {"endpoint_id": endpoint_id, "old_state": "connecting", "new_state": "connected"}
    ]
    alice.drain()
    await activate(alice, bob)
    alice.send(b"\x02" * 160)
    packet = await bob.receive()
    assert bytes(packet.payload) == b"\x02" * 160
    await session.accept_answer(endpoint_id, bob.answer_to(offer))  # renegotiation
    assert len(events.named("endpoint.state_changed")) == 1
    alice.close()
    bob.close()


async def test_garbage_and_strangers_are_counted_not_fatal(manager: SessionManager) -> None:
    session = manager.create_session(EventLog())
    alice_id, alice = await rtp_leg(session, "pcmu")
    _, bob = await rtp_leg(session, "pcmu")
    await activate(alice, bob)
    for garbage in (b"", b"\x00", b"\x80" * 5, b"\x40" + bytes(20), b"\x90\x00" + bytes(10)):
        alice.send_raw(garbage)
    stranger = await RtpPeer.open()
    stranger.target = alice.target
    await asyncio.sleep(0.05)
    alice.send(b"\x03" * 160)
    assert bytes((await bob.receive()).payload) == b"\x03" * 160
    transport = session.endpoints[alice_id].transport  # type: ignore[attr-defined]
    assert transport.malformed_packets >= 4
    stranger.send(b"\x04" * 160)  # inside the learning window: followed, never a crash
    assert bytes((await bob.receive()).payload) == b"\x04" * 160
    assert manager.metrics.packets_routed_total >= 2
    from prometheus_client import generate_latest

    text = generate_latest(manager.metrics.registry).decode()
    [line] = [line for line in text.splitlines() if line.startswith("callbridge_packets_malformed")]
    assert float(line.split()[1]) >= 4
    for peer in (alice, bob, stranger):
        peer.close()


async def test_rtcp_bye_is_reported(manager: SessionManager) -> None:
    from callbridge.media.rtcp import build_goodbye

    events = EventLog()
    session = manager.create_session(events)
    endpoint_id, alice = await rtp_leg(session, "pcmu")
    alice.send_raw(build_goodbye([alice.ssrc], "hangup"))
    [bye] = await events.wait_for("endpoint.rtcp_bye")
    assert bye == {"endpoint_id": endpoint_id, "ssrc_list": [alice.ssrc], "reason": "hangup"}
    alice.close()


async def test_destroy_frees_ports_for_reuse(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.engine.engine_peers import engine_config

    engine = SessionManager(engine_config(tmp_path, rtp_port_range=(46000, 46003)))
    await engine.start()
    try:
        for _ in range(3):
            session = engine.create_session(EventLog())
            await create_from_offer(session, "", "sendrecv")
            await create_from_offer(session, "", "sendrecv")
            with pytest.raises(EngineError, match="No available port pairs"):
                await create_from_offer(session, "", "sendrecv")
            await session.destroy()
            assert engine.ports.in_use == 0
    finally:
        await engine.shutdown(0)
