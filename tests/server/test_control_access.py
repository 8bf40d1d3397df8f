"""Control-plane access over real sockets: every refusal happens before the upgrade, creates
nothing, and no token reaches the log."""

from __future__ import annotations

import base64
import logging
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import jwt
import pytest

from callbridge.rtvbp.auth import (
    BABELFORCE_ISSUER,
    BABELFORCE_SUBJECT,
    generate_test_keypair,
)
from callbridge.server.config import ConfigError, load_settings
from callbridge.server.control import CONTROL_SUBPROTOCOL
from tests.rtvbp.test_auth import encode_bearer_subprotocol

if TYPE_CHECKING:
    from tests.server.conftest import ServerHandle, StartServer

CONTROL_TOKEN = "control-token-0123456789abcdef"
READ_TOKEN = "read-token-0123456789abcdef"
AUDIENCE = "callbridge-test"


class Keys:
    """A signing key pair for control-plane JWTs, and a stranger's key."""

    def __init__(self, directory: Path) -> None:
        self.private, public_pem = generate_test_keypair()
        self.public_file = directory / "control-public.pem"
        self.public_file.write_bytes(public_pem)
        self.stranger = generate_test_keypair()[0]

    def token(self, *, key: bytes | None = None, lifetime_s: int = 600, **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "iss": BABELFORCE_ISSUER,
            "sub": BABELFORCE_SUBJECT,
            "aud": AUDIENCE,
            "iat": now - 5,
            "exp": now + lifetime_s,
            **claims,
        }
        return jwt.encode(payload, key or self.private, algorithm="RS256")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
async def guarded(start_server: StartServer, keys: Keys) -> ServerHandle:
    return await start_server(
        control={
            "tokens": [CONTROL_TOKEN],
            "read_tokens": [READ_TOKEN],
            "jwt_public_keys": [keys.public_file],
            "jwt_audiences": [AUDIENCE],
            "allowed_origins": ["https://ops.example.com"],
        }
    )


def upgrade_headers(**extra: str) -> dict[str, str]:
    return {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
        **extra,
    }


async def request(
    server: ServerHandle, method: str, path: str, headers: dict[str, str]
) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with server.http.request(method, server.base_url + path, headers=headers) as response:
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, body, response


async def upgrade(server: ServerHandle, path: str = "/", **headers: str) -> tuple[int, Any]:
    """A WebSocket upgrade request; the answer's status and JSON body (101 has none)."""
    status, body, _ = await request(server, "GET", path, upgrade_headers(**headers))
    return status, body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_nothing_created(server: ServerHandle) -> None:
    assert not server.control.connections
    assert not server.manager.sessions()


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing bearer token"),
        ({"Authorization": f"Basic {CONTROL_TOKEN}"}, "authorization scheme is not Bearer"),
        ({"Authorization": "Bearer"}, "missing bearer token"),
        ({"Authorization": "Bearer   "}, "missing bearer token"),
        (bearer("wrong-token-0123456789abcdef"), "bearer token not accepted"),
        (bearer(CONTROL_TOKEN + "x"), "bearer token not accepted"),
        (bearer(CONTROL_TOKEN.upper()), "bearer token not accepted"),
        (bearer("not.a.jwt"), "malformed token"),
        ({"Sec-WebSocket-Protocol": f"{CONTROL_SUBPROTOCOL}, bearer.!!"}, "malformed bearer"),
    ],
)
async def test_upgrade_without_an_accepted_token_is_401(
    guarded: ServerHandle, headers: dict[str, str], reason: str
) -> None:
    status, body = await upgrade(guarded, **headers)
    assert status == 401
    assert body["error"] == "unauthorized"
    assert body["reason"].startswith(reason)
    assert_nothing_created(guarded)


async def test_refusal_names_the_scheme(guarded: ServerHandle) -> None:
    _, _, response = await request(guarded, "GET", "/", upgrade_headers())
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="callbridge"'


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"lifetime_s": -120, "scope": "callbridge.control"}, "token expired"),
        ({"key": "stranger", "scope": "callbridge.control"}, "signature invalid"),
        ({"aud": "someone-else", "scope": "callbridge.control"}, "account"),
        ({"iss": "issuer.example", "scope": "callbridge.control"}, "issuer not accepted"),
    ],
)
async def test_invalid_jwt_is_401(
    guarded: ServerHandle, keys: Keys, claims: dict[str, Any], reason: str
) -> None:
    if claims.get("key") == "stranger":
        claims["key"] = keys.stranger
    status, body = await upgrade(guarded, **bearer(keys.token(**claims)))
    assert (status, body["error"]) == (401, "unauthorized")
    assert reason in body["reason"]
    assert_nothing_created(guarded)


