"""WebRTC endpoint costs: RSS per connected endpoint, CPU per forwarded packet next to plain RTP.

The engine (`SessionManager`, no WebSocket) and the peers run in this process. A peer is a
minimal WebRTC client made of callbridge's own media pieces (a STUN check with USE-CANDIDATE,
a DTLS client handshake, libsrtp): enough to connect an endpoint and send SRTP, not a browser.

1. RSS: `--endpoints` WebRTC endpoints (two per session), each connected to its peer; the
   growth of this process's RSS divided by the endpoints (peers' DTLS/SRTP state included, so
   an upper bound).
2. CPU per packet: `--pairs` sessions of two parties sending 20 ms Opus packets in real time
   for `--duration` s, passthrough between them: once as WebRTC (SRTP both ways) and once as
   plain RTP. Process CPU (user+sys) over the window per packet delivered to a peer; the peers'
   own work is in both figures, plus one libsrtp protect per packet in the WebRTC one (printed
   alone to subtract).
3. Browser-to-phone calls: `--calls` sessions of a WebRTC Opus party and a plain RTP PCMU
   party (decode, resample, encode both ways); the CPU share per call over the window and the
   calls one fully used core would carry at that cost (an estimate: no latency is measured
   here). How many such calls one worker holds within the latency bound is measured by
   `benchmarks/media_sessions.py --scenarios webrtc,transcode`: the same calls from a separate
   load-generator process, zero loss and added p99 latency searched as for plain RTP, with
   the RTP-only transcode scenario beside it.
Figures only.

Usage: python benchmarks/webrtc_endpoints.py [--endpoints 200] [--pairs 50] [--calls 20]
       [--duration 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np

from callbridge.engine.config import EngineConfig
from callbridge.engine.manager import SessionManager
from callbridge.engine.offers import create_from_offer
from callbridge.engine.session import MediaSession
from callbridge.media.dtls import DtlsSession, local_certificate
from callbridge.media.g711 import ulaw_encode
from callbridge.media.opus import OpusEncoder
from callbridge.media.rtp import build_rtp
from callbridge.media.sdp import parse_sdp
from webrtc_load import WebRtcLink, answer_credentials, webrtc_offer_sdp

PAYLOAD = bytes(range(80))


def tone_frames(rate: int, count: int = 50) -> list[bytes]:
    """`count` 20 ms frames of a 440 Hz sine at `rate` Hz, int16."""
    frame = rate // 50
    times = np.arange(frame * count) / rate
    samples = (np.sin(2 * np.pi * 440 * times) * 8000).astype("<i2").tobytes()
    return [samples[index * frame * 2 : (index + 1) * frame * 2] for index in range(count)]


def opus_payloads() -> list[bytes]:
    encoder = OpusEncoder()
    return [encoder.encode(frame) for frame in tone_frames(48000)]


def pcmu_payloads() -> list[bytes]:
    return [ulaw_encode(frame) for frame in tone_frames(8000)]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Peer(asyncio.DatagramProtocol):
    """One party: plain RTP, or WebRTC (benchmarks/webrtc_load.py's STUN check, DTLS, SRTP)."""

    def __init__(self, webrtc: bool, payloads: list[bytes] | None = None) -> None:
        self.link = WebRtcLink() if webrtc else None
        self.payloads = payloads or [PAYLOAD]
        self.payload_type = 0 if payloads is not None and not webrtc else 111
        self.transport: Any = None
        self.target: tuple[str, int] | None = None
        self.secured = asyncio.Event()
        self.received = 0
        self.ssrc = secrets.randbits(32)
        self.sequence = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not data:
            return  # strays from other programs on the machine
        if 127 < data[0] < 192:
            self.received += 1
        elif self.link is not None:
            for reply in self.link.handle(data):
                self.transport.sendto(reply, addr)
            if self.link.srtp is not None:
                self.secured.set()

    def offer(self) -> str:
        if self.link is not None:
            return webrtc_offer_sdp(self.link.fingerprint())
        port = self.transport.get_extra_info("sockname")[1]
        lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0"]
        if self.payload_type == 0:
            return "\r\n".join([*lines, f"m=audio {port} RTP/AVP 0", "a=rtpmap:0 PCMU/8000", ""])
        lines.append(f"m=audio {port} RTP/AVP 111")
        return "\r\n".join([*lines, "a=rtpmap:111 opus/48000/2", ""])

    async def connect(self, answer: str) -> None:
        description = parse_sdp(answer)
        assert description.remote_address is not None
        self.target = description.remote_address
        if self.link is None:
            return
        for datagram in self.link.start(answer_credentials(answer)):
            self.transport.sendto(datagram, self.target)
        await asyncio.wait_for(self.secured.wait(), 5)

    def send(self) -> None:
        step = 160 if self.payload_type == 0 else 960
        payload = self.payloads[self.sequence % len(self.payloads)]
        packet = build_rtp(
            self.payload_type, self.sequence, self.sequence * step, self.ssrc, payload
        )
        self.sequence = (self.sequence + 1) & 0xFFFF
        if self.link is not None:
            packet = self.link.protect(packet)
        self.transport.sendto(packet, self.target)


async def party(session: MediaSession, webrtc: bool, payloads: list[bytes] | None = None) -> Peer:
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(
        lambda: Peer(webrtc, payloads), local_addr=("127.0.0.1", 0)
    )
    _, answer = await create_from_offer(session, peer.offer(), "sendrecv")
    await peer.connect(answer)
    return peer


async def rss_per_endpoint(manager: SessionManager, endpoints: int, webrtc: bool) -> float:
    """RSS growth (bytes) per endpoint, peers included, with `endpoints` endpoints up."""
    before = rss_bytes()
    sessions = [manager.create_session(None) for _ in range(endpoints // 2)]
    peers = [await party(session, webrtc) for session in sessions for _ in range(2)]
    grown = rss_bytes() - before
    for peer in peers:
        peer.transport.close()
    for session in sessions:
        await session.destroy("benchmark")
    return grown / len(peers)


async def run_pairs(
    manager: SessionManager, pairs: int, duration: float, webrtc: bool, *, calls: bool = False
) -> tuple[float, float]:
    """(CPU microseconds per packet delivered to a peer, CPU seconds per second and session).

    With `calls`, each session is a WebRTC Opus party and an RTP PCMU party."""
    peers: list[Peer] = []
    sessions = []
    opus, pcmu = (opus_payloads(), pcmu_payloads()) if calls else (None, None)
    for _ in range(pairs):
        session = manager.create_session(None)
        sessions.append(session)
        if calls:
            peers += [await party(session, True, opus), await party(session, False, pcmu)]
        else:
            peers += [await party(session, webrtc), await party(session, webrtc)]
    for peer in peers:
        peer.send()  # each sends first, so the engine may send to it
    await asyncio.sleep(0.5)
    for peer in peers:
        peer.received = 0
    started_cpu = cpu_seconds()
    started = time.monotonic()
    frames = int(duration / 0.02)
    for index in range(frames):
        for peer in peers:
            peer.send()
        await asyncio.sleep(max(started + (index + 1) * 0.02 - time.monotonic(), 0))
    await asyncio.sleep(0.1)
    spent = cpu_seconds() - started_cpu
    elapsed = time.monotonic() - started
    delivered = sum(peer.received for peer in peers)
    for peer in peers:
        peer.transport.close()
    for session in sessions:
        await session.destroy("benchmark")
    return spent / max(delivered, 1) * 1e6, spent / elapsed / pairs


def protect_cost_us() -> float:
    certificate = local_certificate()
    client = DtlsSession(certificate, client=True)
    server = DtlsSession(certificate, client=False)
    client.remote_fingerprint = server.remote_fingerprint = certificate.fingerprint
    flights = client.start()
    while not (client.srtp and server.srtp):
        replies = [reply for flight in flights for reply in server.receive(flight)]
        flights = [back for reply in replies for back in client.receive(reply)]
    assert client.srtp is not None
    protect = client.srtp.protect
    count = 20000
    started = time.perf_counter()
    for sequence in range(count):
        protect(build_rtp(111, sequence, sequence * 960, 1, PAYLOAD))
    return (time.perf_counter() - started) / count * 1e6


async def main(arguments: argparse.Namespace) -> None:
    config = EngineConfig(
        rtp_port_range=(46000, 47999), cache_dir=Path("/tmp/callbridge-bench-cache")
    )
    manager = SessionManager(config)
    await manager.start()
    try:
        local_certificate()
        for webrtc in (False, True):
            kind = "connected WebRTC" if webrtc else "plain RTP"
            grown = await rss_per_endpoint(manager, arguments.endpoints, webrtc)
            print(f"RSS per {kind} endpoint: {grown / 1024:.1f} KiB")
        plain, _ = await run_pairs(manager, arguments.pairs, arguments.duration, webrtc=False)
        secure, _ = await run_pairs(manager, arguments.pairs, arguments.duration, webrtc=True)
        print(f"CPU per packet, {arguments.pairs} pairs, Opus passthrough:")
        print(f"  plain RTP          {plain:6.1f} us")
        print(f"  WebRTC (SRTP)      {secure:6.1f} us  (+{secure - plain:.1f} us)")
        print(f"  peer's protect     {protect_cost_us():6.1f} us  (in the WebRTC figure)")
        _, share = await run_pairs(
            manager, arguments.calls, arguments.duration, webrtc=True, calls=True
        )
        print(f"WebRTC Opus <-> RTP PCMU, {arguments.calls} calls (peers included):")
        print(f"  CPU per call       {share * 100:6.2f} % of a core")
        print(
            f"  calls per core     {1 / share:6.0f} at that cost (no latency bound:"
            " media_sessions.py --scenarios webrtc)"
        )
    finally:
        await manager.shutdown(0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoints", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--duration", type=float, default=5.0)
    asyncio.run(main(parser.parse_args()))
