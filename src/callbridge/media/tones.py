"""Call-progress and test tones, one frame at a time, with continuous phase.

As in rtpbridge: amplitude 8000, the sum of a dual tone halved; ringback 440+480 Hz 2 s on /
4 s off (silence frames during off), ringing 440+480 Hz continuous, busy 480+620 Hz 0.5 s /
0.5 s, beep 1000 Hz, sine at any frequency (440 Hz by default). Each burst starts at phase 0.

A tone whose frequency is a simple fraction of the sample rate repeats exactly (440 Hz at
8000 Hz every 200 samples), so one period is computed once and each frame is a slice of it.
Frequencies with a longer period are computed per frame from a phase carried in float64.
"""

from __future__ import annotations

from fractions import Fraction
from math import lcm, pi
from typing import Final, Literal, get_args

import numpy as np
from numpy.typing import NDArray

from callbridge.media.pcm import DEFAULT_PTIME_MS, SAMPLE_BYTES, SAMPLE_DTYPE, frame_samples

ToneKind = Literal["ringback", "ringing", "busy", "beep", "sine"]

TONE_AMPLITUDE: Final = 8000
"""Peak amplitude of every tone (the two halves of a dual tone add up to it)."""
DEFAULT_SINE_HZ: Final = 440.0
MIN_FREQUENCY_HZ: Final = 20.0
MAX_FREQUENCY_HZ: Final = 20000.0
_MAX_TABLE_SAMPLES: Final = 16000
"""Longest precomputed period, in samples (32 KB of PCM)."""

# kind -> (frequencies in Hz, on ms, off ms); on None means continuous.
_SHAPES: Final[dict[str, tuple[tuple[float, ...], int | None, int]]] = {
    "ringback": ((440.0, 480.0), 2000, 4000),
    "ringing": ((440.0, 480.0), None, 0),
    "busy": ((480.0, 620.0), 500, 500),
    "beep": ((1000.0,), None, 0),
}


