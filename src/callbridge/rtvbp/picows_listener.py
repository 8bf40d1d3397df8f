"""The picows RTVBP listener: a voice peer's upgrade decided asynchronously, then picows.

picows' listener factory is synchronous, and authentication is not. So the listener reads the
request head itself (`_UpgradeReader`), lets the caller's router decide (it runs the checks of
`upgrade`: Origin 403, authentication 401, subprotocol 400, plus its own routing), and only then
hands the connection and the head to picows' own server protocol, which validates the upgrade
(400) and answers 101 echoing only the selected profile token. Nothing of the session exists
before the 101.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from picows import WSAutoPingStrategy, WSUpgradeResponse, WSUpgradeResponseWithListener
from picows.picows import WSProtocol  # type: ignore[attr-defined]

from callbridge.rtvbp.auth import AuthContext, Authenticator, OriginPolicy
from callbridge.rtvbp.picows_websocket import PICOWS_LOG, PicowsTransport
from callbridge.rtvbp.profiles import SERVED_PROFILES, Negotiated
from callbridge.rtvbp.upgrade import (
    HeadError,
    RequestHead,
    UpgradeRefused,
    check_upgrade,
    head_end,
    parse_head,
)

__all__ = [
    "FastListener",
    "Router",
    "Upgrade",
    "UpgradeRequest",
    "check_request",
    "start_listener",
]

logger = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 10.0
"""How long a new connection may take to send its request head."""


@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    """What the router sees: the parsed head and the peer's address."""

    head: RequestHead
    remote: str | None


@dataclass(frozen=True, slots=True)
class Upgrade:
    """The router's yes: the negotiated profile, who the peer is, what serves the call, and the
    connection's limits (`heartbeat_s`: ping interval, None: off; `max_message_bytes`)."""

    profile: Negotiated
    auth: AuthContext | None
    serve: Callable[[PicowsTransport], Awaitable[None]]
    heartbeat_s: float | None = 20.0
    max_message_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        if self.max_message_bytes < 1:
            raise ValueError("max_message_bytes must be positive")


Router = Callable[[UpgradeRequest], Awaitable[Upgrade]]
"""Decides an upgrade: returns an `Upgrade`, or raises `UpgradeRefused` (status, body)."""


async def check_request(
    request: UpgradeRequest,
    *,
    authenticator: Authenticator | None,
    origins: OriginPolicy | None,
    supported_profiles: Sequence[str] | None = SERVED_PROFILES,
) -> tuple[Negotiated, AuthContext | None]:
    """The checks of `upgrade` (Origin, authentication, negotiation) on a request head."""
    head = request.head
    return await check_upgrade(
        head.headers,
        remote=request.remote,
        path=head.path,
        query=head.query,
        supported_profiles=supported_profiles,
        authenticator=authenticator,
        origins=origins,
    )


@dataclass(slots=True)
class _Options:
    router: Router
    connections: set[PicowsTransport]
    tasks: set[asyncio.Task[None]]


def _http_response(refusal: UpgradeRefused) -> bytes:
    response = WSUpgradeResponse.create_error_response(
        refusal.status,
        refusal.body.encode("utf-8"),
        {"Content-Type": refusal.content_type, **refusal.headers},
    )
    response.headers["Connection"] = "close"
    return bytes(response.to_bytes())


