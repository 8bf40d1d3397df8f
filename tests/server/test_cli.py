"""The `callbridge` command as users run it: real processes, real sockets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
CALLBRIDGE = [sys.executable, "-m", "callbridge"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_server(*arguments: str, env: dict[str, str] | None = None) -> Iterator[int]:
    port = free_port()
    server = subprocess.Popen(
        [*CALLBRIDGE, "serve", *arguments, "--listen", f"127.0.0.1:{port}"],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        if server.poll() is not None:
            pytest.fail(f"server exited early: {server.stdout.read() if server.stdout else ''}")
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=20)
        assert server.returncode == 0, output
        assert "stopped" in output


def call_command(port: int, *arguments: str) -> list[str]:
    return [*CALLBRIDGE, "call", f"ws://127.0.0.1:{port}/rtvbp", "--quiet", *arguments]


def call(port: int, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        call_command(port, *arguments),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_demo_server_and_simulator_end_to_end(tmp_path: Path) -> None:
    saved = tmp_path / "heard.wav"
    with running_server() as port:
        result = call(port, "--dtmf", "3#", "--dtmf-delay", "0.3", "--save", str(saved))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "codec        L16/8000/1" in result.stdout
    assert "dtmf sent    3#" in result.stdout
    assert "application-hangup (caller pressed #)" in result.stdout
    assert saved.stat().st_size > 44


def test_demo_over_webrtc_end_to_end(tmp_path: Path) -> None:
    """Control on the WebSocket, audio over WebRTC (PCMU/8000 over DTLS-SRTP) on loopback; the
    server's media address is its --media-ip, the caller's its --media-address."""
    saved = tmp_path / "heard.wav"
    with running_server("--media-ip", "127.0.0.2") as port:  # the application's media there
        result = call(
            port,
            "--transport",
            "webrtc",
            "--media-address",
            "127.0.0.1",
            "--dtmf",
            "3#",
            "--dtmf-delay",
            "0.5",
            "--save",
            str(saved),
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "codec        L16/8000/1" in result.stdout
    assert "transport    webrtc (PCMU/8000 over DTLS-SRTP)" in result.stdout
    assert "dtmf sent    3#" in result.stdout
    assert "application-hangup (caller pressed #)" in result.stdout
    with wave.open(str(saved), "rb") as heard:
        samples = np.frombuffer(heard.readframes(heard.getnframes()), "<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(samples))
    frequency = np.argmax(spectrum) * 8000 / len(samples)
    assert abs(frequency - 440) < 15  # the greeting's first beep and the echoed 440 Hz tone


def test_ctrl_c_hangs_up_a_webrtc_call(tmp_path: Path) -> None:
    saved = tmp_path / "heard.wav"
    with running_server() as port:
        caller = subprocess.Popen(
            call_command(port, "--transport", "webrtc", "--save", str(saved)),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while not (saved.exists() and saved.stat().st_size > 16000):  # about 1 s heard
                assert caller.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            caller.send_signal(signal.SIGINT)
            output, errors = caller.communicate(timeout=20)
        finally:
            caller.kill()
    assert caller.returncode == 0, output + errors
    assert "transport    webrtc" in output
    assert "ended        hangup (hangup)" in output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--transport", "webrtc", "--rate", "16000"], "WebRTC audio is 8 kHz"),
        (["--transport", "webrtc", "--headerless"], "chosen by Sec-WebSocket-Protocol"),
        (["--transport", "bogus"], "'--transport'"),
        (["--media-address", "127.0.0.1"], "only applies to --transport webrtc"),
        (["--transport", "webrtc", "--media-address", "nowhere"], "not an IP address"),
    ],
)
def test_call_refuses_what_webrtc_cannot_carry(arguments: list[str], message: str) -> None:
    result = call(free_port(), *arguments)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr


def test_example_agent_runs(tmp_path: Path) -> None:
    with running_server("examples.agent:app") as port:
        result = call(port, "--rate", "16000", "--dtmf", "#", "--dtmf-delay", "0.3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "codec        L16/16000/1" in result.stdout
    assert "OutputTranscriptDone x1" in result.stdout


def test_hangup_after_and_headerless() -> None:
    with running_server() as port:
        result = call(port, "--hangup-after", "0.5", "--headerless", "--rate", "24000")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ended        hangup (hangup)" in result.stdout


def test_unreachable_application_exits_1() -> None:
    result = call(free_port(), "--hangup-after", "1")
    assert result.returncode == 1
    assert "ConnectError" in result.stdout


def test_jwt_auth_with_a_self_signed_test_key(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    generated = subprocess.run(
        [*CALLBRIDGE, "keygen", str(keys)], capture_output=True, text=True, timeout=60
    )
    assert generated.returncode == 0, generated.stderr
    config = tmp_path / "callbridge.toml"
    config.write_text(
        "[rtvbp]\n"
        'auth = "jwt"\n'
        f'jwt_public_keys = ["{keys / "test-public.pem"}"]\n'
        'allowed_accounts = ["acct-1"]\n'
    )
    with running_server("--config", str(config)) as port:
        refused = call(port, "--hangup-after", "0.3")
        wrong_account = call(
            port, "--hangup-after", "0.3", "--jwt-key", str(keys / "test-private.pem")
        )
        accepted = call(
            port,
            "--hangup-after",
            "0.3",
            "--jwt-key",
            str(keys / "test-private.pem"),
            "--account",
            "acct-1",
        )
    assert refused.returncode == 1 and "401" in refused.stdout
    assert wrong_account.returncode == 1 and "401" in wrong_account.stdout
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["no_such_module:app"], "cannot import module 'no_such_module'"),
        (["callbridge.apps.demo:missing"], "has no attribute 'missing'"),
        (["callbridge.apps.demo"], "not an import string"),
        (["callbridge.apps.demo:tone"], "expected a callbridge Application"),
        (["--listen", "nowhere"], "is not host:port"),
        (["--control-token", "short"], "at least 16 characters"),
        (["--tls-cert", "/no/cert.pem", "--tls-key", "/no/key.pem"], "is not a file"),
        (["--tls-cert", "/etc/hostname"], "go together"),
    ],
)
def test_serve_refuses_bad_arguments_clearly(arguments: list[str], message: str) -> None:
    result = subprocess.run(
        [*CALLBRIDGE, "serve", *arguments], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert result.returncode == 2
    assert message in result.stderr


def test_serve_refuses_an_incomplete_auth_config(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[rtvbp]\nauth = "jwt"\n')
    result = subprocess.run(
        [*CALLBRIDGE, "serve", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "jwt_public_keys" in result.stderr


def test_serve_help_explains_the_control_plane_settings() -> None:
    result = subprocess.run(
        [*CALLBRIDGE, "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0
    for flag in ("--control-token", "--control-read-token", "--control-origin", "--tls-cert"):
        assert flag in result.stdout
    assert "CALLBRIDGE_CONTROL__TOKENS" in result.stdout


def test_control_token_from_the_environment_guards_the_http_api() -> None:
    token = "env-control-token-0123456789"
    with running_server(env={"CALLBRIDGE_CONTROL__TOKENS": f'["{token}"]'}) as port:
        url = f"http://127.0.0.1:{port}/sessions"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10)
        assert refused.value.code == 401
        authorized = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(authorized, timeout=10) as response:
            assert response.status == 200


def test_port_in_use_is_reported() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*CALLBRIDGE, "serve", "--listen", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert "cannot listen" in result.stderr


def test_one_port_serves_rtvbp_control_and_http() -> None:
    """`callbridge serve`: the RTVBP ingress, the control WebSocket and the HTTP API together."""
    import asyncio

    import aiohttp

    async def probe(port: int) -> tuple[int, dict[str, object], list[object]]:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/health") as health:
                health_status = health.status
            async with http.ws_connect(f"ws://127.0.0.1:{port}/") as control:
                await control.send_str('{"id":"1","method":"session.create","params":{}}')
                created = await control.receive_json(timeout=10)
                async with http.get(f"http://127.0.0.1:{port}/sessions") as listing:
                    sessions = await listing.json()
        return health_status, created, sessions

    with running_server() as port:
        health_status, created, sessions = asyncio.run(probe(port))
        rtvbp_call = call(port, "--hangup-after", "0.3")
    assert health_status == 200
    assert created["id"] == "1" and "session_id" in created["result"]  # type: ignore[operator]
    assert len(sessions) == 1
    assert rtvbp_call.returncode == 0, rtvbp_call.stdout


def test_two_phones_example_runs() -> None:
    """docs/control-protocol.md's worked example, against a real `callbridge serve`."""
    with running_server() as port:
        result = subprocess.run(
            [sys.executable, "examples/two_phones.py", f"ws://127.0.0.1:{port}/"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "alice hears [880] Hz, bob hears [440] Hz" in result.stdout
    assert "alice hears [880, 1000] Hz, bob hears [440, 1000] Hz" in result.stdout
    assert "alice hears [660, 880, 1000] Hz, carol hears [440, 880, 1000] Hz" in result.stdout
    assert "endpoints: ['bridge', 'rtp', 'rtp', 'tone']" in result.stdout


def test_settings_reach_the_engine() -> None:
    from callbridge.server.config import ConfigError, load_settings

    engine = load_settings(opus_complexity=0, media_timeout_secs=7).engine_config()
    assert (engine.opus_complexity, engine.media_timeout_s) == (0, 7)
    with pytest.raises(ConfigError, match="opus_complexity"):
        load_settings(opus_complexity=11)
