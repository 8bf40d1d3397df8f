"""Engine errors: one exception type carrying an rtpbridge error code.

The engine raises `EngineError(code, message)` for every semantic failure; the control server
translates it to the wire's error shape (`{"code", "message"}`) at its boundary and only there.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ENDPOINT_ERROR",
    "INVALID_PARAMS",
    "MAX_SESSIONS_REACHED",
    "SESSION_GONE",
    "SESSION_NOT_FOUND",
    "SESSION_NOT_ORPHANED",
    "SHUTTING_DOWN",
    "TRANSFER_FAILED",
    "EngineError",
    "endpoint_error",
]

SHUTTING_DOWN: Final = "SHUTTING_DOWN"
MAX_SESSIONS_REACHED: Final = "MAX_SESSIONS_REACHED"
SESSION_NOT_FOUND: Final = "SESSION_NOT_FOUND"
SESSION_NOT_ORPHANED: Final = "SESSION_NOT_ORPHANED"
SESSION_GONE: Final = "SESSION_GONE"
ENDPOINT_ERROR: Final = "ENDPOINT_ERROR"
INVALID_PARAMS: Final = "INVALID_PARAMS"
TRANSFER_FAILED: Final = "TRANSFER_FAILED"


class EngineError(Exception):
    """A request the engine refused; `code` is an rtpbridge error code, `message` human text."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def endpoint_error(message: str) -> EngineError:
    """Shorthand for the most common failure of endpoint methods."""
    return EngineError(ENDPOINT_ERROR, message)
