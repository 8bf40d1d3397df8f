"""The WAV writer: a valid file after every flush, read back by the standard library."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from callbridge.media.wav import HEADER_BYTES, WavWriter, wav_header


def test_header_fields() -> None:
    header = wav_header(2, 16000, 640)
    assert len(header) == HEADER_BYTES
    fields = struct.unpack("<4sI4s4sIHHIIHH4sI", header)
    assert fields == (b"RIFF", 676, b"WAVE", b"fmt ", 16, 1, 2, 16000, 64000, 4, 16, b"data", 640)


def test_flushed_file_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    samples = (np.arange(320, dtype="<i2") * 7).tobytes()
    with path.open("wb") as file:
        writer = WavWriter(file, 1, 16000)
        writer.write(samples)
        writer.flush()
        writer.write(samples)  # written after the last flush: not declared yet
        file.flush()
        with wave.open(str(path)) as reader:
            assert (reader.getnchannels(), reader.getframerate()) == (1, 16000)
            assert reader.readframes(reader.getnframes()) == samples
        writer.flush()
    with wave.open(str(path)) as reader:
        assert reader.getnframes() == 640


def test_empty_file_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    with path.open("wb") as file:
        WavWriter(file, 2, 8000).flush()
    with wave.open(str(path)) as reader:
        assert (reader.getnchannels(), reader.getnframes()) == (2, 0)


def test_bad_shape_is_refused(tmp_path: Path) -> None:
    with (tmp_path / "x.wav").open("wb") as file, pytest.raises(ValueError):
        WavWriter(file, 0, 8000)
