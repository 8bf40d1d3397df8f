"""The FLAC writer: lossless, and readable before it is closed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from callbridge.media.errors import CodecError
from callbridge.media.flac import MAX_CHANNELS, FlacWriter
from tests.engine.recording_support import read_flac


def _samples(frames: int, channels: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(-20000, 20000, size=(frames, channels), dtype=np.int16)


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_lossless_round_trip(tmp_path: Path, channels: int) -> None:
    samples = _samples(16000, channels)
    path = tmp_path / "out.flac"
    with path.open("wb") as file:
        writer = FlacWriter(file, channels, 16000)
        for block in np.split(samples, 50):
            writer.write(block.astype("<i2").tobytes())
        writer.close()
    rate, decoded = read_flac(path)
    assert rate == 16000 and np.array_equal(decoded, samples)


def test_readable_after_a_flush_without_close(tmp_path: Path) -> None:
    samples = _samples(32000, 2)
    path = tmp_path / "open.flac"
    with path.open("wb") as file:
        writer = FlacWriter(file, 2, 16000)
        for block in np.split(samples, 100):
            writer.write(block.astype("<i2").tobytes())
        writer.flush()
        _, decoded = read_flac(path)  # as a killed process leaves it
    assert len(decoded) >= 16000
    assert np.array_equal(decoded, samples[: len(decoded)])


def test_bad_shapes_are_refused(tmp_path: Path) -> None:
    with (tmp_path / "x.flac").open("wb") as file, pytest.raises(CodecError):
        FlacWriter(file, MAX_CHANNELS + 1, 16000)
