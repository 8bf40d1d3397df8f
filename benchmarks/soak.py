"""Soak: `callbridge serve` under churn for a long time, watched for leaks.

The server runs in its own process; this process drives it over the control WebSocket and plays
every RTP party on real UDP sockets. Each call slot loops: create a session, its endpoints and
parties, talk for a random call length, destroy the session, again. Slots are of four kinds:

  passthrough  two PCMU parties (each packet numbered in its payload: exact loss)
  transcode    a PCMU party and an Opus party
  mix3         three PCMU parties (N-1 mixing)
  rtvbp        a PCMU party and `endpoint.create_rtvbp` calling the server's own demo
               application on /rtvbp (both RTVBP roles in the one process)

Load: `--fraction` (default 0.8) of the measured capacity of one worker, each kind taking an
equal share of it (CAPACITY below, from docs/performance.md); `--sessions N` sets the number
of call slots instead (split the same way). Every `--interval` seconds it prints the server's
RSS, open fds, UDP sockets, tasks, sessions, endpoints and port pairs (from /proc and
/metrics), calls done, packets lost (passthrough, exact) and frames missing (decoded paths:
20 ms slots of a call's middle without a packet). At the end every slot hangs up, and it
prints RSS growth after warm-up and what is left over against the idle baseline. Figures only.

Usage: python benchmarks/soak.py [--minutes 10] [--fraction 0.8 | --sessions N]
       [--call-seconds 20] [--interval 10] [--warmup-seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import struct
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import uvloop

from callbridge.media.codecs import OPUS, PCMU, create_encoder
from callbridge_relay import ControlConnection, ControlError, _answer_port, stop_process
from rtp_load import offer_sdp
from server_probe import Sample, ServerProbe, start_serve

CAPACITY = {"passthrough": 300, "transcode": 20, "mix3": 40, "rtvbp": 100}
"""Sessions one worker carries (docs/performance.md, 2026-11-22; rtvbp: an estimate, a media
session with one RTP party calling an RTVBP application served by the same process)."""
CODECS = {
    "passthrough": ("pcmu", "pcmu"),
    "transcode": ("pcmu", "opus"),
    "mix3": ("pcmu", "pcmu", "pcmu"),
    "rtvbp": ("pcmu",),
}
PORT_RANGE = (46000, 46999)
FRAME_S = 0.02
CALL_WARMUP_S = 0.6
"""Counting starts this long after a call's parties start (latching, codec start-up)."""
_COUNTER = struct.Struct("!I")


def sine_frames(codec: str, count: int = 50) -> list[bytes]:
    """One second of a 1 kHz tone as 20 ms payloads."""
    spec = OPUS if codec == "opus" else PCMU
    encoder = create_encoder(spec)
    rate = spec.sample_rate
    samples = rate // 50
    frames = []
    for index in range(count):
        times = np.arange(index * samples, (index + 1) * samples) / rate
        pcm = (np.sin(2 * np.pi * 1000 * times) * 6000).astype("<i2").tobytes()
        frames.append(encoder.encode(pcm))
    return frames


