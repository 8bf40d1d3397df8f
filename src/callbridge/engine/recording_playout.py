"""One leg's decoded frames as an audio recording takes them: one per media tick.

Packets reach the session whenever the network delivers them, a little before or after a
tick; a recording wants exactly one frame per leg per tick. `LegPlayout` keeps a spare: it
starts a talkspurt only once `PREBUFFER_FRAMES` are queued, then hands out the oldest frame
each tick, so a packet that arrives just after its tick is still in time for the next one and
leaves no hole. When the queue runs dry (the leg fell silent, or lost packets) the tick gets
silence and the next talkspurt prebuffers again. A sender whose clock runs fast grows the
queue; after `_TRIM_AFTER_TICKS` ticks with more than one spare, the oldest frame is dropped.
Every leg has the same small delay (one to two frames), so legs stay aligned to a frame.
"""

from __future__ import annotations

from collections import deque
from typing import Final

__all__ = ["PREBUFFER_FRAMES", "LegPlayout"]

PREBUFFER_FRAMES: Final = 2
_MAX_FRAMES: Final = 8
"""Frames held at most (160 ms); older ones are dropped."""
_TRIM_AFTER_TICKS: Final = 50


class LegPlayout:
    """An audio tap consumer (`on_frame`) read once per tick (`take`) by every recording."""

    __slots__ = ("_current", "_frames", "_playing", "_spare_ticks", "_tick")

    def __init__(self) -> None:
        self._frames: deque[bytes] = deque(maxlen=_MAX_FRAMES)
        self._playing = False
        self._tick = -1
        self._current: bytes | None = None
        self._spare_ticks = 0

    def on_frame(self, pcm: bytes, now: float) -> None:
        self._frames.append(pcm)

    def take(self, tick: int) -> bytes | None:
        """This tick's frame (the same for every caller in the tick), None for silence."""
        if tick == self._tick:
            return self._current
        self._tick = tick
        frames = self._frames
        if not self._playing and len(frames) >= PREBUFFER_FRAMES:
            self._playing = True
        if not self._playing or not frames:
            self._playing = False
            self._current = None
            return None
        self._current = frames.popleft()
        if len(frames) > 1:
            self._spare_ticks += 1
            if self._spare_ticks >= _TRIM_AFTER_TICKS:
                frames.popleft()
                self._spare_ticks = 0
        else:
            self._spare_ticks = 0
        return self._current
