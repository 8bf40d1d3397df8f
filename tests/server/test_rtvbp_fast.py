"""The fast RTVBP listener (rtvbp.fast_listen) of a real `serve()`, dialled by an independent
client (the `websockets` library) and by hand-written bad input."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from callbridge.apps.echo import echo
from callbridge.rtvbp.application import Application
from callbridge.server.app import serve
from callbridge.server.config import Settings
from tests.rtvbp.test_application_bad_input import INITIALIZE

RATE = 8000
FRAME_SAMPLES = 160
UPDATED = {
    "version": "1",
    "id": "upd-1",
    "event": "session.updated",
    "data": {
        "audio_codec": {
            "id": "L16/8000/1",
            "name": "L16",
            "sample_rate": 8000,
            "bit_depth": 16,
            "channels": 1,
        }
    },
}

Serving = Callable[..., Any]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def serving(tmp_path: Path, task_baseline: Callable[[], Awaitable[None]]) -> Serving:
    """`async with serving(**rtvbp_settings) as port`: `serve()` with the echo application and
    a fast listener on `port` until the block ends."""

    @asynccontextmanager
    async def run(**rtvbp: Any) -> AsyncIterator[int]:
        port = free_port()
        settings = Settings(
            listen=["127.0.0.1:0"],
            cache_dir=tmp_path / "cache",
            rtp_port_range=(43000, 43999),
            shutdown_max_wait_secs=1,
            rtvbp={"fast_listen": [f"127.0.0.1:{port}"], **rtvbp},
        )
        stop = asyncio.Event()
        ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            serve(settings, Application(echo), on_ready=ready.set_result, stop=stop)
        )
        try:
            done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                task.result()
            yield port
        finally:
            stop.set()
            await task
        await task_baseline()

    return run


async def answered(websocket: ClientConnection) -> dict[str, Any]:
    await websocket.send(json.dumps(INITIALIZE))
    response = json.loads(await websocket.recv())
    await websocket.send(json.dumps(UPDATED))
    return dict(response)


def tone_frames(frequency: float, frames: int) -> list[bytes]:
    samples = np.arange(frames * FRAME_SAMPLES)
    tone = (8000 * np.sin(2 * np.pi * frequency * samples / RATE)).astype("<i2")
    return [tone[index : index + FRAME_SAMPLES].tobytes() for index in range(0, tone.size, 160)]


def pitch(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, "<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / RATE)[int(np.argmax(spectrum))])


async def test_an_independent_client_hears_its_tone_echoed(serving: Serving) -> None:
    async with (
        serving() as port,
        connect(f"ws://127.0.0.1:{port}/rtvbp", subprotocols=["rtvbp.v1"]) as websocket,
    ):
        assert websocket.subprotocol == "rtvbp.v1"
        response = await answered(websocket)
        assert response["response"] == "init-1"
        assert response["result"]["audio_codec"]["id"] == "L16/8000/1"
        sent = tone_frames(440.0, 50)  # 1 s, paced like a phone
        heard = bytearray()

        async def listen() -> None:
            while len(heard) < len(sent) * FRAME_SAMPLES * 2:
                message = await websocket.recv()
                if isinstance(message, bytes):
                    heard.extend(message)

        listener = asyncio.create_task(listen())
        for frame in sent:
            await websocket.send(frame)
            await asyncio.sleep(0.02)
        await asyncio.wait_for(listener, 5)
        assert len(heard) == len(b"".join(sent))
        assert abs(pitch(bytes(heard)) - 440.0) < 10
        assert bytes(heard) == b"".join(sent)  # L16 in, L16 out: byte-exact


async def test_authentication_on_the_fast_listener(serving: Serving) -> None:
    async with serving(auth="static", static_tokens=["t0ken"]) as port:
        url = f"ws://127.0.0.1:{port}/rtvbp"
        with pytest.raises(InvalidStatus) as missing:
            await connect(url, subprotocols=["rtvbp.v1"])
        assert missing.value.response.status_code == 401
        assert missing.value.response.headers["WWW-Authenticate"] == "Bearer"
        wrong = {"Authorization": "Bearer not-it"}
        with pytest.raises(InvalidStatus) as refused:
            await connect(url, subprotocols=["rtvbp.v1"], additional_headers=wrong)
        assert refused.value.response.status_code == 401
        assert b"not-it" not in refused.value.response.body
        right = {"Authorization": "Bearer t0ken"}
        async with connect(url, subprotocols=["rtvbp.v1"], additional_headers=right) as websocket:
            assert (await answered(websocket))["response"] == "init-1"


async def test_wrong_subprotocol_path_and_session_are_refused(serving: Serving) -> None:
    async with serving() as port:
        base = f"ws://127.0.0.1:{port}"
        cases = [
            ("/rtvbp", ["chat.v2"], 400, b"Unsupported WebSocket subprotocol"),
            ("/control", ["rtvbp.v1"], 404, b"Not Found"),
            ("/rtvbp/media/not-a-uuid", ["rtvbp.v1"], 400, b'{"error": "invalid session ID"}'),
            (
                "/rtvbp/media/6f1c3e0a-1b2c-4d5e-8f90-0123456789ab",
                ["rtvbp.v1"],
                404,
                b'{"error": "session not found"}',
            ),
        ]
        for path, offer, status, body in cases:
            with pytest.raises(InvalidStatus) as refused:
                await connect(base + path, subprotocols=offer)  # type: ignore[arg-type]
            assert (refused.value.response.status_code, refused.value.response.body) == (
                status,
                body,
            )


async def test_oversized_message_closes_with_1009(serving: Serving) -> None:
    async with (
        serving(max_message_kb=1) as port,
        connect(f"ws://127.0.0.1:{port}/rtvbp", subprotocols=["rtvbp.v1"]) as websocket,
    ):
        await answered(websocket)
        await websocket.send(bytes(1025))
        with pytest.raises(ConnectionClosed):
            while True:
                await websocket.recv()
        assert websocket.close_code == 1009


async def raw_exchange(port: int, request: bytes) -> bytes:
    """Send `request` as is and read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


