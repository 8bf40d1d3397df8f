"""Transcoding with any packet duration a peer sends, and the packet duration a peer asks for.

Real UDP peers on loopback send a 440 Hz tone in real time in 10-60 ms packets or irregular
ones (G.711 and G.722 cut anywhere; Opus in each of its frame durations); the receiver asks for
its own packet duration with `a=ptime` / `a=maxptime` and never sends a packet itself. What
arrives must be in packets of the asked duration with timestamps one packet apart, keep pitch
and continuity, and arrive about as paced as it was sent. All cases run at once (about 1 s).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass

import numpy as np

from callbridge.engine.manager import SessionManager
from callbridge.engine.offers import create_from_offer
from callbridge.media.codecs import (
    CodecSpec,
    codec_by_name,
    create_decoder,
    create_encoder,
    packet_duration_ms,
)
from callbridge.media.rtp import RtpPacket
from tests.engine.engine_peers import EventLog, RtpPeer
from tests.engine.tone_checks import CODECS, analyse, offer, roomy_manager, sine

__all__ = ["roomy_manager"]

FREQUENCY = 440.0
TONE_S = 0.8
IRREGULAR_MS = (23, 17, 25, 15, 21, 19)
"""Packet durations of an irregular sender (20 ms on average)."""
SENT_MS: dict[str, tuple[tuple[int, ...], ...]] = {
    "pcmu": ((10,), (20,), (30,), (40,), (60,), IRREGULAR_MS),
    "pcma": ((30,), IRREGULAR_MS, (60,)),
    "g722": ((10,), (30,), (60,), IRREGULAR_MS),
    "opus": ((10,), (20,), (40,), (60,)),
}
ASKED: tuple[tuple[int | None, int | None, int, int], ...] = (
    (None, None, 20, 20),
    (10, None, 10, 10),
    (30, None, 30, 20),
    (40, None, 40, 40),
    (60, None, 60, 60),
    (60, 40, 40, 40),
)
"""(a=ptime, a=maxptime, packet ms expected for G.711/G.722, for Opus: no 30 ms Opus frame)."""


@dataclass
class Case:
    source: str
    sent_ms: tuple[int, ...]
    destination: str
    ptime_ms: int | None
    maxptime_ms: int | None
    expected_ms: int

    def __str__(self) -> str:
        asked = f"ptime {self.ptime_ms}, maxptime {self.maxptime_ms}"
        return f"{self.source} {self.sent_ms} ms -> {self.destination} ({asked})"


def cases() -> list[Case]:
    """Every ordered codec pair, each with several sent and asked durations."""
    found = []
    pairs = [(s, d) for s, d in itertools.product(CODECS, CODECS) if s != d]
    for index, (source, destination) in enumerate(pairs * 2):
        sent = SENT_MS[source][index % len(SENT_MS[source])]
        ptime, maxptime, expected, expected_opus = ASKED[index % len(ASKED)]
        expected = expected_opus if destination == "opus" else expected
        found.append(Case(source, sent, destination, ptime, maxptime, expected))
    return found


def spec_of(codec: str) -> CodecSpec:
    spec = codec_by_name(codec)
    assert spec is not None
    return spec.with_payload_type(CODECS[codec][0])


def payloads(
    codec: str, durations: tuple[int, ...], frequency: float = FREQUENCY, tone_s: float = TONE_S
) -> list[tuple[bytes, int, float]]:
    """(payload, RTP timestamp step, seconds) of every packet of the tone, in order.

    G.711 and G.722 code every sample pair on its own, so one continuous encoding is cut at
    any millisecond; Opus is encoded by one encoder per (regular) duration.
    """
    spec = spec_of(codec)
    rate = spec.sample_rate
    total = int(tone_s * rate)
    packets = []
    if codec == "opus":
        (duration,) = durations
        encoder = create_encoder(spec, duration)
        size = rate * duration // 1000
        for start in range(0, total - size + 1, size):
            payload = encoder.encode(sine(frequency, rate, size, start))
            packets.append((payload, 48 * duration, duration / 1000))
        return packets
    encoder = create_encoder(spec)
    frame = spec.samples_per_frame
    coded = b"".join(
        encoder.encode(sine(frequency, rate, frame, start)) for start in range(0, total, frame)
    )
    offset = 0
    for duration in itertools.cycle(durations):
        size = 8 * duration  # PCMU, PCMA and G.722 carry 8 bytes per ms
        if offset + size > len(coded):
            break
        packets.append((coded[offset : offset + size], 8 * duration, duration / 1000))
        offset += size
    return packets


class LoopLag:
    """How late this process's event loop ran at worst (seconds): arrival times are taken in
    it, so a stall of the test itself makes packets look late by that much."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, time.monotonic() - before - 0.01)

    def stop(self) -> None:
        self._task.cancel()


