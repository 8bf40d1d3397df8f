"""SDES keying (RFC 4568) of a plain RTP endpoint: which key protects which direction, and rekeys.

Keys per direction: answering an offer with `a=crypto`, we receive with the offerer's key and
send with a fresh random key that our answer announces (same tag and suite). Making our own
offer, we send with the key it announces and receive with the key of the answer (a peer may
echo ours back). `rekey` replaces the send key at once; the key of the next answer then becomes
the pending receive key of the `SrtpSession` (tried first for a while, the old one after it).
"""

from __future__ import annotations

from callbridge.engine.errors import endpoint_error
from callbridge.media import sdp
from callbridge.media.srtp import DEFAULT_SUITE, SrtpError, SrtpKey, SrtpSession

__all__ = ["SdesKeys"]


def _key(crypto: sdp.Crypto) -> SrtpKey:
    try:
        return crypto.key()
    except SrtpError as error:
        raise endpoint_error(f"SRTP key init failure: {error}") from None


class SdesKeys:
    """One SRTP endpoint's SDES state around its `SrtpSession` (see the module docstring)."""

    def __init__(self, srtp: SrtpSession, tag: int) -> None:
        self.srtp = srtp
        self.tag = tag
        self.rekeying = False
        """`rekey` was called and its answer is still to come."""

    @classmethod
    def answering(cls, offered: sdp.Crypto) -> SdesKeys:
        """Keys for our answer to `offered` (ENDPOINT_ERROR for a key that cannot be used)."""
        receive_key = _key(offered)
        return cls(SrtpSession(SrtpKey.generate(offered.suite), receive_key), offered.tag)

    @classmethod
    def offering(cls) -> SdesKeys:
        """Keys for our offer; nothing is received until the answer's key is in."""
        return cls(SrtpSession(SrtpKey.generate(DEFAULT_SUITE)), 1)

    @property
    def crypto(self) -> sdp.Crypto:
        """The `a=crypto` line our SDP carries: our current send key."""
        key = self.srtp.send_key
        return sdp.Crypto(self.tag, key.base64(), key.suite)

    def take_answer(self, crypto: sdp.Crypto, now: float) -> None:
        """The answer's key becomes the receive key (pending during a rekey)."""
        suite = self.srtp.send_key.suite
        if crypto.suite != suite:
            raise endpoint_error(f"SDP answer uses crypto suite {crypto.suite}, offered {suite}")
        key = _key(crypto)
        if self.rekeying:
            self.srtp.install_pending_receive_key(key, now)
            self.rekeying = False
        elif key != self.srtp.receive_key:
            self.srtp.set_receive_key(key)

    def rekey(self) -> None:
        """A new send key, used from the next packet on."""
        self.srtp.set_send_key(SrtpKey.generate(self.srtp.send_key.suite))
        self.rekeying = True
