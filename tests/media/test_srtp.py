from __future__ import annotations

import base64

import pylibsrtp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.media import rtcp
from callbridge.media.rtp import build_rtp
from callbridge.media.srtp import (
    DEFAULT_SUITE,
    PENDING_KEY_TIMEOUT_S,
    REPLAY_WINDOW_PACKETS,
    SUITES,
    SrtpError,
    SrtpKey,
    SrtpSession,
    is_rtcp,
)

SSRC = 0x1234ABCD


def rtp(sequence: int, payload: bytes = b"\x55" * 160) -> bytes:
    return build_rtp(0, sequence, sequence * 160, SSRC, payload)


def pair(suite: str = DEFAULT_SUITE) -> tuple[SrtpSession, SrtpSession]:
    """A sender and the receiver that knows its key."""
    key = SrtpKey.generate(suite)
    return SrtpSession(key), SrtpSession(SrtpKey.generate(suite), key)


@pytest.mark.parametrize(
    ("suite", "tag_bytes"),
    [
        ("AES_CM_128_HMAC_SHA1_80", 10),
        ("AES_CM_128_HMAC_SHA1_32", 4),
        ("AEAD_AES_128_GCM", 16),
        ("AEAD_AES_256_GCM", 16),
    ],
)
def test_every_suite_round_trips_rtp_and_rtcp(suite: str, tag_bytes: int) -> None:
    sender, receiver = pair(suite)
    plain = rtp(1)
    protected = sender.protect(plain)
    assert protected is not None and len(protected) == len(plain) + tag_bytes
    assert protected[:12] == plain[:12] and protected[12:172] != plain[12:]
    assert receiver.unprotect(protected, 0.0) == plain
    report = rtcp.build_sender_report(SSRC, 0, 0, 1, 160, (), cname="test")
    protected_report = sender.protect(report)  # demuxed: SRTCP, as under rtcp-mux
    assert protected_report is not None and is_rtcp(protected_report)
    assert receiver.unprotect(protected_report, 0.0) == report
    second = sender.protect_rtcp(report)
    assert second is not None and receiver.unprotect_rtcp(second, 0.0) == report
    assert receiver.dropped_packets == 0


