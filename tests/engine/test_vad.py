"""VAD monitors on real endpoints: speech played from a file and sent by a real RTP peer."""

from __future__ import annotations

import asyncio
import importlib.metadata
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from callbridge.engine.errors import EngineError
from callbridge.engine.file_endpoint import create_with_file
from callbridge.engine.manager import SessionManager
from callbridge.engine.offers import create_from_offer
from callbridge.engine.session import MediaSession
from callbridge.engine.tone_endpoint import create_tone
from callbridge.engine.vad import SessionVad, start_vad, stop_vad
from callbridge.media.codecs import PCMU, create_encoder
from callbridge.media.resample import Resampler
from tests.engine.engine_peers import EventLog, RtpPeer, engine_config, sine_pcm
from tests.media.speech import RATE, espeak_available, speech_timeline

needs_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")


@pytest.fixture
async def media_manager(tmp_path: Path) -> AsyncIterator[SessionManager]:
    engine = SessionManager(engine_config(tmp_path, media_dir=tmp_path))
    await engine.start()
    yield engine
    await engine.shutdown(0)


def one_sentence(tmp_path: Path) -> tuple[Path, float, float]:
    """The first sentence (with noise) as a WAV file, and its onset and offset in seconds."""
    timeline = speech_timeline()
    onset, offset = timeline.utterances[0]
    end = round((offset + 1.5) * RATE)
    path = tmp_path / "speech.wav"
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(RATE)
        writer.writeframes(timeline.samples[round((onset - 0.5) * RATE) : end].tobytes())
    return path, 0.5, offset - onset + 0.5


@needs_espeak
async def test_speech_from_a_file_starts_and_then_reports_silence(
    media_manager: SessionManager, tmp_path: Path
) -> None:
    events = EventLog()
    session = media_manager.create_session(events)
    path, _, _ = one_sentence(tmp_path)
    endpoint_id = await create_with_file(session, str(path))
    await start_vad(session, endpoint_id, 400, 0.5)
    assert session.info()["vad_active"] == [endpoint_id]
    [started] = await events.wait_for("vad.speech_started", within_s=5)
    assert started == {"endpoint_id": endpoint_id}
    [silence] = await events.wait_for("vad.silence", within_s=8)
    assert silence["endpoint_id"] == endpoint_id
    assert 400 <= silence["silence_duration_ms"] <= 500
    assert len(events.named("vad.speech_started")) == 1
    stop_vad(session, endpoint_id)
    assert session.info()["vad_active"] == []
    with pytest.raises(EngineError, match="VAD not active for endpoint"):
        stop_vad(session, endpoint_id)


async def test_a_steady_tone_is_speech_to_webrtc_and_vad_stops_with_its_endpoint(
    media_manager: SessionManager,
) -> None:
    events = EventLog()
    session = media_manager.create_session(events)
    endpoint_id = await create_tone(session, "sine", 440.0, None)
    await start_vad(session, endpoint_id, 100, 0.5, "silero")
    await start_vad(session, endpoint_id, 100, 0.5)  # replaces the monitor without error
    await events.wait_for("vad.speech_started")
    vad = SessionVad.find(session)
    assert vad is not None and list(vad.monitors) == [endpoint_id]
    await session.remove_endpoint(endpoint_id)
    assert session.info()["vad_active"] == [] and not vad.monitors
    with pytest.raises(EngineError, match="Endpoint not found"):
        await start_vad(session, endpoint_id, 1000, 0.5)
    await session.destroy()


async def test_a_detector_that_cannot_be_made_is_a_vad_error_event(tmp_path: Path) -> None:
    engine = SessionManager(engine_config(tmp_path, vad_silero_model=tmp_path / "absent.onnx"))
    await engine.start()
    try:
        events = EventLog()
        session = engine.create_session(events)
        endpoint_id = await create_tone(session, "ringback", None, None)
        await start_vad(session, endpoint_id, 1000, 0.5, "silero")
        [error] = events.named("vad.error")
        assert error["endpoint_id"] == endpoint_id and "absent.onnx" in error["error"]
        assert session.info()["vad_active"] == []
    finally:
        await engine.shutdown(0)


