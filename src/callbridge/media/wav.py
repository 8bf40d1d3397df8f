"""A WAV (RIFF, 16-bit PCM) writer whose file is valid after every flush.

The header's two sizes are rewritten at each `flush`, so a process killed between flushes
leaves a file that every reader opens, holding the audio up to the last flush (a few more
bytes may follow the declared data; readers ignore them).
"""

from __future__ import annotations

import struct
from typing import BinaryIO, Final

__all__ = ["HEADER_BYTES", "WavWriter", "wav_header"]

HEADER_BYTES: Final = 44
_MAX_DATA: Final = 0xFFFFFFFF - 36
"""A RIFF size is 32 bits: data beyond this (about 6 h of 48 kHz stereo) is not written."""


def wav_header(channels: int, sample_rate: int, data_bytes: int) -> bytes:
    """The 44-byte header of 16-bit PCM with `data_bytes` of samples."""
    block = channels * 2
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,
        channels,
        sample_rate,
        sample_rate * block,
        block,
        16,
        b"data",
        data_bytes,
    )


class WavWriter:
    """Appends interleaved int16 little-endian frames to `file` (opened for writing, empty)."""

    def __init__(self, file: BinaryIO, channels: int, sample_rate: int) -> None:
        if channels < 1 or sample_rate < 1:
            raise ValueError("a WAV file needs at least one channel and a positive rate")
        self.file = file
        self.channels = channels
        self.sample_rate = sample_rate
        self.data_bytes = 0
        self._declared = 0
        file.write(wav_header(channels, sample_rate, 0))

    def write(self, pcm: bytes) -> bool:
        """Append samples (whole frames of every channel); False once the file is full."""
        if self.data_bytes + len(pcm) > _MAX_DATA:
            return False
        self.file.write(pcm)
        self.data_bytes += len(pcm)
        return True

    def flush(self) -> None:
        """Write out what is buffered, then the header sizes that cover it."""
        if self._declared != self.data_bytes:
            file = self.file
            file.flush()
            file.seek(4)
            file.write(struct.pack("<I", 36 + self.data_bytes))
            file.seek(40)
            file.write(struct.pack("<I", self.data_bytes))
            file.seek(0, 2)
            self._declared = self.data_bytes
        self.file.flush()
