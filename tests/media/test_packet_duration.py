"""The packet duration callbridge sends in, from a peer's `a=ptime` and `a=maxptime`."""

from __future__ import annotations

import pytest

from callbridge.media.codecs import G722, OPUS, PCMA, PCMU, CodecSpec, packet_duration_ms
from callbridge.media.sdp import parse_sdp


@pytest.mark.parametrize(
    ("ptime", "maxptime", "expected", "expected_opus"),
    [
        (None, None, 20, 20),
        (10, None, 10, 10),
        (30, None, 30, 20),  # Opus has no 30 ms frame
        (40, None, 40, 40),
        (60, None, 60, 60),
        (60, 40, 40, 40),
        (None, 10, 10, 10),
        (25, None, 20, 20),
        (150, None, 60, 60),
        (5, None, 10, 10),
        (20, 5, 10, 10),
    ],
)
def test_packet_duration_follows_ptime_within_maxptime(
    ptime: int | None, maxptime: int | None, expected: int, expected_opus: int
) -> None:
    specs: tuple[CodecSpec, ...] = (PCMU, PCMA, G722)
    assert {packet_duration_ms(spec, ptime, maxptime) for spec in specs} == {expected}
    assert packet_duration_ms(OPUS, ptime, maxptime) == expected_opus


def test_sdp_gives_ptime_and_maxptime() -> None:
    text = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\na=ptime:30\r\na=maxptime:40\r\n"
    description = parse_sdp(text)
    assert (description.ptime_ms, description.maxptime_ms) == (30, 40)
    assert parse_sdp("v=0\r\nm=audio 4000 RTP/AVP 0\r\n").maxptime_ms is None
