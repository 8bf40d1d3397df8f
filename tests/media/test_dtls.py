"""DTLS-SRTP keying between two in-memory sessions: keys agree, a wrong fingerprint fails."""

from __future__ import annotations

import pytest

from callbridge.media.dtls import DtlsError, DtlsSession, local_certificate
from callbridge.media.rtp import build_rtp


def handshake(client: DtlsSession, server: DtlsSession) -> None:
    flights = client.start()
    for _ in range(10):
        replies = [reply for flight in flights for reply in server.receive(flight)]
        flights = [back for reply in replies for back in client.receive(reply)]
        if client.handshake_done and server.handshake_done and not flights:
            return


def test_handshake_keys_srtp_both_ways() -> None:
    certificate = local_certificate()
    client = DtlsSession(certificate, client=True)
    server = DtlsSession(certificate, client=False)
    client.remote_fingerprint = server.remote_fingerprint = certificate.fingerprint
    handshake(client, server)
    assert client.srtp is not None and server.srtp is not None
    packet = build_rtp(111, 1, 960, 0x1234, b"opus payload")
    protected = client.srtp.protect(packet)
    assert protected is not None and protected != packet
    assert server.srtp.unprotect(protected, 0.0) == packet
    back = server.srtp.protect(packet)
    assert back is not None and client.srtp.unprotect(back, 0.0) == packet
    assert client.srtp.send_key == server.srtp.receive_key != client.srtp.receive_key


def test_wrong_fingerprint_fails_the_handshake() -> None:
    certificate = local_certificate()
    client = DtlsSession(certificate, client=True)
    server = DtlsSession(certificate, client=False)
    client.remote_fingerprint = certificate.fingerprint
    server.remote_fingerprint = "00:" * 31 + "00"
    with pytest.raises(DtlsError, match="fingerprint"):
        handshake(client, server)
    assert server.srtp is None


def test_fingerprint_learned_after_the_handshake() -> None:
    certificate = local_certificate()
    client = DtlsSession(certificate, client=True)
    server = DtlsSession(certificate, client=False)
    client.remote_fingerprint = certificate.fingerprint
    handshake(client, server)
    assert server.handshake_done and server.srtp is None
    server.remote_fingerprint = certificate.fingerprint
    server.verify()
    assert server.srtp is not None
