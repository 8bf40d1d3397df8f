"""The request-head parser of the picows listener: well-formed heads parse, nothing else
escapes as anything but HeadError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.rtvbp.upgrade import MAX_HEAD_BYTES, HeadError, head_end, parse_head


def test_a_browser_style_upgrade_parses() -> None:
    raw = (
        b"GET /rtvbp/media/abc%20d?tenant=acme&x= HTTP/1.1\r\nHost: example\r\n"
        b"Sec-WebSocket-Protocol: rtvbp.v1\r\nsec-websocket-protocol:  bearer.abc \r\n\r\n"
    )
    assert head_end(raw + b"\x81\x80") == len(raw)
    head = parse_head(raw)
    assert (head.method, head.path) == ("GET", "/rtvbp/media/abc d")
    assert dict(head.query) == {"tenant": "acme", "x": ""}
    assert head.headers.getall("Sec-WebSocket-Protocol") == ["rtvbp.v1", "bearer.abc"]
    assert head.raw == raw


def test_an_incomplete_head_waits_and_a_huge_one_is_431() -> None:
    assert head_end(b"GET / HTTP/1.1\r\nHost: x\r\n") == 0
    with pytest.raises(HeadError) as huge:
        head_end(b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_BYTES)
    assert huge.value.status == 431


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /  HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET http://host/ HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nNo-Colon\r\n\r\n",
        b"GET / HTTP/1.1\r\n Folded: x\r\n\r\n",
        b"GET /%ff HTTP/1.1\r\n\r\n",
        b"\r\n\r\n",
    ],
)
def test_malformed_heads_are_400(raw: bytes) -> None:
    with pytest.raises(HeadError) as refused:
        parse_head(raw)
    assert refused.value.status == 400


@given(st.binary(max_size=400))
def test_any_bytes_parse_or_raise_head_error(data: bytes) -> None:
    try:
        end = head_end(data)
        if end:
            parse_head(data[:end])
    except HeadError:
        pass


@given(st.binary(max_size=400))
def test_any_complete_head_parses_or_raises_head_error(data: bytes) -> None:
    try:
        parse_head(data.replace(b"\r\n\r\n", b"") + b"\r\n\r\n")
    except HeadError:
        pass
