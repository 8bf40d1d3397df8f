"""Packet-loss concealment for codecs that have none of their own (G.711, G.722, L16).

Replacing a lost packet with silence clicks, because the waveform jumps to zero. Replaying the
last good audio backwards starts at exactly the sample where the audio stopped; fading it out
linearly over one frame ends it without a second jump. Longer gaps continue in silence: a codec
without a model of the voice has nothing better to offer, and repeating audio sounds worse than
a gap.
"""

from __future__ import annotations

import numpy as np

from callbridge.media.pcm import SAMPLE_BYTES, SAMPLE_DTYPE, as_samples


class FadeConcealer:
    """Fills lost packets with a fading, time-reversed copy of the last good audio."""

    __slots__ = ("_last", "_position", "_tail", "fade_samples")

    def __init__(self, fade_samples: int) -> None:
        if fade_samples <= 0:
            raise ValueError("fade_samples must be positive")
        self.fade_samples = fade_samples
        """Length of the fade, in samples (one 20 ms frame at the codec's rate)."""
        self._last = b""
        self._tail: bytes | None = None
        self._position = 0

    def remember(self, pcm: bytes) -> None:
        """Note the latest good decoded audio (kept by reference, not copied)."""
        if pcm:
            self._last = pcm
            self._tail = None

    def conceal(self, samples: int) -> bytes:
        """`samples` samples to play in place of lost audio; repeated calls continue the fade."""
        if samples <= 0:
            return b""
        if self._tail is None:
            self._tail = self._build_tail()
            self._position = 0
        start = self._position
        end = start + samples * SAMPLE_BYTES
        self._position = min(end, len(self._tail))
        chunk = self._tail[start:end]
        if len(chunk) < end - start:
            chunk += bytes(end - start - len(chunk))
        return chunk

    def reset(self) -> None:
        """Forget the last audio (a new stream starts)."""
        self._last = b""
        self._tail = None
        self._position = 0

    def _build_tail(self) -> bytes:
        source = as_samples(self._last)[::-1][: self.fade_samples]
        length = len(source)
        if not length:
            return b""
        ramp = np.arange(length, 0, -1, dtype=np.float32) / np.float32(length)
        return (source * ramp).astype(SAMPLE_DTYPE).tobytes()
