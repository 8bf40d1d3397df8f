"""The example browser page's route (`browser_page`): off by default, served without a token,
and its own origin, and only that, may open the control WebSocket when the Host is an address
(a DNS name could be rebound by a hostile site). The page itself is driven by Chromium in
browser_scenarios.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from callbridge.server.config import load_settings
from tests.server.test_control_access import CONTROL_TOKEN, bearer, request, upgrade

if TYPE_CHECKING:
    from tests.server.conftest import ServerHandle, StartServer


@pytest.fixture
async def with_page(start_server: StartServer) -> ServerHandle:
    return await start_server(browser_page=True, control={"tokens": [CONTROL_TOKEN]})


async def test_the_page_is_off_by_default(server: ServerHandle) -> None:
    status, body, _ = await request(server, "GET", "/browser", {})
    assert (status, body) == (404, {"error": "not found"})


async def test_the_page_is_served_without_a_token(with_page: ServerHandle) -> None:
    async with with_page.http.get(f"{with_page.base_url}/browser") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        page = await response.text()
    assert "endpoint.create_rtvbp" in page and "endpoint.create_from_offer" in page
    assert "https://" not in page and "http://" not in page  # nothing from elsewhere
    status, _, _ = await request(with_page, "GET", "/sessions", {})
    assert status == 401  # the rest of the control plane still needs the token


async def test_the_pages_own_origin_may_open_the_control_websocket(
    with_page: ServerHandle,
) -> None:
    own = f"http://127.0.0.1:{with_page.port}"
    assert await upgrade(with_page, Origin=own, **bearer(CONTROL_TOKEN)) == (101, None)
    status, body = await upgrade(with_page, Origin=own)
    assert (status, body["reason"]) == (401, "missing bearer token")


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("http://evil.example", None),
        ("https://127.0.0.1:{port}", None),  # another scheme is another origin
        ("http://127.0.0.1:1", None),
        ("http://rebound.example:{port}", "rebound.example:{port}"),  # DNS rebinding
    ],
)
async def test_other_origins_are_refused(
    with_page: ServerHandle, origin: str, host: str | None
) -> None:
    headers = {"Origin": origin.format(port=with_page.port), **bearer(CONTROL_TOKEN)}
    if host is not None:
        headers["Host"] = host.format(port=with_page.port)
    assert await upgrade(with_page, **headers) == (
        403,
        {"error": "forbidden", "reason": "origin not allowed"},
    )


async def test_without_the_page_its_origin_is_an_origin_like_any_other(
    server: ServerHandle,
) -> None:
    status, _ = await upgrade(server, Origin=f"http://127.0.0.1:{server.port}")
    assert status == 403


def test_the_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().browser_page is False
    monkeypatch.setenv("CALLBRIDGE_BROWSER_PAGE", "true")
    assert load_settings().browser_page is True
