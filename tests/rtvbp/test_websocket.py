"""The ws.v1 binding over real sockets: real servers on 127.0.0.1 and real clients.

Every server-side test runs twice: against the aiohttp binding (`websocket.accept`) and against
the picows listener (`picows_listener`), which must answer exactly the same way.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from callbridge.rtvbp.auth import (
    AuthContext,
    AuthRequest,
    OriginPolicy,
    StaticTokenAuthenticator,
)
from callbridge.rtvbp.errors import AuthError
from callbridge.rtvbp.picows_listener import Upgrade, UpgradeRequest, start_listener
from callbridge.rtvbp.picows_websocket import PicowsTransport
from callbridge.rtvbp.profiles import Negotiated
from callbridge.rtvbp.transport_base import (
    CLOSE_ABNORMAL,
    MessageKind,
    Transport,
    TransportClosedError,
    TransportMessage,
)
from callbridge.rtvbp.upgrade import check_upgrade
from callbridge.rtvbp.websocket import (
    UNSUPPORTED_SUBPROTOCOL,
    Accepted,
    ConnectError,
    WebSocketTransport,
    accept,
    connect,
)
from tests.rtvbp.test_auth import encode_bearer_subprotocol

pytestmark = pytest.mark.filterwarnings("error")

SECRET = "s3cret-static-token-value"


@dataclass
class EchoServer:
    """A server (aiohttp or picows) that accepts with `options` and echoes every message back."""

    url: str
    port: int
    stack: str = "aiohttp"
    options: dict[str, Any] = field(default_factory=dict)
    upgrades_attempted: int = 0
    sessions: list[Accepted | Seen] = field(default_factory=list)
    closes: asyncio.Queue[TransportMessage] = field(default_factory=asyncio.Queue)
    release: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Seen:
    """What the picows server knew of an accepted connection (the fields of `Accepted`)."""

    profile: Negotiated
    auth: AuthContext | None
    remote: str | None
    user_agent: str | None


async def echo(server: EchoServer, request: web.Request) -> web.StreamResponse:
    server.upgrades_attempted += 1
    accepted = await accept(request, **server.options)
    server.sessions.append(accepted)
    assert request.transport is not None
    await echo_messages(server, accepted.transport, request.transport.abort, lambda deaf: None)
    return accepted.response


async def picows_route(server: EchoServer, request: UpgradeRequest) -> Upgrade:
    """The picows listener's equivalent of `echo`: the same checks with the same options."""
    server.upgrades_attempted += 1
    options = server.options
    head = request.head
    profile, auth = await check_upgrade(
        head.headers,
        remote=request.remote,
        path=head.path,
        query=head.query,
        supported_profiles=options.get("supported_profiles"),
        authenticator=options.get("authenticator"),
        origins=options.get("origins"),
    )

    async def serve(transport: PicowsTransport) -> None:
        server.sessions.append(Seen(profile, auth, request.remote, head.headers.get("User-Agent")))
        socket = transport._socket
        assert socket is not None

        def deafen(deaf: bool) -> None:  # picows answers pings below us: stop reading the socket
            if deaf:
                socket.underlying_transport.pause_reading()
            else:
                socket.underlying_transport.resume_reading()

        await echo_messages(server, transport, transport.abort, deafen)

    return Upgrade(
        profile,
        auth,
        serve,
        heartbeat_s=options.get("heartbeat_s", 20.0),
        max_message_bytes=options.get("max_message_bytes", 1 << 20),
    )


