"""Passthrough forwarding on both paths: the native plane and pure Python give the same packets.

Every test runs twice (`native` and `python`); the packets a peer receives are checked header by
header (one SSRC, consecutive sequence numbers, one timestamp offset, the destination's payload
type, the payload and marker as sent), including across what must leave the plane for Python
(RFC 4733 events, a sequence jump, garbage, RTCP, a recording tap, stats).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest

from callbridge.engine.forwarding import NATIVE_FORWARDING
from callbridge.engine.manager import SessionManager
from callbridge.engine.session import MediaSession
from callbridge.engine.tone_endpoint import create_tone
from callbridge.media.rtp import RtpPacket
from callbridge.media.telephone_event import build_telephone_event
from tests.engine.engine_peers import EventLog, RtpPeer, engine_config, manager
from tests.engine.test_session import leg

__all__ = ["manager"]

PACKETS = 200


def native(manager: SessionManager) -> bool:
    return manager.config.native_forwarding and NATIVE_FORWARDING


async def stream(
    peer: RtpPeer, count: int, payload_type: int = 0, gap_s: float = 0.002, start: int = 0
) -> None:
    for index in range(start, start + count):
        peer.send(index.to_bytes(4, "big") * 40, payload_type, marker=index == 0)
        await asyncio.sleep(gap_s)


def check_rewritten(packets: list[RtpPacket], payload_type: int, first_index: int = 0) -> None:
    """One SSRC, consecutive sequence numbers, one timestamp offset, payloads in order."""
    assert len({packet.ssrc for packet in packets}) == 1
    first = packets[0]
    for number, packet in enumerate(packets):
        assert packet.payload_type == payload_type
        assert packet.sequence == (first.sequence + number) & 0xFFFF
        assert packet.timestamp == (first.timestamp + 160 * number) & 0xFFFFFFFF
        index = first_index + number
        assert bytes(packet.payload) == index.to_bytes(4, "big") * 40
        assert packet.marker == (index == 0)


Pair = tuple[MediaSession, EventLog, RtpPeer, RtpPeer, list[str]]


async def pair(manager: SessionManager) -> Pair:
    log = EventLog()
    session = manager.create_session(log)
    first_id, first = await leg(session)
    second_id, second = await leg(session)
    return session, log, first, second, [first_id, second_id]


async def test_both_directions_exactly_and_counted(manager: SessionManager) -> None:
    session, _, caller, callee, ids = await pair(manager)
    await asyncio.gather(stream(caller, PACKETS), stream(callee, PACKETS))
    heard_by_callee = await callee.collect(PACKETS)
    heard_by_caller = await caller.collect(PACKETS)
    check_rewritten(heard_by_callee, 0)
    check_rewritten(heard_by_caller, 0)
    await asyncio.sleep(0.05)
    assert manager.metrics.packets_routed_total == 2 * PACKETS
    forwarded = manager.metrics.packets_forwarded_native_total
    if native(manager):
        assert forwarded >= 2 * PACKETS - 20, forwarded  # the first packets teach Python
    else:
        assert forwarded == 0
    for endpoint_id in ids:
        stats = session.endpoints[endpoint_id].stats()
        assert stats["inbound"]["packets"] == PACKETS
        assert stats["inbound"]["packets_lost"] == 0
        assert stats["inbound"]["bytes"] == PACKETS * 160
        assert stats["outbound"]["packets"] == PACKETS
    caller.close()
    callee.close()


async def test_payload_types_are_mapped(manager: SessionManager) -> None:
    session = manager.create_session(EventLog())
    _, caller = await leg(session, "opus/111")
    _, callee = await leg(session, "opus/96")
    await stream(caller, PACKETS, payload_type=111)
    check_rewritten(await callee.collect(PACKETS), 96)
    caller.close()
    callee.close()


async def test_events_garbage_and_jumps_leave_the_plane_and_nothing_is_lost(
    manager: SessionManager,
) -> None:
    session, log, caller, callee, ids = await pair(manager)
    await stream(caller, 60)
    callee_packets = await callee.collect(60)
    caller.send_raw(b"\x00garbage")  # malformed: counted, dropped
    caller.send_raw(bytes(65000))  # the largest datagram is no crash either
    for number in range(3):  # digit 5 as RFC 4733: detected, forwarded with the event PT
        end = number == 2
        payload = build_telephone_event(5, end, 10, 160 * (number + 1))
        caller.send(payload, 101, marker=number == 0, timestamp=caller.timestamp, samples=0)
    await stream(caller, 60, start=60)
    caller.sequence = (caller.sequence + 5000) & 0xFFFF  # a restart of the sender's numbering
    await stream(caller, 60, start=120)
    heard = callee_packets + await callee.collect(3 + 60 + 60, within_s=5)
    audio = [packet for packet in heard if packet.payload_type == 0]
    events = [packet for packet in heard if packet.payload_type == 101]
    assert len(events) == 3
    check_rewritten(audio[:60], 0)
    check_rewritten(audio[60:120], 0, first_index=60)  # the events took 3 sequence numbers
    assert audio[60].timestamp == (audio[0].timestamp + 160 * 60) & 0xFFFFFFFF
    ssrc = audio[0].ssrc
    assert all(packet.ssrc == ssrc for packet in heard)
    sequences = [packet.sequence for packet in heard]
    assert sequences == [(sequences[0] + number) & 0xFFFF for number in range(len(heard))]
    assert [bytes(packet.payload)[:4] for packet in audio[120:]] == [
        index.to_bytes(4, "big") for index in range(120, 180)
    ]
    await log.wait_for("dtmf")
    assert log.named("dtmf")[0]["digit"] == "5"
    info = session.endpoints[ids[0]].info()
    assert info["inbound"]["dropped"]["malformed"] >= 2
    caller.close()
    callee.close()


async def test_a_recording_tap_sees_every_packet_once_started(
    manager: SessionManager, tmp_path: Path
) -> None:
    session, _, caller, callee, ids = await pair(manager)
    await stream(caller, 50)
    await callee.collect(50)
    seen: list[int] = []
    endpoint = session.endpoints[ids[0]]
    endpoint.packet_tap = lambda packet, arrival: seen.append(packet.sequence)  # type: ignore[attr-defined]
    await stream(caller, 50, start=50)
    await callee.collect(50)
    assert len(seen) == 50
    endpoint.packet_tap = None  # type: ignore[attr-defined]
    await stream(caller, 50, start=100)
    check_rewritten(await callee.collect(50), 0, first_index=100)
    assert len(seen) == 50
    caller.close()
    callee.close()


async def test_media_timeout_and_last_inbound_follow_the_plane(tmp_path: Path) -> None:
    """Packets the plane took in count as media: no media timeout while they flow."""
    if not NATIVE_FORWARDING:
        pytest.skip("the _forward extension is not built (or CALLBRIDGE_NATIVE=0)")
    engine = SessionManager(engine_config(tmp_path, media_timeout_s=0.3))
    await engine.start()
    try:
        _, log, caller, callee, _ = await pair(engine)
        flowing = asyncio.gather(stream(caller, 100, gap_s=0.01), stream(callee, 100, gap_s=0.01))
        await flowing
        assert engine.metrics.packets_forwarded_native_total > 150
        assert not log.named("endpoint.media_timeout")
        await log.wait_for("endpoint.media_timeout", count=2, within_s=3)
        caller.close()
        callee.close()
    finally:
        await engine.shutdown(0)


async def test_a_removed_destination_stops_forwarding_and_the_source_keeps_serving(
    manager: SessionManager,
) -> None:
    session, _, caller, callee, ids = await pair(manager)
    await stream(caller, 30)
    await callee.collect(30)
    await session.remove_endpoint(ids[1])
    await stream(caller, 30, start=30)
    await asyncio.sleep(0.05)
    assert not callee.drain()
    assert session.endpoints[ids[0]].stats()["inbound"]["packets"] == 60
    _, third = await leg(session)  # a new destination (a socket number may be reused)
    await stream(caller, 30, start=60)
    check_rewritten((await third.collect(30))[-20:], 0, first_index=70)
    caller.close()
    callee.close()
    third.close()


async def test_the_peer_moving_to_a_new_address_is_followed_both_ways(
    manager: SessionManager,
) -> None:
    """A NAT rebinding inside the learning window: the new source is latched, and what the
    other side sends goes to the new address from then on."""
    _, _, caller, callee, _ = await pair(manager)
    await asyncio.gather(stream(caller, 50), stream(callee, 50))
    await callee.collect(50)
    await caller.collect(50)
    moved = await RtpPeer.open()
    moved.ssrc, moved.sequence, moved.timestamp = caller.ssrc, caller.sequence, caller.timestamp
    moved.target = caller.target
    caller.close()
    await stream(moved, 50, start=50)
    check_rewritten(await callee.collect(50), 0, first_index=50)
    await stream(callee, 50, start=50)
    check_rewritten(await moved.collect(50), 0, first_index=50)
    moved.close()
    callee.close()


async def test_the_timeline_continues_into_mixing_after_a_housekeeping_look(
    manager: SessionManager,
) -> None:
    """The once-a-second look (`progress`) right before a route change must not lose the
    plane's last timestamp: the mixed frames continue it, one packet time later."""
    session, _, caller, callee, ids = await pair(manager)
    await stream(caller, 50, gap_s=0.02)
    await callee.collect(50)
    session.endpoints[ids[1]].housekeeping(time.monotonic())
    await stream(caller, 5, gap_s=0.02, start=50)
    session.endpoints[ids[1]].housekeeping(time.monotonic())  # takes the routed count
    tone_id = await create_tone(session, "beep", None, None)
    await asyncio.sleep(0.2)
    await session.remove_endpoint(tone_id)
    heard = [packet for packet in callee.drain() if packet.payload_type == 0]
    steps = {(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(heard)}
    assert len(heard) >= 10 and steps == {160}, steps
    caller.close()
    callee.close()
