"""RTVBP profiles (transport + envelope + catalog) and their Sec-WebSocket-Protocol negotiation.

The server picks by its own preference among the tokens the client offered and echoes only that
token. No header at all means the legacy default ``rtvbp.v1`` with nothing echoed: deployed
rtvbp-go peers connect that way. Tokens starting with ``bearer.`` carry a browser credential, not a
profile: they are never selected or echoed, and an offer made only of them selects nothing
(``unsupported-profile``), because a client that sends a header must also name the profile it
speaks. An empty or syntactically invalid token rejects the whole offer (``invalid-token``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from callbridge.rtvbp import babelforce_v1, demo_v1
from callbridge.rtvbp.catalog import Catalog
from callbridge.rtvbp.errors import NegotiationError

__all__ = [
    "CREDENTIAL_PREFIX",
    "PROFILES",
    "SERVED_PROFILES",
    "Negotiated",
    "Profile",
    "negotiate",
    "parse_offer",
    "profile_for",
]

CREDENTIAL_PREFIX: Final = "bearer."


@dataclass(frozen=True)
class Profile:
    """A complete wire contract, named by its subprotocol token."""

    token: str
    transport: str
    envelope: str
    catalog: Catalog
    headerless_default: bool


PROFILES: Final[tuple[Profile, ...]] = (
    Profile("rtvbp.v1", "ws.v1", "classic.v1", babelforce_v1.CATALOG, headerless_default=True),
    Profile("rtvbp.demo.v1", "ws.v1", "classic.v1", demo_v1.CATALOG, headerless_default=False),
    Profile(
        "rtvbp.webrtc.v1",
        "webrtcws.v1",
        "classic.v1",
        babelforce_v1.CATALOG,
        headerless_default=False,
    ),
)
"""Every registered profile, in the server's default preference order."""

SERVED_PROFILES: Final = ("rtvbp.v1", "rtvbp.demo.v1", "rtvbp.webrtc.v1")
"""What callbridge's ingress paths accept, in preference order: a client that wants WebRTC
audio offers ``rtvbp.webrtc.v1`` alone."""

_BY_TOKEN: Final = {profile.token: profile for profile in PROFILES}

# RFC 7230 tchar: visible ASCII except the separators.
_TOKEN_CHARACTERS: Final = frozenset(
    "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)


@dataclass(frozen=True)
class Negotiated:
    """The outcome: ``token`` is what to echo (None: headerless, echo nothing)."""

    token: str | None
    profile: Profile


def profile_for(token: str) -> Profile:
    """The registered profile named ``token``; KeyError if there is none."""
    return _BY_TOKEN[token]


def parse_offer(header_value: str | None) -> list[str]:
    """Split a Sec-WebSocket-Protocol value into tokens; empty elements stay ``""`` (rejected)."""
    if header_value is None:
        return []
    return [part.strip(" \t") for part in header_value.split(",")]


def _is_token(candidate: str) -> bool:
    return bool(candidate) and all(character in _TOKEN_CHARACTERS for character in candidate)


def negotiate(offered: Sequence[str], supported: Sequence[str] | None = None) -> Negotiated:
    """Select the profile for an offer (empty = no header), preferring the order of ``supported``.

    ``supported`` defaults to every registered profile in registry order; naming an unregistered
    token there is a configuration error (ValueError). Raises NegotiationError otherwise.
    """
    if supported is None:
        preference = PROFILES
    else:
        unknown = [token for token in supported if token not in _BY_TOKEN]
        if unknown or not supported:
            raise ValueError(f"supported profiles must be registered and non-empty: {unknown}")
        preference = tuple(_BY_TOKEN[token] for token in supported)
    if not offered:
        for profile in preference:
            if profile.headerless_default:
                return Negotiated(None, profile)
        raise NegotiationError(
            "unsupported-profile", "no subprotocol offered and the headerless default is not served"
        )
    for position, token in enumerate(offered, start=1):
        if not _is_token(token):
            # The token itself stays out of the message: it may be a credential.
            raise NegotiationError("invalid-token", f"offered subprotocol #{position} is invalid")
    offered_set = {token for token in offered if not token.startswith(CREDENTIAL_PREFIX)}
    for profile in preference:
        if profile.token in offered_set:
            return Negotiated(profile.token, profile)
    if not offered_set:
        raise NegotiationError("unsupported-profile", "only credential tokens were offered")
    raise NegotiationError(
        "unsupported-profile", f"none of the offered subprotocols is served: {sorted(offered_set)}"
    )