async def test_query_string_token_is_not_accepted(guarded: ServerHandle) -> None:
    for name in ("access_token", "token", "bearer"):
        status, _ = await upgrade(guarded, f"/?{name}={CONTROL_TOKEN}")
        assert status == 401
    assert_nothing_created(guarded)


@pytest.mark.parametrize("scope", [None, "", "openid profile", ["callbridge.read"]])
async def test_read_only_or_scopeless_credentials_get_403_on_the_control_socket(
    guarded: ServerHandle, keys: Keys, scope: Any
) -> None:
    token = READ_TOKEN if scope is None else keys.token(scope=scope)
    _, _, response = await request(guarded, "GET", "/", upgrade_headers(**bearer(token)))
    assert response.status == 403
    assert response.headers["WWW-Authenticate"].endswith('error="insufficient_scope"')
    assert (await response.json())["error"] == "forbidden"
    assert_nothing_created(guarded)


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "https://ops.example.com.evil"])
async def test_browser_from_an_unlisted_origin_gets_403_even_with_a_token(
    guarded: ServerHandle, origin: str
) -> None:
    status, body = await upgrade(guarded, Origin=origin, **bearer(CONTROL_TOKEN))
    assert (status, body) == (403, {"error": "forbidden", "reason": "origin not allowed"})
    assert_nothing_created(guarded)


async def test_bearer_subprotocol_without_the_control_subprotocol_is_refused(
    guarded: ServerHandle,
) -> None:
    status, body = await upgrade(
        guarded, **{"Sec-WebSocket-Protocol": encode_bearer_subprotocol(CONTROL_TOKEN)}
    )
    assert status == 400
    assert CONTROL_SUBPROTOCOL in body["error"]
    assert_nothing_created(guarded)


# --- accepted -------------------------------------------------------------------------------


async def control_session(server: ServerHandle, **options: Any) -> str:
    """Connect, create a session, return the protocol the server selected."""
    async with server.http.ws_connect(server.base_url + "/", **options) as websocket:
        await websocket.send_json({"id": "1", "method": "session.create"})
        reply = await websocket.receive_json(timeout=10)
        assert "session_id" in reply["result"], reply
        return websocket.protocol or ""


async def test_control_token_and_control_scoped_jwt_are_accepted(
    guarded: ServerHandle, keys: Keys
) -> None:
    assert await control_session(guarded, headers=bearer(CONTROL_TOKEN)) == ""
    jwt_token = keys.token(scope="openid callbridge.read callbridge.control")
    assert await control_session(guarded, headers=bearer(jwt_token)) == ""


async def test_browser_carrier_from_an_allowed_origin_is_accepted(guarded: ServerHandle) -> None:
    selected = await control_session(
        guarded,
        origin="https://OPS.example.com",
        protocols=(CONTROL_SUBPROTOCOL, encode_bearer_subprotocol(CONTROL_TOKEN)),
    )
    assert selected == CONTROL_SUBPROTOCOL


# --- the HTTP API ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "token", "status"),
    [
        ("GET", "/health", None, 200),
        ("GET", "/health", "wrong-token-0123456789abcdef", 200),
        ("GET", "/metrics", None, 401),
        ("GET", "/metrics", READ_TOKEN, 200),
        ("GET", "/metrics", CONTROL_TOKEN, 200),
        ("GET", "/sessions", None, 401),
        ("GET", "/sessions", "wrong-token-0123456789abcdef", 401),
        ("GET", "/sessions", READ_TOKEN, 200),
        ("GET", "/sessions", CONTROL_TOKEN, 200),
        ("GET", f"/sessions/{uuid.UUID(int=1)}", READ_TOKEN, 404),
        ("GET", "/no/such/path", None, 401),
        ("POST", "/sessions", READ_TOKEN, 403),
        ("DELETE", f"/sessions/{uuid.UUID(int=1)}", READ_TOKEN, 403),
        ("POST", "/sessions", CONTROL_TOKEN, 405),
    ],
)
async def test_http_api_scopes(
    guarded: ServerHandle, method: str, path: str, token: str | None, status: int
) -> None:
    headers = bearer(token) if token else {}
    assert (await request(guarded, method, path, headers))[0] == status


