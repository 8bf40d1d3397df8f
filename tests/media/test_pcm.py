import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.media.pcm import (
    FrameChunker,
    as_samples,
    fit_frame,
    frame_bytes,
    frame_samples,
    silence,
    swap_byte_order,
    to_bytes,
)


@pytest.mark.parametrize(
    ("rate", "ptime", "samples"),
    [(8000, 20, 160), (16000, 20, 320), (24000, 20, 480), (48000, 20, 960), (8000, 30, 240)],
)
def test_frame_sizes(rate: int, ptime: int, samples: int) -> None:
    assert frame_samples(rate, ptime) == samples
    assert frame_bytes(rate, ptime) == 2 * samples


@pytest.mark.parametrize(("rate", "ptime"), [(0, 20), (8000, 0), (11025, 20)])
def test_frame_samples_rejects_bad_sizes(rate: int, ptime: int) -> None:
    with pytest.raises(ValueError):
        frame_samples(rate, ptime)


def test_silence_is_zero_samples() -> None:
    assert silence(160) == bytes(320)


def test_as_samples_is_a_little_endian_view() -> None:
    data = bytearray(b"\x01\x00\xff\xff\x00\x80")
    view = as_samples(data)
    assert view.tolist() == [1, -1, -32768]
    data[0] = 2
    assert view[0] == 2  # no copy


def test_as_samples_rejects_odd_length() -> None:
    with pytest.raises(ValueError, match="whole number of samples"):
        as_samples(b"\x00\x00\x00")


def test_to_bytes_round_trip() -> None:
    samples = np.array([0, 1, -1, 32767, -32768], dtype=np.int32)
    assert as_samples(to_bytes(samples)).tolist() == samples.tolist()


def test_fit_frame_pads_truncates_and_keeps() -> None:
    pcm = b"\x01\x00" * 3
    assert fit_frame(pcm, 5) == pcm + bytes(4)
    assert fit_frame(pcm, 2) == pcm[:4]
    assert fit_frame(pcm, 3) is pcm


def test_swap_byte_order() -> None:
    assert swap_byte_order(b"\x01\x02\x03\x04") == b"\x02\x01\x04\x03"


@given(st.lists(st.binary(max_size=700), max_size=20))
def test_chunker_hands_back_every_byte_in_exact_frames(chunks: list[bytes]) -> None:
    chunker = FrameChunker(320)
    frames: list[bytes] = []
    for chunk in chunks:
        frames += chunker.push(chunk)
    assert all(len(frame) == 320 for frame in frames)
    assert chunker.pending_bytes < 320
    tail = chunker.flush(pad=False) or b""
    assert b"".join(frames) + tail == b"".join(chunks)
    assert chunker.pending_bytes == 0


def test_chunker_keeps_the_odd_byte() -> None:
    chunker = FrameChunker(4)
    assert chunker.push(b"\x01\x02\x03") == []
    assert chunker.push(b"\x04\x05") == [b"\x01\x02\x03\x04"]
    assert chunker.pending_bytes == 1


def test_chunker_accepts_memoryview_and_whole_frames() -> None:
    chunker = FrameChunker(4)
    assert chunker.push(memoryview(b"abcdefgh")) == [b"abcd", b"efgh"]
    assert chunker.push(b"ijkl") == [b"ijkl"]


def test_chunker_flush_pads_with_silence() -> None:
    chunker = FrameChunker(6)
    chunker.push(b"\x01\x02\x03")
    assert chunker.flush() == b"\x01\x02\x03\x00\x00\x00"
    assert chunker.flush() is None


def test_chunker_clear_reports_discarded_bytes() -> None:
    chunker = FrameChunker(320)
    chunker.push(bytes(100))
    assert chunker.clear() == 100
    assert chunker.clear() == 0
    assert chunker.flush() is None


@pytest.mark.parametrize("size", [0, -2, 3])
def test_chunker_rejects_bad_frame_size(size: int) -> None:
    with pytest.raises(ValueError):
        FrameChunker(size)
