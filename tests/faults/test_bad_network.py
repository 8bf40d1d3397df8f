"""A bad network between a real RTP sender and the engine, over real UDP through `FaultProxy`.

One 440 Hz PCMU sender per fault feeds three sessions at once: passthrough (PCMU -> PCMU),
transcoded (PCMU -> G.722) and mixed (with a clean 1000 Hz party, heard by a third). All faults
run concurrently. For each: the engine survives, the transcoded and mixed listeners hear the
tone in nearly every 100 ms window without long silences, the passthrough listener gets what
the proxy delivered, and session.info counts what was lost, concealed or dropped, and why.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from callbridge.engine.manager import SessionManager
from callbridge.engine.offers import create_from_offer
from callbridge.engine.session import MediaSession
from callbridge.media.codecs import G722, OPUS, PCMU, CodecSpec, create_decoder, create_encoder
from callbridge.media.pcm import as_samples
from callbridge.media.rtp import RtpPacket, is_rtcp, parse_rtp
from tests.engine.engine_peers import EventLog, RtpPeer, engine_config, free_port_range, sine_pcm
from tests.faults import proxy
from tests.faults.proxy import Fault, FaultProxy

SECONDS = 2.4
PACKETS = int(SECONDS / 0.02)


@dataclass
class Listener:
    """A peer that hears an endpoint and stamps each packet's arrival (loop time)."""

    peer: RtpPeer
    spec: CodecSpec
    heard: list[tuple[float, RtpPacket]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    @classmethod
    async def join(cls, session: MediaSession, spec: CodecSpec) -> tuple[str, Listener]:
        peer = await RtpPeer.open()
        endpoint_id, answer = await create_from_offer(
            session, peer.offer(spec.name.lower()), "sendrecv"
        )
        peer.use(answer)
        peer.send(b"\xff" * 160, spec.payload_type)  # the engine sends to a peer after it sent
        listener = cls(peer, spec)
        listener.task = asyncio.create_task(listener._listen())
        return endpoint_id, listener

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data, _ = await self.peer.queue.get()
            if not is_rtcp(data):
                self.heard.append((loop.time(), parse_rtp(data)))

    def audio(self, since: float) -> np.ndarray[Any, Any]:
        decoder = create_decoder(self.spec)
        frames = [
            as_samples(decoder.decode(bytes(packet.payload)))
            for arrival, packet in self.heard
            if arrival >= since and packet.payload_type == self.spec.payload_type
        ]
        return np.concatenate(frames) if frames else np.zeros(0, np.int16)

    def longest_gap_s(self, since: float, until: float) -> float:
        times = [since] + [arrival for arrival, _ in self.heard if since <= arrival <= until]
        return max(np.diff([*times, until]))

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.peer.close()


def tone_windows(samples: np.ndarray[Any, Any], rate: int, frequency: float) -> float:
    """The share of 100 ms windows in which `frequency` is among the strongest components."""
    size = rate // 10
    windows = [samples[start : start + size] for start in range(0, len(samples) - size, size)]
    present = 0
    for window in windows:
        data = window.astype(np.float64) * np.hanning(size)
        spectrum = np.abs(np.fft.rfft(data))
        bin_index = round(frequency * size / rate)
        strength = spectrum[bin_index - 1 : bin_index + 2].max()
        present += strength > 0.25 * spectrum.max() and np.abs(window).max() > 500
    return present / len(windows) if windows else 0.0


def longest_silence_s(samples: np.ndarray[Any, Any], rate: int) -> float:
    """The longest run of silent 10 ms blocks, in seconds."""
    size = rate // 100
    longest = run = 0
    for start in range(0, len(samples) - size, size):
        run = run + 1 if np.abs(samples[start : start + size]).max() < 200 else 0
        longest = max(longest, run)
    return longest / 100


async def send_tone(peer: RtpPeer, frequency: float, packets: int, spec: CodecSpec = PCMU) -> None:
    encoder = create_encoder(spec)
    samples = spec.sample_rate // 50
    payloads = [
        encoder.encode(sine_pcm(frequency, spec.sample_rate, samples, index * samples))
        for index in range(packets)
    ]
    samples_per_packet = spec.clock_rate // 50
    loop = asyncio.get_running_loop()
    start = loop.time()
    for index, payload in enumerate(payloads):
        peer.send(payload, spec.payload_type, samples=samples_per_packet)
        await asyncio.sleep(max(0.0, start + (index + 1) * 0.02 - loop.time()))


@dataclass
class Outcome:
    name: str
    proxy: FaultProxy
    passthrough: Listener
    transcoded: Listener
    mixed: Listener
    sources: dict[str, dict[str, Any]]
    """session.info `inbound` of the faulty sender's endpoint, per path."""
    window: tuple[float, float]


async def run_fault(
    engine: SessionManager, name: str, fault: Fault, spec: CodecSpec = PCMU
) -> Outcome:
    sessions = {path: engine.create_session(EventLog()) for path in ("pass", "trans", "mix")}
    sender = await RtpPeer.open()
    sources, ports = {}, []
    for path, session in sessions.items():
        offer = sender.offer(spec.name.lower())
        sources[path], answer = await create_from_offer(session, offer, "sendrecv")
        sender.use(answer)
        assert sender.target is not None
        ports.append(sender.target)
    link = await FaultProxy.open(ports, fault)
    sender.target = ("127.0.0.1", link.port)
    _, passthrough = await Listener.join(sessions["pass"], spec)
    _, transcoded = await Listener.join(sessions["trans"], G722)
    clean_party = await RtpPeer.open()
    _, answer = await create_from_offer(sessions["mix"], clean_party.offer("pcmu"), "sendrecv")
    clean_party.use(answer)
    _, mixed = await Listener.join(sessions["mix"], PCMU)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.gather(
        send_tone(sender, 440, PACKETS, spec), send_tone(clean_party, 1000, PACKETS)
    )
    ended = loop.time()
    await asyncio.sleep(0.4)
    infos = {}
    for path, session in sessions.items():
        (entry,) = [e for e in session.info()["endpoints"] if e["endpoint_id"] == sources[path]]
        infos[path] = entry["inbound"]
    for session in sessions.values():
        await session.destroy()
    for peer in (sender, clean_party):
        peer.close()
    link.close()
    for listener in (passthrough, transcoded, mixed):
        listener.close()
    return Outcome(name, link, passthrough, transcoded, mixed, infos, (started + 0.3, ended))


def audio_packets(datagrams: list[bytes]) -> list[bytes]:
    return [bytes(parse_rtp(d).payload) for d in datagrams if not is_rtcp(d) and d[0] >> 6 == 2]


Check = Callable[[Outcome], None]


def lost(outcome: Outcome) -> None:
    assert outcome.sources["trans"]["packets_lost"] > 0
    assert outcome.sources["trans"]["concealed"] > 0


def duplicated(outcome: Outcome) -> None:
    assert outcome.sources["trans"]["dropped"]["duplicate"] > 0


def malformed(outcome: Outcome) -> None:
    for inbound in outcome.sources.values():
        assert inbound["dropped"]["malformed"] > 0


def concealed(outcome: Outcome) -> None:
    assert outcome.sources["trans"]["concealed"] >= PACKETS // 9 - 1
    nothing_dropped(outcome)


def nothing_dropped(outcome: Outcome) -> None:
    for inbound in outcome.sources.values():
        assert inbound["dropped"] == dict.fromkeys(inbound["dropped"], 0), inbound


FAULTS: dict[str, tuple[Fault, Check]] = {
    "loss 8 %": (proxy.loss(0.08), lost),
    "burst loss": (proxy.burst_loss(40, 5), lost),
    "reordering": (proxy.reorder(0.1), lambda outcome: None),
    "duplicates": (proxy.duplicate(0.1), duplicated),
    "jitter spikes": (proxy.jitter_spikes(30), lambda outcome: None),
    "ssrc change": (proxy.ssrc_change(PACKETS // 2), nothing_dropped),
    "sequence wrap": (proxy.sequence_wrap(), nothing_dropped),
    "timestamp jump": (proxy.timestamp_jump(PACKETS // 2), nothing_dropped),
    "marker bits": (proxy.marker_bits(10), nothing_dropped),
    "padding": (proxy.padding(), nothing_dropped),
    "csrc lists": (proxy.csrc_lists(), nothing_dropped),
    "header extensions": (proxy.header_extensions(), nothing_dropped),
    "empty payloads": (proxy.empty_payloads(9), concealed),
    "unknown rtcp": (proxy.unknown_rtcp(10), nothing_dropped),
    "garbage": (proxy.garbage(10), malformed),
}

OPUS_FAULTS = ("loss 8 %", "burst loss", "duplicates", "empty payloads")
"""Also run with an Opus sender: the decoded path conceals with Opus's own PLC."""
SCENARIOS = {
    **{name: (PCMU, *entry) for name, entry in FAULTS.items()},
    **{f"opus {name}": (OPUS, *FAULTS[name]) for name in OPUS_FAULTS},
}


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Outcome]:
    async def run_all(path: Path) -> dict[str, Outcome]:
        engine = SessionManager(engine_config(path, rtp_port_range=free_port_range(160)))
        await engine.start()
        try:
            results = await asyncio.gather(
                *(
                    run_fault(engine, name, fault, spec)
                    for name, (spec, fault, _) in SCENARIOS.items()
                )
            )
        finally:
            await engine.shutdown(0)
        return {outcome.name: outcome for outcome in results}

    with tempfile.TemporaryDirectory() as directory:
        return asyncio.run(run_all(Path(directory)))


@pytest.mark.parametrize("name", SCENARIOS)
def test_decoded_paths_keep_the_tone(outcomes: dict[str, Outcome], name: str) -> None:
    outcome = outcomes[name]
    since, until = outcome.window
    for listener, rate in ((outcome.transcoded, 16000), (outcome.mixed, 8000)):
        share = tone_windows(listener.audio(since), rate, 440)
        assert share >= 0.75, (listener.spec.name, share)
        assert listener.longest_gap_s(since, until) < 0.4  # input-driven: a burst + 60 ms hold
    audio = outcome.transcoded.audio(since)
    assert longest_silence_s(audio, 16000) <= 0.12  # the longest burst lost: 5 packets
    assert len(outcome.transcoded.heard) >= PACKETS - 3  # a frame for every slot, or concealed


@pytest.mark.parametrize("name", SCENARIOS)
def test_passthrough_forwards_what_arrives(outcomes: dict[str, Outcome], name: str) -> None:
    outcome = outcomes[name]
    delivered = audio_packets(outcome.proxy.delivered)
    forwarded = [bytes(packet.payload) for _, packet in outcome.passthrough.heard]
    assert len(delivered) * 0.97 <= len(forwarded) <= len(delivered)
    assert set(forwarded) <= set(delivered)


@pytest.mark.parametrize("name", SCENARIOS)
def test_session_info_counts_what_was_dropped(outcomes: dict[str, Outcome], name: str) -> None:
    _, _, check = SCENARIOS[name]
    outcome = outcomes[name]
    assert outcome.sources["trans"]["packets"] > 0.8 * PACKETS
    check(outcome)
