"""The single duplex audio channel of an RTVBP session (binary messages), inbound half.

Runs on the session's reader task for every binary message, so it is the hot path: no logging
per frame, no JSON, no tasks. Frames are handed to a synchronous sink; the sink must not block.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

AudioSink = Callable[[bytes], object]
"""Receives one exact inbound audio frame (`frame_bytes` long, L16 little-endian PCM); what it
returns is ignored."""


@dataclass(slots=True)
class SessionStats:
    """Counters of one session; plain integers, read them at any time."""

    audio_frames_in: int = 0
    audio_bytes_in: int = 0
    audio_frames_out: int = 0
    audio_bytes_out: int = 0
    audio_frames_out_dropped: int = 0
    """Frames of `send_audio_nowait` not sent because the peer read slower than we sent."""
    audio_messages_dropped: int = 0
    """Binary messages received before audio was opened (discarded)."""
    audio_messages_resized: int = 0
    """Binary messages of the wrong size (re-chunked into exact frames, nothing lost)."""
    audio_sink_errors: int = 0
    control_messages_dropped: int = 0
    """Text messages that are not a decodable classic.v1 frame."""
    responses_ignored: int = 0
    """Responses for an unknown, completed or timed-out request id."""
    events_dropped: int = 0
    """Events whose data fail to decode or validate."""


class InboundAudio:
    """Gates inbound binary messages until audio is open and re-chunks them into exact frames.

    Go senders may write any size (their receivers concatenate), so a wrong-size message is not
    dropped: its bytes are appended to a remainder and cut into `frame_bytes` pieces.
    """

    __slots__ = ("_frame_bytes", "_remainder", "_warned", "sink", "stats")

    def __init__(self, stats: SessionStats) -> None:
        self.stats = stats
        self.sink: AudioSink | None = None
        self._frame_bytes = 0
        self._remainder = bytearray()
        self._warned: set[str] = set()

    @property
    def frame_bytes(self) -> int:
        """Bytes per frame, 0 while audio is not open."""
        return self._frame_bytes

    def open(self, frame_bytes: int) -> None:
        if frame_bytes <= 0:
            raise ValueError(f"frame_bytes must be positive, got {frame_bytes}")
        if frame_bytes != self._frame_bytes:
            self._remainder.clear()
        self._frame_bytes = frame_bytes

    def receive(self, data: bytes) -> None:
        frame_bytes = self._frame_bytes
        if not frame_bytes:
            self.stats.audio_messages_dropped += 1
            self._warn_once("early", "binary audio received before audio was opened: dropped")
            return
        if len(data) == frame_bytes and not self._remainder:
            self._deliver(data)
            return
        if len(data) != frame_bytes:
            self.stats.audio_messages_resized += 1
            self._warn_once("size", f"binary audio messages are not {frame_bytes}-byte frames")
        remainder = self._remainder
        remainder += data
        offset = 0
        while len(remainder) - offset >= frame_bytes:
            self._deliver(bytes(remainder[offset : offset + frame_bytes]))
            offset += frame_bytes
        del remainder[:offset]

    def _deliver(self, frame: bytes) -> None:
        stats = self.stats
        stats.audio_frames_in += 1
        stats.audio_bytes_in += len(frame)
        sink = self.sink
        if sink is None:
            return
        try:
            sink(frame)
        except Exception:
            stats.audio_sink_errors += 1
            if "sink" not in self._warned:
                self._warned.add("sink")
                logger.exception("audio sink failed (further failures are only counted)")

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning("%s (further occurrences are only counted)", message)
