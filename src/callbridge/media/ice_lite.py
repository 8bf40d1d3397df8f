"""An ICE-lite agent (RFC 8445 section 2.5) without I/O: one host candidate answering checks.

The full agent on the other side (a browser) sends STUN binding requests to our one candidate;
`IceLite.receive` answers those that carry our short-term credentials (USERNAME
"ours:theirs", MESSAGE-INTEGRITY with our password) and ignores every other datagram. A check
with USE-CANDIDATE nominates the address it came from: that is where media goes. The checks
the peer keeps sending are its consent freshness (RFC 7675): `consent_expired` says when the
last one is too old.

An ICE restart (`restart`) makes fresh local credentials; the previous ones stay valid until a
check with the new ones arrives, so the call keeps its consent while the new offer is signalled.
Times are seconds on the caller's monotonic clock.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Final

from callbridge.media import stun

__all__ = ["CONSENT_TIMEOUT_S", "IceCredentials", "IceLite", "IceReply"]

CONSENT_TIMEOUT_S: Final = 30.0
"""RFC 7675: consent is lost this long after the last valid check."""
_UFRAG_CHARACTERS: Final = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"

Address = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class IceCredentials:
    """A ufrag (at least 4 characters) and password (at least 22), as SDP writes them."""

    ufrag: str
    password: str

    @classmethod
    def generate(cls) -> IceCredentials:
        def text(length: int) -> str:
            return "".join(secrets.choice(_UFRAG_CHARACTERS) for _ in range(length))

        return cls(text(8), text(24))


@dataclass(frozen=True, slots=True)
class IceReply:
    """What to do with a valid check: send `response` back to `address`; `nominated` when
    it carried USE-CANDIDATE (media now goes to `address`)."""

    response: bytes
    address: Address
    nominated: bool


class IceLite:
    """The local side of one ICE-lite media stream (one component: rtcp-mux).

    Counters: `checks_received` (valid checks answered), `checks_rejected` (STUN that failed
    parsing or credentials, ignored).
    """

    def __init__(self, now: float, consent_timeout_s: float = CONSENT_TIMEOUT_S) -> None:
        self.local = IceCredentials.generate()
        self.remote_ufrag: str | None = None
        """The peer's ufrag from its SDP; None until known (checks are ignored until then)."""
        self._previous: IceCredentials | None = None
        self._previous_remote: str | None = None
        self._consent_timeout_s = consent_timeout_s
        self._last_check = now
        self.selected: Address | None = None
        """The nominated address (or the first checked one until a nomination)."""
        self.checks_received = self.checks_rejected = 0

    @property
    def restarting(self) -> bool:
        """An ICE restart is under way: the previous credentials are still accepted."""
        return self._previous is not None

    def set_remote(self, ufrag: str) -> None:
        """The peer's ufrag from its offer or answer."""
        if self._previous is not None and self._previous_remote is None:
            self._previous_remote = self.remote_ufrag
        self.remote_ufrag = ufrag

    def restart(self) -> IceCredentials:
        """Fresh local credentials (the old ones stay valid until a check uses the new ones)."""
        self._previous = self.local
        self.local = IceCredentials.generate()
        return self.local

    def receive(self, data: bytes, address: Address, now: float) -> IceReply | None:
        """One datagram that looked like STUN: the reply to a valid check, else None."""
        try:
            message = stun.parse_stun(data)
        except stun.StunError:
            self.checks_rejected += 1
            return None
        if message.message_type != stun.BINDING_REQUEST:
            return None
        credentials = self._credentials_for(message.attributes.get(stun.USERNAME))
        if credentials is None or not message.check_integrity(data, credentials.password.encode()):
            self.checks_rejected += 1
            return None
        if credentials is self.local:
            self._previous = self._previous_remote = None
        self.checks_received += 1
        self._last_check = now
        nominated = stun.USE_CANDIDATE in message.attributes
        if nominated or self.selected is None:
            self.selected = address
        mapped = stun.xor_address(address[0], address[1], message.transaction_id)
        response = stun.build_stun(
            stun.BINDING_SUCCESS,
            message.transaction_id,
            [(stun.XOR_MAPPED_ADDRESS, mapped)],
            integrity_key=credentials.password.encode(),
        )
        return IceReply(response, address, nominated)

    def _credentials_for(self, username: bytes | None) -> IceCredentials | None:
        if username is None or self.remote_ufrag is None:
            return None
        ours, _, theirs = username.decode("utf-8", "replace").partition(":")
        if ours == self.local.ufrag and theirs == self.remote_ufrag:
            return self.local
        previous = self._previous
        if previous is not None and ours == previous.ufrag:
            if theirs in (self.remote_ufrag, self._previous_remote):
                return previous
        return None

    def consent_expired(self, now: float) -> bool:
        """True when the last valid check is older than the consent timeout."""
        return now - self._last_check > self._consent_timeout_s
