"""What a phone hears after PCMU -> Opus -> PCMU through callbridge and through rtpengine.

The same real speech (espeak-ng, 8 kHz) is sent in real time as PCMU into one session of each
relay: leg A is the phone (PCMU), leg B the Opus peer. Every Opus packet the relay sends to B
is sent straight back into B, so the relay transcodes both ways and A receives PCMU again.
That audio is aligned to the source by cross-correlation and compared: log-spectral distance
(dB, lower is better, over 20 ms frames with speech) and SNR (dB, higher is better). The Opus
bitrate each relay really sent is measured from its packets; the settings are printed.

callbridge runs in this process (its engine, no control server: nothing here is timed);
rtpengine is Debian's rtpengine-daemon, transcoding through ng's `codec: {transcode: [opus]}`
at its defaults (complexity 10). Figures, never pass/fail.

    flock /tmp/cpu-heavy.lock .venv/bin/python benchmarks/transcode_quality.py
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import socket
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from callbridge.engine.config import EngineConfig
from callbridge.engine.manager import SessionManager
from callbridge.engine.offers import create_from_offer
from callbridge.media import g711
from rtp_load import offer_sdp
from rtpengine_ng import NgClient, Rtpengine

TEXT = (
    "The quick brown fox jumps over the lazy dog. Please hold the line, your call is"
    " important to us. Seven, three, nine, four. Thank you for calling."
)
CALLBRIDGE_SETTINGS = ((5, 24000), (0, 24000), (10, 24000), (5, 16000), (5, 32000))
"""(complexity, bitrate bit/s) tried for callbridge."""


def speech(work: Path) -> np.ndarray:
    """espeak-ng's voice reading TEXT, as int16 at 8000 Hz."""
    wav = work / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), TEXT], check=True)
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(wav), "-ar", "8000", "-ac", "1", "-f", "s16le", "-"],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(raw, "<i2")


@dataclass
class Leg(asyncio.DatagramProtocol):
    """One side of the relay: A keeps the PCMU it receives, B sends each packet back."""

    echo_to: tuple[str, int] | None = None
    received: list[bytes] = field(default_factory=list)
    transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(data)
        if self.echo_to is not None:
            self.transport.sendto(data, self.echo_to)


async def open_leg() -> tuple[Leg, int]:
    loop = asyncio.get_running_loop()
    _, leg = await loop.create_datagram_endpoint(Leg, local_addr=("127.0.0.1", 0))
    return leg, leg.transport.get_extra_info("sockname")[1]


def sdp_port(sdp: str) -> int:
    line = next(line for line in sdp.splitlines() if line.startswith("m=audio"))
    return int(line.split()[1])


async def play(
    a: Leg, b: Leg, a_target: tuple[str, int], source: np.ndarray, opus_type: int = 111
) -> tuple[bytes, float]:
    """Send `source` as PCMU from A in real time; (PCMU payloads A got back, Opus kbit/s)."""
    ssrc, start = secrets.randbits(32), time.monotonic()
    frames = len(source) // 160
    for index in range(frames):
        payload = g711.ulaw_encode(source[index * 160 : (index + 1) * 160].tobytes())
        header = struct.pack("!BBHII", 0x80, 0, index, index * 160, ssrc)
        a.transport.sendto(header + payload, a_target)
        await asyncio.sleep(max(0.0, start + (index + 1) * 0.02 - time.monotonic()))
    await asyncio.sleep(0.5)
    packets = sorted(a.received, key=lambda data: struct.unpack("!H", data[2:4])[0])
    payload = b"".join(packet[12:] for packet in packets if packet[1] & 0x7F == 0)
    if not {packet[1] & 0x7F for packet in b.received} <= {opus_type}:
        raise RuntimeError("the relay sent the Opus leg something else than Opus")
    opus_bytes = sum(len(packet) - 12 for packet in b.received)
    return g711.ulaw_decode(payload), opus_bytes * 8 / (frames * 0.02) / 1000


async def through_callbridge(
    source: np.ndarray, work: Path, complexity: int, bit_rate: int
) -> tuple[bytes, float]:
    start = 42000 + 200 * complexity + bit_rate // 1000
    config = EngineConfig(
        rtp_port_range=(start, start + 19),
        cache_dir=work / "cache",
        recording_dir=work / "recordings",
        opus_complexity=complexity,
        opus_bit_rate=bit_rate,
    )
    manager = SessionManager(config)
    await manager.start()
    try:
        session = manager.create_session(None)
        a, a_port = await open_leg()
        b, b_port = await open_leg()
        _, a_answer = await create_from_offer(session, offer_sdp("pcmu", a_port), "sendrecv")
        _, b_answer = await create_from_offer(session, offer_sdp("opus", b_port), "sendrecv")
        b.echo_to = ("127.0.0.1", sdp_port(b_answer))
        result = await play(a, b, ("127.0.0.1", sdp_port(a_answer)), source)
        a.transport.close()
        b.transport.close()
        return result
    finally:
        await manager.shutdown(0)


