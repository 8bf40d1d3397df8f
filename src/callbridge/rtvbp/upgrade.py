"""The checks of a WebSocket upgrade that do not depend on the WebSocket library serving it.

Order (nothing of the session exists before the 101): Origin check (403), authentication (401),
subprotocol negotiation (400). Both listeners, aiohttp (`websocket.accept`) and picows
(`picows_websocket`), run exactly these, so a voice peer sees the same answers on either.
The request-head parser is for the picows listener, which must read the request itself before
it can authenticate asynchronously; it is sans-I/O and never raises anything but `HeadError`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from callbridge.rtvbp.auth import AuthContext, Authenticator, AuthRequest, OriginPolicy
from callbridge.rtvbp.errors import AuthError, NegotiationError, RtvbpError
from callbridge.rtvbp.profiles import Negotiated, negotiate, parse_offer

logger = logging.getLogger(__name__)

UNSUPPORTED_SUBPROTOCOL = "Unsupported WebSocket subprotocol"
MAX_HEAD_BYTES = 16 * 1024
"""A longer request head is refused (431) before it is parsed."""
MAX_HEADER_LINES = 100


class UpgradeRefused(RtvbpError):
    """The upgrade is answered with HTTP `status` and a plain-text `body`; no session exists."""

    def __init__(
        self,
        status: int,
        body: str,
        headers: Mapping[str, str] | None = None,
        content_type: str = "text/plain; charset=utf-8",
    ) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.content_type = content_type


class HeadError(RtvbpError):
    """A request head that is not a well-formed HTTP/1.1 request (answered with `status`)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class RequestHead:
    """The parts of an upgrade request the checks and the routing look at."""

    method: str
    path: str
    """The decoded path, without the query string."""
    query: MultiDictProxy[str]
    headers: CIMultiDictProxy[str]
    raw: bytes = field(repr=False)
    """The head exactly as received, terminating blank line included."""


def head_end(buffer: bytes | bytearray) -> int:
    """The length of the complete head at the start of `buffer`, or 0 while it is incomplete."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD_BYTES:
            raise HeadError("request head too large", 431)
        return 0
    if end + 4 > MAX_HEAD_BYTES:
        raise HeadError("request head too large", 431)
    return end + 4


def parse_head(raw: bytes) -> RequestHead:
    """Parse a complete request head (`raw` ends with the blank line)."""
    try:
        text = raw.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise HeadError("undecodable request head") from None
    request_line, *header_lines = text[:-4].split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1]:
        raise HeadError("malformed request line")
    method, target, version = parts
    if version != "HTTP/1.1":
        raise HeadError("only HTTP/1.1 upgrades are served")
    if len(header_lines) > MAX_HEADER_LINES:
        raise HeadError("too many header lines", 431)
    headers: CIMultiDict[str] = CIMultiDict()
    for line in header_lines:
        name, separator, value = line.partition(":")
        if not separator or not name or name != name.strip() or not name.isprintable():
            raise HeadError("malformed header line")
        headers.add(name, value.strip(" \t"))
    if not target.startswith("/"):
        raise HeadError("request target must be a path")
    try:
        split = urlsplit(target)
        query = MultiDict(parse_qsl(split.query, keep_blank_values=True))
        path = unquote(split.path, errors="strict")
    except (ValueError, UnicodeDecodeError):
        raise HeadError("malformed request target") from None
    return RequestHead(
        method=method,
        path=path,
        query=MultiDictProxy(query),
        headers=CIMultiDictProxy(headers),
        raw=raw,
    )


def offered_subprotocols(headers: CIMultiDictProxy[str]) -> tuple[list[str], bool]:
    """All offered tokens (every header line), and whether it was more than one header line."""
    lines = headers.getall("Sec-WebSocket-Protocol", [])
    return parse_offer(",".join(lines) if lines else None), len(lines) > 1


def refuse_subprotocol(remote: str | None, why: str) -> UpgradeRefused:
    logger.info("WebSocket upgrade from %s refused (400): %s", remote, why)
    return UpgradeRefused(400, UNSUPPORTED_SUBPROTOCOL)


async def check_upgrade(
    headers: CIMultiDictProxy[str],
    *,
    remote: str | None,
    path: str,
    query: Mapping[str, str],
    supported_profiles: Sequence[str] | None,
    authenticator: Authenticator | None,
    origins: OriginPolicy | None,
) -> tuple[Negotiated, AuthContext | None]:
    """Origin, authentication, negotiation; a refusal raises `UpgradeRefused`."""
    if origins is not None and not origins.check(headers.get("Origin")):
        logger.info("WebSocket upgrade from %s refused (403): origin not allowed", remote)
        raise UpgradeRefused(403, "Origin not allowed")
    offered, _ = offered_subprotocols(headers)
    auth: AuthContext | None = None
    if authenticator is not None:
        auth_request = AuthRequest(
            headers=headers, offered_subprotocols=offered, remote=remote, path=path, query=query
        )
        try:
            auth = await authenticator(auth_request)
        except AuthError as error:
            logger.info("WebSocket upgrade from %s refused (401): %s", remote, error)
            raise UpgradeRefused(
                401, f"Unauthorized: {error}", {"WWW-Authenticate": "Bearer"}
            ) from None
    try:
        negotiated = negotiate(offered, supported_profiles)
    except NegotiationError as error:
        raise refuse_subprotocol(remote, error.kind) from None
    if offered and negotiated.token is None:  # the offer may hold a credential: never log it
        raise refuse_subprotocol(remote, "no profile among the offered tokens")
    return negotiated, auth
