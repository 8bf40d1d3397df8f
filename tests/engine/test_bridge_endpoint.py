"""Bridges between sessions: audio both ways, pair removal, one-sided destroy."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from callbridge.engine.bridge_endpoint import bridge
from callbridge.engine.manager import SessionManager
from callbridge.engine.offers import create_from_offer
from callbridge.engine.session import MediaSession
from callbridge.media.codecs import OPUS, PCMU, create_decoder, create_encoder
from callbridge.media.pcm import as_samples
from tests.engine.engine_peers import (
    EventLog,
    RtpPeer,
    dominant_frequency,
    engine_config,
    manager,
    sine_pcm,
)

__all__ = ["manager"]


async def leg(session: MediaSession, codecs: str) -> RtpPeer:
    peer = await RtpPeer.open()
    _, answer = await create_from_offer(session, peer.offer(codecs), "sendrecv")
    peer.use(answer)
    return peer


async def test_bridge_carries_audio_both_ways(manager: SessionManager) -> None:
    first = manager.create_session(EventLog())
    second = manager.create_session(EventLog())
    alice = await leg(first, "pcmu")
    bob = await leg(second, "opus")
    mine, theirs = await bridge(first, second.id, "sendrecv", manager.get)
    assert first.endpoints[mine].info()["codec"] == "L16/48000"
    assert second.endpoints[theirs].info()["endpoint_type"] == "bridge"
    assert second.endpoints[theirs].state == "connected"
    pcmu, opus = create_encoder(PCMU), create_encoder(OPUS)
    for index in range(60):
        alice.send(pcmu.encode(sine_pcm(800, 8000, 160, index * 160)))
        bob.send(opus.encode(sine_pcm(1300, 48000, 960, index * 960)), 111, samples=960)
        await asyncio.sleep(0.02)
    decoder = create_decoder(OPUS)
    packets = [p for p in bob.drain() if p.payload_type == 111][10:]
    audio = np.concatenate([as_samples(decoder.decode(bytes(p.payload))) for p in packets])
    assert abs(dominant_frequency(audio, 48000) - 800) < 15
    decoder = create_decoder(PCMU)
    packets = [p for p in alice.drain() if p.payload_type == 0][10:]
    audio = np.concatenate([as_samples(decoder.decode(bytes(p.payload))) for p in packets])
    assert abs(dominant_frequency(audio, 8000) - 1300) < 15
    alice.close()
    bob.close()


async def test_removing_one_side_removes_the_pair(manager: SessionManager) -> None:
    first = manager.create_session(EventLog())
    second = manager.create_session(EventLog())
    mine, theirs = await bridge(first, second.id, "sendrecv", manager.get)
    await second.remove_endpoint(theirs)
    assert mine not in first.endpoints and second.endpoints == {}


async def test_destroying_one_session_leaves_the_other_side(tmp_path: Path) -> None:
    engine = SessionManager(engine_config(tmp_path, media_timeout_s=0.1))
    await engine.start()
    try:
        events = EventLog()
        first = engine.create_session(EventLog())
        second = engine.create_session(events)
        _, theirs = await bridge(first, second.id, "sendrecv", engine.get)
        await first.destroy()
        assert second.endpoints[theirs].state == "connected"
        [timeout] = await events.wait_for("endpoint.media_timeout")
        assert timeout["endpoint_id"] == theirs
    finally:
        await engine.shutdown(0)
