"""The decoded path: timestamps, mixer inputs, and transcoding/mixing end to end over UDP."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np

from callbridge.engine.manager import SessionManager
from callbridge.engine.offers import create_from_offer
from callbridge.engine.pipeline import FrameFifo, OutputStream
from callbridge.engine.session import MediaSession
from callbridge.engine.tone_endpoint import create_tone
from callbridge.media.codecs import G722, OPUS, PCMA, PCMU, create_decoder, create_encoder
from callbridge.media.pcm import as_samples
from tests.engine.engine_peers import EventLog, RtpPeer, dominant_frequency, manager, sine_pcm

__all__ = ["manager"]


def test_output_stream_is_continuous_across_modes() -> None:
    stream = OutputStream()
    stream.step = 160
    first, marker = stream.generated(10.0)
    assert marker
    stream.sent(first, 10.0)
    second, marker = stream.generated(10.02)
    assert not marker and second == (first + 160) & 0xFFFFFFFF
    stream.sent(second, 10.02)
    offset = stream.begin_passthrough(5000)
    assert (5000 + offset) & 0xFFFFFFFF == (second + 160) & 0xFFFFFFFF
    stream.sent((5000 + offset) & 0xFFFFFFFF, 10.04)
    third, marker = stream.generated(10.06)
    assert third == (second + 320) & 0xFFFFFFFF and not marker
    stream.sent(third, 10.06)
    later, marker = stream.generated(11.06)  # a second of silence
    assert marker and later == (third + 50 * 160) & 0xFFFFFFFF


def test_fresh_passthrough_keeps_source_timestamps() -> None:
    assert OutputStream().begin_passthrough(1234) == 0


def test_frame_fifo_pops_once_per_tick_and_trims_latency() -> None:
    fifo = FrameFifo()
    assert fifo.take(1, 1.0) is None
    fifo.append(b"a", 1.005)
    fifo.append(b"b", 1.015)
    assert fifo.take(2, 1.02) is None  # a new input from the network starts a tick later
    assert fifo.take(3, 1.04) == b"a"
    assert fifo.take(3, 1.04) == b"a"  # a second mixer in the same tick
    assert fifo.take(4, 1.06) == b"b"
    fifo.append(b"late", 1.0798)  # arrived within the margin before the tick at 1.08
    assert fifo.take(5, 1.08) is None
    assert fifo.take(6, 1.10) == b"late"  # one idle tick is no restart: not held
    fifo.append(b"tone", 1.12)  # pushed during the tick itself
    assert fifo.take(7, 1.12) == b"tone"
    fifo.append(b"x", 1.125)
    fifo.append(b"x", 1.126)
    for tick in range(8, 70):  # two spare frames, kept for a while, then one dropped
        time = 1.12 + (tick - 7) * 0.02
        fifo.append(b"x", time - 0.015)
        fifo.take(tick, time)
    assert fifo.dropped == 1
    assert len(fifo._frames) == 1  # one spare frame stays: it absorbs the next late packet


def test_frame_fifo_starts_a_tone_at_once() -> None:
    fifo = FrameFifo()
    fifo.append(b"tone", 1.0)  # pushed during the tick: a source on the clock is not held
    assert fifo.take(1, 1.0) == b"tone"


async def legs(session: MediaSession, *codecs: str) -> list[RtpPeer]:
    peers = []
    for codec in codecs:
        peer = await RtpPeer.open()
        _, answer = await create_from_offer(session, peer.offer(codec), "sendrecv")
        peer.use(answer)
        peers.append(peer)
    return peers


async def test_pcmu_peer_hears_tone_sent_by_opus_peer_and_back(manager: SessionManager) -> None:
    session = manager.create_session(EventLog())
    pcmu_peer, opus_peer = await legs(session, "pcmu", "opus")
    opus_encoder = create_encoder(OPUS)
    pcmu_encoder = create_encoder(PCMU)
    # Both send paced audio: Opus peer a 1000 Hz tone, PCMU peer a 600 Hz tone.
    for index in range(60):
        opus_peer.send(
            opus_encoder.encode(sine_pcm(1000, 48000, 960, index * 960)), 111, samples=960
        )
        pcmu_peer.send(pcmu_encoder.encode(sine_pcm(600, 8000, 160, index * 160)), 0)
        await asyncio.sleep(0.02)
    heard_by_pcmu = [packet for packet in pcmu_peer.drain() if packet.payload_type == 0]
    heard_by_opus = [packet for packet in opus_peer.drain() if packet.payload_type == 111]
    assert len(heard_by_pcmu) >= 50 and len(heard_by_opus) >= 50
    pcmu_decoder = create_decoder(PCMU)
    audio = np.concatenate(
        [as_samples(pcmu_decoder.decode(bytes(packet.payload))) for packet in heard_by_pcmu[10:]]
    )
    assert abs(dominant_frequency(audio, 8000) - 1000) < 15
    opus_decoder = create_decoder(OPUS)
    audio = np.concatenate(
        [as_samples(opus_decoder.decode(bytes(packet.payload))) for packet in heard_by_opus[10:]]
    )
    assert abs(dominant_frequency(audio, 48000) - 600) < 15
    steps = {(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(heard_by_opus)}
    assert steps == {960}
    assert heard_by_opus[0].marker
    for peer in (pcmu_peer, opus_peer):
        peer.close()


async def test_three_parties_each_hear_the_other_two(manager: SessionManager) -> None:
    session = manager.create_session(EventLog())
    peers = await legs(session, "pcmu", "pcmu", "g722")
    frequencies = (500, 1100, 1700)
    encoders = [create_encoder(PCMU), create_encoder(PCMU), create_encoder(G722)]
    for index in range(75):
        for peer, frequency, encoder in zip(peers, frequencies, encoders, strict=True):
            rate = 16000 if encoder is encoders[2] else 8000
            samples = rate // 50
            peer.send(
                encoder.encode(sine_pcm(frequency, rate, samples, index * samples)),
                9 if rate == 16000 else 0,
            )
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)
    for position, peer in enumerate(peers):
        packets = peer.drain()
        is_g722 = position == 2
        spec = G722 if is_g722 else PCMU
        assert {packet.payload_type for packet in packets} == {spec.payload_type}
        steps = [(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(packets)]
        assert sum(step == 160 for step in steps) >= 0.8 * len(steps)
        decoder = create_decoder(spec)
        audio = np.concatenate([as_samples(decoder.decode(bytes(p.payload))) for p in packets[15:]])
        spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
        rate = spec.sample_rate

        def level(
            frequency: float,
            spectrum: np.ndarray = spectrum,
            rate: int = rate,
            length: int = len(audio),
        ) -> float:
            index = round(frequency * length / rate)
            return float(spectrum[index - 3 : index + 4].max())

        own = level(frequencies[position])
        others = [level(f) for i, f in enumerate(frequencies) if i != position]
        assert min(others) > 20 * own, (position, own, others)
    for peer in peers:
        peer.close()


async def test_reordered_packets_are_played_in_order_and_losses_concealed(
    manager: SessionManager,
) -> None:
    session = manager.create_session(EventLog())
    source, listener = await legs(session, "pcmu", "pcma")
    listener.send(b"\xd5" * 160, 8)
    encoder = create_encoder(PCMU)
    frames = [
        encoder.encode(np.full(160, 1000 * (index + 1), "<i2").tobytes()) for index in range(8)
    ]
    base_sequence, base_timestamp = 100, 5000
    order = [0, 1, 3, 2, 4, 6, 7]  # 2 arrives after 3; 5 is lost
    for index in order:
        source.send(
            frames[index], sequence=base_sequence + index, timestamp=base_timestamp + 160 * index
        )
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.15)  # the jitter buffer gives up on 5 on the clock
    packets = [packet for packet in listener.drain() if packet.payload_type == 8]
    assert len(packets) == 8  # seven frames and one concealment
    decoder = create_decoder(PCMA)
    levels = [int(as_samples(decoder.decode(bytes(p.payload)))[80]) for p in packets]
    assert levels[:5] == sorted(levels[:5])  # 1..5 in order despite the swap
    assert abs(levels[6] - 7000) < 300 and abs(levels[7] - 8000) < 300
    assert abs(levels[5]) < 6000  # the concealed frame fades out frame 5's predecessor
    steps = {(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(packets)}
    assert steps == {160}
    source.close()
    listener.close()


async def test_timestamps_stay_continuous_across_passthrough_and_mixing(
    manager: SessionManager,
) -> None:
    session = manager.create_session(EventLog())
    alice, bob = await legs(session, "pcmu", "pcmu")
    bob.send(b"\xff" * 160)
    tone_id = ""
    for index in range(60):
        alice.send(b"\x7f" * 160)
        if index == 15:
            tone_id = await create_tone(session, "beep", None, None)
        if index == 40:
            await session.remove_endpoint(tone_id)
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)
    packets = [packet for packet in bob.drain() if packet.payload_type == 0]
    assert len(packets) >= 55
    assert len({packet.ssrc for packet in packets}) == 1
    steps = [(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(packets)]
    assert set(steps) == {160}, steps
    alice.close()
    bob.close()