class _UpgradeReader(asyncio.Protocol):
    """Reads one request head, decides it (asynchronously), then hands over to picows."""

    def __init__(self, options: _Options) -> None:
        self._options = options
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._timeout: asyncio.TimerHandle | None = None
        self._deciding = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self._timeout = asyncio.get_running_loop().call_later(HANDSHAKE_TIMEOUT_S, stream.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timeout is not None:
            self._timeout.cancel()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._deciding:
            self._buffer += data  # sent before the 101: kept for the WebSocket protocol
            return
        self._buffer += data
        try:
            end = head_end(self._buffer)
            if not end:
                return
            head = parse_head(bytes(self._buffer[:end]))
        except HeadError as error:
            self._refuse(UpgradeRefused(error.status, str(error)))
            return
        self._deciding = True
        transport = self._transport
        assert transport is not None
        transport.pause_reading()
        peer = transport.get_extra_info("peername")
        remote = str(peer[0]) if isinstance(peer, tuple) and peer else None
        task = asyncio.get_running_loop().create_task(self._decide(UpgradeRequest(head, remote)))
        self._options.tasks.add(task)
        task.add_done_callback(self._options.tasks.discard)

    async def _decide(self, request: UpgradeRequest) -> None:
        try:
            if request.head.method != "GET":
                raise UpgradeRefused(405, "Method Not Allowed", {"Allow": "GET"})
            upgrade = await self._options.router(request)
        except UpgradeRefused as refusal:
            self._refuse(refusal)
            return
        except Exception:
            logger.exception("routing an RTVBP upgrade failed")
            self._refuse(UpgradeRefused(500, "Internal Server Error"))
            return
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._timeout is not None:
            self._timeout.cancel()
        self._hand_over(transport, upgrade)

    def _hand_over(self, transport: asyncio.Transport, upgrade: Upgrade) -> None:
        options = self._options
        connection = PicowsTransport(upgrade.max_message_bytes, upgrade.heartbeat_s)
        headers = (
            {}
            if upgrade.profile.token is None
            else {"Sec-WebSocket-Protocol": upgrade.profile.token}
        )
        response = WSUpgradeResponse.create_101_response(headers)

        def listener(_: Any) -> WSUpgradeResponseWithListener:
            return WSUpgradeResponseWithListener(response, connection)

        # picows' own server protocol, given the head we already read (picows >= 2.3, < 3).
        protocol = WSProtocol(
            None, None, False, listener, PICOWS_LOG, True, None,
            False, 20.0, 10.0, WSAutoPingStrategy.PING_WHEN_IDLE, True,
            upgrade.max_message_bytes, None, 16 * 1024,
        )  # fmt: skip
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        data = bytes(self._buffer)
        while data and not transport.is_closing():
            buffer = protocol.get_buffer(len(data))
            size = min(len(buffer), len(data))
            buffer[:size] = data[:size]
            protocol.buffer_updated(size)
            data = data[size:]
        self._buffer.clear()
        if connection._socket is None:  # picows refused the upgrade itself (400)
            return
        transport.resume_reading()
        options.connections.add(connection)
        task = asyncio.get_running_loop().create_task(_run(connection, upgrade))
        options.tasks.add(task)
        task.add_done_callback(options.tasks.discard)
        connection.disconnected.add_done_callback(lambda _: options.connections.discard(connection))

    def _refuse(self, refusal: UpgradeRefused) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(_http_response(refusal))
        transport.close()


async def _run(connection: PicowsTransport, upgrade: Upgrade) -> None:
    """Serve the call; closing afterwards is what returning from an aiohttp handler does."""
    try:
        await upgrade.serve(connection)
    except Exception:
        logger.exception("RTVBP call on the fast listener failed")
        await connection.close(1011, "internal error")
    else:
        await connection.close()


class FastListener:
    """The picows RTVBP listener on one or more addresses; `close()` ends it and its calls."""

    def __init__(self, servers: list[asyncio.Server], options: _Options) -> None:
        self._servers = servers
        self._options = options

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [
            (str(socket.getsockname()[0]), int(socket.getsockname()[1]))
            for server in self._servers
            for socket in server.sockets
        ]

    @property
    def connections(self) -> int:
        return len(self._options.connections)

    def stop_accepting(self) -> None:
        for server in self._servers:
            server.close()

    async def close(self, grace_s: float = 5.0) -> None:
        """Stop accepting, close every connection (1001), give the calls `grace_s` to end
        (their handlers see the close), then cancel what is left."""
        self.stop_accepting()
        await asyncio.gather(
            *(
                connection.close(1001, "server shutting down")
                for connection in self._options.connections
            )
        )
        tasks = list(self._options.tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=grace_s)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def start_listener(
    router: Router,
    addresses: list[tuple[str, int]],
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> FastListener:
    """Listen on every `(host, port)`; each upgrade is decided by `router`."""
    options = _Options(router, set(), set())
    loop = asyncio.get_running_loop()
    servers = []
    try:
        for host, port in addresses:
            servers.append(
                await loop.create_server(
                    lambda: _UpgradeReader(options), host, port, ssl=ssl_context, reuse_address=True
                )
            )
    except BaseException:
        for server in servers:
            server.close()
        raise
    return FastListener(servers, options)