async def test_jwt_read_scope_reads_the_http_api(guarded: ServerHandle, keys: Keys) -> None:
    headers = bearer(keys.token(scope="callbridge.read"))
    assert (await request(guarded, "GET", "/sessions", headers))[:2] == (200, [])


async def test_public_metrics(start_server: StartServer) -> None:
    server = await start_server(control={"tokens": [CONTROL_TOKEN], "public_metrics": True})
    assert (await request(server, "GET", "/metrics", {}))[0] == 200
    assert (await request(server, "GET", "/sessions", {}))[0] == 401


async def test_rtvbp_ingress_keeps_its_own_authentication(guarded: ServerHandle) -> None:
    media_path = guarded.settings.rtvbp.media_path
    status, body, _ = await request(guarded, "GET", f"{media_path}/{uuid.UUID(int=1)}", {})
    assert (status, body) == (404, {"error": "session not found"})


# --- without authentication (the loopback default) ------------------------------------------


async def test_browsers_are_refused_unless_their_origin_is_listed(
    start_server: StartServer,
) -> None:
    default = await start_server()
    assert await upgrade(default, Origin="https://evil.example") == (
        403,
        {"error": "forbidden", "reason": "origin not allowed"},
    )
    assert (await request(default, "GET", "/sessions", {"Origin": "http://localhost"}))[0] == 403
    assert (await request(default, "GET", "/health", {"Origin": "http://localhost"}))[0] == 200
    assert (await upgrade(default))[0] == 101
    listed = await start_server(control={"allowed_origins": ["http://localhost:8080"]})
    assert (await upgrade(listed, Origin="http://localhost:8080"))[0] == 101


# --- tokens never logged --------------------------------------------------------------------


async def test_tokens_never_reach_the_log(
    guarded: ServerHandle, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good_jwt = keys.token(scope="callbridge.control")
    secrets = [
        CONTROL_TOKEN,
        READ_TOKEN,
        good_jwt,
        keys.token(lifetime_s=-120, scope="callbridge.control"),
        "wrong-token-0123456789abcdef",
    ]
    for secret in secrets:
        await upgrade(guarded, **bearer(secret))
        await upgrade(guarded, f"/?access_token={secret}")
        await upgrade(guarded, **{"Sec-WebSocket-Protocol": encode_bearer_subprotocol(secret)})
        await request(guarded, "GET", "/sessions", bearer(secret))
        await request(guarded, "POST", "/sessions", bearer(secret))
    await control_session(guarded, headers=bearer(CONTROL_TOKEN))
    await control_session(guarded, headers=bearer(good_jwt))
    read_offer = f"{CONTROL_SUBPROTOCOL}, {encode_bearer_subprotocol(READ_TOKEN)}"
    await upgrade(guarded, **{"Sec-WebSocket-Protocol": read_offer})
    logged = caplog.text + "".join(repr(record.args) for record in caplog.records)
    assert "refused (401)" in logged and "refused (403)" in logged
    for secret in secrets:
        for form in (secret, encode_bearer_subprotocol(secret), secret[:12]):
            assert form not in logged


# --- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("control", "message"),
    [
        ({"tokens": ["short"]}, "at least 16 characters"),
        ({"tokens": [CONTROL_TOKEN], "read_tokens": [CONTROL_TOKEN]}, "both"),
        ({"jwt_public_keys": ["/etc/hostname"]}, "jwt_audiences"),
        ({"jwt_public_keys": ["/no/such.pem"], "jwt_audiences": ["*"]}, "not a file"),
        ({"jwt_read_scope": "callbridge.control"}, "must differ"),
    ],
)
def test_unsound_control_settings_are_refused(control: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(control=control)


def test_control_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLBRIDGE_CONTROL__TOKENS", f'["{CONTROL_TOKEN}"]')
    settings = load_settings()
    assert settings.control.authentication
    assert CONTROL_TOKEN not in repr(settings)
