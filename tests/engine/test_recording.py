"""Recordings against real RTP peers: pcap checked with tshark, WAV by FFT and alignment, every
exit path leaving a complete file."""

from __future__ import annotations

import asyncio
import itertools
import os
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from callbridge.engine.errors import EngineError
from callbridge.engine.manager import SessionManager
from callbridge.engine.recording import SessionRecordings
from callbridge.engine.rtp_endpoint import RtpEndpoint
from callbridge.engine.tone_endpoint import create_tone
from callbridge.media.rtcp import build_receiver_report
from tests.engine.engine_peers import EventLog, dominant_frequency, engine_config, rtp_leg
from tests.engine.recording_support import (
    TSHARK,
    onsets,
    read_flac,
    read_pcap,
    read_wav,
    send_pattern,
    silent_frames,
    tshark_rtp,
    tshark_streams,
)

needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")


@pytest.fixture
def recording_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "recordings"
    directory.mkdir()
    return directory


async def _manager(tmp_path: Path, **overrides: Any) -> SessionManager:
    values: dict[str, Any] = {"recording_dir": tmp_path / "recordings"}
    values.update(overrides)
    engine = SessionManager(engine_config(tmp_path, **values))
    await engine.start()
    return engine


@pytest.fixture
async def manager(tmp_path: Path, recording_dir: Path) -> AsyncIterator[SessionManager]:
    engine = await _manager(tmp_path)
    yield engine
    await engine.shutdown(0)


async def _finished(manager: SessionManager) -> None:
    """Wait until every stopped recording's file is complete."""
    await asyncio.gather(*manager.context.tasks)


def _assert_wav_complete(path: Path) -> None:
    data = path.read_bytes()
    assert struct.unpack_from("<I", data, 40)[0] == len(data) - 44
    assert struct.unpack_from("<I", data, 4)[0] == len(data) - 8


def _assert_pcap_complete(path: Path) -> None:
    frames = read_pcap(path)
    assert 24 + sum(16 + 42 + len(frame[3]) for frame in frames) == path.stat().st_size


@needs_tshark
async def test_pcap_of_one_leg_and_of_the_session(
    manager: SessionManager, recording_dir: Path
) -> None:
    session = manager.create_session(EventLog())
    alice_id, alice = await rtp_leg(session)
    _, bob = await rtp_leg(session)
    recordings = SessionRecordings.of(session)
    alice_only = recordings.start(alice_id, str(recording_dir / "alice.pcap"))
    everyone = recordings.start(None, str(recording_dir / "all.pcap"))
    assert {entry["recording_id"] for entry in session.info()["recordings"]} == {
        alice_only,
        everyone,
    }
    for _ in range(50):
        alice.send(bytes([0xAA]) * 160)
        bob.send(bytes([0xBB]) * 160)
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.1)
    result = recordings.stop(alice_only)
    assert result["packets"] == 50 and result["dropped_packets"] == 0
    assert result["file_path"] == str(recording_dir / "alice.pcap")
    recordings.stop(everyone)
    await _finished(manager)
    assert session.info()["recordings"] == []
    alice_frames = read_pcap(recording_dir / "alice.pcap")
    assert [frame[3][12:] for frame in alice_frames] == [bytes([0xAA]) * 160] * 50
    assert {frame[1] for frame in alice_frames} == {bytes((10, 1, 0, 1))}
    all_frames = read_pcap(recording_dir / "all.pcap")
    assert len(all_frames) == 100
    assert {frame[1] for frame in all_frames} == {bytes((10, 1, 0, 1)), bytes((10, 1, 0, 2))}
    timestamps = [frame[0] for frame in all_frames]
    assert timestamps == sorted(timestamps) and abs(timestamps[0] - time.time()) < 30
    packets = tshark_rtp(recording_dir / "alice.pcap")
    sequences = [sequence for sequence, _, _ in packets]
    assert len(packets) == 50 and {ssrc for _, ssrc, _ in packets} == {f"0x{alice.ssrc:08x}"}
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(sequences))
    streams = tshark_streams(recording_dir / "all.pcap")
    lines = [line for line in streams.splitlines() if "10.1.0." in line]
    assert len(lines) == 2 and all(" X" not in line for line in lines), streams
    assert all(" 50 " in line and "0 (0.0%)" in line for line in lines), streams
    assert manager.metrics.packets_recorded_total == 100
    assert manager.metrics.recordings_active == 0


