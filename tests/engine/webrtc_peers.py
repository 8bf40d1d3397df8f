"""Test support for WebRTC endpoints: aiortc as the independent peer, a tone track, a PCMU phone,
an engine whose consent timeout fits in a test, a hand-written browser-style offer.

aiortc is told to use no ICE servers, so it never contacts a STUN server, and its ICE library
(aioice) is made to gather 127.0.0.1 as its only host address (by default it skips loopback and
takes the machine's interface addresses), so every packet of these tests stays on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aioice.ice
import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from callbridge.engine.manager import SessionManager
from callbridge.media.g711 import ulaw_decode, ulaw_encode
from tests.engine.engine_peers import EventLog, RtpPeer, dominant_frequency, engine_config, sine_pcm

_RATE = 48000
_FRAME = 960


def _loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return ["127.0.0.1"] if use_ipv4 else []


aioice.ice.get_host_addresses = _loopback_only


class ToneTrack(MediaStreamTrack):
    """A sine at `frequency` Hz, 48 kHz mono, paced in real time."""

    kind = "audio"

    def __init__(self, frequency: float) -> None:
        super().__init__()
        self.frequency = frequency
        self._started: float | None = None
        self._samples = 0

    async def recv(self) -> av.AudioFrame:
        if self._started is None:
            self._started = time.monotonic()
        else:
            delay = self._started + self._samples / _RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        pcm = np.frombuffer(sine_pcm(self.frequency, _RATE, _FRAME, self._samples), "<i2")
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = _RATE
        frame.pts = self._samples
        frame.time_base = fractions.Fraction(1, _RATE)
        self._samples += _FRAME
        return frame


class AiortcPeer:
    """One aiortc RTCPeerConnection sending a tone and recording what it hears (mono, 48 kHz)."""

    def __init__(self, frequency: float) -> None:
        self.connection = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.connection.addTrack(ToneTrack(frequency))
        self.heard: list[np.ndarray[Any, Any]] = []
        self._readers: list[asyncio.Task[None]] = []
        self.connection.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._readers.append(asyncio.ensure_future(self._read(track)))

    async def _read(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                samples = frame.to_ndarray().reshape(-1, len(frame.layout.channels))
                self.heard.append(samples[:, 0].copy())

    async def offer(self) -> str:
        await self.connection.setLocalDescription(await self.connection.createOffer())
        return str(self.connection.localDescription.sdp)

    async def accept(self, answer: str) -> None:
        await self.connection.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    async def answer(self, offer: str) -> str:
        await self.connection.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await self.connection.setLocalDescription(await self.connection.createAnswer())
        return str(self.connection.localDescription.sdp)

    async def heard_frequency(self, seconds: float = 1.0, within_s: float = 10.0) -> float:
        """Dominant frequency of the last `seconds` heard, once that much non-silence came."""
        async with asyncio.timeout(within_s):
            while True:
                recent = np.concatenate(self.heard[-int(seconds * 50) :] or [np.zeros(1)])
                if len(recent) >= seconds * _RATE and np.abs(recent).max() > 1000:
                    return dominant_frequency(recent, _RATE)
                await asyncio.sleep(0.1)

    async def close(self) -> None:
        await self.connection.close()
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)


class PcmuPhone:
    """An RTP phone sending a PCMU tone every 20 ms and decoding what it receives."""

    def __init__(self, peer: RtpPeer, frequency: float) -> None:
        self.peer = peer
        self.frequency = frequency
        self._sender: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._sender = asyncio.ensure_future(self._send())

    async def _send(self) -> None:
        started = time.monotonic()
        for index in range(100_000):
            self.peer.send(ulaw_encode(sine_pcm(self.frequency, 8000, 160, index * 160)))
            delay = started + (index + 1) * 0.02 - time.monotonic()
            await asyncio.sleep(max(delay, 0))

    async def heard_frequency(self, seconds: float = 1.0) -> float:
        """Dominant frequency of the next `seconds` of PCMU received (after 0.5 s settling)."""
        self.peer.drain()
        await asyncio.sleep(0.5)
        self.peer.drain()
        packets = await self.peer.collect(int(seconds * 50), within_s=seconds + 5)
        pcm = b"".join(ulaw_decode(bytes(packet.payload)) for packet in packets)
        return dominant_frequency(np.frombuffer(pcm, "<i2"), 8000)

    async def stop(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        self.peer.close()


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[SessionManager]:
    """An engine whose consent lapses after 9 s (aiortc checks every 4-6 s)."""
    engine = SessionManager(engine_config(tmp_path, webrtc_consent_timeout_s=9.0))
    await engine.start()
    yield engine
    await engine.shutdown(0)


async def connected(events: EventLog, endpoint_id: str) -> None:
    """Wait for the endpoint's `endpoint.state_changed` to `connected`."""
    async with asyncio.timeout(10):
        while not any(
            data["endpoint_id"] == endpoint_id and data["new_state"] == "connected"
            for data in events.named("endpoint.state_changed")
        ):
            count = len(events.named("endpoint.state_changed"))
            await events.wait_for("endpoint.state_changed", count + 1, 10)


FINGERPRINT = ":".join(["5A"] * 32)
"""A sha-256 fingerprint no certificate of these tests has."""


def browser_offer(
    codecs: str = "a=rtpmap:111 opus/48000/2", types: str = "111", fingerprint: str = FINGERPRINT
) -> str:
    """An offer as a browser writes it (actpass, rtcp-mux, ICE ufrag "peer")."""
    return "\r\n".join(
        [
            "v=0",
            "o=- 1 1 IN IP4 127.0.0.1",
            "s=-",
            "t=0 0",
            "a=group:BUNDLE 0",
            f"m=audio 9 UDP/TLS/RTP/SAVPF {types}",
            "c=IN IP4 0.0.0.0",
            "a=mid:0",
            "a=ice-ufrag:peer",
            "a=ice-pwd:peerpasswordpeerpassword",
            f"a=fingerprint:sha-256 {fingerprint}",
            "a=setup:actpass",
            "a=rtcp-mux",
            codecs,
            "",
        ]
    )
