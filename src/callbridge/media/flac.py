"""A FLAC writer (PyAV's bundled FFmpeg) for 16-bit PCM recordings, about half the size of WAV.

Every encoded packet goes to the file object at once (the muxer's `flush_packets`), so after
`flush` the file holds every frame the encoder has finished: a process killed then leaves a
file that decoders read up to there (its stream header says the length is unknown). `close`
drains the encoder and rewrites the header with the real length.
"""

from __future__ import annotations

from typing import BinaryIO, Final

import av
import numpy as np

from callbridge.media.errors import CodecError
from callbridge.media.pcm import SAMPLE_DTYPE

__all__ = ["MAX_CHANNELS", "FlacWriter"]

_LAYOUTS: Final = ("mono", "stereo", "3.0", "quad", "5.0", "5.1", "6.1", "7.1")
MAX_CHANNELS: Final = len(_LAYOUTS)
"""The most channels a FLAC stream carries."""


class FlacWriter:
    """Appends interleaved int16 little-endian samples to `file` (opened for writing, empty).

    Raises CodecError for an unsupported shape or when FFmpeg fails; OSError from the file.
    """

    def __init__(self, file: BinaryIO, channels: int, sample_rate: int) -> None:
        if not 1 <= channels <= MAX_CHANNELS or sample_rate < 1:
            raise CodecError(f"FLAC takes 1 to {MAX_CHANNELS} channels and a positive rate")
        self.file = file
        self.channels = channels
        self.sample_rate = sample_rate
        self._layout = _LAYOUTS[channels - 1]
        self._samples = 0
        try:
            self._container = av.open(file, "w", format="flac", options={"flush_packets": "1"})
            self._stream = self._container.add_stream("flac", rate=sample_rate)
            self._stream.layout = self._layout
            self._stream.format = "s16"
        except av.FFmpegError as error:
            raise CodecError(f"cannot start a FLAC stream: {error}") from None

    def write(self, pcm: bytes) -> None:
        """Encode whole sample frames of every channel."""
        samples = np.frombuffer(pcm, dtype=SAMPLE_DTYPE).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout=self._layout)
        frame.sample_rate = self.sample_rate
        frame.pts = self._samples
        self._samples += samples.shape[1] // self.channels
        self._mux(frame)

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        """Drain the encoder, finish the stream header, close the container (not `file`)."""
        self._mux(None)
        try:
            self._container.close()
        except av.FFmpegError as error:
            raise CodecError(f"cannot finish the FLAC stream: {error}") from None

    def _mux(self, frame: av.AudioFrame | None) -> None:
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except av.FFmpegError as error:
            raise CodecError(f"FLAC encoding failed: {error}") from None