@needs_tshark
async def test_rtcp_and_frames_of_a_tone_leg(manager: SessionManager, recording_dir: Path) -> None:
    session = manager.create_session(EventLog())
    alice_id, alice = await rtp_leg(session)
    recordings = SessionRecordings.of(session)
    recording_id = recordings.start(None, str(recording_dir / "mixed.pcap"))
    await create_tone(session, "sine", 440, 400)
    alice.send(bytes(160))
    assert alice.transport is not None and alice.target is not None
    report = build_receiver_report(alice.ssrc, [])
    alice.transport.sendto(report, (alice.target[0], alice.target[1] + 1))
    await asyncio.sleep(0.6)
    recordings.stop(recording_id)
    await _finished(manager)
    frames = read_pcap(recording_dir / "mixed.pcap")
    rtcp = [frame for frame in frames if frame[2] == 10001]
    assert [frame[3] for frame in rtcp] == [report]
    tone = [frame for frame in frames if frame[1] == bytes((10, 1, 0, 2))]
    assert len(tone) >= 15
    packets = tshark_rtp(recording_dir / "mixed.pcap")
    assert {payload_type for _, _, payload_type in packets} == {0}
    assert alice_id in session.endpoints


async def test_wav_split_legs_stay_aligned_and_mix_holds_both(
    manager: SessionManager, recording_dir: Path
) -> None:
    session = manager.create_session(EventLog())
    _, alice = await rtp_leg(session)
    _, bob = await rtp_leg(session)
    recordings = SessionRecordings.of(session)
    split = recordings.start(None, str(recording_dir / "split.wav"), "wav", "split", 16000)
    flac = recordings.start(None, str(recording_dir / "split.flac"), "flac", "split", 16000)
    mix = recordings.start(None, str(recording_dir / "mix.wav"), "wav", "mix", 8000)
    start = time.monotonic() + 0.1
    seconds = 5.0
    await asyncio.gather(
        send_pattern(alice, 440, seconds, start=start),
        send_pattern(bob, 1000, seconds, start=start),
    )
    await asyncio.sleep(0.2)
    split_result = recordings.stop(split)
    recordings.stop(flac)
    recordings.stop(mix)
    await _finished(manager)
    rate, samples = read_wav(recording_dir / "split.wav")
    assert rate == 16000 and samples.shape[1] == 2
    assert abs(len(samples) / rate - split_result["duration_ms"] / 1000) < 0.3
    left, right = samples[:, 0], samples[:, 1]
    assert abs(dominant_frequency(left, rate) - 440) < 15
    assert abs(dominant_frequency(right, rate) - 1000) < 15
    left_onsets, right_onsets = onsets(left, rate), onsets(right, rate)
    assert len(left_onsets) == len(right_onsets) == 5
    assert abs(left_onsets[-1] - right_onsets[-1]) <= 0.02
    for onset in left_onsets:  # a burst is 200 ms of tone: a hole would be a silent frame
        assert silent_frames(left, rate, onset, onset + 0.18) <= 1
    mix_rate, mixed = read_wav(recording_dir / "mix.wav")
    assert mix_rate == 8000 and mixed.shape[1] == 1
    spectrum = np.abs(np.fft.rfft(mixed[:, 0].astype(np.float64)))
    frequencies = np.fft.rfftfreq(len(mixed), 1 / mix_rate)
    peak = spectrum.max()
    for tone in (440, 1000):
        band = (frequencies > tone - 15) & (frequencies < tone + 15)
        assert spectrum[band].max() > peak / 4
    _assert_wav_complete(recording_dir / "split.wav")
    flac_rate, flac_samples = read_flac(recording_dir / "split.flac")
    assert flac_rate == rate and np.array_equal(flac_samples, samples)


