"""The ws.v1 binding on aiohttp: the server upgrade, the client dial, and the transport.

Server order (nothing of the session exists before the 101): the checks of `upgrade` (Origin 403,
authentication 401, subprotocol negotiation 400), then the upgrade echoing only the selected
profile token.
Text frames carry control JSON as UTF-8 bytes, binary frames carry audio; both share one ordered
outbound stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import WSMsgType, hdrs, web
from yarl import URL

from callbridge.rtvbp.auth import AuthContext, Authenticator, OriginPolicy
from callbridge.rtvbp.errors import RtvbpError
from callbridge.rtvbp.profiles import (
    CREDENTIAL_PREFIX,
    Negotiated,
    negotiate,
    parse_offer,
    profile_for,
)
from callbridge.rtvbp.transport_base import (
    CLOSE_ABNORMAL,
    CLOSE_NO_STATUS,
    CLOSE_NORMAL,
    CLOSE_TIMEOUT_S,
    CachedClose,
    MessageKind,
    TransportClosedError,
    TransportMessage,
    check_close_code,
    close_reason_bytes,
)
from callbridge.rtvbp.upgrade import (
    UNSUPPORTED_SUBPROTOCOL as UNSUPPORTED_SUBPROTOCOL,
)
from callbridge.rtvbp.upgrade import (
    UpgradeRefused,
    check_upgrade,
    offered_subprotocols,
    refuse_subprotocol,
)

logger = logging.getLogger(__name__)


_LINK_LOST = aiohttp.WSMessage(WSMsgType.CLOSED, None, None)
_WS_BINARY, _BINARY = WSMsgType.BINARY, MessageKind.BINARY
"""Bound once: an enum member looked up per audio frame costs more than the rest of a check."""

_WebSocket = web.WebSocketResponse[bool] | aiohttp.ClientWebSocketResponse[bool]


class ConnectError(RtvbpError):
    """Dialling an RTVBP endpoint failed; `status` is the HTTP status of a refused upgrade."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class WebSocketTransport(CachedClose):
    """The runtime's `Transport` over one aiohttp WebSocket (server or client side).

    Sends write the whole frame to the socket before their first suspension point, so
    concurrent senders are ordered by call order and frames never interleave; the only wait is
    aiohttp's flow-control drain. The close message seen by `receive()` is cached: one close,
    reported forever after (peer's code; ours if we closed first; 1006 if the link broke).
    """

    __slots__ = ("_close_message", "_owned_session", "_socket")

    def __init__(
        self, socket: _WebSocket, *, owned_session: aiohttp.ClientSession | None = None
    ) -> None:
        self._socket = socket
        self._owned_session = owned_session
        self._close_message: TransportMessage | None = None

    async def send_text(self, data: bytes) -> None:
        """Send one text message; `data` is UTF-8 JSON (sent as is, never re-encoded)."""
        if self._close_message is not None:
            raise TransportClosedError("WebSocket is closed")
        try:
            await self._socket.send_frame(data, WSMsgType.TEXT)
        except ConnectionError:
            raise TransportClosedError("WebSocket connection lost") from None

    async def send_binary(self, data: bytes) -> None:
        """Send one binary message (one audio frame); no shared helper: no extra coroutine."""
        if self._close_message is not None:
            raise TransportClosedError("WebSocket is closed")
        try:
            await self._socket.send_frame(data, _WS_BINARY)
        except ConnectionError:
            raise TransportClosedError("WebSocket connection lost") from None

    async def receive(self) -> TransportMessage:
        """The next text or binary message, or the (cached) close; never raises for link loss."""
        if self._close_message is not None:
            return self._close_message
        while True:
            try:
                message = await self._socket.receive()
            except (ConnectionError, aiohttp.ClientError):
                message = _LINK_LOST  # e.g. answering a ping on a transport that just died
            kind = message.type
            if kind is _WS_BINARY:
                return TransportMessage(_BINARY, message.data)
            if kind is WSMsgType.TEXT:
                data = message.data
                if isinstance(data, str):  # a socket made with decode_text=True
                    data = data.encode("utf-8")
                return TransportMessage(MessageKind.TEXT, data)
            if kind is WSMsgType.PING or kind is WSMsgType.PONG:
                continue  # only reaches us with autoping disabled
            break
        close_message = self._close_message
        if close_message is not None:
            return close_message  # our own close() is under way; it releases the session
        close_message = self._closed_by(message.type, message.data, message.extra)
        self._close_message = close_message
        await self._release_session()
        return close_message

    def _closed_by(self, kind: WSMsgType, data: Any, extra: str | None) -> TransportMessage:
        """The close report for aiohttp's terminal message `kind`."""
        if kind is WSMsgType.CLOSE:
            code = int(data) if isinstance(data, int) and data else CLOSE_NO_STATUS
            return TransportMessage(MessageKind.CLOSE, close_code=code, close_reason=extra or "")
        if kind is WSMsgType.ERROR and isinstance(data, aiohttp.WebSocketError):
            return TransportMessage(MessageKind.CLOSE, close_code=int(data.code))  # e.g. 1009
        # Anything else without a close frame is a lost link (aiohttp reports an EOF as 1000).
        return TransportMessage(MessageKind.CLOSE, close_code=CLOSE_ABNORMAL)

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close after everything already sent (frames are written in order, then the close).

        Idempotent; waits up to the close timeout for the peer's close frame.
        """
        check_close_code(code)
        if self._close_message is not None:
            await self._release_session()
            return
        self._close_message = TransportMessage(
            MessageKind.CLOSE, close_code=code, close_reason=reason
        )
        try:
            await self._socket.close(code=code, message=close_reason_bytes(reason))
        finally:
            await self._release_session()

    async def _release_session(self) -> None:
        session, self._owned_session = self._owned_session, None
        if session is not None:
            await session.close()


@dataclass(frozen=True, slots=True)
class Accepted:
    """An upgraded RTVBP connection; the aiohttp handler must return `response`."""

    transport: WebSocketTransport
    profile: Negotiated
    auth: AuthContext | None
    remote: str | None
    user_agent: str | None
    response: web.WebSocketResponse[bool]


def _http_error(refusal: UpgradeRefused) -> web.HTTPException:
    """aiohttp's exception for a refused upgrade (raised, it becomes the response)."""
    error_type = {401: web.HTTPUnauthorized, 403: web.HTTPForbidden}.get(
        refusal.status, web.HTTPBadRequest
    )
    return error_type(text=refusal.body, headers=refusal.headers or None)


