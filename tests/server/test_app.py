"""The listener as `callbridge serve` runs it: TLS, exposure warnings, and malformed HTTP requests
that must not flood the log. Real sockets, a real `serve()`."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from callbridge.rtvbp.application import Application
from callbridge.server.app import app_runner, build_app, exposure_warnings, serve
from callbridge.server.config import ConfigError, Settings, load_settings

CONTROL_TOKEN = "control-token-0123456789abcdef"
PROTECTED = Settings(
    control={"tokens": [CONTROL_TOKEN]},
    rtvbp={"auth": "static", "static_tokens": ["rtvbp-token-0123456789abcdef"]},
)


async def no_call(call: Any) -> None:
    """The served SDK application; these tests never call it."""


@dataclass
class Certificate:
    cert_file: Path
    key_file: Path

    def client_context(self) -> ssl.SSLContext:
        """A client that trusts this certificate and verifies host names."""
        return ssl.create_default_context(cafile=str(self.cert_file))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost, made for the test."""
    directory = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "callbridge test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file = directory / "cert.pem"
    key_file = directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Certificate(cert_file, key_file)


Serving = Callable[..., Any]


@pytest.fixture
def serving(tmp_path: Path, task_baseline: Callable[[], Awaitable[None]]) -> Serving:
    """`async with serving(**settings) as (host, port)`: `serve()` until the block ends."""

    @asynccontextmanager
    async def run(**overrides: Any) -> AsyncIterator[tuple[str, int]]:
        values: dict[str, Any] = {
            "listen": ["127.0.0.1:0"],
            "cache_dir": tmp_path / "cache",
            "rtp_port_range": (42000, 42999),
            "shutdown_max_wait_secs": 5,
        }
        values.update(overrides)
        stop = asyncio.Event()
        ready: asyncio.Future[list[tuple[str, int]]] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            serve(Settings(**values), Application(no_call), on_ready=ready.set_result, stop=stop)
        )
        try:
            waiting: set[asyncio.Future[Any]] = {task, ready}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                task.result()
            yield (await ready)[0]
        finally:
            stop.set()
            await task
        await task_baseline()

    return run


# --- TLS ------------------------------------------------------------------------------------


async def test_tls_listener_serves_https_and_wss_to_verifying_clients(
    serving: Serving, certificate: Certificate, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="callbridge.server")
    trusting = certificate.client_context()
    async with (
        serving(tls_cert_file=certificate.cert_file, tls_key_file=certificate.key_file) as (
            host,
            port,
        ),
        aiohttp.ClientSession() as http,
    ):
        async with http.get(f"https://{host}:{port}/health", ssl=trusting) as response:
            assert (response.status, await response.json()) == (200, {"status": "ok"})
        async with http.ws_connect(f"wss://localhost:{port}/", ssl=trusting) as websocket:
            await websocket.send_json({"id": "1", "method": "session.list"})
            assert (await websocket.receive_json(timeout=10))["result"] == {"sessions": []}
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await http.get(f"https://{host}:{port}/health", ssl=ssl.create_default_context())
        with pytest.raises(aiohttp.ClientError):
            await http.get(f"http://{host}:{port}/health")
    assert f"listening on https://{host}:{port}" in caplog.text
    assert "WITHOUT TLS" not in caplog.text


def test_tls_settings_go_together(certificate: Certificate) -> None:
    with pytest.raises(ConfigError, match="go together"):
        load_settings(tls_cert_file=certificate.cert_file)
    with pytest.raises(ConfigError, match="is not a file"):
        load_settings(tls_cert_file="/no/cert.pem", tls_key_file=certificate.key_file)


# --- exposure warnings ----------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1"])
def test_loopback_needs_neither_authentication_nor_tls(host: str) -> None:
    assert exposure_warnings(Settings(), host, tls=False) == []


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "my-host.example"])
def test_beyond_loopback_the_missing_protections_are_named(host: str) -> None:
    (no_control_auth, no_rtvbp_auth, no_tls) = exposure_warnings(Settings(), host, tls=False)
    assert "control plane" in no_control_auth and "control.tokens" in no_control_auth
    assert "RTVBP ingress" in no_rtvbp_auth and "rtvbp.auth" in no_rtvbp_auth
    assert "WITHOUT TLS" in no_tls and "tls_cert_file" in no_tls
    assert exposure_warnings(PROTECTED, host, tls=True) == []


async def test_startup_warns_on_a_wildcard_address_without_tls(
    serving: Serving, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="callbridge.server")
    async with serving(listen=["0.0.0.0:0"], **PROTECTED.model_dump(include={"control", "rtvbp"})):
        pass
    warnings = [
        record.getMessage() for record in caplog.records if record.levelno == logging.WARNING
    ]
    assert len(warnings) == 1 and "WITHOUT TLS" in warnings[0]
    assert CONTROL_TOKEN not in caplog.text


# --- malformed HTTP requests ----------------------------------------------------------------

MALFORMED_REQUESTS = {
    "no Host": b"GET /health HTTP/1.1\r\n\r\n",
    "Content-Length with Transfer-Encoding": (
        b"POST /sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "8 KiB header": b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8192 + b"\r\n\r\n",
    "GET *": b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
    "not HTTP": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
}


async def exchange(host: str, port: int, raw_request: bytes) -> int:
    """Send `raw_request` on a fresh connection; the answer's status code."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(raw_request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    return int(answer.split(b" ", 2)[1])


async def test_malformed_requests_get_400_and_one_quiet_line_each(
    serving: Serving, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serving() as (host, port):
        for raw_request in MALFORMED_REQUESTS.values():
            assert await exchange(host, port, raw_request) == 400, raw_request[:40]
        valid = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        assert await exchange(host, port, valid) == 200
    assert not [record for record in caplog.records if record.levelno > logging.INFO]
    assert not [record for record in caplog.records if record.exc_info]
    refused = [record for record in caplog.records if "malformed HTTP request" in record.message]
    assert len(refused) == len(MALFORMED_REQUESTS)
    assert all("\n" not in record.getMessage() for record in refused)


async def test_errors_of_handlers_are_still_logged_with_their_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("handler bug")

    app = web.Application()
    app.router.add_get("/broken", broken)
    runner = app_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        status = await exchange(host, port, b"GET /broken HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        await runner.cleanup()
    assert status == 500
    (record,) = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)


def test_the_served_application_answers_webrtc_on_the_media_ip() -> None:
    """rtvbp.webrtc.v1 calls to the SDK application get their media where RTP binds."""
    application = Application(no_call)
    settings = Settings(
        media_ip="127.0.0.2", webrtc_consent_timeout_secs=12, rtp_port_range=(40000, 40099)
    )
    build_app(settings, application)
    assert application.webrtc.media_address == "127.0.0.2"
    assert application.webrtc.port_range == (40000, 40099)
    assert application.webrtc.consent_timeout_s == 12