async def run_case(manager: SessionManager, case: Case, lag: LoopLag) -> None:
    session = manager.create_session(EventLog())
    sender, receiver = await RtpPeer.open(), await RtpPeer.open()
    try:
        _, answer = await create_from_offer(session, offer(sender.port, case.source), "sendrecv")
        sender.use(answer)
        await create_from_offer(
            session,
            offer(receiver.port, case.destination, case.ptime_ms, case.maxptime_ms),
            "sendrecv",
        )
        arrivals: list[tuple[RtpPacket, float]] = []
        sent = asyncio.Event()
        receiving = asyncio.create_task(collect(receiver, arrivals, sent))
        packets = payloads(case.source, case.sent_ms)
        await asyncio.sleep(0.1)  # every case has encoded its tone before any starts sending
        elapsed = await play(sender, case.source, packets)
        sent.set()
        await receiving
        check(case, arrivals, elapsed, lag.worst)
    finally:
        sender.close()
        receiver.close()
        await session.destroy()


async def play(sender: RtpPeer, codec: str, packets: list[tuple[bytes, int, float]]) -> float:
    """Send `packets` in real time; returns how long they last, seconds."""
    started = time.monotonic()
    elapsed = 0.0
    for payload, step, seconds in packets:
        delay = started + elapsed - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        sender.send(payload, CODECS[codec][0], samples=step)
        elapsed += seconds
    return elapsed


async def collect(
    receiver: RtpPeer, arrivals: list[tuple[RtpPacket, float]], sent: asyncio.Event
) -> None:
    """Every packet with its arrival time, until none came for 0.3 s after `sent` is set."""
    while True:
        try:
            arrivals.append((await receiver.receive(within_s=0.3), time.monotonic()))
        except TimeoutError:
            if sent.is_set():
                return


Arrivals = list[tuple[RtpPacket, float]]


def talkspurts(arrivals: Arrivals, step: int, packet_s: float, label: str) -> list[Arrivals]:
    """The packets split where the timestamp jumps, checking the steps on the way.

    Within a talkspurt timestamps are exactly one packet apart and sequence numbers one apart.
    A jump is allowed only as the engine's rule for a send gap of over 150 ms (this process
    stalled on a loaded machine): marked, and worth more than 150 ms.
    """
    first_packet = arrivals[0][0]
    assert first_packet.marker, label
    spurts: list[Arrivals] = [[arrivals[0]]]
    for (before, _), (packet, arrival) in itertools.pairwise(arrivals):
        assert (packet.sequence - before.sequence) & 0xFFFF == 1, label
        delta = (packet.timestamp - before.timestamp) & 0xFFFFFFFF
        if delta == step and not packet.marker:
            spurts[-1].append((packet, arrival))
            continue
        assert packet.marker and delta % step == 0 and delta / step * packet_s > 0.15, (
            label,
            delta,
        )
        spurts.append([(packet, arrival)])
    return spurts


