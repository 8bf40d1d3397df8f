"""File and tone playback heard by a real RTP peer; control, events, confinement, URLs."""

from __future__ import annotations

import asyncio
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web

from callbridge.engine.errors import EngineError
from callbridge.engine.file_endpoint import create_with_file
from callbridge.engine.manager import SessionManager
from callbridge.engine.offers import create_from_offer
from callbridge.engine.session import MediaSession
from callbridge.engine.tone_endpoint import create_tone
from callbridge.media.codecs import PCMU, create_decoder
from callbridge.media.pcm import as_samples
from tests.conftest import serve_app
from tests.engine.engine_peers import EventLog, RtpPeer, dominant_frequency, engine_config, sine_pcm


def write_wav(path: Path, frequency: float, seconds: float, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(sine_pcm(frequency, rate, int(rate * seconds)))
    return path


@pytest.fixture
async def media(tmp_path: Path) -> AsyncIterator[tuple[SessionManager, Path]]:
    media_dir = tmp_path / "media"
    media_dir.mkdir()
    engine = SessionManager(engine_config(tmp_path, media_dir=media_dir))
    await engine.start()
    yield engine, media_dir
    await engine.shutdown(0)


async def listener(session: MediaSession) -> RtpPeer:
    peer = await RtpPeer.open()
    _, answer = await create_from_offer(session, peer.offer("pcmu"), "sendrecv")
    peer.use(answer)
    peer.send(b"\xff" * 160)  # the engine sends to a peer only after it has sent
    return peer


def heard(peer: RtpPeer) -> np.ndarray:
    decoder = create_decoder(PCMU)
    packets = [packet for packet in peer.drain() if packet.payload_type == 0]
    return np.concatenate([as_samples(decoder.decode(bytes(p.payload))) for p in packets])


async def test_file_is_heard_loops_and_finishes(media: tuple[SessionManager, Path]) -> None:
    engine, media_dir = media
    write_wav(media_dir / "tone.wav", 700, 0.2)
    events = EventLog()
    session = engine.create_session(events)
    peer = await listener(session)
    endpoint_id = await create_with_file(session, "tone.wav", loop_count=2)
    assert session.endpoints[endpoint_id].info()["state"] == "playing"
    assert session.endpoints[endpoint_id].direction == "sendonly"
    [finished] = await events.wait_for("endpoint.file.finished")
    assert finished == {"endpoint_id": endpoint_id, "reason": "completed"}
    assert session.endpoints[endpoint_id].state == "finished"
    audio = heard(peer)
    assert 28 <= len(audio) // 160 <= 31  # three plays of 10 frames
    assert abs(dominant_frequency(audio, 8000) - 700) < 15
    assert events.named("endpoint.state_changed") == []
    peer.close()


async def test_seek_pause_resume(media: tuple[SessionManager, Path]) -> None:
    engine, media_dir = media
    write_wav(media_dir / "long.wav", 500, 2.0)
    events = EventLog()
    session = engine.create_session(events)
    endpoint_id = await create_with_file(session, "long.wav", loop_count=None)
    await session.file_pause(endpoint_id)
    await session.file_pause(endpoint_id)  # no-op
    await session.file_seek(endpoint_id, 1500)
    await session.file_seek(endpoint_id, 10_000_000)  # past the end: no crash
    await session.file_resume(endpoint_id)
    await session.file_resume(endpoint_id)  # no-op
    changes = events.named("endpoint.state_changed")
    assert [(c["old_state"], c["new_state"]) for c in changes] == [
        ("playing", "paused"),
        ("paused", "playing"),
    ]
    tone_id = await create_tone(session, "beep", None, None)
    for call in (session.file_seek(tone_id, 0), session.file_pause(tone_id)):
        with pytest.raises(EngineError, match="Not a file endpoint"):
            await call
    finite = await create_with_file(session, "long.wav", start_ms=1900)
    await events.wait_for("endpoint.file.finished")
    with pytest.raises(EngineError, match="Cannot seek in state Finished"):
        await session.file_seek(finite, 0)
    with pytest.raises(EngineError, match="Cannot pause"):
        await session.file_pause(finite)


async def test_local_files_are_confined_to_media_dir(
    media: tuple[SessionManager, Path], tmp_path: Path
) -> None:
    engine, media_dir = media
    outside = write_wav(tmp_path / "secret.wav", 440, 0.1)
    (media_dir / "link.wav").symlink_to(outside)
    (media_dir / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage")
    session = engine.create_session(EventLog())
    for source, message in (
        ("../secret.wav", "outside media_dir"),
        (str(outside), "outside media_dir"),
        ("link.wav", "outside media_dir"),
        ("missing.wav", "File not found"),
        ("ftp://example.com/a.wav", "File not found"),
        ("corrupt.wav", "Cannot play file"),
        ("a\u0000b", "Invalid file path"),
    ):
        with pytest.raises(EngineError) as error:
            await create_with_file(session, source)
        assert error.value.code == "ENDPOINT_ERROR" and message in error.value.message, source
    assert session.endpoints == {}


async def test_local_playback_disabled_without_media_dir(tmp_path: Path) -> None:
    engine = SessionManager(engine_config(tmp_path))
    await engine.start()
    try:
        session = engine.create_session(EventLog())
        with pytest.raises(EngineError, match="Local file playback is disabled"):
            await create_with_file(session, "a.wav")
    finally:
        await engine.shutdown(0)


@pytest.fixture
async def http_files(tmp_path: Path) -> AsyncIterator[tuple[str, list[str]]]:
    """A local aiohttp server: /tone.wav (after a short delay), /slow.wav, 404 otherwise."""
    payload = write_wav(tmp_path / "served.wav", 900, 0.2).read_bytes()
    requests: list[str] = []

    async def serve(request: web.Request) -> web.StreamResponse:
        requests.append(request.path)
        if request.path == "/tone.wav":
            await asyncio.sleep(0.05)
            return web.Response(body=payload, content_type="audio/wav")
        if request.path == "/slow.wav":
            await asyncio.sleep(0.4)
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{name}", serve)
    async with serve_app(app) as address:
        yield f"http://{address}", requests


async def test_url_download_plays_after_buffering(
    media: tuple[SessionManager, Path], http_files: tuple[str, list[str]]
) -> None:
    engine, _ = media
    base, requests = http_files
    events = EventLog()
    session = engine.create_session(events)
    peer = await listener(session)
    endpoint_id = await create_with_file(session, f"{base}/tone.wav")
    assert session.endpoints[endpoint_id].state == "buffering"
    [change] = await events.wait_for("endpoint.state_changed")
    assert change == {"endpoint_id": endpoint_id, "old_state": "buffering", "new_state": "playing"}
    await events.wait_for("endpoint.file.finished")
    assert abs(dominant_frequency(heard(peer), 8000) - 900) < 15
    assert requests == ["/tone.wav"]
    peer.close()


async def test_url_downloads_are_deduplicated_across_sessions(
    media: tuple[SessionManager, Path], http_files: tuple[str, list[str]]
) -> None:
    engine, _ = media
    base, requests = http_files
    logs = [EventLog() for _ in range(4)]
    for log in logs:
        session = engine.create_session(log)
        await create_with_file(session, f"{base}/tone.wav")
    for log in logs:
        await log.wait_for("endpoint.state_changed")
    assert requests == ["/tone.wav"]
    assert engine.downloads.requests == 1


async def test_url_failures_remove_the_endpoint_with_an_error_event(
    media: tuple[SessionManager, Path], http_files: tuple[str, list[str]]
) -> None:
    engine, _ = media
    base, _ = http_files
    events = EventLog()
    session = engine.create_session(events)
    missing = await create_with_file(session, f"{base}/missing.wav")
    slow = await create_with_file(session, f"{base}/slow.wav", timeout_ms=100)
    finished = await events.wait_for("endpoint.file.finished", 2)
    by_id = {event["endpoint_id"]: event for event in finished}
    assert by_id[missing]["reason"] == "error" and "404" in by_id[missing]["error"]
    assert by_id[slow]["reason"] == "error" and "timed out" in by_id[slow]["error"]
    assert session.endpoints == {}
    assert all(event[2] for event in events.events)  # critical


async def test_tone_is_heard_and_finishes(media: tuple[SessionManager, Path]) -> None:
    engine, _ = media
    events = EventLog()
    session = engine.create_session(events)
    peer = await listener(session)
    await asyncio.sleep(0.03)
    endpoint_id = await create_tone(session, "sine", 1200.0, 400)
    assert session.endpoints[endpoint_id].info() == {
        "endpoint_id": endpoint_id,
        "endpoint_type": "tone",
        "direction": "sendonly",
        "state": "playing",
        "codec": None,
    }
    [finished] = await events.wait_for("endpoint.tone.finished")
    assert finished == {"endpoint_id": endpoint_id}
    assert session.endpoints[endpoint_id].state == "finished"
    audio = heard(peer)
    assert 19 <= len(audio) // 160 <= 20
    assert abs(dominant_frequency(audio, 8000) - 1200) < 15
    with pytest.raises(EngineError) as error:
        await create_tone(session, "sine", 5.0, None)
    assert error.value.code == "INVALID_PARAMS"
    peer.close()
