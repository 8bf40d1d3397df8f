"""Control-protocol errors: the rtpbridge error codes and the one exception that carries them.

Handlers raise `ControlError(code, message)`; the connection loop turns it into the wire shape
`{"id", "error": {"code", "message"}}` and nothing else does. Engine errors keep their code (the
shared codes are the engine's constants).
"""

from __future__ import annotations

from typing import Final

from callbridge.engine.errors import (
    ENDPOINT_ERROR,
    INVALID_PARAMS,
    SESSION_GONE,
    SESSION_NOT_FOUND,
    SHUTTING_DOWN,
)

__all__ = [
    "ENDPOINT_ERROR",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "NO_SESSION",
    "PARSE_ERROR",
    "RECORDING_ERROR",
    "SESSION_ALREADY_BOUND",
    "SESSION_GONE",
    "SESSION_NOT_FOUND",
    "SHUTTING_DOWN",
    "STATS_ERROR",
    "UNKNOWN_METHOD",
    "VAD_ERROR",
    "ControlError",
]

PARSE_ERROR: Final = "PARSE_ERROR"
INVALID_REQUEST: Final = "INVALID_REQUEST"
UNKNOWN_METHOD: Final = "UNKNOWN_METHOD"
NO_SESSION: Final = "NO_SESSION"
SESSION_ALREADY_BOUND: Final = "SESSION_ALREADY_BOUND"
RECORDING_ERROR: Final = "RECORDING_ERROR"
VAD_ERROR: Final = "VAD_ERROR"
STATS_ERROR: Final = "STATS_ERROR"
INTERNAL_ERROR: Final = "INTERNAL_ERROR"


class ControlError(Exception):
    """A request that fails with a stable rtpbridge `code` and a human `message`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