async def test_endpoint_removal_stops_its_recordings(
    manager: SessionManager, recording_dir: Path
) -> None:
    events = EventLog()
    session = manager.create_session(events)
    alice_id, alice = await rtp_leg(session)
    _, bob = await rtp_leg(session)
    recordings = SessionRecordings.of(session)
    single = recordings.start(alice_id, str(recording_dir / "alice.wav"), "wav")
    whole = recordings.start(None, str(recording_dir / "whole.pcap"))
    for _ in range(10):
        alice.send(bytes(160))
        bob.send(bytes(160))
        await asyncio.sleep(0.02)
    await session.remove_endpoint(alice_id)
    stopped = await events.wait_for("recording.stopped")
    assert stopped[0]["recording_id"] == single and stopped[0]["reason"] == "endpoint_removed"
    assert set(stopped[0]) == {
        "recording_id",
        "file_path",
        "duration_ms",
        "packets",
        "dropped_packets",
        "reason",
    }
    assert [entry["recording_id"] for entry in session.info()["recordings"]] == [whole]
    for _ in range(5):
        bob.send(bytes(160))
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)
    recordings.stop(whole)
    await _finished(manager)
    _assert_wav_complete(recording_dir / "alice.wav")
    frames = read_pcap(recording_dir / "whole.pcap")
    assert len(frames) == 25


async def test_a_leg_leaving_by_transfer_stops_its_recordings(
    manager: SessionManager, recording_dir: Path
) -> None:
    events = EventLog()
    session = manager.create_session(events)
    alice_id, alice = await rtp_leg(session)
    recordings = SessionRecordings.of(session)
    recordings.start(alice_id, str(recording_dir / "alice.pcap"))
    for _ in range(5):
        alice.send(bytes(160))
        await asyncio.sleep(0.02)
    endpoint = session.endpoints[alice_id]
    session.remove(endpoint, "endpoint_transferred")
    stopped = await events.wait_for("recording.stopped")
    assert stopped[0]["reason"] == "endpoint_transferred" and stopped[0]["packets"] == 5
    assert isinstance(endpoint, RtpEndpoint) and endpoint.packet_tap is None
    await _finished(manager)
    assert len(read_pcap(recording_dir / "alice.pcap")) == 5


@pytest.mark.parametrize("exit_path", ["destroy", "orphan", "idle", "empty", "shutdown"])
async def test_every_session_exit_finishes_the_files(
    tmp_path: Path, recording_dir: Path, exit_path: str
) -> None:
    overrides: dict[str, Any] = {}
    if exit_path == "idle":
        overrides["session_idle_timeout_s"] = 0.3
    if exit_path == "empty":
        overrides["empty_session_timeout_s"] = 0.3
    manager = await _manager(tmp_path, **overrides)
    events = EventLog()
    session = manager.create_session(events)
    alice_id, alice = await rtp_leg(session)
    recordings = SessionRecordings.of(session)
    recordings.start(None, str(recording_dir / "session.wav"), "wav")
    recordings.start(None, str(recording_dir / "session.pcap"))
    if exit_path != "empty":
        recordings.start(alice_id, str(recording_dir / "alice.pcap"))
    for _ in range(10):
        alice.send(bytes(160))
        await asyncio.sleep(0.02)
    if exit_path == "destroy":
        await session.destroy()
    elif exit_path == "orphan":
        manager.orphan(session)
    elif exit_path == "empty":
        await session.remove_endpoint(alice_id)
    elif exit_path == "shutdown":
        await manager.shutdown(0)
    async with asyncio.timeout(5):
        while session.alive:
            await asyncio.sleep(0.02)
    await _finished(manager)
    _assert_wav_complete(recording_dir / "session.wav")
    _assert_pcap_complete(recording_dir / "session.pcap")
    assert len(read_pcap(recording_dir / "session.pcap")) >= 10
    if exit_path in ("destroy", "idle"):
        reasons = {data["reason"] for data in events.named("recording.stopped")}
        assert reasons == {"session_destroyed"}
        assert len(events.named("recording.stopped")) == 3
    assert manager.metrics.recordings_active == 0
    if exit_path != "shutdown":
        await manager.shutdown(0)


