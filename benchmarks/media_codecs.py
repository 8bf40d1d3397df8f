"""Per-20 ms-frame cost of callbridge's audio DSP: codecs, resampling, mixing, tones, files.

Prints microseconds per frame (best of several runs) and, where a baseline exists, the ratio
against it measured in the same process. Not a test: nothing passes or fails.

    .venv/bin/python benchmarks/media_codecs.py [--iterations N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType

import av
import numpy as np

from callbridge.media import g711, mixer
from callbridge.media.audiofile import AudioFileReader
from callbridge.media.avcodecs import G722Decoder, G722Encoder
from callbridge.media.opus import OPUS_COMPLEXITY, OpusDecoder, OpusEncoder
from callbridge.media.pcm import FrameChunker
from callbridge.media.resample import NATIVE_AVAILABLE, Resampler
from callbridge.media.tones import ToneGenerator

REPEATS = 15


def cost_us(action: Callable[[], object], iterations: int) -> float:
    """Best-of-REPEATS time of one call, in microseconds."""
    for _ in range(min(iterations, 50)):
        action()
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(iterations):
            action()
        best = min(best, (time.perf_counter() - start) / iterations)
    return best * 1e6


def voice(rate: int, seconds: float) -> np.ndarray:
    """A speech-like test signal: a gliding harmonic voice with formants, syllables, noise."""
    times = np.arange(int(rate * seconds)) / rate
    pitch = 120 + 40 * np.sin(2 * np.pi * 0.7 * times)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    wave = np.zeros_like(times)
    for harmonic in range(1, 30):
        frequency = harmonic * pitch
        envelope = (
            np.exp(-(((frequency - 700) / 300) ** 2))
            + 0.6 * np.exp(-(((frequency - 1800) / 400) ** 2))
            + 0.3 * np.exp(-(((frequency - 3000) / 500) ** 2))
            + 0.02
        )
        wave += envelope * np.sin(harmonic * phase) * (frequency < rate / 2) / harmonic**0.5
    wave *= np.clip(np.sin(2 * np.pi * 1.5 * times), 0, 1) ** 0.5
    wave += 0.01 * np.random.default_rng(1).standard_normal(len(times))
    samples: np.ndarray = (wave / np.abs(wave).max() * 14000).astype("<i2")
    return samples


def frames_of(samples: np.ndarray, size: int) -> list[bytes]:
    return [samples[i : i + size].tobytes() for i in range(0, len(samples) - size + 1, size)]


class Cycle:
    """Calls `function` on the next item of `items` each time, round and round."""

    def __init__(self, function: Callable[[bytes], object], items: list[bytes]) -> None:
        self.function = function
        self.items = items
        self.index = 0

    def __call__(self) -> object:
        self.index = (self.index + 1) % len(self.items)
        return self.function(self.items[self.index])


def row(label: str, micros: float, baseline: float | None = None, note: str = "") -> None:
    ratio = f"{micros / baseline:6.2f}x" if baseline else "       "
    print(f"  {label:<44} {micros:8.1f} µs  {ratio}  {note}")


def import_audioop() -> ModuleType | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import audioop

            return audioop
    except ImportError:
        return None


def bench_g711(iterations: int) -> None:
    print("G.711 (160 samples)")
    pcm = frames_of(voice(8000, 2.0), 160)
    ulaw = [g711.ulaw_encode(frame) for frame in pcm]
    audioop = import_audioop()
    base_encode = base_decode = None
    if audioop is not None:
        base_encode = cost_us(Cycle(lambda f: audioop.lin2ulaw(f, 2), pcm), iterations)
        base_decode = cost_us(Cycle(lambda f: audioop.ulaw2lin(f, 2), ulaw), iterations)
        row("µ-law encode, audioop (baseline)", base_encode)
        row("µ-law decode, audioop (baseline)", base_decode)
    row("µ-law encode, numpy table", cost_us(Cycle(g711.ulaw_encode, pcm), iterations), base_encode)
    row(
        "µ-law decode, numpy table", cost_us(Cycle(g711.ulaw_decode, ulaw), iterations), base_decode
    )
    row("A-law encode, numpy table", cost_us(Cycle(g711.alaw_encode, pcm), iterations))
    row("µ-law -> A-law, bytes.translate", cost_us(Cycle(g711.ulaw_to_alaw, ulaw), iterations))


def bench_g722(iterations: int) -> None:
    print("G.722 64 kbit/s (320 samples, PyAV)")
    pcm = frames_of(voice(16000, 2.0), 320)
    encoder = G722Encoder()
    payloads = [encoder.encode(frame) for frame in pcm]
    row("encode", cost_us(Cycle(G722Encoder().encode, pcm), iterations))
    row("decode", cost_us(Cycle(G722Decoder().decode, payloads), iterations))


def bench_opus(iterations: int) -> None:
    print("Opus 24 kbit/s VOIP (20 ms frames, libopus through ctypes), speech-like signal")
    for rate in (48000, 8000):
        pcm = frames_of(voice(rate, 2.0), rate // 50)
        for complexity in (0, 3, 5, 10):
            encoder = OpusEncoder(complexity=complexity, sample_rate=rate)
            micros = cost_us(Cycle(encoder.encode, pcm), iterations)
            fresh = OpusEncoder(complexity=complexity, sample_rate=rate)
            size = np.mean([len(fresh.encode(frame)) for frame in pcm])
            default = " (default)" if complexity == OPUS_COMPLEXITY else ""
            row(
                f"encode at {rate // 1000} kHz, complexity {complexity}{default}",
                micros,
                note=f"{size * 400 / 1000:.1f} kbit/s",
            )
        encoder = OpusEncoder(sample_rate=rate)
        payloads = [encoder.encode(frame) for frame in pcm]
        decoder = OpusDecoder(rate)
        samples = rate // 50
        row(f"decode at {rate // 1000} kHz", cost_us(Cycle(decoder.decode, payloads), iterations))
        row(
            f"conceal one lost frame at {rate // 1000} kHz (PLC)",
            cost_us(partial(decoder.conceal, samples), iterations),
        )


class PyAvOpus:
    """The former Opus path, kept here as the baseline: PyAV's libopus at 48 kHz."""

    def __init__(self) -> None:
        self.encoder = av.CodecContext.create("libopus", "w")
        self.encoder.thread_count = 1
        self.encoder.sample_rate, self.encoder.layout, self.encoder.format = 48000, "mono", "s16"
        self.encoder.bit_rate = 24000
        self.encoder.options = {
            "application": "voip",
            "frame_duration": "20",
            "compression_level": "5",
        }
        self.encoder.open()
        self.decoder = av.CodecContext.create("libopus", "r")
        self.decoder.thread_count = 1
        self.decoder.sample_rate, self.decoder.layout = 48000, "mono"
        self.decoder.open()
        self.pts = 0

    def encode(self, pcm: bytes) -> bytes:
        frame = av.AudioFrame.from_ndarray(
            np.frombuffer(pcm, "<i2").reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate, frame.pts = 48000, self.pts
        self.pts += 960
        return b"".join(bytes(packet) for packet in self.encoder.encode(frame))

    def decode(self, payload: bytes) -> bytes:
        frames = self.decoder.decode(av.Packet(payload))
        return b"".join(frame.to_ndarray().astype("<i2").tobytes() for frame in frames)


def bench_pcmu_opus(iterations: int) -> None:
    """The transcoding work of one PCMU <-> Opus packet, each way, as the engine does it."""
    print("PCMU <-> Opus per packet (decode + resample + encode; ratio against the former path)")
    phone = frames_of(voice(8000, 2.0), 160)
    ulaw = [g711.ulaw_encode(frame) for frame in phone]
    opus_at = {rate: OpusEncoder(sample_rate=rate) for rate in (8000, 48000)}
    wide = frames_of(voice(48000, 2.0), 960)
    opus_packets = [opus_at[48000].encode(frame) for frame in wide]
    former = PyAvOpus()
    up, down = Resampler(8000, 48000), Resampler(48000, 8000)
    ways: dict[str, dict[str, Callable[[bytes], object]]] = {
        "former: PyAV libopus at 48 kHz + resampler": {
            "PCMU -> Opus": lambda p: former.encode(up.resample(g711.ulaw_decode(p))),
            "Opus -> PCMU": lambda p: g711.ulaw_encode(down.resample(former.decode(p))),
        },
        "ctypes libopus at 48 kHz + resampler": {
            "PCMU -> Opus": lambda p: opus_at[48000].encode(up.resample(g711.ulaw_decode(p))),
            "Opus -> PCMU": lambda p: g711.ulaw_encode(down.resample(wide_decoder.decode(p))),
        },
        "now: libopus at 8 kHz, no resampler": {
            "PCMU -> Opus": lambda p: opus_at[8000].encode(g711.ulaw_decode(p)),
            "Opus -> PCMU": lambda p: g711.ulaw_encode(narrow_decoder.decode(p)),
        },
    }
    wide_decoder, narrow_decoder = OpusDecoder(48000), OpusDecoder(8000)
    baseline: float | None = None
    for label, directions in ways.items():
        costs = [
            cost_us(Cycle(directions["PCMU -> Opus"], ulaw), iterations),
            cost_us(Cycle(directions["Opus -> PCMU"], opus_packets), iterations),
        ]
        mean = sum(costs) / 2
        baseline = baseline or mean
        row(label, mean, baseline, f"PCMU->Opus {costs[0]:.1f}, Opus->PCMU {costs[1]:.1f} µs")


def bench_resample(iterations: int) -> None:
    print("Resampling one 20 ms frame (polyphase FIR, native and its numpy twin; libswresample")
    print("  through PyAV as callbridge used before; baseline: np.interp linear, no anti-alias")
    print("  filter, as rtpbridge does)")
    for in_rate, out_rate in [
        (8000, 48000),
        (48000, 8000),
        (8000, 16000),
        (16000, 8000),
        (16000, 24000),
        (24000, 16000),
    ]:
        source = frames_of(voice(in_rate, 1.0), in_rate // 50)
        baseline = cost_us(Cycle(linear_resampler(in_rate, out_rate), source), iterations)
        label = f"{in_rate // 1000}k -> {out_rate // 1000}k"
        swr = cost_us(Cycle(swr_resampler(in_rate, out_rate), source), iterations)
        row(f"{label} libswresample (former)", swr, baseline)
        for native in (True, False) if NATIVE_AVAILABLE else (False,):
            resampler = Resampler(in_rate, out_rate, native=native)
            micros = cost_us(Cycle(resampler.resample, source), iterations)
            name = "native" if native else "numpy"
            row(f"{label} {name}", micros, baseline, f"delay {resampler.delay_ms:.2f} ms")


def swr_resampler(in_rate: int, out_rate: int) -> Callable[[bytes], bytes]:
    """libswresample through PyAV, one frame per call (without the FIFO that kept its output
    length steady, so slightly cheaper than the former path)."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=out_rate)

    def resample(frame: bytes) -> bytes:
        samples = np.frombuffer(frame, "<i2").reshape(1, -1)
        audio = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        audio.sample_rate = in_rate
        return b"".join(
            bytes(out.planes[0])[: out.samples * 2] for out in resampler.resample(audio)
        )

    return resample


def naive_mix(frames: dict[int, bytes]) -> dict[int, bytes]:
    """The baseline N-1 mix: every destination sums its sources separately (O(N²))."""
    mixes = {}
    for destination in frames:
        total = np.zeros(160, dtype=np.int32)
        for source, frame in frames.items():
            if source != destination:
                total += np.frombuffer(frame, dtype="<i2")
        mixes[destination] = np.clip(total, -32768, 32767).astype("<i2").tobytes()
    return mixes


def linear_resampler(in_rate: int, out_rate: int) -> Callable[[bytes], bytes]:
    """Stateless per-frame linear interpolation, the baseline (no anti-alias filter)."""
    positions = np.arange(out_rate // 50) * in_rate / out_rate
    indexes = np.arange(in_rate // 50)

    def resample(frame: bytes) -> bytes:
        values = np.frombuffer(frame, "<i2")
        return bytes(np.interp(positions, indexes, values).astype("<i2").tobytes())

    return resample


def bench_mix(iterations: int) -> None:
    path = "C" if mixer.NATIVE_AVAILABLE else "numpy: the _mix extension is not built"
    print(
        f"N-1 mix of one tick (int16 frames of 160 samples; baseline: sum per destination; {path})"
    )
    rng = np.random.default_rng(2)
    for parties in (3, 10):
        frames = {
            party: rng.integers(-8000, 8000, 160).astype("<i2").tobytes()
            for party in range(parties)
        }
        keys = list(frames)

        baseline = cost_us(partial(naive_mix, frames), iterations)
        micros = cost_us(partial(mixer.mix_minus, frames, keys, 160), iterations)
        row(f"{parties} parties, naive sum per destination (baseline)", baseline)
        row(f"{parties} parties, mix_minus", micros, baseline)


def bench_tones_and_framing(iterations: int) -> None:
    print("Tones, framing, files (one 20 ms frame)")
    row(
        "tone frame, dual tone (precomputed period)",
        cost_us(ToneGenerator("ringing").next_frame, iterations),
    )
    row(
        "tone frame, 1234.567 Hz sine (computed per frame)",
        cost_us(ToneGenerator("sine", 1234.567).next_frame, iterations),
    )
    chunker = FrameChunker(320)
    half = bytes(170)
    row("FrameChunker.push of 170 bytes", cost_us(lambda: chunker.push(half), iterations))
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "voice.wav"
        write_wav(path, voice(44100, 10.0), 44100)
        best = float("inf")
        for _ in range(REPEATS):
            with AudioFileReader(path, sample_rate=8000) as reader:
                start = time.perf_counter()
                frames = sum(1 for _ in reader)
                best = min(best, (time.perf_counter() - start) / frames)
        row("audio file frame, WAV 44.1 kHz -> 8 kHz", best * 1e6)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=500, help="calls per timed run")
    iterations = parser.parse_args().iterations
    print(f"callbridge media DSP, µs per 20 ms frame (best of {REPEATS} x {iterations} calls)")
    bench_g711(iterations)
    bench_g722(iterations)
    bench_opus(max(iterations // 5, 20))
    bench_pcmu_opus(max(iterations // 5, 20))
    bench_resample(iterations)
    bench_mix(iterations)
    bench_tones_and_framing(iterations)


if __name__ == "__main__":
    main()