async def _speaking_peer(session: MediaSession) -> tuple[str, RtpPeer]:
    peer = await RtpPeer.open()
    endpoint_id, answer = await create_from_offer(session, peer.offer("pcmu"), "sendrecv")
    peer.use(answer)
    return endpoint_id, peer


@needs_espeak
async def test_speech_from_an_rtp_peer_that_then_goes_quiet(
    media_manager: SessionManager,
) -> None:
    events = EventLog()
    session = media_manager.create_session(events)
    endpoint_id, peer = await _speaking_peer(session)
    await start_vad(session, endpoint_id, 300, 0.5)
    timeline = speech_timeline()
    onset, _ = timeline.utterances[0]
    speech = timeline.samples[round((onset - 0.3) * RATE) : round((onset + 1.5) * RATE)]
    narrow = np.frombuffer(Resampler(RATE, 8000).resample(speech.tobytes()), dtype=np.int16)
    encoder = create_encoder(PCMU)
    loop = asyncio.get_running_loop()
    begin = loop.time()
    for index in range(0, narrow.size - 160, 160):
        peer.send(encoder.encode(narrow[index : index + 160].tobytes()), 0)
        await asyncio.sleep(max(0.0, begin + (index // 160 + 1) * 0.02 - loop.time()))
    await events.wait_for("vad.speech_started", within_s=3)
    # The peer stopped in mid-sentence: silence is forced (duration 0), then counted by the clock.
    forced, counted = await events.wait_for("vad.silence", count=2, within_s=5)
    assert forced == {"endpoint_id": endpoint_id, "silence_duration_ms": 0}
    assert 300 <= counted["silence_duration_ms"] <= 600
    peer.close()
    await session.destroy()


async def test_vad_moves_with_a_transferred_endpoint_and_keeps_its_state(
    media_manager: SessionManager,
) -> None:
    transfer = pytest.importorskip("callbridge.engine.transfer")
    source_events, target_events = EventLog(), EventLog()
    source = media_manager.create_session(source_events)
    target = media_manager.create_session(target_events)
    endpoint_id, peer = await _speaking_peer(source)
    await start_vad(source, endpoint_id, 300, 0.5)
    encoder = create_encoder(PCMU)

    async def speak(frames: int, start: int) -> None:
        for index in range(start, start + frames):
            peer.send(encoder.encode(sine_pcm(440, 8000, 160, index * 160)), 0)
            await asyncio.sleep(0.02)

    await speak(25, 0)
    await source_events.wait_for("vad.speech_started")
    await transfer.transfer(source, endpoint_id, target.id, media_manager.get)
    await speak(25, 25)
    assert source.info()["vad_active"] == [] and target.info()["vad_active"] == [endpoint_id]
    [silence] = await target_events.wait_for("vad.silence", within_s=5)
    assert silence["endpoint_id"] == endpoint_id
    assert target_events.named("vad.speech_started") == []  # the same utterance goes on
    peer.close()
    await source.destroy()
    await target.destroy()


def _other_onnx_model() -> Path | None:
    """A real ONNX model that is not Silero's (pipecat ships a turn detector)."""
    try:
        files = importlib.metadata.files("pipecat-ai") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if str(file).endswith(".onnx") and "smart_turn" in str(file):
            return Path(str(file.locate()))
    return None


async def test_a_detector_failing_on_audio_is_a_vad_error_and_stops(tmp_path: Path) -> None:
    model = _other_onnx_model()
    if model is None:
        pytest.skip("no second ONNX model installed")
    engine = SessionManager(engine_config(tmp_path, vad_silero_model=model))
    await engine.start()
    try:
        events = EventLog()
        session = engine.create_session(events)
        endpoint_id = await create_tone(session, "sine", 440.0, None)
        await start_vad(session, endpoint_id, 1000, 0.5, "silero")
        assert session.info()["vad_active"] == [endpoint_id]
        [error] = await events.wait_for("vad.error")
        assert error["endpoint_id"] == endpoint_id and "silero VAD failed" in error["error"]
        assert session.info()["vad_active"] == []
        with pytest.raises(EngineError, match="VAD not active"):
            stop_vad(session, endpoint_id)
    finally:
        await engine.shutdown(0)
