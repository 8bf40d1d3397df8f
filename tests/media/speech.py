"""Real speech with a known timeline, for VAD tests and the VAD benchmark.

espeak-ng speaks a few sentences; they are laid out with silences between them on a 16 kHz
timeline, with white noise added at a given signal-to-noise ratio. The speech intervals are
where the synthesized waveform is really voiced (espeak's own padding is trimmed off).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt

from callbridge.media.pcm import as_samples
from callbridge.media.resample import Resampler

RATE = 16000
SENTENCES = (
    "Hello, thank you for calling. How can I help you today?",
    "I would like to check the status of my order, please.",
    "Let me look that up for you, it will only take a moment.",
)
GAPS_S = (1.0, 1.6, 1.2, 1.8)
"""Silence before the first sentence, between sentences, and after the last."""


@dataclass(frozen=True)
class SpeechTimeline:
    samples: npt.NDArray[np.int16]
    """16 kHz mono."""
    utterances: tuple[tuple[float, float], ...]
    """(onset, offset) of each sentence, seconds from the start."""


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


@cache
def _spoken(sentence: str) -> npt.NDArray[np.int16]:
    """One sentence at 16 kHz, trimmed to where its voice starts and ends."""
    output = subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "160", "--stdout", sentence],
        check=True,
        capture_output=True,
        timeout=30,
    ).stdout
    with wave.open(io.BytesIO(output)) as reader:
        rate = reader.getframerate()
        pcm = reader.readframes(reader.getnframes())
    pcm = pcm[: len(pcm) - len(pcm) % 2]
    audio = as_samples(Resampler(rate, RATE).resample(pcm)) if rate != RATE else as_samples(pcm)
    loud = np.flatnonzero(np.abs(audio.astype(np.int32)) > 300)
    return audio[loud[0] : loud[-1] + 1].copy()


@cache
def speech_timeline(snr_db: float = 20.0, seed: int = 7) -> SpeechTimeline:
    """The sentences with `GAPS_S` around them, plus white noise `snr_db` below the speech."""
    parts: list[npt.NDArray[np.int16]] = []
    utterances: list[tuple[float, float]] = []
    position = 0
    for index, sentence in enumerate(SENTENCES):
        gap = np.zeros(round(GAPS_S[index] * RATE), dtype=np.int16)
        spoken = _spoken(sentence)
        parts += [gap, spoken]
        position += gap.size
        utterances.append((position / RATE, (position + spoken.size) / RATE))
        position += spoken.size
    parts.append(np.zeros(round(GAPS_S[-1] * RATE), dtype=np.int16))
    clean = np.concatenate(parts).astype(np.float64)
    voiced = np.concatenate([_spoken(sentence) for sentence in SENTENCES]).astype(np.float64)
    speech_rms = float(np.sqrt(np.mean(voiced**2)))
    noise_rms = speech_rms / (10 ** (snr_db / 20))
    noise = np.random.default_rng(seed).normal(0.0, noise_rms, clean.size)
    mixed = np.clip(clean + noise, -32768, 32767).astype(np.int16)
    return SpeechTimeline(mixed, tuple(utterances))
