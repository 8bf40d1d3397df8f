"""A served Application under hostile voice peers: raw WebSocket clients sending bad input.

After each abuse the server must still answer a well-behaved call, and leak no task.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from callbridge.apps.echo import echo
from callbridge.rtvbp.application import Application
from callbridge.rtvbp.voice import VoiceCall
from tests.conftest import serve_application, wait_until

INITIALIZE = {
    "version": "1",
    "id": "init-1",
    "method": "session.initialize",
    "params": {
        "application": {"id": "app"},
        "call": {"id": "c", "session_id": "s", "from": "+1", "to": "+2"},
        "audio_codec_offerings": [
            {"id": "L16/8000/1", "name": "L16", "sample_rate": 8000, "bit_depth": 16, "channels": 1}
        ],
        "metadata": None,
    },
}


@pytest.fixture
async def served() -> AsyncIterator[tuple[Application, str]]:
    application = Application(echo, max_message_bytes=64 * 1024)
    async with serve_application(application) as url:
        yield application, url


async def raw_socket(url: str) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    http = aiohttp.ClientSession()
    socket = await http.ws_connect(url, protocols=("rtvbp.v1",))
    return http, socket


async def next_text(socket: aiohttp.ClientWebSocketResponse) -> dict[str, object]:
    while True:
        message = await socket.receive(timeout=3)
        if message.type == aiohttp.WSMsgType.TEXT:
            parsed: dict[str, object] = json.loads(message.data)
            return parsed
        assert message.type == aiohttp.WSMsgType.BINARY, message


async def still_serves(url: str) -> None:
    voice = await VoiceCall.dial(url)
    await voice.send_audio(bytes(320))
    await wait_until(lambda: voice.read_frame() is not None)
    await voice.hangup()


async def test_garbage_frames_are_dropped_and_the_call_goes_on(
    served: tuple[Application, str], task_baseline: Callable[[], Awaitable[None]]
) -> None:
    application, url = served
    http, socket = await raw_socket(url)
    for garbage in ["{", "[]", '"x"', '{"version":"2","id":"a","method":"ping"}', "", "null"]:
        await socket.send_str(garbage)
    await socket.send_bytes(bytes(320))  # audio before initialize: dropped
    await socket.send_str(json.dumps(INITIALIZE))
    reply = await next_text(socket)
    assert reply["response"] == "init-1" and "result" in reply
    await socket.send_str('{"version":"1","response":"nobody-asked","result":{}}')
    await socket.send_str('{"version":"1","id":"u1","method":"no.such.method"}')
    assert await next_text(socket) == {
        "version": "1",
        "response": "u1",
        "error": {"code": 501, "message": "unknown method: no.such.method"},
    }
    await socket.send_str('{"version":"1","id":"p1","method":"ping","params":{"t0":0}}')
    bad_ping = await next_text(socket)
    assert bad_ping["response"] == "p1"
    assert isinstance(bad_ping["error"], dict) and bad_ping["error"]["code"] == 400
    await socket.send_bytes(bytes(100))  # wrong-size audio: re-chunked, nothing lost
    await socket.send_bytes(bytes(540))
    echoed = 0
    while echoed < 640:
        message = await socket.receive(timeout=3)
        if message.type == aiohttp.WSMsgType.BINARY:
            assert len(message.data) == 320
            echoed += len(message.data)
    await socket.close()
    await http.close()
    await wait_until(lambda: not application.active_calls)
    await still_serves(url)
    await task_baseline()


async def test_oversized_message_closes_only_that_connection(
    served: tuple[Application, str],
) -> None:
    _, url = served
    http, socket = await raw_socket(url)
    await socket.send_str(json.dumps(INITIALIZE))
    await next_text(socket)
    await socket.send_bytes(bytes(200 * 1024))
    message = await socket.receive(timeout=3)
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert socket.close_code == 1009
    await http.close()
    await still_serves(url)


async def test_disconnect_mid_initialize_leaks_nothing(
    served: tuple[Application, str], task_baseline: Callable[[], Awaitable[None]]
) -> None:
    application, url = served
    for _ in range(5):
        http, socket = await raw_socket(url)
        await socket.send_str(json.dumps(INITIALIZE))
        await http.close()  # gone before reading the answer
    await wait_until(lambda: not application.active_calls)
    await still_serves(url)
    await task_baseline()


async def test_second_initialize_is_refused(served: tuple[Application, str]) -> None:
    _, url = served
    http, socket = await raw_socket(url)
    await socket.send_str(json.dumps(INITIALIZE))
    await next_text(socket)
    await socket.send_str(json.dumps({**INITIALIZE, "id": "init-2"}))
    second = await next_text(socket)
    assert second["response"] == "init-2"
    assert second["error"] == {"code": 400, "message": "session already initialized"}
    await http.close()


async def test_unsupported_profile_is_http_400(served: tuple[Application, str]) -> None:
    _, url = served
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url, protocols=("rtvbp.v9",))
    assert refused.value.status == 400
    await still_serves(url)
