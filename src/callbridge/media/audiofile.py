"""Audio files (WAV, MP3, OGG/Vorbis, FLAC, Opus...) as a stream of mono int16 frames.

The file is demuxed and decoded one packet at a time (PyAV), never loaded whole, so a long
recording costs no more memory than a short one. libswresample converts to int16 at the target
rate; channels are then averaged into mono. The first audio stream is used.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Final

import av
import numpy as np
from numpy.typing import NDArray

from callbridge.media.errors import AudioFileError
from callbridge.media.mixer import gain
from callbridge.media.pcm import (
    DEFAULT_PTIME_MS,
    SAMPLE_DTYPE,
    Samples,
    frame_samples,
)

SEEK_PREROLL_MS: Final = 500
"""How far before a seek target the container seek lands, so decoders can settle."""
MAX_PACKETS_PER_FRAME: Final = 1024
"""Packets demuxed without yielding audio before the file is declared stuck (as rtpbridge)."""

_EMPTY: Final[Samples] = np.zeros(0, dtype=SAMPLE_DTYPE)


class AudioFileReader:
    """Reads an audio file as `ptime_ms` frames of mono int16 little-endian PCM at `sample_rate`.

    `start_ms` skips the beginning; `gain_db` scales the audio (saturating). Raises
    AudioFileError for a missing, unreadable, corrupt or unsupported file, at construction when
    possible (the first frame is decoded eagerly).
    """

    __slots__ = (
        "_align_to",
        "_buffer",
        "_container",
        "_discard_frames",
        "_ended",
        "_fresh",
        "_packets",
        "_resampler",
        "_skip_samples",
        "_stream",
        "_stream_start",
        "_time_base",
        "duration_ms",
        "frame_samples",
        "gain_db",
        "path",
        "position_ms",
        "sample_rate",
    )

    def __init__(
        self,
        path: str | os.PathLike[str],
        sample_rate: int = 8000,
        start_ms: int = 0,
        gain_db: float = 0.0,
        ptime_ms: int = DEFAULT_PTIME_MS,
    ) -> None:
        self.path = os.fspath(path)
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples(sample_rate, ptime_ms)
        self.gain_db = gain_db
        self.position_ms = 0.0
        """Position in the file of the next frame, in milliseconds."""
        self._container: Any = None
        self._buffer = _EMPTY
        self._ended = False
        self._skip_samples = 0
        self._discard_frames = 0
        self._align_to: float | None = None
        self._resampler: Any = None
        self._fresh = False
        self._open()
        try:
            self.duration_ms = self._duration_ms()
            """Length of the file in milliseconds, or None if the container does not say."""
            self.seek(start_ms)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> AudioFileReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def read_frame(self) -> bytes | None:
        """The next frame (the last one padded with silence), or None at the end of the file."""
        size = self.frame_samples
        self._fill(size)
        if not len(self._buffer):
            return None
        frame = self._buffer[:size]
        self._buffer = self._buffer[size:]
        if len(frame) < size:
            frame = np.concatenate((frame, np.zeros(size - len(frame), SAMPLE_DTYPE)))
        if self.gain_db:
            frame = gain(frame, self.gain_db)
        self.position_ms += size * 1000 / self.sample_rate
        return frame.tobytes()

    def seek(self, position_ms: int) -> None:
        """Continue from `position_ms` into the file (past the end means at the end).

        The container seek lands up to `SEEK_PREROLL_MS` early, the first frame decoded there
        is dropped (an MP3 frame needs its predecessor), and the audio before the target is cut
        by the frames' timestamps: to within half a sample at `sample_rate`, exact when the
        file's rate is `sample_rate` (or the target falls on a common sample).
        """
        if position_ms < 0:
            raise ValueError(f"seek position must be >= 0 ms, got {position_ms}")
        if self._container is None:
            raise AudioFileError(f"{self.path}: reader is closed")
        target = position_ms / 1000
        self._skip_samples = 0
        self._discard_frames = 0
        self._align_to = None
        if position_ms == 0:
            if not self._fresh:
                self._open()  # exactly as the first read: codecs trim their start on open
        else:
            landing = max(0.0, target - SEEK_PREROLL_MS / 1000)
            try:
                self._container.seek(
                    self._stream_start + int(landing / self._time_base), stream=self._stream
                )
                self._discard_frames = 1 if landing > 0 else 0
                self._align_to = target
            except av.FFmpegError:
                self._open()  # not seekable: decode from the start and count samples
                self._skip_samples = round(target * self.sample_rate)
        self._packets = self._container.demux(self._stream)
        self._fresh = False
        self._resampler = None
        self._buffer = _EMPTY
        self._ended = False
        self.position_ms = float(position_ms)
        self._fill(self.frame_samples)

    def close(self) -> None:
        """Release the file (idempotent)."""
        if self._container is not None:
            self._container.close()
            self._container = None
        self._ended = True
        self._buffer = _EMPTY

    def _open(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        try:
            container = av.open(self.path, mode="r")
        except FileNotFoundError as exc:
            raise AudioFileError(f"{self.path}: file not found") from exc
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise AudioFileError(f"{self.path}: cannot open audio file: {exc}") from exc
        if not container.streams.audio:
            container.close()
            raise AudioFileError(f"{self.path}: no audio stream")
        self._container = container
        self._fresh = True
        self._stream = container.streams.audio[0]
        self._time_base = self._stream.time_base or 1
        self._stream_start = self._stream.start_time or 0

    def _duration_ms(self) -> int | None:
        if self._stream.duration is not None:
            return round(float(self._stream.duration * self._time_base) * 1000)
        if self._container.duration is not None:
            microseconds: int = self._container.duration
            return round(microseconds * 1000 / av.time_base)
        return None

    def _fill(self, samples: int) -> None:
        """Decode until `samples` samples are buffered or the file ends."""
        idle_packets = 0
        while len(self._buffer) < samples and not self._ended:
            produced = self._decode_next()
            idle_packets = 0 if produced else idle_packets + 1
            if idle_packets > MAX_PACKETS_PER_FRAME:
                raise AudioFileError(f"{self.path}: decoder stuck, no audio from the file")

    def _decode_next(self) -> int:
        """Demux and decode one packet into the buffer; returns the samples added."""
        try:
            packet = next(self._packets, None)
            if packet is None:
                self._ended = True
                frames: list[Any] = [None]  # flush the resampler's tail
            else:
                frames = list(packet.decode())  # the final empty packet drains the decoder
            chunks = [self._convert(frame) for frame in frames]
        except (av.FFmpegError, ValueError) as exc:
            raise AudioFileError(f"{self.path}: cannot decode audio: {exc}") from exc
        added = [chunk for chunk in chunks if len(chunk)]
        if added:
            self._buffer = np.concatenate((self._buffer, *added))
        return sum(len(chunk) for chunk in added)

    def _convert(self, frame: Any) -> Samples:
        """Mono int16 at the target rate from one decoded frame (None flushes the resampler)."""
        if frame is None:
            if self._resampler is None:
                return _EMPTY
            outputs = self._resampler.resample(None)
        else:
            if self._resampler is None:
                if self._discard_frames:
                    self._discard_frames -= 1
                    return _EMPTY
                self._align(frame)
                self._resampler = av.AudioResampler(format="s16p", rate=self.sample_rate)
            frame.pts = None
            outputs = self._resampler.resample(frame)
        pieces = [self._mono(output) for output in outputs]
        if len(pieces) == 1:
            samples = pieces[0]
        else:
            samples = np.concatenate(pieces) if pieces else _EMPTY
        if self._skip_samples > 0:
            dropped = min(self._skip_samples, len(samples))
            self._skip_samples -= dropped
            samples = samples[dropped:]
        return samples

    def _align(self, frame: Any) -> None:
        """After a seek, cut the audio between the first frame's start and the target."""
        if self._align_to is None or frame.pts is None:
            return
        frame_seconds = float((frame.pts - self._stream_start) * self._time_base)
        self._skip_samples = max(0, round((self._align_to - frame_seconds) * self.sample_rate))

    @staticmethod
    def _mono(frame: Any) -> Samples:
        planes: NDArray[np.int16] = frame.to_ndarray()
        mono: Samples = planes[0]
        if planes.shape[0] > 1:
            mono = (planes.sum(axis=0, dtype=np.int32) // planes.shape[0]).astype(SAMPLE_DTYPE)
        return mono

    def __iter__(self) -> Iterator[bytes]:
        while (frame := self.read_frame()) is not None:
            yield frame