async def accept(
    request: web.Request,
    *,
    supported_profiles: Sequence[str] | None = None,
    authenticator: Authenticator | None = None,
    origins: OriginPolicy | None = None,
    heartbeat_s: float | None = 20.0,
    max_message_bytes: int = 1 << 20,
    close_timeout_s: float = CLOSE_TIMEOUT_S,
) -> Accepted:
    """Check, authenticate, negotiate and upgrade `request`; refusals raise aiohttp HTTP errors.

    `heartbeat_s`: ping interval (None: off); the connection fails (1006) when no pong came
    within half of it. `max_message_bytes`: the largest incoming message; a larger one closes
    the connection with 1009. `close_timeout_s`: how long a close waits for the peer's reply.
    """
    if max_message_bytes < 1:
        raise ValueError("max_message_bytes must be positive")
    try:
        negotiated, auth = await check_upgrade(
            request.headers,
            remote=request.remote,
            path=request.path,
            query=request.query,
            supported_profiles=supported_profiles,
            authenticator=authenticator,
            origins=origins,
        )
        token = negotiated.token
        if token is not None and offered_subprotocols(request.headers)[1]:
            # aiohttp only reads the first Sec-WebSocket-Protocol line when it echoes the token.
            first_line = parse_offer(request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL))
            if token not in first_line:
                raise refuse_subprotocol(
                    request.remote, "profile token not on the first header line"
                )
    except UpgradeRefused as refusal:
        raise _http_error(refusal) from None

    response: web.WebSocketResponse[bool] = web.WebSocketResponse(
        protocols=() if token is None else (token,),
        heartbeat=heartbeat_s,
        max_msg_size=max_message_bytes + 1,  # aiohttp refuses messages of exactly its limit
        compress=False,
        autoping=True,
        decode_text=False,
        timeout=close_timeout_s,
    )
    await response.prepare(request)
    return Accepted(
        transport=WebSocketTransport(response),
        profile=negotiated,
        auth=auth,
        remote=request.remote,
        user_agent=request.headers.get(hdrs.USER_AGENT),
        response=response,
    )