async def through_rtpengine(source: np.ndarray) -> tuple[bytes, float]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        ng_port = probe.getsockname()[1]
    daemon = Rtpengine(ng_port, (46000, 46099), {0, 1}, threads=1)
    daemon.start()
    try:
        ng = await NgClient.connect("127.0.0.1", ng_port)
        a, a_port = await open_leg()
        b, b_port = await open_leg()
        offer = await ng.request(
            "offer",
            call_id="quality",
            from_tag="a",
            sdp=offer_sdp("pcmu", a_port),
            codec={"transcode": ["opus"]},
        )
        opus_type = next(
            int(line.split()[0].split(":")[1])
            for line in offer["sdp"].splitlines()
            if line.startswith("a=rtpmap:") and "opus/48000" in line
        )
        answer = await ng.request(
            "answer",
            call_id="quality",
            from_tag="a",
            to_tag="b",
            sdp=offer_sdp("opus", b_port, opus_type),
        )
        b.echo_to = ("127.0.0.1", sdp_port(offer["sdp"]))
        result = await play(a, b, ("127.0.0.1", sdp_port(answer["sdp"])), source, opus_type)
        await ng.request("delete", call_id="quality", from_tag="a", attempts=1)
        ng.close()
        a.transport.close()
        b.transport.close()
        return result
    finally:
        daemon.stop()


def aligned(source: np.ndarray, heard: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The two signals cut to their overlap at the delay of best cross-correlation."""
    x, y = source.astype(np.float64), heard.astype(np.float64)
    size = 1 << int(np.ceil(np.log2(len(x) + len(y))))
    correlation = np.fft.irfft(np.fft.rfft(y, size) * np.conj(np.fft.rfft(x, size)), size)
    lag = int(np.argmax(correlation[: len(y)]))
    y = y[lag:]
    length = min(len(x), len(y))
    return x[:length], y[:length], lag


def quality(source: np.ndarray, pcm: bytes) -> tuple[float, float, float]:
    """(log-spectral distance dB, SNR dB, delay ms) of what was heard against the source."""
    heard = np.frombuffer(pcm, "<i2")
    if len(heard) < len(source) // 2:
        return float("nan"), float("nan"), float("nan")
    x, y, lag = aligned(source, heard)
    gain = float(np.dot(x, y) / max(np.dot(y, y), 1.0))  # level differences are no distortion
    snr = 10 * np.log10(np.sum(x**2) / max(np.sum((x - gain * y) ** 2), 1.0))
    frame, window = 160, np.hanning(160)
    distances = []
    loud = np.sqrt(np.mean(x**2)) * 0.1
    for start in range(0, len(x) - frame, frame):
        a, b = x[start : start + frame], gain * y[start : start + frame]
        if np.sqrt(np.mean(a**2)) < loud:
            continue
        pa = np.abs(np.fft.rfft(a * window)) ** 2 + 1e-3
        pb = np.abs(np.fft.rfft(b * window)) ** 2 + 1e-3
        distances.append(np.sqrt(np.mean((10 * np.log10(pa / pb)) ** 2)))
    return float(np.mean(distances)), float(snr), lag / 8.0


def line(relay: str, settings: str, kbit: float, pcm: bytes, source: np.ndarray) -> None:
    distance, snr, delay = quality(source, pcm)
    print(
        f"  {relay:<11} {settings:<40} {kbit:5.1f} kbit/s  LSD {distance:5.2f} dB"
        f"  SNR {snr:5.1f} dB  delay {delay:4.1f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-rtpengine", action="store_true", help="callbridge only")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="transcode-quality-") as directory:
        work = Path(directory)
        source = speech(work)
        print(f"PCMU -> Opus -> PCMU, {len(source) / 8000:.1f} s of espeak-ng speech at 8 kHz")
        print("  (Opus VOIP, mono, 20 ms, VBR; kbit/s = Opus payload each relay really sent)")
        for complexity, bit_rate in CALLBRIDGE_SETTINGS:
            pcm, kbit = await through_callbridge(source, work, complexity, bit_rate)
            settings = f"libopus 8 kHz, cx {complexity}, {bit_rate // 1000} kbit/s, no FEC"
            line("callbridge", settings, kbit, pcm, source)
        if not options.no_rtpengine:
            pcm, kbit = await through_rtpengine(source)
            line("rtpengine", "its defaults (cx 10, its bitrate)", kbit, pcm, source)


if __name__ == "__main__":
    asyncio.run(main())
