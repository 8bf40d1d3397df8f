"""What a control method may use of the connection that received it.

Method handlers get a `ControlContext`, never the connection itself, so the connection's queues
and writer stay its own. The checks come in the order clients rely on: a session-bound method
without a bound session fails with NO_SESSION before its params are looked at, bad params fail
with INVALID_PARAMS, and only then does a session that has ended fail with SESSION_GONE.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import msgspec

from callbridge.server import control_messages as wire
from callbridge.server.config import Settings
from callbridge.server.errors import INVALID_PARAMS, NO_SESSION, SESSION_GONE, ControlError

if TYPE_CHECKING:
    from callbridge.engine.manager import SessionManager
    from callbridge.engine.session import MediaSession

__all__ = ["NO_SESSION_MESSAGE", "ControlContext", "EventEmitter"]

NO_SESSION_MESSAGE: Final = "No session bound. Call session.create or session.attach first."

EventEmitter = Callable[[str, dict[str, Any], bool], None]
"""Queues one event (name, data, critical) for the client without blocking."""


class ControlContext:
    """One connection's side of every control method: its session binding, its event sink, its
    call subscription, and the server's manager and settings."""

    def __init__(
        self,
        manager: SessionManager,
        settings: Settings,
        emit: EventEmitter,
        call_subscribers: set[ControlContext],
        number: int,
    ) -> None:
        self.manager = manager
        self.settings = settings
        self.emit = emit
        """The sink a session created or attached by this connection sends its events to."""
        self.number = number
        """The connection's number, for log lines."""
        self.session: MediaSession | None = None
        self._call_subscribers = call_subscribers
        self._max_sdp_bytes = settings.max_sdp_size_kb * 1024

    def bound_session(self) -> MediaSession:
        """The bound session, checked before any params are parsed."""
        if self.session is None:
            raise ControlError(NO_SESSION, NO_SESSION_MESSAGE)
        return self.session

    def params(self, raw: msgspec.Raw, params_type: type[wire.ParamsT]) -> wire.ParamsT:
        """A session-bound method's decoded params (NO_SESSION first)."""
        self.bound_session()
        return wire.decode_params(raw, params_type)

    def live(self) -> MediaSession:
        """The bound session if it still runs; every command counts as activity."""
        session = self.bound_session()
        if not session.alive:
            raise ControlError(SESSION_GONE, f"session {session.id} has ended")
        session.touch()
        return session

    def check_sdp(self, sdp: str) -> None:
        """Refuse an SDP body over max_sdp_size_kb (UTF-8 bytes)."""
        if len(sdp.encode()) > self._max_sdp_bytes:
            raise ControlError(INVALID_PARAMS, "SDP too large")

    def subscribe_calls(self) -> None:
        """Receive `call.incoming` for every call parked on the media ingress path."""
        self._call_subscribers.add(self)

    def unsubscribe_calls(self) -> None:
        self._call_subscribers.discard(self)
