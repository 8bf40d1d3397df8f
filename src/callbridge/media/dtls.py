"""DTLS-SRTP keying (RFC 5763, RFC 5764) without I/O: one handshake over memory BIOs.

`DtlsSession` takes the datagrams of the DTLS channel in (`receive`) and hands back the
datagrams to send; the owner also calls `handle_timeout` when `timeout()` says a
retransmission is due. Once the handshake is done and the peer's certificate matches the
fingerprint from its SDP, `srtp` holds the two libsrtp sessions keyed from the exporter
(`EXTRACTOR-dtls_srtp`, profile SRTP_AES128_CM_SHA1_80).

Our certificate (ECDSA P-256, self-signed) is made once per process and renewed weekly: a
DTLS certificate proves nothing but the fingerprint in our SDP. Times are seconds.
"""

from __future__ import annotations

import datetime
import secrets
import time
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from callbridge.media.errors import MediaError
from callbridge.media.srtp import SrtpKey, SrtpSession

__all__ = ["DtlsError", "DtlsSession", "LocalCertificate", "local_certificate"]

_SRTP_PROFILE: Final = b"SRTP_AES128_CM_SHA1_80"
_SRTP_SUITE: Final = "AES_CM_128_HMAC_SHA1_80"
"""The SDES name of the DTLS-SRTP profile above (RFC 5764 and RFC 4568 spell it differently)."""
_KEY_SIZE: Final = 16
_SALT_SIZE: Final = 14
_RENEW_AFTER_S: Final = 7 * 86400.0
_VALIDITY: Final = datetime.timedelta(days=30)
_MAX_FLIGHT: Final = 16384
_MTU: Final = 1200


class DtlsError(MediaError):
    """The handshake failed, or the peer's certificate does not match its fingerprint."""


@dataclass(frozen=True, slots=True)
class LocalCertificate:
    """Our DTLS identity and the SHA-256 fingerprint the SDP announces."""

    context: SSL.Context
    fingerprint: str
    created_at: float


_current: LocalCertificate | None = None


def local_certificate() -> LocalCertificate:
    """The process's certificate and its SSL context, made on first use and renewed weekly."""
    global _current
    now = time.monotonic()
    if _current is None or now - _current.created_at > _RENEW_AFTER_S:
        _current = _make_certificate(now)
    return _current


def _make_certificate(now: float) -> LocalCertificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, secrets.token_hex(8))])
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + _VALIDITY)
        .sign(key, hashes.SHA256())
    )
    context = SSL.Context(SSL.DTLS_METHOD)
    context.use_certificate(certificate)
    context.use_privatekey(key)
    context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _accept_any)
    context.set_tlsext_use_srtp(_SRTP_PROFILE)
    context.set_mode(SSL.MODE_RELEASE_BUFFERS)  # idle associations keep no record buffers
    digest = certificate.fingerprint(hashes.SHA256())
    return LocalCertificate(context, ":".join(f"{byte:02X}" for byte in digest), now)


def _accept_any(*_: object) -> bool:
    """Self-signed peers are the rule; the fingerprint check after the handshake decides."""
    return True


class DtlsSession:
    """One DTLS association as client (`active`) or server (`passive`)."""

    def __init__(self, certificate: LocalCertificate, *, client: bool) -> None:
        self.client = client
        self._connection = SSL.Connection(certificate.context, None)
        self._connection.set_ciphertext_mtu(_MTU)
        if client:
            self._connection.set_connect_state()
        else:
            self._connection.set_accept_state()
        self.remote_fingerprint: str | None = None
        """Upper-case SHA-256 hex pairs from the peer's SDP; checked when the handshake ends."""
        self.srtp: SrtpSession | None = None
        """Our SRTP contexts once the handshake is verified: we send with our half of the
        keying material and receive with the peer's."""
        self.handshake_done = False
        self.closed_by_peer = False

    def start(self) -> list[bytes]:
        """The client's first flight (nothing for a server)."""
        return self._advance() if self.client else []

    def receive(self, datagram: bytes) -> list[bytes]:
        """One DTLS datagram from the peer; the datagrams to send back.

        Raises DtlsError when the handshake fails or the certificate does not match.
        """
        self._connection.bio_write(datagram)
        if not self.handshake_done:
            return self._advance()
        try:
            self._connection.recv(_MAX_FLIGHT)
        except SSL.ZeroReturnError:
            self.closed_by_peer = True
        except SSL.WantReadError:
            pass
        except SSL.Error:
            pass  # a bad record after the handshake is dropped, as DTLS does
        return self._pending()

    def timeout(self) -> float | None:
        """Seconds until a retransmission is due; None when nothing waits."""
        if self.handshake_done:
            return None
        return self._connection.DTLSv1_get_timeout()

    def handle_timeout(self) -> list[bytes]:
        """Retransmit the last flight if it is due; DtlsError once OpenSSL gives up."""
        if self.handshake_done:
            return []
        try:
            self._connection.DTLSv1_handle_timeout()
        except SSL.Error as error:
            raise DtlsError(f"DTLS handshake gave up: {error}") from None
        return self._pending()

    def verify(self) -> None:
        """Check the peer's certificate against `remote_fingerprint` and key SRTP.

        Called when the handshake is done; again once the fingerprint is known if it was not.
        """
        if not self.handshake_done or self.srtp is not None or self.remote_fingerprint is None:
            return
        certificate = self._connection.get_peer_certificate()
        if certificate is None:
            raise DtlsError("peer sent no certificate")
        digest = certificate.digest("sha256").decode().upper()
        if digest != self.remote_fingerprint:
            raise DtlsError("peer certificate does not match the SDP fingerprint")
        if self._connection.get_selected_srtp_profile() != _SRTP_PROFILE:
            raise DtlsError("peer did not agree on an SRTP profile")
        material = self._connection.export_keying_material(
            b"EXTRACTOR-dtls_srtp", 2 * (_KEY_SIZE + _SALT_SIZE)
        )
        client_key = material[:_KEY_SIZE]
        server_key = material[_KEY_SIZE : 2 * _KEY_SIZE]
        client_salt = material[2 * _KEY_SIZE : 2 * _KEY_SIZE + _SALT_SIZE]
        server_salt = material[2 * _KEY_SIZE + _SALT_SIZE :]
        client = client_key + client_salt
        server = server_key + server_salt
        ours, theirs = (client, server) if self.client else (server, client)
        self.srtp = SrtpSession(SrtpKey(_SRTP_SUITE, ours), SrtpKey(_SRTP_SUITE, theirs))

    def close(self) -> list[bytes]:
        """Our close_notify, once the association is up."""
        if not self.handshake_done:
            return []
        try:
            self._connection.shutdown()
        except SSL.Error:
            return []
        return self._pending()

    def _advance(self) -> list[bytes]:
        try:
            self._connection.do_handshake()
        except SSL.WantReadError:
            return self._pending()
        except SSL.Error as error:
            raise DtlsError(f"DTLS handshake failed: {error}") from None
        self.handshake_done = True
        flights = self._pending()
        self.verify()
        return flights

    def _pending(self) -> list[bytes]:
        flights = []
        while True:
            try:
                data = self._connection.bio_read(_MAX_FLIGHT)
            except SSL.WantReadError:
                break
            if not data:
                break
            flights.append(data)
        return flights
