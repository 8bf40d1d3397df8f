"""PCM framing: all audio inside callbridge is mono signed 16-bit little-endian (L16).

Helpers here give frame sizes, silence, zero-copy numpy views of PCM bytes, and a chunker that
turns arbitrary-length byte writes (a WebSocket message, a TTS burst) into exact frames.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

SAMPLE_BYTES: Final = 2
"""Bytes per sample (signed 16-bit)."""

DEFAULT_PTIME_MS: Final = 20
"""Packet time of every frame on the media clock, in milliseconds."""

SAMPLE_DTYPE: Final[np.dtype[np.int16]] = np.dtype("<i2")
"""numpy dtype of PCM samples: little-endian int16, whatever the host byte order."""

Buffer = bytes | bytearray | memoryview
Samples = NDArray[np.int16]


def frame_samples(sample_rate: int, ptime_ms: int = DEFAULT_PTIME_MS) -> int:
    """Samples in one frame of `ptime_ms` at `sample_rate` Hz (160 for 8000 Hz, 20 ms)."""
    if sample_rate <= 0 or ptime_ms <= 0:
        raise ValueError("sample_rate and ptime_ms must be positive")
    samples, remainder = divmod(sample_rate * ptime_ms, 1000)
    if remainder:
        raise ValueError(f"{ptime_ms} ms at {sample_rate} Hz is not a whole number of samples")
    return samples


def frame_bytes(sample_rate: int, ptime_ms: int = DEFAULT_PTIME_MS) -> int:
    """Bytes in one frame of `ptime_ms` at `sample_rate` Hz (320 for 8000 Hz, 20 ms)."""
    return frame_samples(sample_rate, ptime_ms) * SAMPLE_BYTES


def silence(samples: int) -> bytes:
    """`samples` samples of digital silence, as bytes."""
    return bytes(samples * SAMPLE_BYTES)


def as_samples(pcm: Buffer) -> Samples:
    """View PCM bytes as int16 samples without copying (read-only when `pcm` is bytes)."""
    if len(pcm) % SAMPLE_BYTES:
        raise ValueError(f"PCM length {len(pcm)} bytes is not a whole number of samples")
    return np.frombuffer(pcm, dtype=SAMPLE_DTYPE)


def to_bytes(samples: NDArray[np.integer] | NDArray[np.floating]) -> bytes:
    """PCM bytes of `samples`, converted to little-endian int16 (no saturation: clip first)."""
    return samples.astype(SAMPLE_DTYPE, copy=False).tobytes()


def fit_frame(pcm: bytes, samples: int) -> bytes:
    """Pad with silence or truncate `pcm` to exactly `samples` samples (other ptimes in)."""
    size = samples * SAMPLE_BYTES
    if len(pcm) == size:
        return pcm
    if len(pcm) > size:
        return pcm[:size]
    return pcm + bytes(size - len(pcm))


def swap_byte_order(pcm: Buffer) -> bytes:
    """Swap the two bytes of every sample (little-endian L16 <-> big-endian L16 of RFC 3551)."""
    return as_samples(pcm).byteswap().tobytes()


class FrameChunker:
    """Accumulates PCM bytes of any length and hands them back as exact frames.

    An odd byte or a partial frame is kept until the next `push`. `clear` discards it for
    barge-in and says how many bytes were dropped.
    """

    __slots__ = ("_pending", "frame_bytes")

    def __init__(self, frame_bytes: int) -> None:
        if frame_bytes <= 0 or frame_bytes % SAMPLE_BYTES:
            raise ValueError("frame_bytes must be a positive whole number of samples")
        self.frame_bytes = frame_bytes
        self._pending = bytearray()

    @property
    def pending_bytes(self) -> int:
        """Bytes held back because they do not make a whole frame yet."""
        return len(self._pending)

    def push(self, data: Buffer) -> list[bytes]:
        """Add `data` and return every frame now complete, oldest first."""
        size = self.frame_bytes
        if not self._pending:
            # Fast path: nothing held back, so slice `data` directly.
            if len(data) == size:
                return [bytes(data)]
            with memoryview(data) as view:
                whole = len(view) - len(view) % size
                frames = [view[start : start + size].tobytes() for start in range(0, whole, size)]
                self._pending += view[whole:]
            return frames
        self._pending += data
        whole = len(self._pending) - len(self._pending) % size
        if not whole:
            return []
        with memoryview(self._pending) as view:
            frames = [view[start : start + size].tobytes() for start in range(0, whole, size)]
        del self._pending[:whole]
        return frames

    def flush(self, pad: bool = True) -> bytes | None:
        """Return the partial frame held back (padded with silence to a frame if `pad`), or None."""
        if not self._pending:
            return None
        tail = bytes(self._pending)
        self._pending.clear()
        if pad:
            tail += bytes(self.frame_bytes - len(tail))
        return tail

    def clear(self) -> int:
        """Discard the partial frame held back; returns the number of bytes discarded."""
        discarded = len(self._pending)
        self._pending.clear()
        return discarded