class Party(asyncio.DatagramProtocol):
    """One RTP party: sends one packet per tick while `active`, counts what it hears."""

    def __init__(self, codec: str, frames: list[bytes]) -> None:
        self.codec = codec
        self.payload_type = 111 if codec == "opus" else 0
        self.samples = 960 if codec == "opus" else 160
        self.frames = frames
        self.transport: asyncio.DatagramTransport | None = None
        self.target: tuple[str, int] | None = None
        self.ssrc = random.getrandbits(32)
        self.sequence = random.getrandbits(16)
        self.timestamp = random.getrandbits(32)
        self.sent = 0
        self.active = False
        self.counting_from = 0.0
        self.heard = 0
        """Packets heard since `counting_from`."""
        self.numbers: set[int] = set()
        """Passthrough: the counters of the other party's packets heard since then."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport  # uvloop's is no asyncio.DatagramTransport subclass

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) < 12 or 192 <= data[1] <= 223 or not self.counting_from:
            return
        if time.monotonic() < self.counting_from:
            return
        self.heard += 1
        if self.codec == "pcmu" and len(data) >= 16:
            self.numbers.add(_COUNTER.unpack_from(data, 12)[0])

    def send(self) -> None:
        if not self.active or self.transport is None or self.target is None:
            return
        payload = self.frames[self.sent % len(self.frames)]
        if self.codec == "pcmu":
            payload = _COUNTER.pack(self.sent) + payload[4:]
        header = struct.pack(
            "!BBHII", 0x80, self.payload_type, self.sequence, self.timestamp, self.ssrc
        )
        self.transport.sendto(header + payload, self.target)
        self.sent += 1
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + self.samples) & 0xFFFFFFFF


@dataclass
class Totals:
    calls: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    packets_expected: int = 0
    packets_lost: int = 0
    frames_expected: int = 0
    frames_missing: int = 0


class Soak:
    def __init__(self, port: int, arguments: argparse.Namespace) -> None:
        self.base_url = f"http://127.0.0.1:{port}"
        self.rtvbp_url = f"ws://127.0.0.1:{port}/rtvbp"
        self.arguments = arguments
        self.frames = {codec: sine_frames(codec) for codec in ("pcmu", "opus")}
        self.parties: set[Party] = set()
        self.totals = Totals()
        self.stopping = False
        self.http: aiohttp.ClientSession | None = None

    async def pace(self) -> None:
        """Every party's packet each 20 ms, in four 5 ms phase groups."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        while True:
            group = tick % 4
            for party in list(self.parties):
                if id(party) % 4 == group:
                    party.send()
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * FRAME_S / 4 - loop.time()))

    async def open_party(self, codec: str) -> Party:
        loop = asyncio.get_running_loop()
        _, party = await loop.create_datagram_endpoint(
            lambda: Party(codec, self.frames[codec]), local_addr=("127.0.0.1", 0)
        )
        return party

    async def call(self, kind: str) -> None:
        assert self.http is not None
        websocket = await self.http.ws_connect(f"{self.base_url}/", max_msg_size=0)
        connection = ControlConnection(websocket)
        parties: list[Party] = []
        try:
            await connection.request("session.create", {})
            for codec in CODECS[kind]:
                party = await self.open_party(codec)
                parties.append(party)
                assert party.transport is not None
                own_port = party.transport.get_extra_info("sockname")[1]
                result = await connection.request(
                    "endpoint.create_from_offer",
                    {"sdp": offer_sdp(codec, own_port), "direction": "sendrecv"},
                )
                party.target = ("127.0.0.1", _answer_port(result["sdp_answer"]))
            if kind == "rtvbp":
                await connection.request("endpoint.create_rtvbp", {"url": self.rtvbp_url})
            begin = time.monotonic()
            for party in parties:
                party.counting_from = begin + CALL_WARMUP_S
                party.active = True
                self.parties.add(party)
            length = self.arguments.call_seconds * random.uniform(0.5, 1.5)
            await asyncio.sleep(length)
            for party in parties:
                party.active = False
            end = time.monotonic()
            await asyncio.sleep(0.3)  # the last packets arrive
            self.account(kind, parties, end - begin - CALL_WARMUP_S)
            await connection.request("session.destroy", {})
            self.totals.calls[kind] += 1
        except (ControlError, ConnectionError, TimeoutError, aiohttp.ClientError, OSError) as error:
            self.totals.failures[f"{kind}: {type(error).__name__}: {error}"[:120]] += 1
        finally:
            for party in parties:
                self.parties.discard(party)
                if party.transport is not None:
                    party.transport.close()
            await connection.close()

    def account(self, kind: str, parties: list[Party], counted_s: float) -> None:
        totals = self.totals
        if kind == "passthrough":
            for party, other in ((parties[0], parties[1]), (parties[1], parties[0])):
                first = int(CALL_WARMUP_S / FRAME_S) + 5
                expected = set(range(first, other.sent - 5))
                totals.packets_expected += len(expected)
                totals.packets_lost += len(expected - party.numbers)
            return
        slots = int(counted_s / FRAME_S) - 5
        for party in parties:
            totals.frames_expected += slots
            totals.frames_missing += max(0, slots - party.heard)

    async def slot(self, kind: str, index: int) -> None:
        await asyncio.sleep(index * 0.1 + random.uniform(0, 1))
        while not self.stopping:
            await self.call(kind)


def slots_for(arguments: argparse.Namespace) -> dict[str, int]:
    """Call slots per kind: each kind takes an equal share of the load, so its slots are in
    proportion to its capacity."""
    if arguments.sessions:
        total = sum(CAPACITY.values())
        return {k: max(1, round(arguments.sessions * c / total)) for k, c in CAPACITY.items()}
    share = arguments.fraction / len(CAPACITY)
    return {kind: max(1, round(share * capacity)) for kind, capacity in CAPACITY.items()}


