"""One exception hierarchy for the RTVBP layer; the wire shape is produced only at the boundary."""

from __future__ import annotations

from typing import Any, Literal

# Error codes with a conventional meaning on the wire (any non-zero integer is legal).
UNKNOWN = -1
BAD_REQUEST = 400
INTERNAL = 500
NOT_IMPLEMENTED = 501


class RtvbpError(Exception):
    """Base class of every error raised by callbridge.rtvbp."""


class EnvelopeError(RtvbpError):
    """A frame that cannot be decoded or encoded as a classic.v1 envelope (receivers drop it)."""


class PayloadError(RtvbpError):
    """A payload that fails to decode (bad JSON or types) or to validate (a rule of the catalog)."""

    def __init__(self, kind: Literal["decode", "validation"], message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class NegotiationError(RtvbpError):
    """The offered Sec-WebSocket-Protocol list selects no profile (HTTP 400 before the upgrade)."""

    def __init__(self, kind: Literal["unsupported-profile", "invalid-token"], message: str) -> None:
        super().__init__(message)
        self.kind = kind


class RemoteError(RtvbpError):
    """An error response: raised by a handler to answer with it, or received from the peer."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        if code == 0:
            raise ValueError("RTVBP error code 0 is invalid")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.data = data


class SessionClosedError(RtvbpError):
    """The session closed while a request was pending, or an operation needs an open session."""


class RequestTimeoutError(RtvbpError):
    """The peer did not answer a request within its timeout."""


class AuthError(RtvbpError):
    """The upgrade request is not authorized (HTTP 401, no session is created)."""
