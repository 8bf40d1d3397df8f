"""Test support for recordings: read pcap files back, check them with tshark, send paced tones.

Imported by the recording tests (engine and server).
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
import time
import wave
from pathlib import Path
from typing import Any

import av
import numpy as np

from callbridge.media.g711 import ulaw_encode
from tests.engine.engine_peers import RtpPeer, sine_pcm

TSHARK = shutil.which("tshark")

PcapFrame = tuple[float, bytes, int, bytes]
"""(unix time, source IPv4 address, destination UDP port, datagram)."""


def read_pcap(path: Path) -> list[PcapFrame]:
    """Every complete frame of a pcap file written by the recorder."""
    data = path.read_bytes()
    assert struct.unpack_from("<I", data)[0] == 0xA1B2C3D4
    frames: list[PcapFrame] = []
    offset = 24
    while offset + 16 <= len(data):
        seconds, microseconds, captured, _ = struct.unpack_from("<IIII", data, offset)
        frame = data[offset + 16 : offset + 16 + captured]
        if len(frame) < captured:
            break
        frames.append(
            (
                seconds + microseconds / 1e6,
                frame[26:30],
                struct.unpack_from("!H", frame, 36)[0],
                frame[42:],
            )
        )
        offset += 16 + captured
    return frames


def tshark_rtp(path: Path) -> list[tuple[int, str, int]]:
    """(sequence, SSRC, payload type) of every RTP packet tshark decodes in the file."""
    assert TSHARK is not None
    output = subprocess.run(
        [
            TSHARK,
            "-r",
            str(path),
            "-d",
            "udp.port==10000,rtp",
            "-T",
            "fields",
            "-e",
            "rtp.seq",
            "-e",
            "rtp.ssrc",
            "-e",
            "rtp.p_type",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split("\t") for line in output.splitlines() if line.strip()]
    return [(int(row[0]), row[1], int(row[2])) for row in rows if row[0]]


def tshark_streams(path: Path) -> str:
    """tshark's RTP stream analysis of the file."""
    assert TSHARK is not None
    return subprocess.run(
        [TSHARK, "-r", str(path), "-d", "udp.port==10000,rtp", "-q", "-z", "rtp,streams"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def read_wav(path: Path) -> tuple[int, np.ndarray[Any, Any]]:
    """(sample rate, samples shaped (frames, channels)) of a WAV file."""
    with wave.open(str(path)) as reader:
        rate, channels = reader.getframerate(), reader.getnchannels()
        data = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    return rate, data.reshape(-1, channels)


async def send_pattern(
    peer: RtpPeer,
    frequency: float,
    seconds: float,
    *,
    start: float,
    on_s: float = 0.2,
    period_s: float = 1.0,
) -> None:
    """PCMU packets every 20 ms from monotonic `start` for `seconds`: bursts of `frequency`
    `on_s` long every `period_s`, silence packets in between."""
    frames = int(seconds / 0.02)
    for index in range(frames):
        delay = start + index * 0.02 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        audible = (index * 0.02) % period_s < on_s
        pcm = sine_pcm(frequency, 8000, 160, index * 160) if audible else bytes(320)
        peer.send(ulaw_encode(pcm), 0)


def onsets(
    channel: np.ndarray[Any, Any], rate: int, threshold: float = 2000, gap_s: float = 0.5
) -> list[float]:
    """Seconds at which bursts start: the 5 ms envelope rises above `threshold` at least
    `gap_s` after the previous onset (a dropout inside a burst is not a new burst)."""
    window = rate // 200
    envelope = np.abs(channel[: len(channel) // window * window].astype(np.float64))
    envelope = envelope.reshape(-1, window).max(axis=1)
    loud = envelope > threshold
    found: list[float] = []
    for index in np.flatnonzero(loud[1:] & ~loud[:-1]) + 1:
        moment = float(index * window / rate)
        if not found or moment - found[-1] >= gap_s:
            found.append(moment)
    return found


def silent_frames(channel: np.ndarray[Any, Any], rate: int, start_s: float, end_s: float) -> int:
    """20 ms frames without any sample above 100 between `start_s` and `end_s`."""
    frame = rate // 50
    part = channel[int(start_s * rate) // frame * frame : int(end_s * rate) // frame * frame]
    return int((np.abs(part.reshape(-1, frame)).max(axis=1) <= 100).sum())


def read_flac(path: Path) -> tuple[int, np.ndarray[Any, Any]]:
    """(sample rate, samples shaped (frames, channels)) of a FLAC file, decoded by FFmpeg."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate, channels = stream.rate, stream.channels
        blocks = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
    data = np.concatenate(blocks) if blocks else np.zeros(0, dtype="<i2")
    return rate, data.astype("<i2").reshape(-1, channels)