def check(case: Case, arrivals: Arrivals, sent_s: float, lag_s: float) -> None:
    spec = spec_of(case.destination)
    assert len(arrivals) > 10, case
    packets = [packet for packet, _ in arrivals]
    step = spec.clock_rate * case.expected_ms // 1000
    spurts = talkspurts(arrivals, step, case.expected_ms / 1000, str(case))
    assert {packet.payload_type for packet in packets} == {spec.payload_type}
    decoder = create_decoder(spec)
    decoded = [decoder.decode(bytes(packet.payload)) for packet in packets]
    packet_samples = spec.sample_rate * case.expected_ms // 1000
    assert {len(pcm) // 2 for pcm in decoded} == {packet_samples}, str(case)
    report = analyse(np.frombuffer(b"".join(decoded), "<i2"), spec.sample_rate)
    report.assert_clean(FREQUENCY, str(case))
    assert abs(report.duration_s - sent_s) < 0.07, (str(case), report)
    # Paced as sent: each packet leaves about when its audio is due (bursts of one source or
    # destination packet at most, plus scheduling slack on a shared machine); judged up to the
    # first stall of the engine, if any, and allowing for how late the test itself ran.
    first_packet, first_arrival = spurts[0][0]
    lateness = [
        arrival
        - first_arrival
        - ((packet.timestamp - first_packet.timestamp) & 0xFFFFFFFF)
        / step
        * case.expected_ms
        / 1000
        for packet, arrival in spurts[0]
    ]
    spread = max(lateness) - min(lateness)
    allowed = (max(case.sent_ms) + case.expected_ms) / 1000 + 0.05 + lag_s
    assert spread < allowed, (str(case), spread, lag_s)


async def test_every_codec_pair_at_any_packet_duration_sent_and_asked(
    roomy_manager: SessionManager,
) -> None:
    lag = LoopLag()
    results = await asyncio.gather(
        *(run_case(roomy_manager, case, lag) for case in cases()), return_exceptions=True
    )
    lag.stop()
    failures = [result for result in results if isinstance(result, BaseException)]
    assert not failures, "\n".join(map(repr, failures))


PARTIES = (
    ("pcmu", (30,), 410.0, 40),
    ("g722", IRREGULAR_MS, 730.0, None),
    ("opus", (60,), 1130.0, 60),
)
"""(codec, packet durations sent, tone Hz, a=ptime): tones with a fraction of a cycle per
20 ms, so a lost or repeated mixer frame shows as a phase jump."""


async def test_three_party_mix_with_different_packet_durations(
    roomy_manager: SessionManager,
) -> None:
    """Each party hears both other tones, whole and continuous, in its own packet duration."""
    session = roomy_manager.create_session(EventLog())
    peers = [await RtpPeer.open() for _ in PARTIES]
    try:
        for peer, (codec, _, _, ptime_ms) in zip(peers, PARTIES, strict=True):
            _, answer = await create_from_offer(
                session, offer(peer.port, codec, ptime_ms), "sendrecv"
            )
            peer.use(answer)
        tone_s = 1.2
        tones = [payloads(codec, durations, hz, tone_s) for codec, durations, hz, _ in PARTIES]
        arrivals: list[list[tuple[RtpPacket, float]]] = [[] for _ in PARTIES]
        sent = asyncio.Event()
        receiving = [
            asyncio.create_task(collect(p, a, sent)) for p, a in zip(peers, arrivals, strict=True)
        ]
        plays = (
            play(peer, party[0], tone)
            for peer, party, tone in zip(peers, PARTIES, tones, strict=True)
        )
        await asyncio.gather(*plays)
        sent.set()
        await asyncio.gather(*receiving)
    finally:
        for peer in peers:
            peer.close()
        await session.destroy()
    for index, (codec, _, _, ptime_ms) in enumerate(PARTIES):
        spec = spec_of(codec)
        packets = [packet for packet, _ in arrivals[index]]
        expected_ms = packet_duration_ms(spec, ptime_ms, None)
        step = spec.clock_rate * expected_ms // 1000
        talkspurts(arrivals[index], step, expected_ms / 1000, codec)
        decoder = create_decoder(spec)
        pcm = b"".join(decoder.decode(bytes(packet.payload)) for packet in packets)
        heard = np.frombuffer(pcm, "<i2")
        for other, (_, _, frequency, _) in enumerate(PARTIES):
            if other == index:
                continue
            report = analyse(heard, spec.sample_rate, near_hz=frequency, window_s=0.02)
            report.assert_clean(frequency, f"{codec} hears {frequency} Hz")
            assert abs(report.duration_s - tone_s) < 0.1, (codec, frequency, report)
