"""Playout buffer: audio that arrived faster than real time, waiting to be played frame by frame.

A voice peer receives an application's speech in bursts (TTS runs ahead of real time) and plays
it at one frame per 20 ms tick. Barge-in clears what has not been played yet and must say how
much that was, in bytes, truthfully (RTVBP ``audio.buffer.clear`` answers ``{"len": bytes}``).
"""

from __future__ import annotations


class PlayoutBuffer:
    """A byte FIFO of PCM with a capacity; reads are whole frames only."""

    __slots__ = ("_buffer", "_start", "capacity_bytes", "frame_bytes", "overflow_bytes")

    def __init__(self, frame_bytes: int, capacity_bytes: int = 1 << 20) -> None:
        if frame_bytes <= 0:
            raise ValueError("frame_bytes must be positive")
        if capacity_bytes < frame_bytes:
            raise ValueError("capacity_bytes must hold at least one frame")
        self.frame_bytes = frame_bytes
        self.capacity_bytes = capacity_bytes
        self.overflow_bytes = 0
        """Bytes discarded (oldest first) because the buffer was full."""
        self._buffer = bytearray()
        self._start = 0

    def __len__(self) -> int:
        """Bytes buffered and not yet played."""
        return len(self._buffer) - self._start

    @property
    def buffered_ms(self) -> float:
        """Buffered audio in milliseconds, assuming 20 ms frames."""
        return len(self) / self.frame_bytes * 20.0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append audio; when full, the oldest audio is discarded and counted."""
        self._buffer += data
        excess = len(self) - self.capacity_bytes
        if excess > 0:
            self.overflow_bytes += excess
            self._start += excess
        self._compact()

    def read_frame(self) -> bytes | None:
        """The next whole frame, or None when less than a frame is buffered."""
        end = self._start + self.frame_bytes
        if end > len(self._buffer):
            return None
        frame = bytes(self._buffer[self._start : end])
        self._start = end
        self._compact()
        return frame

    def clear(self) -> int:
        """Discard everything not yet played; returns the number of bytes discarded."""
        discarded = len(self)
        self._buffer.clear()
        self._start = 0
        return discarded

    def _compact(self) -> None:
        # Drop the consumed prefix once it dominates, so reads stay O(frame) amortised.
        if self._start and self._start * 2 >= len(self._buffer):
            del self._buffer[: self._start]
            self._start = 0