class Connected:
    """A dialled RTVBP connection; closing it also closes the ClientSession `connect` created."""

    __slots__ = ("profile", "transport")

    def __init__(self, transport: WebSocketTransport, profile: Negotiated) -> None:
        self.transport = transport
        self.profile = profile

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        await self.transport.close(code, reason)

    async def __aenter__(self) -> Connected:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


def _describe_refusal(status: int) -> str:
    reasons = {
        400: "bad request (unsupported subprotocol?)",
        401: "not authorized",
        403: "forbidden (origin not allowed?)",
        404: "no such endpoint",
    }
    return f"WebSocket upgrade refused: HTTP {status} {reasons.get(status, '')}".rstrip()


async def connect(
    url: str,
    *,
    profiles: Sequence[str] | None = ("rtvbp.v1",),
    headers: Mapping[str, str] | None = None,
    bearer_token: str | None = None,
    session: aiohttp.ClientSession | None = None,
    connect_timeout_s: float = 10.0,
    heartbeat_s: float | None = None,
    max_message_bytes: int = 1 << 20,
    close_timeout_s: float = CLOSE_TIMEOUT_S,
) -> Connected:
    """Dial an RTVBP endpoint offering `profiles` (None or () = headerless legacy handshake).

    The server must echo one of the offered profile tokens (nothing when headerless); anything
    else fails the connection. Failures raise `ConnectError` (with `status` for HTTP refusals).
    """
    if max_message_bytes < 1:
        raise ValueError("max_message_bytes must be positive")
    offered = list(profiles or ())
    request_headers = dict(headers or {})
    if bearer_token is not None:
        request_headers[hdrs.AUTHORIZATION] = f"Bearer {bearer_token}"
    target = URL(url)
    owned_session = None
    if session is None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s)
        session = owned_session = aiohttp.ClientSession(timeout=timeout)
    try:
        try:
            async with asyncio.timeout(connect_timeout_s):
                socket = await session.ws_connect(
                    target,
                    protocols=offered,
                    headers=request_headers,
                    heartbeat=heartbeat_s,
                    max_msg_size=max_message_bytes + 1,
                    compress=0,
                    autoping=True,
                    autoclose=True,
                    decode_text=False,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=close_timeout_s),
                )
        except aiohttp.WSServerHandshakeError as error:
            if error.status == 101:
                raise ConnectError(f"invalid WebSocket handshake: {error.message}") from None
            raise ConnectError(_describe_refusal(error.status), status=error.status) from None
        except aiohttp.ClientConnectorError as error:
            raise ConnectError(
                f"cannot connect to {target.host}:{target.port}: "
                f"{error.os_error.strerror or type(error.os_error).__name__}"
            ) from None
        except TimeoutError:
            raise ConnectError(
                f"connecting to {target.host}:{target.port} timed out after {connect_timeout_s} s"
            ) from None
        except (aiohttp.ClientError, ValueError) as error:
            raise ConnectError(f"connecting failed: {type(error).__name__}") from None
        transport = WebSocketTransport(socket, owned_session=owned_session)
        try:
            negotiated = _client_profile(socket, offered)
        except ConnectError:
            await transport.close(1002, "subprotocol mismatch")
            raise
    except BaseException:
        if owned_session is not None:
            await owned_session.close()
        raise
    return Connected(transport, negotiated)


def _client_profile(
    socket: aiohttp.ClientWebSocketResponse[bool], offered: list[str]
) -> Negotiated:
    """The profile the server selected, checked against what we offered."""
    selected = socket.protocol
    if not offered:
        # aiohttp ignores an echo nobody asked for; RFC 6455 says the client must fail then.
        response = getattr(socket, "_response", None)
        echoed = None if response is None else response.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL)
        if echoed:
            raise ConnectError("server selected a subprotocol in a headerless handshake")
        return negotiate([])
    if selected is None:
        raise ConnectError("server selected none of the offered subprotocols")
    if selected.startswith(CREDENTIAL_PREFIX):
        raise ConnectError("server echoed the bearer credential as subprotocol")
    try:
        return Negotiated(selected, profile_for(selected))
    except KeyError:
        raise ConnectError("server selected an offered but unregistered profile") from None
