"""endpoint.transfer: a live leg moves between sessions while its peer keeps streaming."""

from __future__ import annotations

import asyncio
import itertools
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from callbridge.engine.bridge_endpoint import bridge
from callbridge.engine.endpoint import Endpoint
from callbridge.engine.errors import EngineError
from callbridge.engine.manager import SessionManager
from callbridge.engine.offers import create_from_offer
from callbridge.engine.rtvbp_control import create_rtvbp
from callbridge.engine.session import MediaSession
from callbridge.engine.tone_endpoint import create_tone
from callbridge.engine.transfer import transfer
from callbridge.media.codecs import G722, PCMU, create_decoder, create_encoder
from callbridge.media.pcm import as_samples
from callbridge.rtvbp.application import Application, Call
from tests.conftest import serve_application, wait_until
from tests.engine.engine_peers import (
    EventLog,
    RtpPeer,
    dominant_frequency,
    engine_config,
    manager,
    sine_pcm,
)
from tests.engine.rtvbp_support import Phone, strongest

__all__ = ["manager"]

FRAMES = 150
MOVE_AT = 60


async def leg(session: MediaSession, codecs: str = "pcmu") -> tuple[str, RtpPeer]:
    peer = await RtpPeer.open()
    endpoint_id, answer = await create_from_offer(session, peer.offer(codecs), "sendrecv")
    peer.use(answer)
    return endpoint_id, peer


def numbered(index: int) -> bytes:
    """A PCMU payload that says which frame it is (passthrough keeps payloads as they are)."""
    return struct.pack("!H", index) + bytes(158)


def frame_numbers(peer: RtpPeer) -> list[int]:
    return [struct.unpack("!H", bytes(packet.payload[:2]))[0] for packet in peer.drain()]


class Leaving:
    """A session observer that notes who leaves and why."""

    def __init__(self) -> None:
        self.left: list[tuple[Endpoint, str]] = []

    def endpoint_leaving(self, endpoint: Endpoint, reason: str) -> None:
        self.left.append((endpoint, reason))

    def session_ending(self, reason: str) -> None:
        pass


async def test_flowing_audio_survives_the_move_without_a_lost_frame(
    manager: SessionManager,
) -> None:
    source_events, target_events = EventLog(), EventLog()
    source = manager.create_session(source_events)
    target = manager.create_session(target_events)
    mover_id, mover = await leg(source)
    _, stays = await leg(source)
    _, waits = await leg(target)
    watcher = Leaving()
    source.observers.append(watcher)
    active_before = manager.metrics.endpoints_active
    for index in range(FRAMES):
        if index == MOVE_AT:
            await transfer(source, mover_id, target.id, manager.get)
        mover.send(numbered(index))
        stays.send(numbered(1000 + index))
        waits.send(numbered(2000 + index))
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)

    heard_before, heard_after = frame_numbers(stays), frame_numbers(waits)
    assert heard_before and heard_after
    assert max(heard_before) < min(heard_after)
    lost = set(range(FRAMES)) - set(heard_before) - set(heard_after)
    assert len(lost) <= 1, sorted(lost)
    assert len(heard_before) + len(heard_after) == len(set(heard_before) | set(heard_after))

    packets = mover.drain()
    assert len({packet.ssrc for packet in packets}) == 1  # the peer sees one unchanged stream
    steps = {
        (later.sequence - earlier.sequence) & 0xFFFF
        for earlier, later in itertools.pairwise(packets)
    }
    assert steps == {1}
    heard = [struct.unpack("!H", bytes(packet.payload[:2]))[0] for packet in packets]
    assert any(1000 <= number < 2000 for number in heard)
    assert any(2000 + MOVE_AT <= number < 3000 for number in heard)

    assert mover_id in target.endpoints and mover_id not in source.endpoints
    assert not target.endpoints[mover_id].closed
    assert [(endpoint.id, reason) for endpoint, reason in watcher.left] == [
        (mover_id, "endpoint_transferred")
    ]
    [out] = source_events.named("endpoint.transferred_out")
    assert out == {"endpoint_id": mover_id, "target_session_id": target.id}
    [arrival] = target_events.named("endpoint.transferred_in")
    assert arrival == {
        "endpoint_id": mover_id,
        "source_session_id": source.id,
        "endpoint_type": "rtp",
        "direction": "sendrecv",
        "state": "connected",
    }
    assert manager.metrics.endpoints_active == active_before
    for peer in (mover, stays, waits):
        peer.close()