async def test_a_full_queue_drops_and_counts(tmp_path: Path, recording_dir: Path) -> None:
    manager = await _manager(tmp_path, recording_channel_size=5)
    try:
        session = manager.create_session(EventLog())
        alice_id, alice = await rtp_leg(session)
        recordings = SessionRecordings.of(session)
        recording_id = recordings.start(alice_id, str(recording_dir / "burst.pcap"))
        for _ in range(40):
            alice.send(bytes(160))
        await asyncio.sleep(0.2)
        result = recordings.stop(recording_id)
        assert result["dropped_packets"] > 0
        assert result["packets"] + result["dropped_packets"] == 40
        await _finished(manager)
        assert len(read_pcap(recording_dir / "burst.pcap")) == result["packets"]
    finally:
        await manager.shutdown(0)


async def test_a_write_error_stops_the_recording(
    manager: SessionManager, recording_dir: Path
) -> None:
    events = EventLog()
    session = manager.create_session(events)
    alice_id, alice = await rtp_leg(session)
    recordings = SessionRecordings.of(session)
    recording_id = recordings.start(alice_id, str(recording_dir / "broken.pcap"))
    file = recordings.recordings[recording_id].file.file
    os.close(file.fileno())  # every later write fails with EBADF
    for _ in range(5):
        alice.send(bytes(160))
        await asyncio.sleep(0.02)
    stopped = await events.wait_for("recording.stopped", within_s=5)
    assert stopped[0]["reason"] == "write_error"
    assert session.info()["recordings"] == []
    await _finished(manager)


async def test_refusals(manager: SessionManager, recording_dir: Path, tmp_path: Path) -> None:
    session = manager.create_session(EventLog())
    alice_id, _ = await rtp_leg(session)
    recordings = SessionRecordings.of(session)
    (recording_dir / "taken.pcap").write_bytes(b"")
    outside = tmp_path / "recordings-evil"
    outside.mkdir()
    cases = [
        ("relative.pcap", "INVALID_PARAMS", "absolute"),
        (f"{recording_dir}/../recordings/x.pcap", "INVALID_PARAMS", ".."),
        (f"{recording_dir}/missing/x.pcap", "INVALID_PARAMS", "does not exist"),
        (f"{outside}/x.pcap", "INVALID_PARAMS", "inside"),
        ("/etc/x.pcap", "INVALID_PARAMS", "inside"),
        (f"{recording_dir}/taken.pcap", "RECORDING_ERROR", "Cannot create recording file"),
    ]
    for path, code, text in cases:
        with pytest.raises(EngineError) as refused:
            recordings.start(alice_id, path)
        assert refused.value.code == code and text in refused.value.message, path
    with pytest.raises(EngineError, match="Endpoint not found"):
        recordings.start(str(os.urandom(4).hex()), str(recording_dir / "y.pcap"))
    with pytest.raises(EngineError, match="Recording not found"):
        recordings.stop("nope")
    assert (recording_dir / "taken.pcap").read_bytes() == b""
    assert sorted(os.listdir(recording_dir)) == ["taken.pcap"]


async def test_per_session_limit(tmp_path: Path, recording_dir: Path) -> None:
    manager = await _manager(tmp_path, max_recordings_per_session=2)
    try:
        session = manager.create_session(EventLog())
        recordings = SessionRecordings.of(session)
        with pytest.raises(EngineError, match="at least one endpoint"):
            recordings.start(None, str(recording_dir / "0.wav"), "wav", "split")
        first = recordings.start(None, str(recording_dir / "1.pcap"))
        recordings.start(None, str(recording_dir / "2.pcap"))
        with pytest.raises(EngineError, match=r"Maximum concurrent recordings \(2\) reached"):
            recordings.start(None, str(recording_dir / "3.pcap"))
        recordings.stop(first)
        with pytest.raises(EngineError, match="Recording not found"):
            recordings.stop(first)
        recordings.start(None, str(recording_dir / "3.pcap"))
    finally:
        await manager.shutdown(0)
