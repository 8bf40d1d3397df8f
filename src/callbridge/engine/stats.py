"""Periodic per-endpoint statistics (`stats.subscribe` / `stats.unsubscribe`).

A subscription is one listener on the media clock that compares the frame time with its next
deadline (a grid `interval_ms` apart, so emission does not drift) and then emits one `stats`
event for the whole session: `{"endpoints": [...]}` with, per endpoint, `inbound` (packets,
payload bytes, packets_lost, jitter_ms, last_received_ms_ago), `outbound` (packets, payload
bytes), `rtt_ms` (from RTCP receiver reports; null until measured), `codec` and `state`. As in
rtpbridge, `state` is capitalised here ("Connected") though lower-case everywhere else.
"""

from __future__ import annotations

from typing import Any

from callbridge.engine.endpoint import Endpoint
from callbridge.engine.session import MediaSession

__all__ = ["StatsSubscription", "endpoint_stats", "subscribe_stats", "unsubscribe_stats"]


def _zero_inbound() -> dict[str, Any]:
    return {
        "packets": 0,
        "bytes": 0,
        "packets_lost": 0,
        "jitter_ms": 0.0,
        "last_received_ms_ago": 0,
    }


def endpoint_stats(endpoint: Endpoint) -> dict[str, Any]:
    """One endpoint's entry of the `stats` event."""
    measured = endpoint.stats()
    entry = {
        "endpoint_id": endpoint.id,
        "inbound": measured.get("inbound") or _zero_inbound(),
        "outbound": measured.get("outbound") or {"packets": 0, "bytes": 0},
        "rtt_ms": measured.get("rtt_ms"),
        "codec": endpoint.stats_codec,
        "state": endpoint.state.capitalize(),
    }
    if "srtp" in measured:
        entry["srtp"] = measured["srtp"]  # SRTP endpoints: suite and drops by reason
    return entry


class StatsSubscription:
    """The `stats` timer of one session; a session observer so it ends with the session."""

    def __init__(self, session: MediaSession, interval_ms: int, now: float) -> None:
        self.session = session
        self.interval_s = interval_ms / 1000
        self._due = now + self.interval_s
        session.observers.append(self)
        session.context.clock.add(self._on_tick)

    @classmethod
    def find(cls, session: MediaSession) -> StatsSubscription | None:
        for observer in session.observers:
            if isinstance(observer, cls):
                return observer
        return None

    def change(self, interval_ms: int, now: float) -> None:
        self.interval_s = interval_ms / 1000
        self._due = now + self.interval_s

    def cancel(self) -> None:
        self.session.context.clock.discard(self._on_tick)
        if self in self.session.observers:
            self.session.observers.remove(self)

    def _on_tick(self, now: float) -> None:
        if now < self._due:
            return
        self._due += self.interval_s
        if self._due <= now:  # after a stall: next deadline from now, no burst
            self._due = now + self.interval_s
        session = self.session
        if not session.alive:
            return
        session.emit(
            "stats",
            {"endpoints": [endpoint_stats(endpoint) for endpoint in session.endpoints.values()]},
        )

    # -- SessionObserver -----------------------------------------------------------------------

    def endpoint_leaving(self, endpoint: Endpoint, reason: str) -> None:
        """Nothing to do: each event lists the endpoints present then."""

    def session_ending(self, reason: str) -> None:
        self.session.context.clock.discard(self._on_tick)


def subscribe_stats(session: MediaSession, interval_ms: int, now: float) -> None:
    """Start the periodic `stats` event, or change its interval (counted from `now`)."""
    session.check_alive()
    subscription = StatsSubscription.find(session)
    if subscription is None:
        StatsSubscription(session, interval_ms, now)
    else:
        subscription.change(interval_ms, now)


def unsubscribe_stats(session: MediaSession) -> None:
    """Stop the `stats` event; nothing happens when there is no subscription."""
    subscription = StatsSubscription.find(session)
    if subscription is not None:
        subscription.cancel()
