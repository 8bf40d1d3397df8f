"""The `callbridge` command line: serve applications, place test calls, make test keys."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from callbridge.apps.simulator import CallOptions, CallTransport, check_options, run_call
from callbridge.rtvbp.application import Application
from callbridge.rtvbp.auth import generate_test_keypair, sign_test_token
from callbridge.server.app import serve
from callbridge.server.config import ConfigError, load_settings
from callbridge.server.log_filter import parse_log_filter

cli = typer.Typer(
    help="callbridge: a real-time voice bridge speaking RTVBP (babelforce) in both roles.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DEFAULT_APPLICATION = "callbridge.apps.demo:app"


class AppLoadError(Exception):
    """The application import string does not name a usable application."""


def load_application(target: str) -> Application:
    """Import ``module:attribute``: an Application, or a handler ``async def f(call)``."""
    module_name, separator, attribute = target.partition(":")
    if not separator or not module_name or not attribute:
        raise AppLoadError(f"{target!r} is not an import string of the form 'module:attribute'")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise AppLoadError(f"cannot import module {module_name!r}: {error}") from error
    try:
        value: Any = module
        for part in attribute.split("."):
            value = getattr(value, part)
    except AttributeError:
        raise AppLoadError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if isinstance(value, Application):
        return value
    if inspect.iscoroutinefunction(value):
        return Application(value)
    raise AppLoadError(
        f"{target!r} is a {type(value).__name__}; expected a callbridge Application"
        " or an 'async def handler(call)' function"
    )


def _configure_logging(level: str) -> None:
    """`level` is a level name or a filter string (validated with the settings)."""
    parse_log_filter(level).apply("%(asctime)s %(levelname)-7s %(name)s: %(message)s")


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@cli.command("serve")
def serve_command(
    application: Annotated[
        str,
        typer.Argument(
            help="Your RTVBP application as 'module:attribute' (an Application, or an"
            " 'async def handler(call)'). Without it, a demo that greets, echoes and answers"
            " DTMF keys (# hangs up).",
        ),
    ] = DEFAULT_APPLICATION,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML configuration file.")
    ] = None,
    listen: Annotated[
        str | None,
        typer.Option("--listen", "-l", help="host:port to listen on; a comma list for several."),
    ] = None,
    media_ip: Annotated[
        str | None, typer.Option("--media-ip", "-m", help="Address for RTP sockets and SDP.")
    ] = None,
    rtvbp_path: Annotated[
        str | None, typer.Option("--rtvbp-path", help="HTTP path of the RTVBP ingress (/rtvbp).")
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level",
            help="debug, info, warning or error, or a filter: 'info,callbridge.engine=debug'.",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option("--tls-cert", help="PEM certificate chain: serve HTTPS and WSS only."),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="PEM private key of --tls-cert.")
    ] = None,
    control_token: Annotated[
        list[str] | None,
        typer.Option(
            "--control-token",
            help="Bearer token with full control of the media sessions (repeatable). A command"
            " line is visible to local users: prefer CALLBRIDGE_CONTROL__TOKENS or the TOML file.",
        ),
    ] = None,
    control_read_token: Annotated[
        list[str] | None,
        typer.Option(
            "--control-read-token",
            help="Bearer token that may only read the HTTP API (repeatable).",
        ),
    ] = None,
    control_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--control-origin",
            help="Browser Origin allowed on the control plane, e.g. https://ops.example.com"
            " (repeatable; '*' for any). Browsers are refused by default.",
        ),
    ] = None,
    public_metrics: Annotated[
        bool | None,
        typer.Option(
            "--public-metrics/--private-metrics",
            help="Serve /metrics without a token when control authentication is on.",
        ),
    ] = None,
    browser_page: Annotated[
        bool | None,
        typer.Option(
            "--browser-page/--no-browser-page",
            help="Serve the example page on /browser: call an RTVBP application from a browser.",
        ),
    ] = None,
) -> None:
    """Serve an RTVBP application (and the control API) on one port, default 127.0.0.1:9100.

    Voice peers (babelforce Cloud, `callbridge call`) connect to ws://HOST:PORT/rtvbp.
    Settings come from --config, then CALLBRIDGE_* environment variables, then these flags.

    The control plane (control WebSocket, /sessions, /metrics) is open to anyone who reaches the
    port until a token is set: with --control-token (or control.jwt_public_keys in the TOML
    file) every request needs `Authorization: Bearer <token>`; /health stays open. Beyond
    loopback, set a token and --tls-cert/--tls-key; the server warns at start when you do not.
    """
    overrides: dict[str, Any] = {
        "listen": listen,
        "media_ip": media_ip,
        "log_level": log_level,
        "tls_cert_file": tls_cert,
        "tls_key_file": tls_key,
        "browser_page": browser_page,
    }
    if rtvbp_path is not None:
        overrides["rtvbp"] = {"path": rtvbp_path}
    control = {
        "tokens": control_token,
        "read_tokens": control_read_token,
        "allowed_origins": control_origin,
        "public_metrics": public_metrics,
    }
    if any(value is not None for value in control.values()):
        overrides["control"] = {key: value for key, value in control.items() if value is not None}
    try:
        settings = load_settings(config, **overrides)
    except ConfigError as error:
        typer.echo(f"callbridge: {error}", err=True)
        raise typer.Exit(2) from None
    _configure_logging(settings.log_level)
    for warning in settings.capacity_warnings():
        logging.getLogger("callbridge.server").warning("%s", warning)
    try:
        app = load_application(application)
    except AppLoadError as error:
        typer.echo(f"callbridge: {error}", err=True)
        raise typer.Exit(2) from None
    logging.getLogger("callbridge.server").info("serving application %s", application)
    _install_uvloop()
    try:
        asyncio.run(serve(settings, app))
    except OSError as error:
        typer.echo(f"callbridge: cannot listen: {error}", err=True)
        raise typer.Exit(1) from None


@cli.command("call")
def call_command(
    url: Annotated[
        str, typer.Argument(help="RTVBP application URL, e.g. ws://127.0.0.1:9100/rtvbp")
    ],
    rate: Annotated[
        int,
        typer.Option(
            help="L16 sample rate to offer (8000, 16000, 24000, 48000; webrtc: 8000 only)."
        ),
    ] = 8000,
    tone: Annotated[
        float, typer.Option(help="Caller audio: a sine at this frequency (Hz); 0 for silence.")
    ] = 440.0,
    wav: Annotated[
        Path | None,
        typer.Option(
            help="Caller audio from this audio file (WAV, MP3, OGG, FLAC) instead of a tone."
        ),
    ] = None,
    save: Annotated[
        Path | None,
        typer.Option(
            help="Write what the application said, as played in real time, to this WAV file."
        ),
    ] = None,
    dtmf: Annotated[str, typer.Option(help="DTMF keys to press, e.g. '12#'.")] = "",
    dtmf_delay: Annotated[float, typer.Option(help="Seconds before the first key.")] = 1.0,
    dtmf_gap: Annotated[int, typer.Option(help="Milliseconds between keys.")] = 300,
    hangup_after: Annotated[
        float | None,
        typer.Option(
            "--hangup-after",
            help="Hang up after this many seconds (default: when the application ends the call,"
            " or on Ctrl-C).",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(envvar="CALLBRIDGE_TOKEN", help="Bearer token for the Authorization header."),
    ] = None,
    jwt_key: Annotated[
        Path | None,
        typer.Option(
            help="Sign a babelforce-style test JWT with this RSA private key"
            " (see `callbridge keygen`)."
        ),
    ] = None,
    account: Annotated[
        str, typer.Option(help="Account id (aud) of the self-signed test JWT.")
    ] = "test-account",
    header: Annotated[
        list[str] | None, typer.Option(help="Extra HTTP header 'Name: value' (repeatable).")
    ] = None,
    headerless: Annotated[
        bool,
        typer.Option(
            help="Legacy handshake without Sec-WebSocket-Protocol (rtvbp-go <= v0.40);"
            " websocket transport only."
        ),
    ] = False,
    transport: Annotated[
        CallTransport,
        typer.Option(
            help="websocket: L16 audio in binary WebSocket frames (profile rtvbp.v1)."
            " webrtc: control stays on the WebSocket, audio goes over WebRTC (DTLS-SRTP,"
            " PCMU 8 kHz); offers only the rtvbp.webrtc.v1 profile, so an application that"
            " does not serve it refuses the upgrade (HTTP 400).",
        ),
    ] = CallTransport.WEBSOCKET,
    media_address: Annotated[
        str | None,
        typer.Option(
            help="Our WebRTC host candidate (default 127.0.0.1); only with --transport webrtc."
        ),
    ] = None,
    from_number: Annotated[str, typer.Option("--from", help="Caller number.")] = "+4910002000",
    to_number: Annotated[str, typer.Option("--to", help="Called number.")] = "+4910003000",
    app_id: Annotated[
        str, typer.Option(help="application.id sent in session.initialize.")
    ] = "callbridge-simulator",
    metadata: Annotated[str | None, typer.Option(help="Call metadata as a JSON object.")] = None,
    quiet: Annotated[bool, typer.Option(help="No live progress line.")] = False,
) -> None:
    """Call an RTVBP application as a voice peer would: test your agent without a phone.

    Exits 0 when the call ended in an orderly way, 1 on any failure (unreachable, 401,
    refused initialize, codec not offered, abnormal close; a 400 to --transport webrtc), 2 for
    options that do not go together (--transport webrtc takes only --rate 8000, no --headerless).
    """
    if token and jwt_key:
        typer.echo("callbridge: use either --token or --jwt-key, not both", err=True)
        raise typer.Exit(2)
    try:
        headers = dict(_split_header(item) for item in header or [])
        call_metadata = json.loads(metadata) if metadata else None
        if call_metadata is not None and not isinstance(call_metadata, dict):
            raise ValueError("--metadata must be a JSON object")
        if jwt_key is not None:
            token = sign_test_token(jwt_key.read_bytes(), account=account)
        options = CallOptions(
            url=url,
            sample_rate=rate,
            tone_hz=tone or None,
            wav=wav,
            save=save,
            dtmf=dtmf,
            dtmf_delay_s=dtmf_delay,
            dtmf_gap_ms=dtmf_gap,
            hangup_after_s=hangup_after,
            bearer_token=token,
            headers=headers,
            headerless=headerless,
            transport=transport,
            media_address=media_address,
            from_number=from_number,
            to_number=to_number,
            application_id=app_id,
            metadata=call_metadata,
            progress=not quiet and sys.stderr.isatty(),
        )
        check_options(options)
    except (ValueError, OSError) as error:
        typer.echo(f"callbridge: {error}", err=True)
        raise typer.Exit(2) from None
    _configure_logging("warning")
    _install_uvloop()
    report = asyncio.run(_run_until_interrupted(options))
    typer.echo(report.summary())
    raise typer.Exit(0 if report.ok else 1)


async def _run_until_interrupted(options: CallOptions) -> Any:
    """Ctrl-C hangs up cleanly instead of dropping the socket."""
    task = asyncio.create_task(run_call(options))
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, lambda: setattr(options, "hangup_after_s", 0.0))
    except (NotImplementedError, RuntimeError):
        pass
    return await task


def _split_header(item: str) -> tuple[str, str]:
    name, separator, value = item.partition(":")
    if not separator or not name.strip():
        raise ValueError(f"--header {item!r} is not 'Name: value'")
    return name.strip(), value.strip()


@cli.command("keygen")
def keygen_command(
    directory: Annotated[
        Path, typer.Argument(help="Where to write test-private.pem and test-public.pem.")
    ],
) -> None:
    """Make an RSA key pair for test JWTs: the server trusts the public key
    (rtvbp.jwt_public_keys), `callbridge call --jwt-key` signs with the private one."""
    directory.mkdir(parents=True, exist_ok=True)
    private_pem, public_pem = generate_test_keypair()
    private_path = directory / "test-private.pem"
    private_path.write_bytes(private_pem)
    private_path.chmod(0o600)
    (directory / "test-public.pem").write_bytes(public_pem)
    typer.echo(f"wrote {private_path} and {directory / 'test-public.pem'} (for testing only)")


def main() -> None:
    cli()