def line(elapsed: float, sample: Sample, soak: Soak) -> str:
    totals = soak.totals
    return (
        f"{elapsed:7.0f} s  RSS {sample.rss_mib:7.1f} MiB  fds {sample.fds:5d}"
        f"  udp {sample.udp_sockets:5d}"
        f"  tasks {sample.tasks:4d}  sessions {sample.sessions:4d}  endpoints {sample.endpoints:4d}"
        f"  port pairs {sample.port_pairs:4d}  calls {sum(totals.calls.values()):6d}"
        f"  lost {totals.packets_lost}/{totals.packets_expected}"
        f"  missing {totals.frames_missing}/{totals.frames_expected}"
    )


async def run(process: Any, port: int, arguments: argparse.Namespace) -> None:
    soak = Soak(port, arguments)
    slots = slots_for(arguments)
    print(f"call slots: {slots} ({sum(slots.values())} sessions at a time)", flush=True)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        soak.http = http
        probe = ServerProbe(process.pid, soak.base_url, http)
        baseline = await probe.sample()
        print(f"idle baseline: {baseline.as_dict()}", flush=True)
        pacer = asyncio.create_task(soak.pace())
        workers = [
            asyncio.create_task(soak.slot(kind, index))
            for kind, count in slots.items()
            for index in range(count)
        ]
        started = time.monotonic()
        duration = arguments.minutes * 60
        warm: Sample | None = None
        samples: list[Sample] = []
        while (elapsed := time.monotonic() - started) < duration:
            await asyncio.sleep(min(arguments.interval, max(0.0, duration - elapsed)))
            sample = await probe.sample()
            samples.append(sample)
            elapsed = time.monotonic() - started
            if warm is None and elapsed >= arguments.warmup_seconds:
                warm = sample
            print(line(elapsed, sample, soak), flush=True)
        soak.stopping = True
        print("hanging up every call ...", flush=True)
        await asyncio.gather(*workers, return_exceptions=True)
        pacer.cancel()
        await asyncio.sleep(2)
        after = await probe.sample()
        print(f"after the last call: {after.as_dict()}")
    totals = soak.totals
    print(f"calls: {dict(totals.calls)}; failed: {sum(totals.failures.values())}")
    for reason, count in totals.failures.most_common(5):
        print(f"  {count} x {reason}")
    loss = totals.packets_lost / totals.packets_expected if totals.packets_expected else 0.0
    missing = totals.frames_missing / totals.frames_expected if totals.frames_expected else 0.0
    print(
        f"passthrough packets lost: {totals.packets_lost} of {totals.packets_expected}"
        f" ({100 * loss:.3f} %); decoded-path frames missing: {totals.frames_missing} of"
        f" {totals.frames_expected} ({100 * missing:.3f} %)"
    )
    if warm is not None and samples:
        peak = max(sample.rss_mib for sample in samples[samples.index(warm) :])
        final = samples[-1].rss_mib
        print(
            f"RSS after warm-up {warm.rss_mib:.1f} MiB, peak {peak:.1f}, at the end of the load"
            f" {final:.1f}: growth {100 * (final - warm.rss_mib) / warm.rss_mib:+.1f} %"
        )
    else:
        print("RSS growth: run shorter than the warm-up, not measured")
    print(
        f"left over: sessions {after.sessions}, endpoints {after.endpoints}, port pairs"
        f" {after.port_pairs}, fds {after.fds - baseline.fds:+d}, UDP sockets"
        f" {after.udp_sockets - baseline.udp_sockets:+d}, tasks {after.tasks - baseline.tasks:+d}"
        " (against the idle baseline)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--fraction", type=float, default=0.8, help="of the measured capacity")
    parser.add_argument("--sessions", type=int, default=0, help="call slots instead of --fraction")
    parser.add_argument("--call-seconds", type=float, default=20, help="mean call length")
    parser.add_argument("--interval", type=float, default=10, help="seconds between samples")
    parser.add_argument("--warmup-seconds", type=float, default=60)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        environment = {
            "CALLBRIDGE_RTP_PORT_RANGE": json.dumps(list(PORT_RANGE)),
            "CALLBRIDGE_MEDIA_TIMEOUT_SECS": "300",
            "CALLBRIDGE_CACHE_DIR": str(Path(directory) / "cache"),
        }
        process, port = start_serve(environment)
        try:
            uvloop.run(run(process, port, arguments))
        finally:
            stop_process(process)


if __name__ == "__main__":
    main()
