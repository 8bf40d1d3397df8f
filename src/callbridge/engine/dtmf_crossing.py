"""DTMF between the legs of one session, and the session's one RFC 4733 injection slot.

A digit detected on a leg (RFC 4733 from an RTP peer, a `dtmf` event from an RTVBP voice peer)
follows routing: every endpoint that hears that leg is told (`Endpoint.hear_digit`) and sends it
its own way (an RTVBP leg as an event or in-band tones). A digit that arrived as packets is
already forwarded packet by packet to packet destinations; one that did not (an RTVBP digit)
is injected as RFC 4733 into the packet endpoints that want it. A digit is never sent back to
the leg it came from.

Only one injected digit runs per session at a time (`endpoint.dtmf.inject` included): digits
that cross legs wait in a queue that the media clock starts one after the other.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Final

from callbridge.engine.endpoint import Endpoint
from callbridge.engine.errors import INVALID_PARAMS, EngineError
from callbridge.media.telephone_event import TelephoneEventError

__all__ = ["INJECTION_VOLUME", "DtmfCrossing"]

INJECTION_VOLUME: Final = 10
"""Volume (dBm0 below 0) of digits that cross from a leg that did not send packets."""


class DtmfCrossing:
    """The digit routing and injection slot of one session."""

    def __init__(
        self,
        endpoints: Mapping[str, Endpoint],
        destinations: Callable[[str], tuple[str, ...]],
    ) -> None:
        self._endpoints = endpoints
        self._destinations = destinations
        """source id -> ids of the endpoints that hear it (the current routing table)."""
        self._active: Endpoint | None = None
        """The endpoint sending an injected digit, while it does."""
        self._pending: deque[tuple[Endpoint, str, int]] = deque()
        self._carried: list[Endpoint] = []
        """Endpoints that arrived (a transfer) mid-digit while the slot was taken here."""

    @property
    def busy(self) -> bool:
        """An injected digit is still being sent."""
        active = self._active
        return active is not None and not active.closed and active.injecting

    @property
    def idle(self) -> bool:
        """No digit waits, runs or is carried: `tick` has nothing to do."""
        return self._active is None and not self._pending and not self._carried

    def route(self, source: Endpoint, digit: str, duration_ms: int) -> None:
        """`digit` from `source` reaches the endpoints that hear it."""
        from_packets = source.is_rtp
        for destination_id in self._destinations(source.id):
            destination = self._endpoints.get(destination_id)
            if destination is None:
                continue
            if destination.hear_digit(digit, duration_ms, from_packets=from_packets):
                self._pending.append((destination, digit, duration_ms))
        if self._pending:
            self._start_pending()

    def inject(self, endpoint: Endpoint, digit: str, duration_ms: int, volume: int) -> None:
        """`endpoint.dtmf.inject`: one digit toward `endpoint`'s own peer (the caller checked
        that the slot is free)."""
        try:
            takes_slot = endpoint.inject_dtmf(digit, duration_ms, volume)
        except TelephoneEventError as error:
            raise EngineError(INVALID_PARAMS, str(error)) from None
        if takes_slot:
            self._active = endpoint

    def tick(self, now: float) -> None:
        """Every frame: start a waiting digit if the slot is free, then pace the running one."""
        if self._pending:
            self._start_pending()
        active = self._active
        if active is not None and (active.closed or not active.pace_injection(now)):
            self._active = None
        if self._carried:
            self._carried = [
                endpoint
                for endpoint in self._carried
                if not endpoint.closed and endpoint.pace_injection(now)
            ]

    def hand_over(self, endpoint: Endpoint) -> None:
        """`endpoint` leaves alive (a transfer): its queued digits are dropped, and the digit it
        is sending is paced by its new session from now on (`take_over` there)."""
        self._pending = deque(item for item in self._pending if item[0] is not endpoint)
        if self._active is endpoint:
            self._active = None
        if endpoint in self._carried:
            self._carried.remove(endpoint)

    def take_over(self, endpoint: Endpoint) -> None:
        """Pace the injected digit of an endpoint that arrived mid-digit (a transfer)."""
        if not endpoint.injecting:
            return
        if self.busy:
            self._carried.append(endpoint)
        else:
            self._active = endpoint

    def clear(self) -> None:
        self._active = None
        self._pending.clear()
        self._carried.clear()

    def _start_pending(self) -> None:
        pending = self._pending
        while pending and not self.busy:
            endpoint, digit, duration_ms = pending.popleft()
            if endpoint.closed or endpoint.id not in self._endpoints:
                continue
            try:
                if endpoint.inject_dtmf(digit, duration_ms, INJECTION_VOLUME):
                    self._active = endpoint
            except (EngineError, TelephoneEventError):
                continue