class ToneGenerator:
    """Frames of one tone; `next_frame` returns None once `duration_ms` has been played."""

    __slots__ = (
        "_cycle_position",
        "_cycle_samples",
        "_frames_left",
        "_offset",
        "_on_samples",
        "_phases",
        "_silence",
        "_steps",
        "_table",
        "_times",
        "duration_ms",
        "frame_samples",
        "frequencies",
        "kind",
        "sample_rate",
    )

    def __init__(
        self,
        kind: ToneKind,
        frequency_hz: float | None = None,
        duration_ms: int | None = None,
        sample_rate: int = 8000,
        ptime_ms: int = DEFAULT_PTIME_MS,
    ) -> None:
        if kind not in get_args(ToneKind):
            raise ValueError(
                f"unknown tone {kind!r}; expected one of {', '.join(get_args(ToneKind))}"
            )
        if frequency_hz is not None:
            if kind != "sine":
                raise ValueError(f"frequency_hz applies to sine tones only, not {kind!r}")
            if not MIN_FREQUENCY_HZ <= frequency_hz <= MAX_FREQUENCY_HZ:
                raise ValueError(
                    f"tone frequency must be {MIN_FREQUENCY_HZ:g}..{MAX_FREQUENCY_HZ:g} Hz,"
                    f" got {frequency_hz:g}"
                )
        if duration_ms is not None and duration_ms <= 0:
            raise ValueError(f"tone duration must be positive, got {duration_ms} ms")
        self.kind = kind
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples(sample_rate, ptime_ms)
        self.duration_ms = duration_ms
        """Length of the tone, rounded up to whole frames; None plays forever."""
        if kind == "sine":
            frequencies: tuple[float, ...] = (float(frequency_hz or DEFAULT_SINE_HZ),)
            on_ms, off_ms = None, 0
        else:
            frequencies, on_ms, off_ms = _SHAPES[kind]
        self.frequencies = frequencies
        self._on_samples = None if on_ms is None else on_ms * sample_rate // 1000
        self._cycle_samples = 0 if on_ms is None else (on_ms + off_ms) * sample_rate // 1000
        self._cycle_position = 0
        self._frames_left = None if duration_ms is None else -(-duration_ms // ptime_ms)
        self._silence = bytes(self.frame_samples * SAMPLE_BYTES)
        self._steps = np.array([2 * pi * f / sample_rate for f in frequencies])
        self._times = np.arange(self.frame_samples, dtype=np.float64)
        self._phases = np.zeros(len(frequencies))
        self._offset = 0
        self._table = self._build_table()

    @property
    def finished(self) -> bool:
        """True once `duration_ms` of frames has been returned."""
        return self._frames_left == 0

    def next_frame(self) -> bytes | None:
        """The next frame of int16 little-endian PCM, or None when finished."""
        if self._frames_left is not None:
            if self._frames_left == 0:
                return None
            self._frames_left -= 1
        if self._on_samples is not None:
            position = self._cycle_position
            self._cycle_position = (position + self.frame_samples) % self._cycle_samples
            if position >= self._on_samples:
                return self._silence
            if position == 0:
                self._offset = 0
                self._phases[:] = 0.0
        return self._tone_frame()

    def _tone_frame(self) -> bytes:
        size = self.frame_samples
        if self._table is not None:
            start = self._offset
            self._offset = (start + size) % (len(self._table) // SAMPLE_BYTES - size)
            return self._table[start * SAMPLE_BYTES : (start + size) * SAMPLE_BYTES]
        angles = self._phases[:, None] + self._steps[:, None] * self._times
        self._phases = (self._phases + self._steps * size) % (2 * pi)
        return self._to_pcm(np.sin(angles).sum(axis=0))

    def _build_table(self) -> bytes | None:
        """One exact period followed by one frame more, so every frame is one slice; or None."""
        period = 1
        for frequency in self.frequencies:
            ratio = Fraction(frequency).limit_denominator(100) / self.sample_rate
            if float(ratio) * self.sample_rate != frequency:
                return None
            period = lcm(period, ratio.denominator)  # sin(2π·ratio·n) repeats every denominator
        if period > _MAX_TABLE_SAMPLES:
            return None
        times = np.arange(period + self.frame_samples, dtype=np.float64)
        return self._to_pcm(np.sin(self._steps[:, None] * times).sum(axis=0))

    def _to_pcm(self, waves: NDArray[np.float64]) -> bytes:
        scaled = np.rint(waves * (TONE_AMPLITUDE / len(self.frequencies)))
        return scaled.astype(SAMPLE_DTYPE).tobytes()


DTMF_TONE_HZ: Final = {
    digit: (row, column)
    for digits, row in zip(("123A", "456B", "789C", "*0#D"), (697, 770, 852, 941), strict=True)
    for digit, column in zip(digits, (1209, 1336, 1477, 1633), strict=True)
}
"""The (low, high) frequency pair of each DTMF key, Hz."""
_DTMF_AMPLITUDE: Final = TONE_AMPLITUDE // 2
"""Peak of each of the two tones of an in-band digit (the pair peaks at TONE_AMPLITUDE)."""
_DTMF_PAUSE_MS: Final = 60
"""Silence after an in-band digit, so that two equal digits stay two."""


def dtmf_tone_frames(digit: str, duration_ms: int, sample_rate: int) -> list[bytes]:
    """An in-band DTMF digit as 20 ms PCM frames: the tone pair, then a short pause.

    Raises KeyError for a character that is not a DTMF key.
    """
    low, high = DTMF_TONE_HZ[digit]
    samples_per_frame = frame_samples(sample_rate, DEFAULT_PTIME_MS)
    tone_frames = max(1, -(-duration_ms // DEFAULT_PTIME_MS))
    times = np.arange(tone_frames * samples_per_frame, dtype=np.float64) / sample_rate
    wave = np.sin(2 * pi * low * times) + np.sin(2 * pi * high * times)
    pcm = np.rint(wave * _DTMF_AMPLITUDE).astype(SAMPLE_DTYPE).tobytes()
    step = samples_per_frame * SAMPLE_BYTES
    frames = [pcm[offset : offset + step] for offset in range(0, len(pcm), step)]
    frames.extend([bytes(step)] * (_DTMF_PAUSE_MS // DEFAULT_PTIME_MS))
    return frames
