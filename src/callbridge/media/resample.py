"""Streaming sample-rate conversion of mono int16 PCM with a steady output length.

Real-time audio needs a resampler that keeps filter state across chunks (a fresh filter per
chunk clicks at every boundary) and returns as much audio as it is given, every call. This one
is a polyphase FIR: a Kaiser-windowed sinc designed once per rate pair (`design`), applied to a
buffer of the stream's history plus the new input. Every call, from the first, returns
round(total_in * out_rate / in_rate) minus what was already returned, and the audio is late by
`delay_samples` (about 2.5 ms; half the filter).

The filter spans `TAPS_AT_LOWER_RATE` samples of the lower of the two rates, its cutoff is
`ROLLOFF` of the lower Nyquist frequency: for a phone's 8 kHz that is flat within 0.5 dB to
3.4 kHz, and what would alias or image from above 4.4 kHz is about 90 dB down.

The inner loop runs in the `_polyphase` extension when it is built (a few µs per 20 ms frame);
without it, or with `CALLBRIDGE_NATIVE=0`, the same filter runs in numpy (tens of µs). Calling
libswresample through PyAV, as this module once did, cost 35-40 µs per frame, most of it
PyAV's frame wrapping.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Final, NamedTuple

import numpy as np
from numpy.typing import NDArray

from callbridge.media.native import load_native
from callbridge.media.pcm import SAMPLE_DTYPE, Buffer, Samples, as_samples

__all__ = ["NATIVE_AVAILABLE", "ROLLOFF", "TAPS_AT_LOWER_RATE", "Filter", "Resampler", "design"]

TAPS_AT_LOWER_RATE: Final = 40
ROLLOFF: Final = 0.92
_KAISER_BETA: Final = 8.0
_PHASE_CLASSES_MAX: Final = 8
_EMPTY: Final[Samples] = np.zeros(0, dtype=SAMPLE_DTYPE)


_native: Any = load_native("callbridge.media._polyphase")
NATIVE_AVAILABLE: Final = _native is not None
"""Whether the compiled inner loop is in use by default."""


class Filter(NamedTuple):
    """A polyphase filter: `phases[p]` weighs `taps` input samples, oldest first."""

    up: int
    down: int
    taps: int
    phases: NDArray[np.float32]
    delay_samples: int
    """Group delay in output samples."""


@lru_cache(maxsize=64)
def design(in_rate: int, out_rate: int) -> Filter:
    """The filter for `in_rate` -> `out_rate` Hz (cached: one table per rate pair)."""
    common = math.gcd(in_rate, out_rate)
    up, down = out_rate // common, in_rate // common
    ratio = min(1.0, up / down)
    taps = math.ceil(TAPS_AT_LOWER_RATE / ratio)
    cutoff = ROLLOFF * ratio / 2
    """In cycles per input sample."""
    length = up * taps
    times = np.arange(length) - (length - 1) / 2
    prototype = 2 * cutoff * np.sinc(2 * cutoff * times / up) * np.kaiser(length, _KAISER_BETA)
    # Output at upsampled index up*i + p is sum_k x[i - k] * prototype[p + up*k]; each row is
    # reversed so that it meets the window oldest sample first.
    phases = prototype.reshape(taps, up).T[:, ::-1]
    return Filter(
        up,
        down,
        taps,
        np.ascontiguousarray(phases, dtype=np.float32),
        round((length - 1) / 2 / down),
    )


def _run_numpy(
    table: Filter, buffer: NDArray[np.float32], phase: int, start: int, output: Samples
) -> tuple[int, int]:
    """The numpy twin of `_polyphase.run` (same arguments, same results within rounding).

    Outputs `up` apart share a phase and their windows start `down` samples apart, so each of
    the `up` classes is one matrix-vector product over a strided view of the buffer (`buffer`
    must be contiguous; the caller builds it fresh). Ratios with many phases (44.1 kHz) gather
    every output's window instead.
    """
    up, down, taps = table.up, table.down, table.taps
    count = len(output)
    item = buffer.itemsize
    if up > _PHASE_CLASSES_MAX:
        positions = phase + np.arange(count) * down
        windows = np.ndarray((len(buffer) - taps + 1, taps), np.float32, buffer, 0, (item, item))
        gathered = windows[start + positions // up]
        values = np.einsum("jk,jk->j", table.phases[positions % up], gathered)
        output[:] = np.clip(np.rint(values), -32768, 32767)
    else:
        for first in range(min(up, count)):
            position = phase + first * down
            rows = np.ndarray(
                (len(range(first, count, up)), taps),
                np.float32,
                buffer,
                (start + position // up) * item,
                (down * item, item),
            )
            values = np.dot(rows, table.phases[position % up])
            output[first::up] = np.clip(np.rint(values), -32768, 32767)
    end = phase + count * down
    return end % up, start + end // up


class Resampler:
    """Anti-aliased streaming resampler of mono int16 PCM from `in_rate` to `out_rate` Hz.

    Each call with N input samples returns round(N * out_rate / in_rate) samples, the rounding
    remainder carried to the next call. Filter state carries across calls; call `reset` only at
    a stream boundary. Equal rates pass audio through untouched. `native` picks the compiled
    inner loop (None: it when built) or numpy (False).
    """

    __slots__ = (
        "_buffer",
        "_filter",
        "_in_count",
        "_native",
        "_out_count",
        "_phase",
        "_start",
        "delay_samples",
        "in_rate",
        "out_rate",
    )

    def __init__(self, in_rate: int, out_rate: int, *, native: bool | None = None) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError("sample rates must be positive")
        if native and _native is None:
            raise ValueError("the native resampler is not built or is disabled")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._native = _native if native is None else (_native if native else None)
        self._filter: Filter | None = None if in_rate == out_rate else design(in_rate, out_rate)
        self.delay_samples = 0 if self._filter is None else self._filter.delay_samples
        """Added delay, in output samples (zero when the rates are equal)."""
        self._in_count = self._out_count = self._phase = self._start = 0
        self._buffer: NDArray[np.float32] = np.zeros(0, dtype=np.float32)
        self.reset()

    @property
    def native(self) -> bool:
        """Whether this stream runs the compiled inner loop."""
        return self._native is not None

    @property
    def delay_ms(self) -> float:
        """Added delay in milliseconds."""
        return self.delay_samples * 1000 / self.out_rate

    def resample(self, pcm: Buffer) -> bytes:
        """Resample int16 little-endian PCM bytes."""
        if self._filter is None:
            return bytes(pcm)
        return self.resample_array(as_samples(pcm)).tobytes()

    def resample_array(self, samples: Samples) -> Samples:
        """Resample int16 samples; returns a new array (or `samples` itself for equal rates)."""
        table = self._filter
        if table is None:
            return samples
        count = self._take(len(samples))
        if not len(samples):
            return _EMPTY
        kept = min(self._start, len(self._buffer))
        buffer = np.concatenate((self._buffer[kept:], samples), dtype=np.float32)
        output = np.empty(count, dtype=SAMPLE_DTYPE)
        if self._native is not None:
            self._phase, start = self._native.run(
                table.phases, table.up, table.down, table.taps, buffer,
                self._phase, self._start - kept, output,
            )  # fmt: skip
        else:
            self._phase, start = _run_numpy(table, buffer, self._phase, self._start - kept, output)
        self._buffer, self._start = buffer, start
        return output

    def reset(self) -> None:
        """Forget all state (a new stream starts): the next call is primed like the first."""
        self._in_count = 0
        self._out_count = 0
        self._phase = 0
        self._start = 0
        # The history the first output's window reaches back into: silence.
        taps = 0 if self._filter is None else self._filter.taps
        self._buffer = np.zeros(max(0, taps - 1), dtype=np.float32)

    def _take(self, in_samples: int) -> int:
        """Output samples owed for `in_samples` more input, rounding on the running total."""
        self._in_count += in_samples
        target = (self._in_count * self.out_rate + self.in_rate // 2) // self.in_rate
        count = target - self._out_count
        self._out_count = target
        seconds = self._in_count // self.in_rate
        if seconds:
            self._in_count -= seconds * self.in_rate
            self._out_count -= seconds * self.out_rate
        return count