async def echo_messages(
    server: EchoServer,
    transport: Transport,
    abort: Callable[[], None],
    deafen: Callable[[bool], None],
) -> None:
    """Echo until closed; "close CODE REASON", "abort" and "deaf" are commands."""
    while True:
        message = await transport.receive()
        if message.kind is MessageKind.CLOSE:
            server.closes.put_nowait(message)
            break
        if message.kind is MessageKind.BINARY:
            await transport.send_binary(message.data)
        elif message.data.startswith(b"close "):
            _, code, reason = message.data.decode().split(" ", 2)
            await transport.close(int(code), reason)
        elif message.data == b"abort":
            abort()
        elif message.data == b"deaf":
            deafen(True)
            await server.release.wait()  # stops reading: pings go unanswered
            deafen(False)
        else:
            await transport.send_text(message.data)


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Runs last at teardown: every connection, server and helper task must be gone."""
    yield
    await asyncio.sleep(0)
    current = asyncio.current_task()
    leaked = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
    assert leaked == []


@pytest.fixture(params=["aiohttp", "picows"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[EchoServer]:
    if request.param == "picows":
        async with picows_server() as echo_server:
            yield echo_server
        return
    echo_server = EchoServer(url="", port=0)

    async def handler(request: web.Request) -> web.StreamResponse:
        return await echo(echo_server, request)

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    echo_server.port = runner.addresses[0][1]
    echo_server.url = f"http://127.0.0.1:{echo_server.port}/ws"
    yield echo_server
    echo_server.release.set()
    await runner.cleanup()


@contextlib.asynccontextmanager
async def picows_server() -> AsyncIterator[EchoServer]:
    echo_server = EchoServer(url="", port=0, stack="picows")

    async def route(request: UpgradeRequest) -> Upgrade:
        return await picows_route(echo_server, request)

    listener = await start_listener(route, [("127.0.0.1", 0)])
    echo_server.port = listener.addresses[0][1]
    echo_server.url = f"http://127.0.0.1:{echo_server.port}/ws"
    try:
        yield echo_server
    finally:
        echo_server.release.set()
        await listener.close()


@dataclass
class RawResponse:
    status: int
    headers: CIMultiDict[str]
    body: bytes
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def close(self) -> None:
        self.writer.transport.abort()


async def raw_upgrade(port: int, *headers: tuple[str, str]) -> RawResponse:
    """A hand-written upgrade request, so the exact response headers can be checked."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET /ws HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    status_line, *header_lines = head.strip().split("\r\n")
    response_headers: CIMultiDict[str] = CIMultiDict()
    for line in header_lines:
        name, _, value = line.partition(":")
        response_headers.add(name.strip(), value.strip())
    status = int(status_line.split()[1])
    body = b""
    if status != 101:
        body = await reader.readexactly(int(response_headers.get("Content-Length", "0")))
    return RawResponse(status, response_headers, body, reader, writer)


async def until_closed(transport: Transport) -> TransportMessage:
    while (message := await transport.receive()).kind is not MessageKind.CLOSE:
        pass
    return message


# --- negotiation -------------------------------------------------------------------------------


async def test_headerless_client_is_accepted_with_nothing_echoed(server: EchoServer) -> None:
    raw = await raw_upgrade(server.port)
    assert raw.status == 101
    assert "Sec-WebSocket-Protocol" not in raw.headers
    raw.close()
    async with await connect(server.url, profiles=None) as connected:
        assert connected.profile.token is None
        assert connected.profile.profile.token == "rtvbp.v1"
        await connected.transport.send_text(b'{"version":"1"}')
        assert (await connected.transport.receive()).data == b'{"version":"1"}'
    assert server.sessions[-1].profile.token is None
    assert server.sessions[-1].profile.profile.token == "rtvbp.v1"


async def test_rtvbp_v1_is_echoed(server: EchoServer) -> None:
    raw = await raw_upgrade(server.port, ("Sec-WebSocket-Protocol", "rtvbp.v1"))
    assert (raw.status, raw.headers.getall("Sec-WebSocket-Protocol")) == (101, ["rtvbp.v1"])
    raw.close()
    async with await connect(server.url) as connected:
        assert connected.profile.token == "rtvbp.v1"
    assert server.sessions[-1].profile.token == "rtvbp.v1"


async def test_server_preference_wins(server: EchoServer) -> None:
    offer = ("rtvbp.webrtc.v1", "rtvbp.demo.v1", "rtvbp.v1")
    async with await connect(server.url, profiles=offer) as connected:
        assert connected.profile.token == "rtvbp.v1"
    server.options["supported_profiles"] = ["rtvbp.webrtc.v1", "rtvbp.v1"]
    async with await connect(server.url, profiles=offer) as connected:
        assert connected.profile.token == "rtvbp.webrtc.v1"
    assert [session.profile.token for session in server.sessions] == [
        "rtvbp.v1",
        "rtvbp.webrtc.v1",
    ]