async def test_decoded_audio_keeps_its_tone_across_the_move(manager: SessionManager) -> None:
    """PCMU into G.722 legs on both sides: the transcoded path follows the leg."""
    source = manager.create_session(EventLog())
    target = manager.create_session(EventLog())
    mover_id, mover = await leg(source, "pcmu")
    _, stays = await leg(source, "g722")
    _, waits = await leg(target, "g722")
    encoder, silence = create_encoder(PCMU), create_encoder(G722).encode(bytes(640))
    for index in range(FRAMES):
        if index == MOVE_AT:
            await transfer(source, mover_id, target.id, manager.get)
        mover.send(encoder.encode(sine_pcm(700, 8000, 160, index * 160)))
        stays.send(silence, 9)
        waits.send(silence, 9)
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    before = [packet for packet in stays.drain() if packet.payload_type == 9]
    after = [packet for packet in waits.drain() if packet.payload_type == 9]
    assert len(before) + len(after) >= FRAMES - 1 - 3  # at most one lost, a few in flight
    decoder = create_decoder(G722)
    audio = np.concatenate([as_samples(decoder.decode(bytes(p.payload))) for p in after[5:]])
    assert abs(dominant_frequency(audio, 16000) - 700) < 15
    for peer in (mover, stays, waits):
        peer.close()


async def test_checks_come_in_order(manager: SessionManager) -> None:
    source = manager.create_session(EventLog())
    target = manager.create_session(EventLog())
    endpoint_id, peer = await leg(source)
    cases = [
        (endpoint_id, source.id, "INVALID_PARAMS"),
        (endpoint_id, "00000000-0000-0000-0000-000000000001", "SESSION_NOT_FOUND"),
        ("00000000-0000-0000-0000-000000000002", target.id, "ENDPOINT_ERROR"),
    ]
    for moving, to, code in cases:
        with pytest.raises(EngineError) as raised:
            await transfer(source, moving, to, manager.get)
        assert raised.value.code == code
    tone_id = await create_tone(source, "beep", None, None)
    with pytest.raises(EngineError) as raised:
        await transfer(source, tone_id, target.id, manager.get)
    assert raised.value.code == "ENDPOINT_ERROR"
    mine, _ = await bridge(source, target.id, "sendrecv", manager.get)
    with pytest.raises(EngineError) as raised:
        await transfer(source, mine, target.id, manager.get)
    assert raised.value.code == "ENDPOINT_ERROR"
    assert set(source.endpoints) == {endpoint_id, tone_id, mine}
    peer.close()


async def test_full_target_refuses_and_the_leg_stays_untouched(tmp_path: Path) -> None:
    engine = SessionManager(engine_config(tmp_path, max_endpoints_per_session=2))
    await engine.start()
    try:
        source_events = EventLog()
        source = engine.create_session(source_events)
        target = engine.create_session(EventLog())
        mover_id, mover = await leg(source)
        _, stays = await leg(source)
        await create_tone(target, "beep", None, None)
        await create_tone(target, "ringing", None, None)
        watcher = Leaving()
        source.observers.append(watcher)
        with pytest.raises(EngineError) as raised:
            await transfer(source, mover_id, target.id, engine.get)
        assert raised.value.code == "TRANSFER_FAILED"
        assert "MAX_ENDPOINTS_REACHED" in raised.value.message
        assert mover_id in source.endpoints and watcher.left == []
        assert source_events.named("endpoint.transferred_out") == []
        stays.send(numbered(7))
        mover.send(numbered(1))
        [packet] = await stays.collect(1)
        assert struct.unpack("!H", bytes(packet.payload[:2]))[0] == 1
        mover.close()
        stays.close()
    finally:
        await engine.shutdown(0)


class EndsTarget(Leaving):
    """An observer of the source that ends the target while the endpoint is on its way."""

    def __init__(self, target: MediaSession) -> None:
        super().__init__()
        self.target = target

    def endpoint_leaving(self, endpoint: Endpoint, reason: str) -> None:
        super().endpoint_leaving(endpoint, reason)
        self.target.teardown("ended during a transfer")


