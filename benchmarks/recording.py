"""CPU per 20 ms frame of recording, for each format (figures only; never pass/fail).

A real session with two RTP legs is recorded while its hooks are driven as fast as possible
from this process: pcap takes one inbound RTP packet per leg per frame, WAV one decoded frame
per leg per frame (decoded from the same packets and resampled to 16 kHz, which a WAV recording
makes the session do), and the media tick hands each batch to the writer thread. The
figure is the process CPU time (event loop and writer thread together, files on the temporary
directory's disk) divided by the frames, per recorded leg and per session frame; a run with
no recording active gives the cost of the hooks' absence (the packet path's one attribute test).

Run: .venv/bin/python benchmarks/recording.py [--quick]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from callbridge.engine.config import EngineConfig
from callbridge.engine.manager import SessionManager
from callbridge.engine.offers import create_from_offer
from callbridge.engine.recording import SessionRecordings
from callbridge.engine.rtp_endpoint import RtpEndpoint
from callbridge.media.g711 import ulaw_encode
from callbridge.media.rtp import build_rtp, parse_rtp

LEGS = 2


def _offer(port: int) -> str:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )


async def _run(
    directory: Path, frames: int, recording: str | None, sample_rate: int = 16000
) -> float:
    """Process CPU µs per frame per leg for `frames` frames of `recording` ("pcap", or a format
    and a mode such as "wav mix"; None for no recording)."""
    manager = SessionManager(
        EngineConfig(
            rtp_port_range=(47000, 47099),
            cache_dir=directory / "cache",
            recording_dir=directory,
            recording_channel_size=1_000_000,
        )
    )
    await manager.start()
    session = manager.create_session(None)
    for index in range(LEGS):
        await create_from_offer(session, _offer(20000 + 2 * index), "sendrecv")
    recordings = SessionRecordings.of(session)
    recording_id = None
    if recording is not None:
        recording_format, _, mode = recording.partition(" ")
        recording_id = recordings.start(
            None,
            str(directory / f"{mode or 'all'}-{sample_rate}-{frames}.{recording_format}"),
            recording_format,
            mode or "mix",
            sample_rate,
        )
    endpoints = [
        endpoint for endpoint in session.endpoints.values() if isinstance(endpoint, RtpEndpoint)
    ]
    tone = ulaw_encode((np.sin(np.arange(160) / 3) * 8000).astype("<i2").tobytes())
    packets = [
        parse_rtp(build_rtp(0, index & 0xFFFF, index * 160, 0x1234, tone))
        for index in range(frames)
    ]
    start_cpu = time.process_time()
    now = time.monotonic()
    for packet in packets:
        now += 0.02
        for endpoint in endpoints:
            endpoint._on_packet(packet, now)
        recordings._on_tick(now)
    if recording_id is not None:
        recordings.stop(recording_id)
        await asyncio.gather(*manager.context.tasks)
    cpu = time.process_time() - start_cpu
    await manager.shutdown(0)
    return cpu / frames / LEGS * 1e6


async def main() -> None:
    frames = 1_500 if "--quick" in sys.argv else 15_000
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        baseline = await _run(directory, frames, None)
        print(f"{'no recording (packet path, per leg)':<40} {baseline:8.2f} µs per frame")
        for recording, rate in (
            ("pcap", 8000),
            ("wav mix", 16000),
            ("wav split", 16000),
            ("wav mix", 8000),
            ("flac split", 16000),
        ):
            figure = await _run(directory, frames, recording, rate)
            name = recording if recording == "pcap" else f"{recording} {rate // 1000} kHz"
            print(
                f"{name + ' (per leg)':<40} {figure:8.2f} µs per frame"
                f"   (+{figure - baseline:.2f} over no recording)"
            )
    print(f"{frames} frames ({frames * 0.02:.0f} s of audio) of {LEGS} legs per run")


if __name__ == "__main__":
    asyncio.run(main())
