"""Session semantics: limits, info shapes, timeouts and their events, DTMF, orphaned events."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from callbridge.engine.bridge_endpoint import bridge
from callbridge.engine.errors import EngineError
from callbridge.engine.manager import SessionManager
from callbridge.engine.offers import create_from_offer
from callbridge.engine.session import MediaSession
from callbridge.engine.tone_endpoint import create_tone
from callbridge.media.rtp import RtpPacket
from callbridge.media.telephone_event import build_telephone_event
from tests.engine.engine_peers import EventLog, RtpPeer, engine_config, manager

__all__ = ["manager"]


async def leg(
    session: MediaSession, codecs: str = "pcmu", event_pt: int | None = 101
) -> tuple[str, RtpPeer]:
    peer = await RtpPeer.open()
    endpoint_id, answer = await create_from_offer(session, peer.offer(codecs, event_pt), "sendrecv")
    peer.use(answer)
    return endpoint_id, peer


async def started(tmp_path: Path, **overrides: object) -> SessionManager:
    engine = SessionManager(engine_config(tmp_path, **overrides))
    await engine.start()
    return engine


def test_summary_and_info_shapes(manager: SessionManager) -> None:
    session = manager.create_session(EventLog())
    summary = session.summary()
    assert set(summary) == {"session_id", "state", "endpoint_count", "created_at"}
    assert summary["state"] == "active" and summary["endpoint_count"] == 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", summary["created_at"])
    info = session.info()
    assert info["endpoints"] == [] and info["recordings"] == [] and info["vad_active"] == []


async def test_every_endpoint_kind_counts_against_the_limit(tmp_path: Path) -> None:
    engine = await started(tmp_path, max_endpoints_per_session=3)
    try:
        session = engine.create_session(EventLog())
        await create_tone(session, "beep", None, None)
        await create_from_offer(session, "", "sendrecv")
        other = engine.create_session(EventLog())
        await bridge(session, other.id, "sendrecv", engine.get)
        with pytest.raises(EngineError) as error:
            await create_from_offer(session, "", "sendrecv")
        assert (error.value.code, error.value.message) == (
            "ENDPOINT_ERROR",
            "MAX_ENDPOINTS_REACHED",
        )
        with pytest.raises(EngineError, match="MAX_ENDPOINTS_REACHED"):
            await create_tone(session, "beep", None, None)
        # Bridging from a session with room into a full one rolls back the new side.
        third = engine.create_session(EventLog())
        with pytest.raises(EngineError) as error:
            await bridge(third, session.id, "sendrecv", engine.get)
        assert error.value.code == "ENDPOINT_ERROR"
        assert third.endpoints == {}
        assert engine.ports.in_use == 1
    finally:
        await engine.shutdown(0)


async def test_bridge_errors(manager: SessionManager) -> None:
    session = manager.create_session(EventLog())
    with pytest.raises(EngineError) as error:
        await bridge(session, session.id, "sendrecv", manager.get)
    assert error.value.code == "INVALID_PARAMS"
    with pytest.raises(EngineError) as error:
        await bridge(session, "00000000-0000-0000-0000-000000000000", "sendrecv", manager.get)
    assert error.value.code == "SESSION_NOT_FOUND"


async def test_remove_endpoint_twice_is_not_found(manager: SessionManager) -> None:
    session = manager.create_session(EventLog())
    endpoint_id = await create_tone(session, "ringing", None, None)
    await session.remove_endpoint(endpoint_id)
    with pytest.raises(EngineError, match="Endpoint not found"):
        await session.remove_endpoint(endpoint_id)


async def test_idle_timeout_emits_then_destroys(tmp_path: Path) -> None:
    engine = await started(tmp_path, session_idle_timeout_s=0.15)
    try:
        events = EventLog()
        session = engine.create_session(events)
        await create_from_offer(session, "", "sendrecv")
        [data] = await events.wait_for("session.idle_timeout")
        assert data == {"session_id": session.id, "idle_timeout_secs": 0.15}
        assert events.events[-1][2] is True  # critical
        assert not session.alive and engine.get(session.id) is None
        assert engine.ports.in_use in (0, 1)  # released within a loop iteration
        with pytest.raises(EngineError) as error:
            await create_tone(session, "beep", None, None)
        assert error.value.code == "SESSION_GONE"
    finally:
        await engine.shutdown(0)


async def test_playing_tone_keeps_a_session_from_idling(tmp_path: Path) -> None:
    engine = await started(tmp_path, session_idle_timeout_s=0.1)
    try:
        events = EventLog()
        session = engine.create_session(events)
        await create_tone(session, "beep", None, 300)
        await events.wait_for("endpoint.tone.finished")
        assert session.alive
        await events.wait_for("session.idle_timeout")
    finally:
        await engine.shutdown(0)


async def test_empty_session_timeout(tmp_path: Path) -> None:
    engine = await started(tmp_path, empty_session_timeout_s=0.1)
    try:
        events = EventLog()
        session = engine.create_session(events)
        endpoint_id = await create_tone(session, "beep", None, None)
        await asyncio.sleep(0.2)
        assert session.alive  # not empty
        await session.remove_endpoint(endpoint_id)
        [data] = await events.wait_for("session.empty_timeout")
        assert data == {"session_id": session.id, "empty_timeout_secs": 0.1}
        assert not session.alive
    finally:
        await engine.shutdown(0)


async def test_media_timeout_fires_once_per_episode(tmp_path: Path) -> None:
    engine = await started(tmp_path, media_timeout_s=0.1)
    try:
        events = EventLog()
        session = engine.create_session(events)
        endpoint_id, peer = await leg(session)
        [first] = await events.wait_for("endpoint.media_timeout")
        assert first["endpoint_id"] == endpoint_id and first["duration_ms"] >= 100
        await asyncio.sleep(0.15)
        assert len(events.named("endpoint.media_timeout")) == 1
        peer.send(b"\xff" * 160)  # a new episode starts with the next silence
        await events.wait_for("endpoint.media_timeout", 2)
        peer.close()
    finally:
        await engine.shutdown(0)


async def test_events_while_orphaned_are_discarded(manager: SessionManager) -> None:
    events = EventLog()
    session = manager.create_session(events)
    manager.orphan(session)
    await create_tone(session, "beep", None, 40)
    await asyncio.sleep(0.15)
    assert events.events == []
    late = EventLog()
    manager.attach(session.id, late)
    await create_tone(session, "beep", None, 40)
    await late.wait_for("endpoint.tone.finished")
    assert len(late.named("endpoint.tone.finished")) == 1


async def test_dtmf_is_detected_and_forwarded_with_payload_type_remap(
    manager: SessionManager,
) -> None:
    events = EventLog()
    session = manager.create_session(events)
    alice_id, alice = await leg(session, "pcmu", 101)
    _, bob = await leg(session, "pcmu", 96)
    _, carol = await leg(session, "pcmu", None)  # no telephone-event: gets no digits
    for peer in (alice, bob, carol):
        peer.send(b"\xff" * 160)
    await asyncio.sleep(0.05)
    for peer in (alice, bob, carol):
        peer.drain()
    timestamp = 777000
    for step in range(1, 5):
        end = step == 4
        payload = build_telephone_event(5, end, 10, step * 160)
        for _ in range(3 if end else 1):
            alice.send(payload, 101, marker=step == 1, timestamp=timestamp)
        await asyncio.sleep(0.02)
    [digit] = await events.wait_for("dtmf")
    assert digit == {"endpoint_id": alice_id, "digit": "5", "duration_ms": 80}
    assert manager.metrics.dtmf_events_total == 1
    await asyncio.sleep(0.05)
    forwarded = [packet for packet in bob.drain() if packet.payload_type == 96]
    assert len(forwarded) == 6
    assert len({packet.timestamp for packet in forwarded}) == 1
    assert not [packet for packet in carol.drain() if packet.payload_type in (96, 101)]
    for peer in (alice, bob, carol):
        peer.close()


async def test_dtmf_without_end_packet_is_reported_after_the_timeout(
    manager: SessionManager,
) -> None:
    events = EventLog()
    session = manager.create_session(events)
    alice_id, alice = await leg(session, "pcmu", 101)
    session.endpoints[alice_id]._detector.timeout = 0.1  # type: ignore[attr-defined]
    alice.send(build_telephone_event(1, False, 10, 160), 101, timestamp=5)
    [digit] = await events.wait_for("dtmf")
    assert digit == {"endpoint_id": alice_id, "digit": "1", "duration_ms": 20}
    alice.close()


async def test_dtmf_injection_shape_and_errors(manager: SessionManager) -> None:
    session = manager.create_session(EventLog())
    alice_id, alice = await leg(session, "pcmu", 101)
    bare_id, bare = await leg(session, "pcmu", None)
    file_like = await create_tone(session, "beep", None, None)
    other = manager.create_session(EventLog())
    bridge_id, _ = await bridge(session, other.id, "sendrecv", manager.get)
    alice.send(b"\xff" * 160)
    await asyncio.sleep(0.05)
    alice.drain()
    await session.dtmf_inject(alice_id, "7", 100, 10)
    with pytest.raises(EngineError, match="DTMF injection already in progress"):
        await session.dtmf_inject(alice_id, "1", 100, 10)
    packets: list[RtpPacket] = []
    async with asyncio.timeout(3):
        while len([p for p in packets if p.payload_type == 101]) < 7:
            packets.append(await alice.receive())
    events = [packet for packet in packets if packet.payload_type == 101]
    assert events[0].marker and not any(packet.marker for packet in events[1:])
    assert len({packet.timestamp for packet in events}) == 1
    assert sum(bool(packet.payload[1] & 0x80) for packet in events) == 3
    assert events[0].payload[0] == 7
    for endpoint_id, message in (
        (file_like, "Cannot inject DTMF into file endpoint"),
        (bare_id, "No telephone-event PT negotiated"),
        (bridge_id, "No telephone-event PT negotiated"),
        ("nope", "Endpoint not found"),
    ):
        with pytest.raises(EngineError) as error:
            await session.dtmf_inject(endpoint_id, "1", 100, 10)
        assert (error.value.code, error.value.message) == ("ENDPOINT_ERROR", message)
    with pytest.raises(EngineError) as error:
        await session.dtmf_inject(alice_id, "x", 100, 10)
    assert error.value.code == "INVALID_PARAMS"
    alice.close()
    bare.close()


async def test_the_clock_calls_a_session_every_frame_only_while_it_has_work(
    manager: SessionManager,
) -> None:
    """A passthrough session is not ticked every frame; a digit, a tone or mixing put it on
    the every-frame list and it leaves when that work ends (its RTCP stays periodic)."""
    clock = manager.clock
    session = manager.create_session(EventLog())
    alice_id, alice = await leg(session)
    _, bob = await leg(session)
    alice.send(b"\xff" * 160)
    bob.send(b"\xff" * 160)
    await bob.receive()
    assert clock.every_frame == 0
    await session.dtmf_inject(alice_id, "7", 60, 10)
    assert clock.every_frame == 1
    ends = 0
    async with asyncio.timeout(3):
        while ends < 3:
            packet = await alice.receive()
            ends += packet.payload_type == 101 and bool(packet.payload[1] & 0x80)
    async with asyncio.timeout(1):
        while clock.every_frame:
            await asyncio.sleep(0.02)
    tone_id = await create_tone(session, "beep", None, None)
    assert clock.every_frame == 1
    await session.remove_endpoint(tone_id)
    assert clock.every_frame == 0
    carol_id, carol = await leg(session)  # three parties: the N-1 mix runs every frame
    assert clock.every_frame == 1
    await session.remove_endpoint(carol_id)
    assert clock.every_frame == 0
    await session.destroy()
    assert clock.every_frame == 0
    for peer in (alice, bob, carol):
        peer.close()
