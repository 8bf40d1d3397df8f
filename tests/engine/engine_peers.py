"""Test support for the engine: a real UDP RTP peer, SDP offers, a manager fixture, FFT pitch.

Imported by the engine tests (not a conftest, so it stays within this helper's files).
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from callbridge.engine.config import EngineConfig
from callbridge.engine.forwarding import NATIVE_FORWARDING
from callbridge.engine.manager import SessionManager
from callbridge.engine.offers import create_from_offer
from callbridge.engine.session import MediaSession
from callbridge.media.rtp import RtpPacket, build_rtp, parse_rtp
from callbridge.media.sdp import parse_sdp

Events = list[tuple[str, dict[str, Any], bool]]


def free_port_range(pairs: int = 40) -> tuple[int, int]:
    """A random even-aligned port range, so parallel test runs rarely collide."""
    start = random.randrange(40000, 60000 - 2 * pairs) & ~1
    return start, start + 2 * pairs - 1


def engine_config(tmp_path: Path, **overrides: Any) -> EngineConfig:
    values: dict[str, Any] = {
        "rtp_port_range": free_port_range(),
        "cache_dir": tmp_path / "cache",
        "recording_dir": tmp_path / "recordings",
        "housekeeping_interval_s": 0.04,
        "disconnect_timeout_s": 0.2,
    }
    values.update(overrides)
    return EngineConfig(**values)


@pytest.fixture(params=["native", "python"])
async def manager(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SessionManager]:
    """A started manager, once with the native forwarding plane and once on the Python path."""
    native = request.param == "native"
    if native and not NATIVE_FORWARDING:
        pytest.skip("the _forward extension is not built (or CALLBRIDGE_NATIVE=0)")
    engine = SessionManager(engine_config(tmp_path, native_forwarding=native))
    await engine.start()
    yield engine
    await engine.shutdown(0)


class EventLog:
    """An EventSink that records events and lets a test wait for one."""

    def __init__(self) -> None:
        self.events: Events = []
        self._changed = asyncio.Event()

    def __call__(self, name: str, data: dict[str, Any], critical: bool) -> None:
        self.events.append((name, data, critical))
        self._changed.set()

    def named(self, name: str) -> list[dict[str, Any]]:
        return [data for event, data, _ in self.events if event == name]

    async def wait_for(
        self, name: str, count: int = 1, within_s: float = 5.0
    ) -> list[dict[str, Any]]:
        async with asyncio.timeout(within_s):
            while len(self.named(name)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.named(name)


class _PeerProtocol(asyncio.DatagramProtocol):
    def __init__(self, queue: asyncio.Queue[tuple[bytes, Any]]) -> None:
        self.queue = queue

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait((data, addr))


class RtpPeer:
    """A remote RTP party on 127.0.0.1: sends packets and collects what the engine sends."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.target: tuple[str, int] | None = None
        self.ssrc = secrets.randbits(32)
        self.sequence = random.randrange(0, 65536)
        self.timestamp = random.randrange(0, 1 << 32)

    @classmethod
    async def open(cls) -> RtpPeer:
        peer = cls()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _PeerProtocol(peer.queue), local_addr=("127.0.0.1", 0)
        )
        peer.transport = transport
        peer.port = transport.get_extra_info("sockname")[1]
        return peer

    def offer(self, codecs: str = "pcmu", event_pt: int | None = 101) -> str:
        """An SDP offer; `codecs` is a comma list of pcmu, pcma, g722, opus[/pt]."""
        rtpmaps = {
            "pcmu": (0, "PCMU/8000"),
            "pcma": (8, "PCMA/8000"),
            "g722": (9, "G722/8000"),
            "opus": (111, "opus/48000/2"),
        }
        types: list[int] = []
        lines: list[str] = []
        for item in codecs.split(",") if codecs else []:
            name, _, pt = item.partition("/")
            payload_type, rtpmap = rtpmaps[name]
            payload_type = int(pt) if pt else payload_type
            types.append(payload_type)
            lines.append(f"a=rtpmap:{payload_type} {rtpmap}")
        if event_pt is not None:
            clock = 48000 if codecs.startswith("opus") else 8000
            types.append(event_pt)
            lines.append(f"a=rtpmap:{event_pt} telephone-event/{clock}")
        return "\r\n".join(
            [
                "v=0",
                "o=- 1 1 IN IP4 127.0.0.1",
                "s=-",
                "c=IN IP4 127.0.0.1",
                "t=0 0",
                f"m=audio {self.port} RTP/AVP {' '.join(map(str, types))}".rstrip(),
                *lines,
                "a=sendrecv",
                "",
            ]
        )

    def answer_to(self, offer_text: str) -> str:
        """Accept the engine's offer with its first codec (and telephone-event)."""
        offer = parse_sdp(offer_text)
        self.use(offer_text)
        first = offer.codecs[0]
        lines = [f"a=rtpmap:{first.payload_type} {first.name}/{first.clock_rate}"]
        types = [first.payload_type]
        return "\r\n".join(
            [
                "v=0",
                "o=- 2 1 IN IP4 127.0.0.1",
                "s=-",
                "c=IN IP4 127.0.0.1",
                "t=0 0",
                f"m=audio {self.port} RTP/AVP {' '.join(map(str, types))}",
                *lines,
                "",
            ]
        )

    def use(self, sdp_text: str) -> None:
        """Send to the address in the engine's SDP."""
        description = parse_sdp(sdp_text)
        assert description.remote_address is not None
        self.target = description.remote_address

    def send(
        self,
        payload: bytes,
        payload_type: int = 0,
        *,
        marker: bool = False,
        samples: int = 160,
        sequence: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        assert self.transport is not None and self.target is not None
        if sequence is None:
            sequence = self.sequence
            self.sequence = (self.sequence + 1) & 0xFFFF
        if timestamp is None:
            timestamp = self.timestamp
            self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF
        self.transport.sendto(
            build_rtp(payload_type, sequence, timestamp, self.ssrc, payload, marker=marker),
            self.target,
        )

    def send_raw(self, data: bytes) -> None:
        assert self.transport is not None and self.target is not None
        self.transport.sendto(data, self.target)

    async def receive(self, within_s: float = 2.0) -> RtpPacket:
        async with asyncio.timeout(within_s):
            while True:
                data, _ = await self.queue.get()
                if len(data) > 1 and 192 <= data[1] <= 223:
                    continue  # RTCP
                return parse_rtp(data)

    async def collect(self, count: int, within_s: float = 3.0) -> list[RtpPacket]:
        packets: list[RtpPacket] = []
        async with asyncio.timeout(within_s):
            while len(packets) < count:
                packets.append(await self.receive(within_s))
        return packets

    def drain(self) -> list[RtpPacket]:
        packets = []
        while not self.queue.empty():
            data, _ = self.queue.get_nowait()
            if not (len(data) > 1 and 192 <= data[1] <= 223):
                packets.append(parse_rtp(data))
        return packets

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None


async def rtp_leg(session: MediaSession, codecs: str = "pcmu") -> tuple[str, RtpPeer]:
    """A new RTP endpoint of `session` answering a peer's offer, and that peer."""
    peer = await RtpPeer.open()
    endpoint_id, answer = await create_from_offer(session, peer.offer(codecs), "sendrecv")
    peer.use(answer)
    return endpoint_id, peer


def dominant_frequency(samples: np.ndarray[Any, Any], sample_rate: int) -> float:
    """The frequency (Hz) of the strongest FFT bin of a windowed signal."""
    data = samples.astype(np.float64)
    data -= data.mean()
    spectrum = np.abs(np.fft.rfft(data * np.hanning(len(data))))
    return float(np.argmax(spectrum) * sample_rate / len(data))


def sine_pcm(frequency: float, sample_rate: int, samples: int, start: int = 0) -> bytes:
    times = np.arange(start, start + samples) / sample_rate
    return (np.sin(2 * np.pi * frequency * times) * 8000).astype("<i2").tobytes()
