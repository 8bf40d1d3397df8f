"""Shared file playback: two sessions play one file from one decode and hear it in step."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from callbridge.engine.errors import EngineError
from callbridge.engine.file_endpoint import create_with_file
from callbridge.engine.manager import SessionManager
from callbridge.engine.offers import create_from_offer
from callbridge.engine.session import MediaSession
from callbridge.media.codecs import PCMU, create_decoder
from callbridge.media.pcm import as_samples
from tests.engine.engine_peers import EventLog, RtpPeer, sine_pcm
from tests.engine.test_file_endpoint import media

__all__ = ["media"]

BLOCK_S = 0.06
"""The file is a random pattern of 60 ms blocks of tone or silence."""
RATE = 16000


def write_pattern(path: Path, seconds: float) -> None:
    rng = random.Random(7)
    block = int(RATE * BLOCK_S)
    tone = sine_pcm(700, RATE, block)
    blocks = [
        tone if rng.random() < 0.5 else bytes(2 * block) for _ in range(int(seconds / BLOCK_S))
    ]
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(RATE)
        handle.writeframes(b"".join(blocks))


class Listener:
    """A PCMU peer in a session that notes when it heard tone and when silence."""

    def __init__(self, peer: RtpPeer) -> None:
        self.peer = peer
        self.heard: list[tuple[float, bool]] = []
        self._decoder = create_decoder(PCMU)
        self._task = asyncio.create_task(self._listen())

    @classmethod
    async def join(cls, session: MediaSession) -> Listener:
        peer = await RtpPeer.open()
        _, answer = await create_from_offer(session, peer.offer("pcmu"), "sendrecv")
        peer.use(answer)
        peer.send(b"\xff" * 160)  # the engine sends to a peer only after it has sent
        return cls(peer)

    async def _listen(self) -> None:
        while True:
            packet = await self.peer.receive(within_s=30)
            samples = as_samples(self._decoder.decode(bytes(packet.payload))).astype(np.float64)
            self.heard.append((time.monotonic(), float(np.sqrt(np.mean(samples**2))) > 1500))

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.peer.close()


async def test_two_sessions_hear_one_decode_in_step(media: tuple[SessionManager, Path]) -> None:
    engine, media_dir = media
    write_pattern(media_dir / "pattern.wav", 6.0)
    first, second = engine.create_session(EventLog()), engine.create_session(EventLog())
    early, late = await Listener.join(first), await Listener.join(second)
    started = time.monotonic()
    first_id = await create_with_file(first, "pattern.wav", shared=True)
    await asyncio.sleep(0.7)
    second_id = await create_with_file(second, "pattern.wav", shared=True, start_ms=3000)
    await asyncio.sleep(2.0)
    shared = engine.context.shared_playback
    assert shared.decodes_started == 1 and len(shared) == 1
    player = first.endpoints[first_id]._player  # type: ignore[attr-defined]
    assert player is second.endpoints[second_id]._player  # type: ignore[attr-defined]
    elapsed_frames = (time.monotonic() - started) / 0.02
    assert player.frames_decoded <= elapsed_frames + 5  # once per clock frame, not per listener
    path = str((media_dir / "pattern.wav").resolve())
    assert first.endpoints[first_id].info()["shared_playback_id"] == path
    assert second.endpoints[second_id].info()["shared_playback_id"] == path

    joined = late.heard[0][0] + 0.2
    reference = [(moment, loud) for moment, loud in early.heard if moment >= joined - 0.1]
    times = np.array([moment for moment, _ in reference])
    compared = agreed = 0
    for moment, loud in late.heard:
        if moment < joined or moment > times[-1]:
            continue
        nearest = int(np.argmin(np.abs(times - moment)))
        compared += 1
        agreed += reference[nearest][1] == loud
    assert compared > 50
    assert agreed / compared > 0.9, (agreed, compared)
    assert any(loud for _, loud in late.heard) and not all(loud for _, loud in late.heard)

    with pytest.raises(EngineError, match="shared"):
        await first.file_seek(first_id, 0)
    await first.remove_endpoint(first_id)
    assert len(shared) == 1
    count = len(late.heard)
    await asyncio.sleep(0.3)
    assert len(late.heard) > count + 5  # the other session plays on
    await second.remove_endpoint(second_id)
    assert len(shared) == 0
    await early.close()
    await late.close()


async def test_a_finished_shared_source_starts_again(media: tuple[SessionManager, Path]) -> None:
    engine, media_dir = media
    write_pattern(media_dir / "short.wav", 0.3)
    events = EventLog()
    session = engine.create_session(events)
    first_id = await create_with_file(session, "short.wav", shared=True)
    [finished] = await events.wait_for("endpoint.file.finished")
    assert finished == {"endpoint_id": first_id, "reason": "completed"}
    second_id = await create_with_file(session, "short.wav", shared=True)
    await events.wait_for("endpoint.file.finished", count=2)
    assert engine.context.shared_playback.decodes_started == 2
    assert session.endpoints[second_id].state == "finished"


async def test_a_shared_url_is_named_by_its_sha1(media: tuple[SessionManager, Path]) -> None:
    engine, _ = media
    session = engine.create_session(EventLog())
    url = "http://127.0.0.1:1/prompt.wav"
    endpoint_id = await create_with_file(session, url, shared=True, timeout_ms=500)
    expected = hashlib.sha1(url.encode()).hexdigest()
    assert session.endpoints[endpoint_id].info()["shared_playback_id"] == expected
    unshared = await create_with_file(session, url, timeout_ms=500)
    assert "shared_playback_id" not in session.endpoints[unshared].info()
