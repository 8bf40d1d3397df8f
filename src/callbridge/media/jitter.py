"""Per-source reorder (jitter) buffer for the decoded paths, keyed by RTP sequence number.

In-order packets come out at once (no added delay on a clean network). After a gap, later
packets are held until the missing one arrives, the buffer holds more than `depth_packets`, or
the oldest held packet has waited `max_delay_ms`; then the missing slots are released as lost
(`None`) so the caller can conceal them. Packets older than the playout point are dropped and
counted as late or duplicate. A sequence jump beyond `resync_threshold` either way, or a new
SSRC, restarts the buffer instead of waiting forever. Pure logic: times are passed in, seconds.
"""

from __future__ import annotations

from typing import Final, Generic, TypeVar

from callbridge.media.errors import MediaError

__all__ = ["JitterBuffer", "JitterError", "Release"]

T = TypeVar("T")

Release = list[tuple[int, T | None]]
"""Released slots in playout order: (16-bit sequence, item), item None for a lost packet."""

_HISTORY_MASK: Final = (1 << 64) - 1  # bit i set: sequence (playout point - 1 - i) was released


class JitterError(MediaError, ValueError):
    """A buffer configured with impossible limits."""


class JitterBuffer(Generic[T]):
    """Reorders one source's packets by sequence number (see the module docstring).

    Counters: `received` (pushes), `released` (items handed out), `reordered` (accepted below
    the highest sequence seen), `late` (older than the playout point, slot already given up),
    `duplicate`, `lost` (slots released as None), `resyncs`.
    """

    __slots__ = (
        "_highest",
        "_history",
        "_max_delay",
        "_next",
        "_pending",
        "_ssrc",
        "depth_packets",
        "duplicate",
        "late",
        "lost",
        "received",
        "released",
        "reordered",
        "resync_threshold",
        "resyncs",
    )

    def __init__(
        self,
        *,
        depth_packets: int = 3,
        max_delay_ms: float | None = 60.0,
        resync_threshold: int = 100,
    ) -> None:
        if depth_packets < 0 or resync_threshold < 1 or (max_delay_ms or 0.0) < 0:
            raise JitterError("depth_packets and max_delay_ms must be >= 0, resync_threshold >= 1")
        self.depth_packets = depth_packets
        self.resync_threshold = resync_threshold
        self._max_delay = None if max_delay_ms is None else max_delay_ms / 1000.0
        self._pending: dict[int, tuple[T, float]] = {}
        self._next: int | None = None  # extended sequence of the playout point
        self._highest = 0
        self._history = 0
        self._ssrc: int | None = None
        self.received = self.released = self.reordered = 0
        self.late = self.duplicate = self.lost = self.resyncs = 0

    @property
    def held(self) -> int:
        """Packets waiting for a gap to fill."""
        return len(self._pending)

    def reset(self) -> None:
        """Drop held packets and start over with the next push (counters are kept)."""
        self._pending.clear()
        self._next = None
        self._history = 0
        self._ssrc = None

    def push(self, sequence: int, item: T, now: float, ssrc: int | None = None) -> Release[T]:
        """Add one packet; returns the slots that can be played now, in order."""
        self.received += 1
        if ssrc is not None and ssrc != self._ssrc:
            if self._ssrc is None:
                self._ssrc = ssrc
            else:
                return self._resync(sequence, item, ssrc)
        playout = self._next
        if playout is None:
            self._next = self._highest = playout = sequence
        extended = playout + (((sequence - playout + 0x8000) & 0xFFFF) - 0x8000)
        delta = extended - playout
        if delta == 0 and not self._pending:
            self._next = extended + 1
            self._highest = extended
            self._history = ((self._history << 1) | 1) & _HISTORY_MASK
            self.released += 1
            return [(sequence, item)]
        if delta > self.resync_threshold or delta < -self.resync_threshold:
            return self._resync(sequence, item, ssrc)
        if delta < 0:
            back = -delta - 1
            if back < 64 and self._history >> back & 1:
                self.duplicate += 1
            else:
                self.late += 1
            return []
        if extended in self._pending:
            self.duplicate += 1
            return []
        if extended < self._highest:
            self.reordered += 1
        else:
            self._highest = extended
        self._pending[extended] = (item, now)
        released: Release[T] = []
        self._release_ready(released)
        while len(self._pending) > self.depth_packets:
            self._skip_to_lowest(released)
        self._expire(now, released)
        return released

    def tick(self, now: float) -> Release[T]:
        """Give up on gaps whose held packets have waited `max_delay_ms`; returns the slots."""
        released: Release[T] = []
        if self._pending:
            self._expire(now, released)
        return released

    def flush(self) -> Release[T]:
        """Release everything held, gaps as lost (end of stream, or before a reset)."""
        released: Release[T] = []
        while self._pending:
            self._skip_to_lowest(released)
        return released

    def _resync(self, sequence: int, item: T, ssrc: int | None) -> Release[T]:
        released = self.flush()
        self.resyncs += 1
        self._history = 1
        self._highest = sequence
        self._next = sequence + 1
        if ssrc is not None:
            self._ssrc = ssrc
        self.released += 1
        released.append((sequence, item))
        return released

    def _release_ready(self, released: Release[T]) -> None:
        pending = self._pending
        playout = self._next
        assert playout is not None
        history = self._history
        while playout in pending:
            item, _ = pending.pop(playout)
            released.append((playout & 0xFFFF, item))
            history = ((history << 1) | 1) & _HISTORY_MASK
            playout += 1
            self.released += 1
        self._next = playout
        self._history = history

    def _skip_to_lowest(self, released: Release[T]) -> None:
        lowest = min(self._pending)
        playout = self._next
        assert playout is not None
        missing = lowest - playout
        if missing > 0:
            released.extend((number & 0xFFFF, None) for number in range(playout, lowest))
            self.lost += missing
            self._history = (self._history << missing) & _HISTORY_MASK
            self._next = lowest
        self._release_ready(released)

    def _expire(self, now: float, released: Release[T]) -> None:
        if self._max_delay is None:
            return
        deadline = now - self._max_delay
        while self._pending and min(arrival for _, arrival in self._pending.values()) <= deadline:
            self._skip_to_lowest(released)
