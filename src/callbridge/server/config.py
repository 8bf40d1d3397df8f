"""Configuration: safe single-machine defaults, overridable by TOML file, environment, CLI flags.

Precedence, highest first: CLI flags, environment (``CALLBRIDGE_<KEY>``, nested with ``__``, e.g.
``CALLBRIDGE_RTVBP__PATH``), the TOML file given with ``--config``, the defaults below. Key names
follow rtpbridge's where a key exists there, so an rtpbridge TOML file mostly works as is.
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from callbridge.engine.config import EngineConfig
from callbridge.rtvbp.auth import BABELFORCE_ISSUER, BABELFORCE_SUBJECT
from callbridge.server.log_filter import parse_log_filter

DEFAULT_RECORDING_DIR = EngineConfig.recording_dir


class ConfigError(Exception):
    """The configuration is invalid; the server refuses to start and says why."""


class RtvbpSettings(BaseModel):
    """RTVBP ingress: where voice peers (babelforce Cloud, `callbridge call`) connect."""

    path: str = "/rtvbp"
    """HTTP path of the RTVBP WebSocket endpoint on the shared listener (the SDK application)."""
    media_path: str = "/rtvbp/media"
    """HTTP path where voice peers join media sessions: ``{media_path}`` parks the call in a new
    session for a controller to claim, ``{media_path}/{session_id}`` joins that session."""
    park_timeout_secs: float = Field(30.0, gt=0)
    """How long a parked call waits for a controller's `session.attach` before it is hung up."""
    connect_timeout_secs: float = Field(10.0, gt=0)
    """Dialling an RTVBP application from a media session (`endpoint.create_rtvbp`)."""
    initialize_timeout_secs: float = Field(10.0, gt=0)
    """How long a voice peer on the media path may take to send `session.initialize`."""
    close_timeout_secs: float = Field(2.0, gt=0)
    """How long hanging up a removed RTVBP leg may take before the socket is just closed."""
    auth: Literal["none", "jwt", "static"] = "none"
    """How voice peers authenticate: none (loopback default), babelforce JWT, or static tokens."""
    jwt_public_keys: list[Path] = Field(default_factory=list)
    """PEM public keys that verify babelforce Cloud JWTs (several for key rotation)."""
    allowed_accounts: list[str] = Field(default_factory=list)
    """babelforce account ids (JWT ``aud``) this server serves; ``["*"]`` allows any account."""
    static_tokens: list[SecretStr] = Field(default_factory=list)
    """Shared-secret bearer tokens (with ``auth = "static"``); prefer the environment for these."""
    allowed_origins: list[str] = Field(default_factory=list)
    """Browser Origins allowed to connect; requests without an Origin header are not browsers."""
    heartbeat_secs: float = 20.0
    """WebSocket ping interval; a peer that misses its pong is disconnected. 0 disables."""
    request_timeout_secs: float = 5.0
    """How long an RTVBP request waits for its response."""
    max_message_kb: int = 1024
    """Largest WebSocket message accepted from a voice peer."""
    fast_listen: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """host:port addresses of the fast RTVBP listener (picows): the same RTVBP paths, policy and
    TLS as the shared listener at less CPU per audio frame; HTTP and the control
    WebSocket stay on the shared listener only. Empty (the default): no fast listener."""

    @field_validator("fast_listen", mode="before")
    @classmethod
    def _split_fast_listen(cls, value: Any) -> Any:
        return split_address_list(value)

    @field_validator("fast_listen")
    @classmethod
    def _valid_fast_addresses(cls, value: list[str]) -> list[str]:
        return check_addresses(value)

    @field_validator("path", "media_path")
    @classmethod
    def _path_is_absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value

    @model_validator(mode="after")
    def _auth_is_complete(self) -> RtvbpSettings:
        if self.media_path.rstrip("/") == self.path.rstrip("/"):
            raise ValueError("media_path must differ from path")
        if self.auth == "jwt" and not self.jwt_public_keys:
            raise ValueError("auth = 'jwt' needs at least one entry in jwt_public_keys")
        if self.auth == "jwt" and not self.allowed_accounts:
            raise ValueError("auth = 'jwt' needs allowed_accounts (account ids, or ['*'] for any)")
        if self.auth == "static" and not self.static_tokens:
            raise ValueError("auth = 'static' needs at least one entry in static_tokens")
        return self


MIN_TOKEN_CHARS = 16
"""Shorter static control tokens are refused at start: they could be guessed."""


