from hypothesis import given
from hypothesis import strategies as st

from callbridge.media.playout import PlayoutBuffer


def test_reads_whole_frames_only() -> None:
    buffer = PlayoutBuffer(frame_bytes=4)
    buffer.write(b"abcdef")
    assert buffer.read_frame() == b"abcd"
    assert buffer.read_frame() is None
    buffer.write(b"gh")
    assert buffer.read_frame() == b"efgh"
    assert len(buffer) == 0


def test_clear_reports_exactly_the_unplayed_bytes() -> None:
    buffer = PlayoutBuffer(frame_bytes=320)
    buffer.write(bytes(320 * 5 + 10))
    buffer.read_frame()
    assert buffer.clear() == 320 * 4 + 10
    assert buffer.clear() == 0
    assert buffer.read_frame() is None


def test_overflow_discards_oldest_and_counts() -> None:
    buffer = PlayoutBuffer(frame_bytes=2, capacity_bytes=4)
    buffer.write(b"abcdef")
    assert buffer.overflow_bytes == 2
    assert buffer.read_frame() == b"cd"
    assert buffer.read_frame() == b"ef"


def test_buffered_ms() -> None:
    buffer = PlayoutBuffer(frame_bytes=320)
    buffer.write(bytes(320 * 3))
    assert buffer.buffered_ms == 60.0


@given(st.lists(st.binary(max_size=50), max_size=40), st.integers(1, 16))
def test_fifo_order_preserved(chunks: list[bytes], frame_bytes: int) -> None:
    buffer = PlayoutBuffer(frame_bytes=frame_bytes, capacity_bytes=1 << 16)
    out = bytearray()
    for chunk in chunks:
        buffer.write(chunk)
        while (frame := buffer.read_frame()) is not None:
            out += frame
    joined = b"".join(chunks)
    assert bytes(out) == joined[: len(out)]
    assert len(out) + len(buffer) == len(joined)
    assert len(buffer) < frame_bytes