async def test_offers_on_several_header_lines(server: EchoServer) -> None:
    raw = await raw_upgrade(
        server.port,
        ("Sec-WebSocket-Protocol", "rtvbp.demo.v1"),
        ("Sec-WebSocket-Protocol", "rtvbp.v1"),
    )
    if server.stack == "aiohttp":
        assert raw.status == 400  # the preferred profile sits on the line aiohttp does not read
    else:  # the picows listener reads every line and answers with the preferred profile
        assert (raw.status, raw.headers.getall("Sec-WebSocket-Protocol")) == (101, ["rtvbp.v1"])
    raw.close()
    raw = await raw_upgrade(
        server.port,
        ("Sec-WebSocket-Protocol", "rtvbp.v1"),
        ("Sec-WebSocket-Protocol", "rtvbp.demo.v1"),
    )
    assert (raw.status, raw.headers.getall("Sec-WebSocket-Protocol")) == (101, ["rtvbp.v1"])
    raw.close()


@pytest.mark.parametrize(
    "offer",
    ["rtvbp.unsupported.v999", "chat, superchat", "rtvbp.v1,,rtvbp.demo.v1", ",", "", "rtvbp v1"],
)
async def test_unsupported_or_invalid_offer_is_400(server: EchoServer, offer: str) -> None:
    raw = await raw_upgrade(server.port, ("Sec-WebSocket-Protocol", offer))
    raw.close()
    assert (raw.status, raw.body.decode()) == (400, UNSUPPORTED_SUBPROTOCOL)
    assert server.sessions == []


async def test_connect_maps_400_to_connect_error(server: EchoServer) -> None:
    with pytest.raises(ConnectError) as refused:
        await connect(server.url, profiles=["rtvbp.unsupported.v999"])
    assert refused.value.status == 400
    with pytest.raises(ConnectError) as empty:
        await connect(server.url, profiles=[""])
    assert empty.value.status == 400