async def test_target_ending_mid_move_rolls_back(manager: SessionManager) -> None:
    source_events = EventLog()
    source = manager.create_session(source_events)
    target = manager.create_session(EventLog())
    mover_id, mover = await leg(source)
    _, stays = await leg(source)
    source.observers.append(EndsTarget(target))
    with pytest.raises(EngineError) as raised:
        await transfer(source, mover_id, target.id, manager.get)
    assert raised.value.code == "TRANSFER_FAILED"
    assert source.endpoints[mover_id].host is source
    [back] = source_events.named("endpoint.transferred_in")
    assert back["source_session_id"] == source.id and back["endpoint_id"] == mover_id
    stays.send(numbered(7))
    mover.send(numbered(3))
    [packet] = await stays.collect(1)
    assert struct.unpack("!H", bytes(packet.payload[:2]))[0] == 3
    mover.close()
    stays.close()


async def test_a_bridge_side_moves_and_keeps_carrying(manager: SessionManager) -> None:
    first = manager.create_session(EventLog())
    second = manager.create_session(EventLog())
    third = manager.create_session(EventLog())
    mine, _ = await bridge(first, second.id, "sendrecv", manager.get)
    _, speaker = await leg(second)
    _, listener = await leg(third)
    await transfer(first, mine, third.id, manager.get)
    listener.send(bytes(160))
    encoder = create_encoder(PCMU)
    for index in range(40):
        speaker.send(encoder.encode(sine_pcm(600, 8000, 160, index * 160)))
        await asyncio.sleep(0.02)
    decoder = create_decoder(PCMU)
    packets = [packet for packet in listener.drain() if packet.payload_type == 0][10:]
    assert packets
    audio = np.concatenate([as_samples(decoder.decode(bytes(p.payload))) for p in packets])
    assert abs(dominant_frequency(audio, 8000) - 600) < 15
    speaker.close()
    listener.close()


async def test_an_rtvbp_leg_moves_with_its_agent_and_variables(manager: SessionManager) -> None:
    """An echo agent dialled from one session answers the phone of another after the move,
    and its session.get reads the variables of the session it is now in."""
    seen: list[dict[str, object]] = []

    async def agent(call: Call) -> None:
        async for frame in call.audio():
            await call.send_audio(frame)
            if not seen and moved.is_set():
                seen.append(await call.get_variables("room"))

    moved = asyncio.Event()
    async with serve_application(Application(agent)) as url:
        source_events = EventLog()
        source = manager.create_session(source_events)
        target = manager.create_session(EventLog())
        source.variables["room"] = "source"
        target.variables["room"] = "target"
        leg_id = await create_rtvbp(source, url)
        await wait_until(lambda: source.endpoints[leg_id].state == "connected")
        phone = await Phone.open()
        _, answer = await create_from_offer(target, phone.peer.offer("pcmu", 101), "sendrecv")
        phone.peer.use(answer)
        phone.start()
        phone.say(440)
        await transfer(source, leg_id, target.id, manager.get)
        moved.set()
        start = time.monotonic() + 0.4
        await asyncio.sleep(1.2)
        heard = phone.heard_pcm(since=start)
        assert len(heard) >= 320 * 30
        assert abs(strongest(heard, 8000)[0] - 440) < 15
        assert seen == [{"room": "target"}]
        assert target.endpoints[leg_id].host is target
        await phone.close()
        await target.destroy()
        await source.destroy()
        await wait_until(lambda: not manager.context.tasks, 5.0)


async def test_a_digit_being_injected_finishes_after_the_move(manager: SessionManager) -> None:
    source = manager.create_session(EventLog())
    target = manager.create_session(EventLog())
    mover_id, mover = await leg(source)
    mover.send(bytes(160))
    await asyncio.sleep(0.05)
    await source.dtmf_inject(mover_id, "7", 400, 10)
    await asyncio.sleep(0.1)
    await transfer(source, mover_id, target.id, manager.get)
    assert not source.dtmf.busy and target.dtmf.busy
    await wait_until(lambda: not target.dtmf.busy)
    events = [packet for packet in mover.drain() if packet.payload_type == 101]
    assert {bytes(packet.payload)[0] for packet in events} == {7}
    assert bytes(events[-1].payload)[1] & 0x80  # the end packets were sent
    durations = [int.from_bytes(bytes(packet.payload)[2:4], "big") for packet in events]
    assert max(durations) >= 400 * 8 - 160
    mover.close()
