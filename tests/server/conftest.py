"""A real aiohttp server (control WebSocket, HTTP API, real engine) on port 0, and clients."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from callbridge.engine.manager import SessionManager
from callbridge.rtvbp.application import Application
from callbridge.rtvbp.picows_listener import FastListener
from callbridge.server.app import app_runner, setup_media_server
from callbridge.server.config import Settings
from callbridge.server.control import ControlServer, control_server
from callbridge.server.rtvbp_fast import start_fast_listener
from callbridge.server.rtvbp_ingress import INGRESS

RECEIVE_TIMEOUT_S = 10.0
"""Guard against a hang only; no test passes or fails on timing."""

ABSENT: Any = object()
"""Marker: leave the `params` key out of the request (also `ControlClient.ABSENT`)."""


class ControlClient:
    """A control-protocol client over a real WebSocket; events are buffered in arrival order."""

    ABSENT = ABSENT

    def __init__(self, websocket: aiohttp.ClientWebSocketResponse) -> None:
        self.websocket = websocket
        self.events: list[dict[str, Any]] = []
        """Events received and not yet taken by `next_event`."""
        self._ids = itertools.count(1)

    async def send_raw(self, text: str) -> None:
        await self.websocket.send_str(text)

    async def receive(self) -> dict[str, Any]:
        """The next text message, whatever it is."""
        while True:
            message = await self.websocket.receive(timeout=RECEIVE_TIMEOUT_S)
            if message.type is aiohttp.WSMsgType.TEXT:
                decoded: dict[str, Any] = msgspec.json.decode(message.data)
                return decoded
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                raise ConnectionError(f"socket closed: {message.extra}")
            if message.type is aiohttp.WSMsgType.ERROR:
                raise ConnectionError(f"socket error: {message.data}")

    async def response(self) -> dict[str, Any]:
        """The next response; events that come first are buffered."""
        while True:
            message = await self.receive()
            if "event" in message:
                self.events.append(message)
                continue
            return message

    async def call(
        self, method: str, params: Any = ABSENT, *, request_id: str | None = None
    ) -> dict[str, Any]:
        request: dict[str, Any] = {"id": request_id or f"r{next(self._ids)}", "method": method}
        if params is not ABSENT:
            request["params"] = params
        await self.websocket.send_str(msgspec.json.encode(request).decode())
        response = await self.response()
        assert response.get("id") == request["id"], response
        return response

    async def result(self, method: str, params: Any = ABSENT) -> Any:
        response = await self.call(method, params)
        assert "error" not in response, response
        return response["result"]

    async def error(self, method: str, params: Any = ABSENT) -> dict[str, str]:
        """The error of a call that must fail: {"code", "message"}."""
        response = await self.call(method, params)
        assert "result" not in response, response
        error: dict[str, str] = response["error"]
        return error

    async def next_event(self, name: str) -> dict[str, Any]:
        """The data of the next event called `name` (earlier events of other names are kept)."""
        for index, event in enumerate(self.events):
            if event["event"] == name:
                del self.events[index]
                data: dict[str, Any] = event["data"]
                return data
        while True:
            message = await self.receive()
            assert "event" in message, f"response without a request: {message}"
            if message["event"] == name:
                data = message["data"]
                return data
            self.events.append(message)

    async def close(self) -> None:
        await self.websocket.close()


@dataclass
class ServerHandle:
    app: web.Application
    runner: web.AppRunner
    manager: SessionManager
    settings: Settings
    host: str
    port: int
    http: aiohttp.ClientSession
    clients: list[ControlClient] = field(default_factory=list)
    fast: FastListener | None = None
    """The picows listener voice peers dial instead, when the test runs on it."""

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def media_url(self) -> str:
        """Where voice peers call in to be parked (append /{session_id} to join one)."""
        port = self.port if self.fast is None else self.fast.addresses[0][1]
        return f"ws://{self.host}:{port}{self.settings.rtvbp.media_path}"

    @property
    def control(self) -> ControlServer:
        return control_server(self.app)

    async def session_states(self) -> dict[str, str]:
        """{session_id: state} of every session, as the HTTP API reports them."""
        async with self.http.get(f"{self.base_url}/sessions") as response:
            sessions = await response.json()
        return {session["session_id"]: session["state"] for session in sessions}

    async def open_raw(self, path: str = "/", *, await_upgrade: bool = True) -> RawWebSocket:
        return await RawWebSocket.open(self.host, self.port, path, await_upgrade=await_upgrade)

    async def connect(self, path: str = "/") -> ControlClient:
        websocket = await self.http.ws_connect(f"{self.base_url}{path}")
        client = ControlClient(websocket)
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        await self.http.close()
        if self.fast is not None:
            await self.fast.close()
        await self.runner.cleanup()


StartServer = Callable[..., Awaitable[ServerHandle]]


@pytest.fixture
def media_listener(request: pytest.FixtureRequest) -> str:
    """Which listener voice peers dial: "aiohttp" (the shared one), or "picows" for a module
    that parametrizes this fixture (indirect) over both."""
    return str(getattr(request, "param", "aiohttp"))


@pytest.fixture
async def start_server(
    tmp_path: Path, task_baseline: Callable[[], Awaitable[None]], media_listener: str
) -> AsyncIterator[StartServer]:
    """Start servers with settings overrides; all are shut down at the end of the test, which
    then fails if any task the servers or clients started is still running."""
    handles: list[ServerHandle] = []

    async def start(**overrides: Any) -> ServerHandle:
        values: dict[str, Any] = {
            "cache_dir": tmp_path / "cache",
            "rtp_port_range": (41000, 41999),
            "shutdown_max_wait_secs": 5,
        }
        values.update(overrides)
        if media_listener == "picows":
            values["rtvbp"] = {**values.get("rtvbp", {}), "fast_listen": ["127.0.0.1:0"]}
        settings = Settings(**values)
        manager = SessionManager(settings.engine_config())
        await manager.start()
        app = web.Application()
        setup_media_server(app, manager, settings)
        runner = app_runner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        handle = ServerHandle(app, runner, manager, settings, host, port, aiohttp.ClientSession())
        handle.fast = await start_fast_listener(settings, Application(), app[INGRESS], None)
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        await handle.close()
    await task_baseline()


@pytest.fixture
async def server(start_server: StartServer) -> ServerHandle:
    return await start_server()


@pytest.fixture
async def client(server: ServerHandle) -> ControlClient:
    return await server.connect()


@pytest.fixture
async def bound(client: ControlClient) -> ControlClient:
    """A client whose connection is bound to a fresh session."""
    await client.result("session.create")
    return client


class RawWebSocket:
    """A hand-made WebSocket client for what aiohttp's client will not do (abrupt disconnects)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(
        cls, host: str, port: int, path: str = "/", *, await_upgrade: bool = True
    ) -> RawWebSocket:
        """Send the upgrade request; with `await_upgrade`, also read the 101 answer."""
        reader, writer = await asyncio.open_connection(host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        if await_upgrade:
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def send_text(self, text: str) -> None:
        await self._send_frame(0x81, text.encode())

    async def send_ping(self, payload: bytes = b"ping") -> None:
        await self._send_frame(0x89, payload)

    async def _send_frame(self, first_byte: int, payload: bytes) -> None:
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", first_byte, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", first_byte, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", first_byte, 0x80 | 127, length)
        masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        self.writer.write(header + mask + masked)
        await self.writer.drain()

    async def send_close(self) -> None:
        mask = os.urandom(4)
        payload = bytes(byte ^ mask[index % 4] for index, byte in enumerate(b"\x03\xe8"))
        self.writer.write(b"\x88\x82" + mask + payload)
        await self.writer.drain()

    async def read_until(self, marker: bytes) -> bytes:
        """Server frames are unmasked, so their JSON shows up verbatim in the byte stream."""
        received = b""
        while marker not in received:
            chunk = await asyncio.wait_for(self.reader.read(65536), RECEIVE_TIMEOUT_S)
            assert chunk, f"connection closed before {marker!r}"
            received += chunk
        return received

    async def read_until_eof(self) -> bytes:
        received = await asyncio.wait_for(self.reader.read(), RECEIVE_TIMEOUT_S)
        self.writer.close()
        await self.writer.wait_closed()
        return received

    def abort(self) -> None:
        """Drop the TCP connection without a WebSocket close handshake."""
        self.writer.transport.abort()

    def reset(self) -> None:
        """Drop the TCP connection with a reset (SO_LINGER 0), as a crashed or hostile client."""
        raw_socket = self.writer.get_extra_info("socket")
        raw_socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()