async def test_bearer_carrier_is_never_echoed(
    server: EchoServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.options["authenticator"] = StaticTokenAuthenticator([SECRET])
    carrier = encode_bearer_subprotocol(SECRET)
    raw = await raw_upgrade(server.port, ("Sec-WebSocket-Protocol", f"rtvbp.v1, {carrier}"))
    assert (raw.status, raw.headers.getall("Sec-WebSocket-Protocol")) == (101, ["rtvbp.v1"])
    raw.close()
    raw = await raw_upgrade(server.port, ("Sec-WebSocket-Protocol", f"{carrier}, rtvbp.demo.v1"))
    assert (raw.status, raw.headers.getall("Sec-WebSocket-Protocol")) == (101, ["rtvbp.demo.v1"])
    raw.close()
    raw = await raw_upgrade(server.port, ("Sec-WebSocket-Protocol", carrier))
    assert raw.status == 400  # a credential alone selects no profile
    raw.close()
    async with await connect(server.url, profiles=["rtvbp.v1", carrier]) as connected:
        assert connected.profile.token == "rtvbp.v1"
    assert server.sessions[0].auth is not None
    assert server.sessions[0].auth.carrier == "subprotocol"
    assert carrier not in caplog.text and SECRET not in caplog.text


# --- authentication and origin -----------------------------------------------------------------


async def test_401_before_the_upgrade(server: EchoServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server.options["authenticator"] = StaticTokenAuthenticator([SECRET])
    raw = await raw_upgrade(server.port, ("Sec-WebSocket-Protocol", "rtvbp.v1"))
    raw.close()
    assert raw.status == 401
    assert raw.headers["WWW-Authenticate"] == "Bearer"
    assert "missing bearer token" in raw.body.decode()
    assert "Sec-WebSocket-Accept" not in raw.headers
    wrong = "not-the-" + SECRET
    with pytest.raises(ConnectError) as refused:
        await connect(server.url, bearer_token=wrong)
    assert refused.value.status == 401
    assert server.upgrades_attempted == 2
    assert server.sessions == []  # the handler body after accept() never ran
    assert wrong not in caplog.text
    assert wrong not in str(refused.value)


async def test_authenticated_session_carries_the_context(server: EchoServer) -> None:
    server.options["authenticator"] = StaticTokenAuthenticator([SECRET])
    async with await connect(server.url, bearer_token=SECRET) as connected:
        await connected.transport.send_text(b"hello")
        assert (await connected.transport.receive()).data == b"hello"
    session = server.sessions[0]
    assert session.auth is not None and session.auth.method == "static"
    assert session.remote == "127.0.0.1"
    assert session.user_agent is not None and "aiohttp" in session.user_agent.lower()


async def test_custom_authenticator_sees_the_request(server: EchoServer) -> None:
    seen: list[AuthRequest] = []

    async def authenticator(request: AuthRequest) -> AuthContext:
        seen.append(request)
        if request.query.get("tenant") != "acme":
            raise AuthError("unknown tenant")
        return AuthContext(subject="agent", account="acme", claims={}, method="custom")

    server.options["authenticator"] = authenticator
    with pytest.raises(ConnectError, match="401"):
        await connect(server.url + "?tenant=other")
    async with await connect(server.url + "?tenant=acme", headers={"X-Trace": "abc"}):
        pass
    assert seen[1].path == "/ws"
    assert seen[1].headers["x-trace"] == "abc"
    assert seen[1].offered_subprotocols == ("rtvbp.v1",)
    assert seen[1].remote == "127.0.0.1"
    assert server.sessions[0].auth is not None and server.sessions[0].auth.account == "acme"


async def test_origin_is_checked_before_authentication(server: EchoServer) -> None:
    server.options["origins"] = OriginPolicy(["https://app.example.com"])
    server.options["authenticator"] = StaticTokenAuthenticator([SECRET])
    raw = await raw_upgrade(server.port, ("Origin", "https://evil.example.com"))
    raw.close()
    assert raw.status == 403
    with pytest.raises(ConnectError) as refused:
        await connect(server.url, headers={"Origin": "https://evil.example.com"})
    assert refused.value.status == 403
    headers = {"Origin": "https://app.example.com"}
    async with await connect(server.url, headers=headers, bearer_token=SECRET):
        pass
    async with await connect(server.url, bearer_token=SECRET):  # no Origin: not a browser
        pass
    assert len(server.sessions) == 2


# --- framing and close -------------------------------------------------------------------------


async def test_text_and_binary_keep_one_order(server: EchoServer) -> None:
    async with await connect(server.url) as connected:
        transport = connected.transport
        expected: list[tuple[MessageKind, bytes]] = []

        async def send(index: int) -> None:
            if index % 3 == 0:
                await transport.send_text(b'{"n":%d}' % index)
            else:
                await transport.send_binary(index.to_bytes(4, "little") * 80)

        for index in range(300):
            await send(index)
        await asyncio.gather(*(send(index) for index in range(300, 900)))
        for index in range(900):
            if index % 3 == 0:
                expected.append((MessageKind.TEXT, b'{"n":%d}' % index))
            else:
                expected.append((MessageKind.BINARY, index.to_bytes(4, "little") * 80))
        received = [
            (message.kind, message.data)
            for message in [await transport.receive() for _ in expected]
        ]
        assert received == expected


async def test_client_close_code_reaches_the_server(server: EchoServer) -> None:
    connected = await connect(server.url)
    await connected.transport.send_binary(b"\x00" * 320)
    await connected.close(4001, "client done")
    closed = await server.closes.get()
    assert (closed.close_code, closed.close_reason) == (4001, "client done")
    own = await connected.transport.receive()
    assert (own.kind, own.close_code) == (MessageKind.CLOSE, 4001)
    assert await connected.transport.receive() == own  # reported again, never raises
    with pytest.raises(TransportClosedError):
        await connected.transport.send_text(b"late")


async def test_server_close_code_reaches_the_client(server: EchoServer) -> None:
    async with await connect(server.url) as connected:
        await connected.transport.send_text(b"close 4002 server done")
        closed = await until_closed(connected.transport)
        assert (closed.close_code, closed.close_reason) == (4002, "server done")
        assert connected.transport.close_code == 4002
    assert (await server.closes.get()).close_code == 4002


async def test_close_while_receiving_reports_our_code(server: EchoServer) -> None:
    async with await connect(server.url) as connected:
        reader = asyncio.create_task(connected.transport.receive())
        await asyncio.sleep(0)
        await connected.transport.close(1000, "Closed")
        assert (await reader).close_code == 1000
    assert (await server.closes.get()).close_reason == "Closed"


async def test_abrupt_client_disconnect_is_a_failure_close(server: EchoServer) -> None:
    raw = await raw_upgrade(server.port, ("Sec-WebSocket-Protocol", "rtvbp.v1"))
    assert raw.status == 101
    raw.close()
    assert (await server.closes.get()).close_code == CLOSE_ABNORMAL


async def test_abrupt_server_disconnect_is_a_failure_close(server: EchoServer) -> None:
    async with await connect(server.url) as connected:
        await connected.transport.send_text(b"abort")
        assert (await until_closed(connected.transport)).close_code == CLOSE_ABNORMAL
        with pytest.raises(TransportClosedError):
            await connected.transport.send_binary(b"\x00" * 320)
    assert (await server.closes.get()).close_code == CLOSE_ABNORMAL


async def test_oversized_message_closes_with_1009(server: EchoServer) -> None:
    server.options["max_message_bytes"] = 1024
    async with await connect(server.url) as connected:
        await connected.transport.send_binary(b"\x00" * 1024)
        assert len((await connected.transport.receive()).data) == 1024
        await connected.transport.send_binary(b"\x00" * 1025)
        assert (await until_closed(connected.transport)).close_code == 1009
    assert (await server.closes.get()).close_code == 1009


async def test_client_limit_closes_with_1009(server: EchoServer) -> None:
    async with await connect(server.url, max_message_bytes=100) as connected:
        await connected.transport.send_text(b"x" * 101)
        assert (await until_closed(connected.transport)).close_code == 1009
    assert (await server.closes.get()).close_code == 1009


async def test_reserved_close_codes_are_refused(server: EchoServer) -> None:
    async with await connect(server.url) as connected:
        for code in (999, 1005, 1006, 5000):
            with pytest.raises(ValueError):
                await connected.transport.close(code)


# --- keepalive ---------------------------------------------------------------------------------


async def test_server_heartbeat_detects_a_dead_peer(server: EchoServer) -> None:
    server.options["heartbeat_s"] = 0.1
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(server.url, autoping=False) as socket,
    ):
        # never reads, so never answers the server's pings
        assert (await server.closes.get()).close_code == CLOSE_ABNORMAL
        while (await socket.receive()).type is aiohttp.WSMsgType.PING:
            pass
        assert socket.closed


async def test_client_heartbeat_detects_a_dead_server(server: EchoServer) -> None:
    async with await connect(server.url, heartbeat_s=0.1) as connected:
        await connected.transport.send_text(b"deaf")
        assert (await until_closed(connected.transport)).close_code == CLOSE_ABNORMAL
    server.release.set()
    assert (await server.closes.get()).close_code == CLOSE_ABNORMAL


async def test_live_peers_survive_heartbeats(server: EchoServer) -> None:
    server.options["heartbeat_s"] = 0.05
    async with await connect(server.url, heartbeat_s=0.05) as connected:
        reader = asyncio.create_task(connected.transport.receive())
        await asyncio.sleep(0.3)  # several ping/pong rounds on both sides
        assert not reader.done()
        await connected.transport.send_text(b"still here")
        assert (await reader).data == b"still here"


# --- client errors -----------------------------------------------------------------------------


async def test_connection_refused_is_a_connect_error() -> None:
    listener = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    with pytest.raises(ConnectError, match="cannot connect") as refused:
        await connect(f"ws://127.0.0.1:{port}/ws")
    assert refused.value.status is None


async def test_silent_server_times_out() -> None:
    connections: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ConnectError, match="timed out"):
            await connect(f"ws://127.0.0.1:{port}/ws", connect_timeout_s=0.1)
    finally:
        for writer in connections:
            writer.close()
        listener.close()
        await listener.wait_closed()


async def misbehaving_server(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/ws"


async def test_client_rejects_an_unrequested_or_missing_echo() -> None:
    async def echo_anyway(request: web.Request) -> web.StreamResponse:
        response = web.WebSocketResponse()
        response.headers["Sec-WebSocket-Protocol"] = "rtvbp.v1"
        await response.prepare(request)
        await response.receive()
        return response

    async def echo_nothing(request: web.Request) -> web.StreamResponse:
        response = web.WebSocketResponse(protocols=["something.else"])
        await response.prepare(request)
        await response.receive()
        return response

    for handler, profiles, reason in (
        (echo_anyway, None, "headerless"),
        (echo_nothing, ["rtvbp.v1"], "none of the offered"),
    ):
        runner, url = await misbehaving_server(handler)
        try:
            with pytest.raises(ConnectError, match=reason):
                await connect(url, profiles=profiles)
        finally:
            await runner.cleanup()


async def test_caller_session_stays_open(server: EchoServer) -> None:
    async with aiohttp.ClientSession() as session:
        connected = await connect(server.url, session=session)
        await connected.close()
        assert not session.closed
        assert isinstance(connected.transport, WebSocketTransport)