def test_interoperates_with_libsrtp_used_directly() -> None:
    key = SrtpKey.generate()
    peer = pylibsrtp.Session(
        pylibsrtp.Policy(key=key.master, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    )
    receiver = SrtpSession(SrtpKey.generate(), key)
    assert receiver.unprotect(peer.protect(rtp(7)), 0.0) == rtp(7)


def test_key_parsing_and_generation() -> None:
    for name, suite in SUITES.items():
        key = SrtpKey.generate(name)
        assert len(key.master) == suite.master_key_bytes
        assert SrtpKey.from_base64(name, key.base64()) == key
    assert SrtpKey.generate() != SrtpKey.generate()
    text = base64.b64encode(bytes(range(40))).decode()
    assert SrtpKey.from_base64(DEFAULT_SUITE, text).master == bytes(range(30))
    assert SrtpKey.from_base64(DEFAULT_SUITE, text.rstrip("=")).master == bytes(range(30))
    assert "secret" in repr(SrtpKey.generate()) and text not in repr(SrtpKey.generate())


@pytest.mark.parametrize(
    ("suite", "text", "message"),
    [
        (DEFAULT_SUITE, "not*base64!", "bad SRTP key base64"),
        (DEFAULT_SUITE, base64.b64encode(bytes(20)).decode(), "is 20 bytes, need 30"),
        ("AEAD_AES_128_GCM", base64.b64encode(bytes(27)).decode(), "need 28"),
        ("AES_256_CM_HMAC_SHA1_80", base64.b64encode(bytes(46)).decode(), "unsupported"),
    ],
)
def test_bad_keys_are_refused_clearly(suite: str, text: str, message: str) -> None:
    with pytest.raises(SrtpError, match=message):
        SrtpKey.from_base64(suite, text)


def test_raw_key_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(SrtpError, match="need 30"):
        SrtpKey(DEFAULT_SUITE, bytes(31))


def test_tampered_wrong_key_replayed_and_malformed_are_dropped_and_counted() -> None:
    sender, receiver = pair()
    first = sender.protect(rtp(1))
    assert first is not None and receiver.unprotect(first, 0.0) == rtp(1)
    assert receiver.unprotect(first, 0.0) is None  # replayed
    tampered = bytearray(sender.protect(rtp(2)) or b"")
    tampered[20] ^= 0x01
    assert receiver.unprotect(bytes(tampered), 0.0) is None
    stranger = SrtpSession(SrtpKey.generate()).protect(rtp(3))
    assert stranger is not None and receiver.unprotect(stranger, 0.0) is None  # wrong key
    assert receiver.unprotect(b"\x80\x00\x00", 0.0) is None
    assert receiver.unprotect(b"\x80" * 1600, 0.0) is None  # longer than any datagram here
    later = sender.protect(rtp(4))
    assert later is not None and receiver.unprotect(later, 0.0) == rtp(4)
    assert receiver.counters() == {
        "authentication_failures": 2,
        "replayed_packets": 1,
        "malformed_packets": 2,
        "unkeyed_packets": 0,
        "rtcp_drops": 0,
        "protect_failures": 0,
    }
    assert receiver.dropped_packets == 5


def test_tampered_srtcp_is_counted_as_an_rtcp_drop() -> None:
    sender, receiver = pair()
    report = bytearray(sender.protect_rtcp(rtcp.build_goodbye([SSRC], "bye")) or b"")
    report[9] ^= 0xFF
    assert receiver.unprotect_rtcp(bytes(report), 0.0) is None
    assert receiver.authentication_failures == 1 and receiver.rtcp_drops == 1


def test_replay_window_refuses_packets_older_than_it() -> None:
    sender, receiver = pair()
    packets = {number: sender.protect(rtp(number)) or b"" for number in range(1, 200)}
    too_old, reordered = 199 - REPLAY_WINDOW_PACKETS - 5, 199 - REPLAY_WINDOW_PACKETS + 5
    for number in range(1, 200):
        if number not in (too_old, reordered):
            assert receiver.unprotect(packets[number], 0.0) is not None
    assert receiver.unprotect(packets[too_old], 0.0) is None
    assert receiver.unprotect(packets[reordered], 0.0) == rtp(reordered)
    assert receiver.unprotect(packets[reordered], 0.0) is None
    assert receiver.replayed_packets == 2


def test_nothing_is_accepted_before_there_is_a_receive_key() -> None:
    sender, _ = pair()
    offering = SrtpSession(SrtpKey.generate())
    assert offering.unprotect(sender.protect(rtp(1)) or b"", 0.0) is None
    assert offering.unkeyed_packets == 1
    offering.install_pending_receive_key(sender.send_key, 0.0)  # no old key: used at once
    assert offering.pending_receive_key is None
    assert offering.unprotect(sender.protect(rtp(2)) or b"", 0.0) == rtp(2)


def test_pending_receive_key_is_promoted_by_its_first_packet() -> None:
    old_sender, receiver = pair()
    new_sender = SrtpSession(SrtpKey.generate())
    receiver.install_pending_receive_key(new_sender.send_key, 10.0)
    assert receiver.pending_receive_key == new_sender.send_key
    assert receiver.unprotect(old_sender.protect(rtp(1)) or b"", 10.1) == rtp(1)  # old still ok
    assert receiver.unprotect(new_sender.protect(rtp(2)) or b"", 10.2) == rtp(2)
    assert receiver.receive_key == new_sender.send_key and receiver.pending_receive_key is None
    assert receiver.unprotect(old_sender.protect(rtp(3)) or b"", 10.3) is None
    assert receiver.authentication_failures == 1


def test_pending_receive_key_is_forced_after_the_timeout() -> None:
    old_sender, receiver = pair()
    new_key = SrtpKey.generate()
    receiver.install_pending_receive_key(new_key, 10.0)
    late = 10.0 + PENDING_KEY_TIMEOUT_S
    assert receiver.unprotect(old_sender.protect(rtp(1)) or b"", late) is None
    assert receiver.receive_key == new_key and receiver.pending_receive_key is None


def test_new_send_key_applies_to_the_next_packet() -> None:
    sender, receiver = pair()
    old_key = sender.send_key
    sender.set_send_key(SrtpKey.generate())
    assert receiver.unprotect(sender.protect(rtp(1)) or b"", 0.0) is None
    receiver.set_receive_key(sender.send_key)
    assert receiver.unprotect(sender.protect(rtp(2)) or b"", 0.0) == rtp(2)
    assert sender.send_key != old_key


def test_protect_failure_is_counted() -> None:
    sender, _ = pair()
    assert sender.protect(b"\x80" * 1490) is None
    assert sender.protect(b"\x80\x00") is None
    assert sender.protect_failures == 2


@given(st.binary(max_size=300))
def test_unprotect_never_raises(data: bytes) -> None:
    _, receiver = pair()
    assert receiver.unprotect(data, 0.0) is None
    assert receiver.unprotect_rtcp(data, 0.0) is None
    assert receiver.dropped_packets == 2


def test_the_same_key_again_keeps_the_replay_window() -> None:
    sender, receiver = pair()
    first = sender.protect(rtp(1)) or b""
    assert receiver.unprotect(first, 0.0) == rtp(1)
    assert receiver.receive_key is not None
    receiver.install_pending_receive_key(receiver.receive_key, 1.0)
    assert receiver.pending_receive_key is None
    assert receiver.unprotect(first, 1.0) is None and receiver.replayed_packets == 1