class ControlSettings(BaseModel):
    """Who may use the control plane: the control WebSocket and the HTTP API.

    With no token and no JWT key, authentication is off (the loopback default). `/health` is
    always open; `/metrics` needs a token unless `public_metrics` is set. Browsers (requests with
    an Origin header) are refused unless their Origin is listed, authentication or not.
    """

    tokens: list[SecretStr] = Field(default_factory=list)
    """Bearer tokens with full control (control WebSocket, every HTTP method); prefer the env."""
    read_tokens: list[SecretStr] = Field(default_factory=list)
    """Bearer tokens that may only read the HTTP API (GET, HEAD): dashboards, monitoring."""
    jwt_public_keys: list[Path] = Field(default_factory=list)
    """PEM public keys that verify RS256 control-plane JWTs (several for key rotation)."""
    jwt_audiences: list[str] = Field(default_factory=list)
    """JWT ``aud`` values accepted (this server's names); ``["*"]`` accepts any."""
    jwt_issuer: str = BABELFORCE_ISSUER
    """The JWT ``iss`` required."""
    jwt_subject: str = BABELFORCE_SUBJECT
    """The JWT ``sub`` required."""
    jwt_control_scope: str = Field("callbridge.control", min_length=1)
    """The entry of the JWT ``scope`` claim that grants full control."""
    jwt_read_scope: str = Field("callbridge.read", min_length=1)
    """The entry of the JWT ``scope`` claim that grants read-only access."""
    allowed_origins: list[str] = Field(default_factory=list)
    """Browser Origins allowed to use the control plane (``"*"`` for any)."""
    public_metrics: bool = False
    """Serve `/metrics` without a token even when authentication is on."""

    @property
    def authentication(self) -> bool:
        """True when control-plane requests need a bearer token."""
        return bool(self.tokens or self.read_tokens or self.jwt_public_keys)

    @model_validator(mode="after")
    def _tokens_are_sound(self) -> ControlSettings:
        control = {token.get_secret_value() for token in self.tokens}
        read = {token.get_secret_value() for token in self.read_tokens}
        if any(len(token) < MIN_TOKEN_CHARS for token in control | read):
            raise ValueError(f"control tokens need at least {MIN_TOKEN_CHARS} characters")
        if control & read:
            raise ValueError("a token cannot be both in tokens and in read_tokens")
        if self.jwt_public_keys and not self.jwt_audiences:
            raise ValueError("jwt_public_keys needs jwt_audiences (accepted aud, or ['*'])")
        for key in self.jwt_public_keys:
            if not key.is_file():
                raise ValueError(f"jwt_public_keys: {key} is not a file")
        if self.jwt_control_scope == self.jwt_read_scope:
            raise ValueError("jwt_control_scope and jwt_read_scope must differ")
        return self


DEFAULT_CACHE_DIR = Path("/tmp/callbridge-cache")


def check_work_directory(value: Path, default: Path) -> Path:
    """rtpbridge's rule for directories the server writes: writable if it exists, else its
    parent must exist (unless it is the default, which is created when needed)."""
    if value.exists():
        if not value.is_dir() or not os.access(value, os.W_OK | os.X_OK):
            raise ValueError(f"{value} is not a writable directory")
    elif value != default and not value.parent.is_dir():
        raise ValueError(f"the parent of {value} does not exist")
    return value


class RtpbridgeKeys(BaseModel):
    """rtpbridge configuration keys that callbridge accepts, validates as rtpbridge does, and
    does not use (yet), so an rtpbridge TOML file loads unchanged. A key callbridge comes to
    use is defined again in `Settings`, which then takes precedence."""

    transcode_cache_size: int = Field(64, gt=0)
    """rtpbridge's cache of transcoding pipelines; callbridge shares encoders instead."""


