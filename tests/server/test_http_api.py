"""Black-box tests of the HTTP API and the routing of unknown paths, over real sockets."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
import pytest

if TYPE_CHECKING:
    from tests.server.conftest import ControlClient, ServerHandle

RTP_OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)


async def get(server: ServerHandle, path: str) -> tuple[int, object]:
    async with server.http.get(server.base_url + path) as response:
        assert response.content_type == "application/json"
        return response.status, await response.json()


@pytest.mark.parametrize("path", ["/health", "/health?probe=1&x"])
async def test_health(server: ServerHandle, path: str) -> None:
    assert await get(server, path) == (200, {"status": "ok"})


async def test_metrics(server: ServerHandle, client: ControlClient) -> None:
    await client.result("session.create")
    async with server.http.get(server.base_url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    assert "callbridge_events_dropped_total 0.0" in text
    assert "callbridge_control_connections 1.0" in text
    assert "callbridge_sessions_total 1" in text
    assert "callbridge_sessions_active 1" in text


async def test_sessions_list_and_detail(server: ServerHandle, client: ControlClient) -> None:
    assert await get(server, "/sessions") == (200, [])
    session_id = (await client.result("session.create"))["session_id"]
    endpoint_id = (await client.result("endpoint.create_from_offer", {"sdp": RTP_OFFER}))[
        "endpoint_id"
    ]
    status, sessions = await get(server, "/sessions")
    assert status == 200
    assert sessions == [
        {
            "session_id": session_id,
            "state": "active",
            "endpoint_count": 1,
            "created_at": (await client.result("session.info"))["created_at"],
        }
    ]
    status, detail = await get(server, f"/sessions/{session_id}")
    assert status == 200
    assert detail == await client.result("session.info")
    assert isinstance(detail, dict)
    assert detail["endpoints"][0]["endpoint_id"] == endpoint_id
    assert detail["endpoints"][0]["endpoint_type"] == "rtp"
    assert await get(server, f"/sessions/{session_id.upper()}") == (200, detail)


@pytest.mark.parametrize("session_id", ["nope", "1234", "6f1c3e0a-1b2c-4d5e-8f90-0123456789az"])
async def test_session_detail_with_malformed_id(server: ServerHandle, session_id: str) -> None:
    assert await get(server, f"/sessions/{session_id}") == (400, {"error": "invalid session ID"})


async def test_session_detail_not_found(server: ServerHandle) -> None:
    assert await get(server, "/sessions/6f1c3e0a-1b2c-4d5e-8f90-0123456789ab") == (
        404,
        {"error": "session not found"},
    )


@pytest.mark.parametrize("path", ["/sessionsnonsense", "/", "/nope/deeper", "/sessions/a/b"])
async def test_unknown_path(server: ServerHandle, path: str) -> None:
    assert await get(server, path) == (404, {"error": "not found"})


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/health"), ("DELETE", "/sessions"), ("HEAD", "/metrics"), ("PUT", "/sessions/x")],
)
async def test_known_route_with_wrong_method(server: ServerHandle, method: str, path: str) -> None:
    async with server.http.request(method, server.base_url + path) as response:
        assert response.status == 405
        assert "GET" in response.headers["Allow"]
        if method != "HEAD":
            assert await response.json() == {"error": "method not allowed"}


@pytest.mark.parametrize("path", ["/", "/control", "/any/path?with=query"])
async def test_control_websocket_on_any_unknown_path(server: ServerHandle, path: str) -> None:
    client = await server.connect(path)
    assert await client.result("session.list") == {"sessions": []}


async def test_rtvbp_path_is_not_the_control_protocol(server: ServerHandle) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await server.connect(server.settings.rtvbp.path)
    assert refused.value.status == 404
