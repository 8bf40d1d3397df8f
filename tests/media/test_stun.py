"""STUN codec: responses that verify, tampering and garbage rejected."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.media import stun


def request(key: bytes, username: bytes = b"ours:theirs") -> bytes:
    return stun.build_stun(
        stun.BINDING_REQUEST,
        os.urandom(12),
        [
            (stun.USERNAME, username),
            (stun.PRIORITY, b"\x6e\x00\x01\xff"),
            (stun.USE_CANDIDATE, b""),
        ],
        integrity_key=key,
    )


def test_request_round_trip_with_integrity_and_fingerprint() -> None:
    data = request(b"secret-password")
    assert stun.looks_like_stun(data)
    message = stun.parse_stun(data)
    assert message.message_type == stun.BINDING_REQUEST
    assert message.attributes[stun.USERNAME] == b"ours:theirs"
    assert stun.USE_CANDIDATE in message.attributes
    assert message.check_integrity(data, b"secret-password")
    assert not message.check_integrity(data, b"other-password")


def test_tampered_message_fails_fingerprint_or_integrity() -> None:
    data = bytearray(request(b"key"))
    data[25] ^= 0x01
    with pytest.raises(stun.StunError):
        stun.parse_stun(bytes(data))


def test_xor_mapped_address_decodes_back() -> None:
    transaction = os.urandom(12)
    value = stun.xor_address("127.0.0.1", 40000, transaction)
    assert value[1] == 1
    port = int.from_bytes(value[2:4], "big") ^ (stun.MAGIC_COOKIE >> 16)
    address = bytes(
        a ^ b for a, b in zip(value[4:], stun.MAGIC_COOKIE.to_bytes(4, "big"), strict=True)
    )
    assert (address, port) == (bytes([127, 0, 0, 1]), 40000)
    assert len(stun.xor_address("::1", 9, transaction)) == 20


@given(st.binary(max_size=200))
def test_garbage_never_raises_anything_but_stun_error(data: bytes) -> None:
    try:
        stun.parse_stun(data)
    except stun.StunError:
        pass
