"""Connectivity checks of a controlling ICE agent (RFC 8445 section 7.2) without I/O.

An offerer that talks to an ICE-lite answerer must check: the lite side only answers. `IceChecks`
sends binding requests to the peer's candidates with aggressive nomination (every request
carries USE-CANDIDATE, so the first pair that answers is the selected one), retransmits them
until one succeeds, and then keeps checking the selected pair so that both sides see consent
(RFC 7675). Only responses to our own transactions, signed with the peer's password, count.
Times are seconds on the caller's monotonic clock.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from typing import Any, Final

from callbridge.media import stun
from callbridge.media.ice_lite import IceCredentials

__all__ = ["CHECK_INTERVAL_S", "CONSENT_INTERVAL_S", "IceChecks"]

CHECK_INTERVAL_S: Final = 0.05
"""Pacing of checks while no pair has answered (RFC 8445 Ta: 50 ms)."""
CONSENT_INTERVAL_S: Final = 4.0
"""Checks on the selected pair once it works (RFC 7675: every 4-6 s)."""
_PEER_REFLEXIVE_PRIORITY: Final = struct.pack("!I", (110 << 24) | (65535 << 8) | 255)
_MAX_OUTSTANDING: Final = 64

Address = tuple[Any, ...]


class IceChecks:
    """Checks from `local` toward the peer's `candidates`, signed with the peer's password."""

    def __init__(
        self,
        local: IceCredentials,
        remote_ufrag: str,
        remote_password: str,
        candidates: Sequence[Address],
        now: float,
    ) -> None:
        self._username = f"{remote_ufrag}:{local.ufrag}".encode()
        self._key = remote_password.encode()
        self._tiebreaker = os.urandom(8)
        self.candidates = tuple(candidates)
        self.selected: Address | None = None
        """The first candidate that answered a check: where media goes."""
        self._outstanding: dict[bytes, Address] = {}
        self._next_at = now
        self._last_success = now
        self.responses_rejected = 0

    def due(self, now: float) -> list[tuple[bytes, Address]]:
        """The checks to send now (none when it is not yet time): (datagram, address) pairs."""
        if now < self._next_at:
            return []
        if self.selected is None:
            targets: Sequence[Address] = self.candidates
            self._next_at = now + CHECK_INTERVAL_S
        else:
            targets = (self.selected,)
            self._next_at = now + CONSENT_INTERVAL_S
        if len(self._outstanding) > _MAX_OUTSTANDING:
            self._outstanding.clear()  # unanswered checks of an unreachable pair expire
        checks = []
        for address in targets:
            transaction_id = os.urandom(12)
            self._outstanding[transaction_id] = address
            checks.append((self._request(transaction_id), address))
        return checks

    def next_due(self) -> float:
        """When `due` has something to send next (monotonic seconds)."""
        return self._next_at

    def receive(self, message: stun.StunMessage, data: bytes, now: float) -> bool:
        """A STUN response; True when it answers one of our checks (the first selects a pair)."""
        address = self._outstanding.pop(message.transaction_id, None)
        if address is None:
            return False
        if message.message_type != stun.BINDING_SUCCESS or not message.check_integrity(
            data, self._key
        ):
            self.responses_rejected += 1
            return False
        self._last_success = now
        if self.selected is None:
            self.selected = address
            self._next_at = now + CONSENT_INTERVAL_S
        return True

    def silent_for(self, now: float) -> float:
        """Seconds since the last answered check (or since the checks began)."""
        return now - self._last_success

    def _request(self, transaction_id: bytes) -> bytes:
        return stun.build_stun(
            stun.BINDING_REQUEST,
            transaction_id,
            [
                (stun.USERNAME, self._username),
                (stun.PRIORITY, _PEER_REFLEXIVE_PRIORITY),
                (stun.ICE_CONTROLLING, self._tiebreaker),
                (stun.USE_CANDIDATE, b""),
            ],
            integrity_key=self._key,
        )