class Settings(BaseSettings, RtpbridgeKeys):
    """Every limit and timeout of the server, with safe defaults for one machine."""

    model_config = SettingsConfigDict(
        env_prefix="CALLBRIDGE_", env_nested_delimiter="__", extra="forbid"
    )

    listen: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["127.0.0.1:9100"])
    """host:port addresses of the one HTTP + WebSocket listener (a comma list is accepted)."""
    log_level: str = "info"
    """A level (debug, info, warning, error) or a filter: ``info,callbridge.engine=debug``."""
    rtvbp: RtvbpSettings = Field(default_factory=RtvbpSettings)
    control: ControlSettings = Field(default_factory=ControlSettings)
    tls_cert_file: Path | None = None
    """PEM certificate chain: with `tls_key_file`, the listener speaks only HTTPS and WSS."""
    tls_key_file: Path | None = None
    """PEM private key of `tls_cert_file`."""

    # Media session server (rtpbridge key names).
    media_ip: str = "127.0.0.1"
    """Address written into SDP and to which every RTP socket is bound."""
    rtp_port_range: tuple[int, int] = (30000, 39999)
    disconnect_timeout_secs: float = Field(30, gt=0)
    shutdown_max_wait_secs: float = Field(300, gt=0)
    media_dir: Path | None = None
    """Directory that local file playback is confined to; unset disables local files."""
    cache_dir: Path = DEFAULT_CACHE_DIR
    cache_cleanup_interval_secs: float = Field(300, gt=0)
    max_concurrent_downloads: int = Field(16, gt=0)
    max_file_download_bytes: int = Field(100 * 1024 * 1024, gt=0)
    max_sessions: int = Field(10000, ge=0)
    max_endpoints_per_session: int = Field(20, ge=0)
    ws_max_message_size_kb: int = Field(256, ge=1, le=512000)
    max_sdp_size_kb: int = Field(64, ge=1, le=10000)
    session_idle_timeout_secs: float = Field(0, ge=0)
    empty_session_timeout_secs: float = Field(0, ge=0)
    media_timeout_secs: float = Field(5, ge=1, le=300)
    max_connections: int = Field(1000, ge=0)
    ws_ping_interval_secs: float = Field(30, gt=0)
    event_channel_size: int = Field(256, gt=0)
    critical_event_channel_size: int = Field(64, gt=0)
    native_forwarding: bool = True
    """Forward passthrough RTP (no transcoding, recording or SRTP on the route) in the native
    plane when it is built; false keeps every packet in Python. ``CALLBRIDGE_NATIVE=0`` turns
    every native part off."""
    opus_complexity: int = Field(5, ge=0, le=10)
    """Opus encoder complexity: 0 costs about half the CPU of 5, at some quality."""
    opus_bitrate: int = Field(24000, ge=6000, le=510000)
    """Opus encoder target bitrate in bit/s (variable around it)."""
    # Voice activity detection (vad.start).
    vad_detector: Literal["webrtc", "silero"] = "webrtc"
    """Detector used when vad.start names none."""
    vad_silero_model: Path | None = None
    """The Silero ONNX model file; unset finds the one an installed package ships."""

    # Metrics under rtpbridge's names.
    metrics_compat: bool = False
    """Also export every metric rtpbridge has under its ``rtpbridge_`` name (dashboards)."""

    @field_validator("log_level")
    @classmethod
    def _valid_log_filter(cls, value: str) -> str:
        parse_log_filter(value)
        return value

    @field_validator("cache_dir")
    @classmethod
    def _cache_dir_usable(cls, value: Path) -> Path:
        return check_work_directory(value, DEFAULT_CACHE_DIR)

    # Recording (rtpbridge key names).
    recording_dir: Path = DEFAULT_RECORDING_DIR
    """Every recording lies inside it; created at the first recording if missing."""
    max_recordings_per_session: int = Field(100, gt=0)
    recording_flush_timeout_secs: float = Field(10, gt=0)
    recording_channel_size: int = Field(1000, gt=0)
    """Packets (pcap) or 20 ms frames (audio) a recording may have waiting for the disk."""
    max_recording_download_bytes: int = Field(512 * 1024 * 1024, gt=0)
    """Largest file `GET /recordings/{path}` serves (413 above)."""

    @field_validator("recording_dir")
    @classmethod
    def _recording_dir_usable(cls, value: Path) -> Path:
        return check_work_directory(value, DEFAULT_RECORDING_DIR)

    # WebRTC endpoints.
    webrtc_consent_timeout_secs: float = Field(30, ge=5, le=300)
    """A WebRTC endpoint is `disconnected` after this long without an ICE check from its peer."""
    browser_page: bool = False
    """Serve the example browser page on ``/browser``: it calls an RTVBP application from the
    browser's microphone (see examples/browser/README.md). Off by default."""

    @field_validator("listen", mode="before")
    @classmethod
    def _split_listen(cls, value: Any) -> Any:
        return split_address_list(value)

    @field_validator("listen")
    @classmethod
    def _valid_addresses(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one address is needed")
        return check_addresses(value)

    @field_validator("media_ip")
    @classmethod
    def _valid_ip(cls, value: str) -> str:
        ipaddress.ip_address(value)
        return value

    @field_validator("rtp_port_range")
    @classmethod
    def _valid_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        start, end = value
        if not (1024 <= start <= end <= 65534):
            raise ValueError("needs 1024 <= start <= end <= 65534")
        if start % 2:
            raise ValueError("start must be even (RTP takes the even port of each pair)")
        if end - start < 1:
            raise ValueError("the range must span at least one even/odd pair")
        return value

    @model_validator(mode="after")
    def _tls_is_complete(self) -> Settings:
        files = (self.tls_cert_file, self.tls_key_file)
        if (files[0] is None) != (files[1] is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        for path in files:
            if path is not None and not path.is_file():
                raise ValueError(f"{path} is not a file")
        return self

    @field_validator("media_dir")
    @classmethod
    def _media_dir_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"{value} is not an existing directory")
        return value

    def capacity_warnings(self) -> list[str]:
        """What rtpbridge warns about at start: no session limit, or fewer RTP port pairs than
        sessions allowed (when either was configured: the defaults say nothing)."""
        warnings = []
        if self.max_sessions == 0:
            warnings.append("max_sessions = 0: the number of media sessions is unlimited")
        start, end = self.rtp_port_range
        pairs = (end - start + 1) // 2
        configured = {"rtp_port_range", "max_sessions"} & self.model_fields_set
        if configured and 0 < pairs < self.max_sessions:
            warnings.append(
                f"rtp_port_range has {pairs} port pairs, fewer than max_sessions"
                f" ({self.max_sessions}): RTP endpoints may run out of ports first"
            )
        return warnings

    def engine_config(self) -> EngineConfig:
        """The media engine's part of the settings (the engine does not know this module)."""
        return EngineConfig(
            media_ip=self.media_ip,
            rtp_port_range=self.rtp_port_range,
            disconnect_timeout_s=self.disconnect_timeout_secs,
            max_sessions=self.max_sessions,
            max_endpoints_per_session=self.max_endpoints_per_session,
            session_idle_timeout_s=self.session_idle_timeout_secs,
            empty_session_timeout_s=self.empty_session_timeout_secs,
            media_timeout_s=self.media_timeout_secs,
            media_dir=self.media_dir,
            cache_dir=self.cache_dir,
            max_concurrent_downloads=self.max_concurrent_downloads,
            max_file_download_bytes=self.max_file_download_bytes,
            cache_cleanup_interval_s=self.cache_cleanup_interval_secs,
            metrics_compat=self.metrics_compat,
            rtvbp_connect_timeout_s=self.rtvbp.connect_timeout_secs,
            rtvbp_request_timeout_s=self.rtvbp.request_timeout_secs,
            rtvbp_close_timeout_s=self.rtvbp.close_timeout_secs,
            rtvbp_park_timeout_s=self.rtvbp.park_timeout_secs,
            rtvbp_initialize_timeout_s=self.rtvbp.initialize_timeout_secs,
            native_forwarding=self.native_forwarding,
            opus_complexity=self.opus_complexity,
            opus_bit_rate=self.opus_bitrate,
            recording_dir=self.recording_dir,
            max_recordings_per_session=self.max_recordings_per_session,
            recording_flush_timeout_s=self.recording_flush_timeout_secs,
            recording_channel_size=self.recording_channel_size,
            vad_detector=self.vad_detector,
            vad_silero_model=self.vad_silero_model,
            webrtc_consent_timeout_s=self.webrtc_consent_timeout_secs,
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def split_address_list(value: Any) -> Any:
    """A comma list of addresses, or a JSON list (as the environment gives either), becomes a
    list."""
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            try:
                return json.loads(value)
            except ValueError:
                raise ValueError(f"{value!r} is not a JSON list of host:port") from None
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def check_addresses(addresses: list[str]) -> list[str]:
    """`addresses` unchanged once each is a valid host:port (ValueError otherwise)."""
    for address in addresses:
        parse_listen_address(address)
    return addresses


def parse_listen_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6) and validate both parts."""
    host, separator, port_text = address.rpartition(":")
    if not separator or not host:
        raise ValueError(f"listen address {address!r} is not host:port")
    host = host.strip("[]")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"listen address {address!r} has an invalid port")
    return host, int(port_text)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from defaults, the TOML file, the environment and CLI overrides."""
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} does not exist")
    settings_type: type[Settings] = Settings
    if config_file is not None:

        class FileSettings(Settings):
            model_config = SettingsConfigDict(toml_file=config_file)

        settings_type = FileSettings
    try:
        return settings_type(
            **{key: value for key, value in overrides.items() if value is not None}
        )
    except ValueError as error:
        raise ConfigError(_describe(error)) from None


def _describe(error: ValueError) -> str:
    errors = getattr(error, "errors", None)
    if errors is None:
        return str(error)
    lines = []
    for item in errors():
        location = ".".join(str(part) for part in item.get("loc", ())) or "config"
        lines.append(f"{location}: {item.get('msg', 'invalid')}")
    return "invalid configuration: " + "; ".join(lines)
