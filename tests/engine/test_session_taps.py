"""Audio taps and session observers: what recorders and detectors build on."""

from __future__ import annotations

import asyncio

import numpy as np

from callbridge.engine.endpoint import Endpoint
from callbridge.engine.manager import SessionManager
from callbridge.engine.tone_endpoint import create_tone
from callbridge.media.codecs import PCMU, create_encoder
from callbridge.media.pcm import as_samples
from tests.engine.engine_peers import EventLog, dominant_frequency, manager, rtp_leg, sine_pcm

__all__ = ["manager"]


class Frames:
    def __init__(self) -> None:
        self.frames: list[tuple[bytes, float]] = []

    def on_frame(self, pcm: bytes, now: float) -> None:
        self.frames.append((pcm, now))


class Observer:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def endpoint_leaving(self, endpoint: Endpoint, reason: str) -> None:
        self.seen.append((endpoint.id, reason))

    def session_ending(self, reason: str) -> None:
        self.seen.append(("session", reason))


async def test_a_tap_decodes_a_passthrough_leg_at_its_own_rate(manager: SessionManager) -> None:
    session = manager.create_session(EventLog())
    alice_id, alice = await rtp_leg(session)
    _, bob = await rtp_leg(session)
    tap = Frames()
    session.add_audio_tap(alice_id, 16000, tap)
    encoder = create_encoder(PCMU)
    bob.send(encoder.encode(bytes(320)), 0)  # the engine sends to a peer once it has heard it
    await asyncio.sleep(0.05)
    bob.drain()
    for index in range(30):
        alice.send(encoder.encode(sine_pcm(440, 8000, 160, index * 160)), 0)
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    assert len(tap.frames) >= 25
    assert {len(pcm) for pcm, _ in tap.frames} == {640}  # 20 ms at 16 kHz
    audio = np.concatenate([as_samples(pcm) for pcm, _ in tap.frames[5:]])
    assert abs(dominant_frequency(audio, 16000) - 440) < 10
    forwarded = [packet for packet in bob.drain() if packet.payload_type == 0]
    assert len(forwarded) >= 28  # passthrough goes on beside the tap
    session.remove_audio_tap(alice_id, tap)
    count = len(tap.frames)
    alice.send(encoder.encode(sine_pcm(440, 8000, 160)), 0)
    await asyncio.sleep(0.1)
    assert len(tap.frames) == count
    for peer in (alice, bob):
        peer.close()


async def test_taps_and_observers_follow_the_endpoint_and_the_session(
    manager: SessionManager,
) -> None:
    session = manager.create_session(EventLog())
    observer = Observer()
    session.observers.append(observer)
    tone_id = await create_tone(session, "beep", None, None)
    tap = Frames()
    session.add_audio_tap(tone_id, 8000, tap)
    await asyncio.sleep(0.1)
    assert tap.frames  # a generator nobody hears is tapped too
    await session.remove_endpoint(tone_id)
    assert observer.seen == [(tone_id, "endpoint_removed")]
    count = len(tap.frames)
    await asyncio.sleep(0.06)
    assert len(tap.frames) == count
    await session.destroy()
    assert observer.seen[-1] == ("session", "session destroyed")
