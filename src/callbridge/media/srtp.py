"""SRTP and SRTCP (RFC 3711, RFC 7714) over libsrtp: master keys, and one endpoint's contexts.

`SrtpKey` is a suite and its master key + salt, however it was agreed (SDES `a=crypto` lines or
DTLS-SRTP keying material). `SrtpSession` holds one endpoint's two directions: what we send is
protected with the send key, what arrives is unprotected with the receive key, each with its own
SRTP and SRTCP contexts (libsrtp keeps an SRTCP context beside every SRTP one, derived from the
same master key). Datagrams are told apart as RFC 5761 does (second octet 192..223 is RTCP), so
one session serves a muxed port as well as separate RTP and RTCP ports.

What fails to unprotect is dropped and counted by reason: failed authentication (a tampered
packet or a wrong key), a replay (a duplicate, or older than the replay window), and malformed
datagrams; the next valid packet passes as usual. A receive key can be replaced gently
(`install_pending_receive_key`): for `PENDING_KEY_TIMEOUT_S` inbound packets are tried with the
new key first, then with the old one; the first success with the new key promotes it, and when
the time is up the new key is used alone.

Sans-I/O: no clock is read (times are passed in, monotonic seconds), no socket is touched.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import pylibsrtp

from callbridge.media.errors import MediaError

__all__ = [
    "DEFAULT_SUITE",
    "PENDING_KEY_TIMEOUT_S",
    "REPLAY_WINDOW_PACKETS",
    "SUITES",
    "SrtpError",
    "SrtpKey",
    "SrtpSession",
    "SrtpSuite",
    "is_rtcp",
]

REPLAY_WINDOW_PACKETS: Final = 64
"""RTP packets remembered for replay protection (older ones are refused as replays)."""
PENDING_KEY_TIMEOUT_S: Final = 5.0
"""How long the previous receive key is still tried after a new one was installed."""


class SrtpError(MediaError, ValueError):
    """A key that cannot be used: unknown suite, bad base64, wrong length."""


@dataclass(frozen=True)
class SrtpSuite:
    """One crypto suite as SDES names it, and the libsrtp profile that implements it."""

    name: str
    profile: int
    master_key_bytes: int
    """Master key plus master salt, bytes."""


SUITES: Final[Mapping[str, SrtpSuite]] = {
    suite.name: suite
    for suite in (
        SrtpSuite("AES_CM_128_HMAC_SHA1_80", pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 30),
        SrtpSuite("AES_CM_128_HMAC_SHA1_32", pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32, 30),
        SrtpSuite("AEAD_AES_128_GCM", pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 28),
        SrtpSuite("AEAD_AES_256_GCM", pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 44),
    )
}
"""The suites offered and accepted, by SDES name (RFC 4568 section 6.2, RFC 7714 section 12)."""
DEFAULT_SUITE: Final = "AES_CM_128_HMAC_SHA1_80"

_REPLAY_ERRORS: Final = frozenset(
    {"replay check failed (bad index)", "replay check failed (index too old)"}
)
_AUTHENTICATION_ERROR: Final = "authentication failure"


def is_rtcp(datagram: bytes) -> bool:
    """RFC 5761 demultiplexing: packet types 192..223 in the second octet are RTCP."""
    return len(datagram) > 1 and 192 <= datagram[1] <= 223


def _suite(name: str) -> SrtpSuite:
    suite = SUITES.get(name)
    if suite is None:
        raise SrtpError(f"unsupported SRTP crypto suite {name!r}")
    return suite


@dataclass(frozen=True, repr=False)
class SrtpKey:
    """A crypto suite and its master key followed by the master salt (`master`, bytes)."""

    suite: str
    master: bytes

    def __post_init__(self) -> None:
        needed = _suite(self.suite).master_key_bytes
        if len(self.master) != needed:
            raise SrtpError(
                f"SRTP master key for {self.suite} is {len(self.master)} bytes, need {needed}"
            )

    @classmethod
    def generate(cls, suite: str = DEFAULT_SUITE) -> SrtpKey:
        """A fresh random key for `suite`."""
        return cls(suite, secrets.token_bytes(_suite(suite).master_key_bytes))

    @classmethod
    def from_base64(cls, suite: str, text: str) -> SrtpKey:
        """An SDES inline key; missing padding is tolerated and longer keys are cut, as other
        implementations do, while bad base64 and short keys are refused (SrtpError)."""
        needed = _suite(suite).master_key_bytes
        try:
            master = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError) as error:
            raise SrtpError(f"bad SRTP key base64: {error}") from None
        if len(master) < needed:
            raise SrtpError(f"SRTP master key for {suite} is {len(master)} bytes, need {needed}")
        return cls(suite, master[:needed])

    def base64(self) -> str:
        """The key as an SDES `inline:` value."""
        return base64.b64encode(self.master).decode("ascii")

    def __repr__(self) -> str:
        return f"SrtpKey({self.suite}, <secret>)"


def _context(key: SrtpKey, ssrc_type: int) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(
        key=key.master, ssrc_type=ssrc_type, srtp_profile=SUITES[key.suite].profile
    )
    policy.window_size = REPLAY_WINDOW_PACKETS
    return pylibsrtp.Session(policy)


class SrtpSession:
    """The SRTP contexts of one endpoint: protect what we send, unprotect what arrives.

    Counters (plain attributes, read them): `authentication_failures` (tampered, or another
    key), `replayed_packets`, `malformed_packets` (too short or too long to be SRTP/SRTCP), and
    `unkeyed_packets` (arrived before there was a receive key), all dropped; `rtcp_drops` is how
    many of those were SRTCP; `protect_failures` (packets we could not protect, not sent).
    """

    def __init__(self, send_key: SrtpKey, receive_key: SrtpKey | None = None) -> None:
        self.send_key = send_key
        self._protector = _context(send_key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        self.receive_key = receive_key
        self._unprotector = None if receive_key is None else self._inbound(receive_key)
        self.pending_receive_key: SrtpKey | None = None
        """A new receive key still on trial (see the module docstring)."""
        self._pending: pylibsrtp.Session | None = None
        self._pending_until = 0.0
        self.authentication_failures = self.replayed_packets = self.malformed_packets = 0
        self.unkeyed_packets = self.rtcp_drops = self.protect_failures = 0

    @staticmethod
    def _inbound(key: SrtpKey) -> pylibsrtp.Session:
        return _context(key, pylibsrtp.Policy.SSRC_ANY_INBOUND)

    @property
    def dropped_packets(self) -> int:
        """Every inbound datagram dropped so far."""
        return (
            self.authentication_failures
            + self.replayed_packets
            + self.malformed_packets
            + self.unkeyed_packets
        )

    def counters(self) -> dict[str, int]:
        """The drop counters by reason, for stats."""
        return {
            "authentication_failures": self.authentication_failures,
            "replayed_packets": self.replayed_packets,
            "malformed_packets": self.malformed_packets,
            "unkeyed_packets": self.unkeyed_packets,
            "rtcp_drops": self.rtcp_drops,
            "protect_failures": self.protect_failures,
        }

    # ------------------------------------------------------------------ keys

    def set_send_key(self, key: SrtpKey) -> None:
        """Protect from now on with `key` (fresh SRTP and SRTCP contexts)."""
        self._protector = _context(key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        self.send_key = key

    def set_receive_key(self, key: SrtpKey) -> None:
        """Unprotect from now on with `key` alone (no trial period); a pending key is dropped."""
        self._unprotector = self._inbound(key)
        self.receive_key = key
        self._pending = self.pending_receive_key = None

    def install_pending_receive_key(self, key: SrtpKey, now: float) -> None:
        """Try `key` first until it works or `PENDING_KEY_TIMEOUT_S` after `now`; without a
        receive key yet it is used at once, and the current key keeps its contexts (replay
        window, rollover counter)."""
        if key == self.receive_key:
            self._pending = self.pending_receive_key = None
            return
        if self._unprotector is None:
            self.set_receive_key(key)
            return
        self._pending = self._inbound(key)
        self.pending_receive_key = key
        self._pending_until = now + PENDING_KEY_TIMEOUT_S

    def _promote(self) -> None:
        assert self._pending is not None and self.pending_receive_key is not None
        self._unprotector = self._pending
        self.receive_key = self.pending_receive_key
        self._pending = self.pending_receive_key = None

    # ------------------------------------------------------------------ packets

    def protect(self, datagram: bytes) -> bytes | None:
        """One outgoing RTP or RTCP packet, protected; None (counted) if it cannot be."""
        try:
            if is_rtcp(datagram):
                return self._protector.protect_rtcp(datagram)
            return self._protector.protect(datagram)
        except (pylibsrtp.Error, ValueError):
            self.protect_failures += 1
            return None

    def protect_rtcp(self, datagram: bytes) -> bytes | None:
        """One outgoing RTCP packet (for a separate RTCP port), protected; None if it cannot be."""
        try:
            return self._protector.protect_rtcp(datagram)
        except (pylibsrtp.Error, ValueError):
            self.protect_failures += 1
            return None

    def unprotect(self, datagram: bytes, now: float) -> bytes | None:
        """Hot path: one datagram of the RTP port (SRTP, or SRTCP when muxed) in the clear; None
        when it is dropped (counted by reason)."""
        return self._unprotect(datagram, is_rtcp(datagram), now)

    def unprotect_rtcp(self, datagram: bytes, now: float) -> bytes | None:
        """One datagram of the RTCP port in the clear; None when it is dropped."""
        return self._unprotect(datagram, True, now)

    def _unprotect(self, datagram: bytes, rtcp: bool, now: float) -> bytes | None:
        if self._pending is not None:
            if now >= self._pending_until:
                self._promote()
            else:
                try:
                    plain = self._open(self._pending, datagram, rtcp)
                except (pylibsrtp.Error, ValueError):
                    pass
                else:
                    self._promote()
                    return plain
        context = self._unprotector
        if context is None:
            self.unkeyed_packets += 1
            self.rtcp_drops += rtcp
            return None
        try:
            return self._open(context, datagram, rtcp)
        except pylibsrtp.Error as error:
            message = str(error)
            if message == _AUTHENTICATION_ERROR:
                self.authentication_failures += 1
            elif message in _REPLAY_ERRORS:
                self.replayed_packets += 1
            else:
                self.malformed_packets += 1
        except ValueError:
            self.malformed_packets += 1
        self.rtcp_drops += rtcp
        return None

    @staticmethod
    def _open(context: pylibsrtp.Session, datagram: bytes, rtcp: bool) -> bytes:
        return context.unprotect_rtcp(datagram) if rtcp else context.unprotect(datagram)

    def __repr__(self) -> str:
        pending = ", rekeying" if self._pending is not None else ""
        return f"SrtpSession({self.send_key.suite}, dropped={self.dropped_packets}{pending})"