UPGRADE = (
    b"GET /rtvbp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + b"dGhlIHNhbXBsZSBub25jZQ==" + b"\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: rtvbp.v1\r\n\r\n"
)


async def test_garbage_gets_an_http_error_and_the_listener_keeps_serving(
    serving: Serving,
) -> None:
    async with serving() as port:
        cases = [
            (os.urandom(64).replace(b"\r\n", b"..") + b"\r\n\r\n", b"HTTP/1.1 400 "),
            (b"GET /rtvbp HTTP/1.0\r\n\r\n", b"HTTP/1.1 400 "),
            (b"GET /rtvbp HTTP/1.1\r\nno colon here\r\n\r\n", b"HTTP/1.1 400 "),
            (b"GET /rtvbp HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", b"HTTP/1.1 431 "),
            (b"POST /rtvbp HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 405 "),
            (b"GET /rtvbp HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 400 "),  # no upgrade
            (b"GET /rtvbp/%ff HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 400 "),
        ]
        for request, status_line in cases:
            assert (await raw_exchange(port, request)).startswith(status_line), request[:40]
        # An upgraded connection that sends an invalid frame (opcode 3) is failed with 1002.
        reply = await raw_exchange(port, UPGRADE + b"\x83\x80\x00\x00\x00\x00")
        assert reply.startswith(b"HTTP/1.1 101 ")
        close_frame = reply.split(b"\r\n\r\n", 1)[1]
        assert close_frame[0] == 0x88 and close_frame[2:4] == (1002).to_bytes(2, "big")
        async with connect(f"ws://127.0.0.1:{port}/rtvbp", subprotocols=["rtvbp.v1"]) as ws:
            assert (await answered(ws))["response"] == "init-1"


async def test_silent_connection_is_dropped_after_the_handshake_timeout(
    serving: Serving, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("callbridge.rtvbp.picows_listener.HANDSHAKE_TIMEOUT_S", 0.2)
    async with serving() as port:
        assert await raw_exchange(port, b"GET /rtvbp HTTP/1.1\r\n") == b""


async def test_shutdown_closes_calls_on_the_fast_listener_with_1001(serving: Serving) -> None:
    async with serving() as port:
        websocket = await connect(f"ws://127.0.0.1:{port}/rtvbp", subprotocols=["rtvbp.v1"])
        await answered(websocket)
    await asyncio.wait_for(websocket.wait_closed(), 5)
    assert websocket.close_code in (1000, 1001)
