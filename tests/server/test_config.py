"""Settings: an rtpbridge configuration file loads unchanged; rtpbridge's validation rules;
log filters."""

from __future__ import annotations

import logging
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from callbridge.server.config import ConfigError, RtpbridgeKeys, Settings, load_settings
from callbridge.server.log_filter import OFF, parse_log_filter
from tests.server.test_cli import running_server

RTPBRIDGE_TOML = Path(__file__).parent / "fixtures" / "rtpbridge.toml"

RTPBRIDGE_KEYS = {
    "listen",
    "media_ip",
    "rtp_port_range",
    "disconnect_timeout_secs",
    "shutdown_max_wait_secs",
    "media_dir",
    "recording_dir",
    "cache_dir",
    "cache_cleanup_interval_secs",
    "max_concurrent_downloads",
    "max_sessions",
    "max_endpoints_per_session",
    "max_recordings_per_session",
    "recording_flush_timeout_secs",
    "ws_max_message_size_kb",
    "max_sdp_size_kb",
    "session_idle_timeout_secs",
    "empty_session_timeout_secs",
    "media_timeout_secs",
    "max_connections",
    "ws_ping_interval_secs",
    "event_channel_size",
    "critical_event_channel_size",
    "transcode_cache_size",
    "max_file_download_bytes",
    "max_recording_download_bytes",
    "recording_channel_size",
    "log_level",
}
"""Every key of rtpbridge's configuration file."""


def test_the_fixture_sets_every_rtpbridge_key() -> None:
    assert set(tomllib.loads(RTPBRIDGE_TOML.read_text())) == RTPBRIDGE_KEYS


def test_an_rtpbridge_file_loads_unchanged() -> None:
    settings = load_settings(RTPBRIDGE_TOML)
    written = tomllib.loads(RTPBRIDGE_TOML.read_text())
    assert settings.listen == ["0.0.0.0:9100", "127.0.0.1:9101"]
    assert settings.rtp_port_range == (20000, 29999)
    assert settings.media_dir == Path("/tmp")
    for key, value in written.items():
        if key in ("listen", "rtp_port_range") or key.endswith("_dir"):
            continue
        assert getattr(settings, key) == value, key
    engine = settings.engine_config()
    assert engine.cache_cleanup_interval_s == 600
    assert engine.max_endpoints_per_session == 10
    assert engine.disconnect_timeout_s == 45


def test_keys_only_rtpbridge_uses_are_still_validated() -> None:
    assert set(RtpbridgeKeys.model_fields) <= RTPBRIDGE_KEYS
    for key in RtpbridgeKeys.model_fields:
        if key.endswith("_dir"):
            continue
        with pytest.raises(ValueError, match=key):
            Settings(**{key: 0})


@pytest.mark.parametrize("key", ["recording_dir", "cache_dir"])
def test_work_directories_follow_rtpbridge_rules(key: str, tmp_path: Path) -> None:
    Settings(**{key: tmp_path})
    Settings(**{key: tmp_path / "created-later"})
    with pytest.raises(ValueError, match="parent"):
        Settings(**{key: tmp_path / "missing" / "below"})
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    with pytest.raises(ValueError, match="writable directory"):
        Settings(**{key: not_a_directory})


RANGES: list[tuple[str, Any]] = [
    ("disconnect_timeout_secs", 0),
    ("shutdown_max_wait_secs", 0),
    ("cache_cleanup_interval_secs", 0),
    ("max_concurrent_downloads", 0),
    ("ws_max_message_size_kb", 512001),
    ("max_sdp_size_kb", 10001),
    ("media_timeout_secs", 301),
    ("ws_ping_interval_secs", 0),
    ("event_channel_size", 0),
    ("critical_event_channel_size", 0),
    ("rtp_port_range", (30001, 39999)),
    ("rtp_port_range", (1000, 39999)),
    ("media_dir", "/nonexistent/media"),
    ("log_level", "info,callbridge=loud"),
    ("opus_bitrate", 5999),
    ("opus_bitrate", 510001),
    ("opus_complexity", 11),
]


def test_opus_settings_reach_the_engine(tmp_path: Path) -> None:
    config = tmp_path / "opus.toml"
    config.write_text("opus_bitrate = 32000\nopus_complexity = 3\n")
    engine = load_settings(config).engine_config()
    assert (engine.opus_bit_rate, engine.opus_complexity) == (32000, 3)


@pytest.mark.parametrize(("key", "value"), RANGES)
def test_invalid_values_refuse_to_start(key: str, value: Any, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    rendered = (
        f'"{value}"'
        if isinstance(value, str)
        else list(value)
        if isinstance(value, tuple)
        else value
    )
    config.write_text(f"{key} = {rendered}\n")
    with pytest.raises(ConfigError, match=key):
        load_settings(config)


def test_log_filters() -> None:
    assert parse_log_filter("debug").default == logging.DEBUG
    parsed = parse_log_filter("warn, callbridge.engine=debug,rtpbridge::session=trace,tokio=off")
    assert parsed.default == logging.WARNING
    assert parsed.targets == {
        "callbridge.engine": logging.DEBUG,
        "callbridge.session": logging.DEBUG,
        "tokio": OFF,
    }
    assert parse_log_filter("callbridge[call{id=7}]=error").targets == {"callbridge": logging.ERROR}
    assert parse_log_filter("hyper").targets == {"hyper": logging.DEBUG}
    for bad in ("", "info,=debug", "callbridge=loud", " , "):
        with pytest.raises(ValueError):
            parse_log_filter(bad)


def test_a_filter_configures_python_logging() -> None:
    root = logging.getLogger()
    saved = root.level, logging.getLogger("callbridge.engine").level
    try:
        parse_log_filter("error,rtpbridge::engine=debug").apply("%(message)s")
        assert root.level == logging.ERROR
        assert logging.getLogger("callbridge.engine").getEffectiveLevel() == logging.DEBUG
    finally:
        root.setLevel(saved[0])
        logging.getLogger("callbridge.engine").setLevel(saved[1])


def test_capacity_warnings() -> None:
    assert Settings().capacity_warnings() == []
    assert Settings(max_sessions=5000).capacity_warnings() == []
    [unlimited] = Settings(max_sessions=0).capacity_warnings()
    assert "unlimited" in unlimited
    [ports] = Settings(rtp_port_range=(30000, 30099), max_sessions=100).capacity_warnings()
    assert "50 port pairs" in ports


def test_callbridge_serve_starts_with_the_rtpbridge_file() -> None:
    with running_server("--config", str(RTPBRIDGE_TOML)) as port:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
            assert response.status == 200


@pytest.mark.parametrize(
    "value",
    ["127.0.0.1:9333, [::1]:9334", '["127.0.0.1:9333", "[::1]:9334"]'],
    ids=["comma-list", "json-list"],
)
def test_listen_addresses_from_the_environment(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """As docs/configuration.md shows them: `CALLBRIDGE_LISTEN=0.0.0.0:9100`, comma lists too."""
    monkeypatch.setenv("CALLBRIDGE_LISTEN", value)
    monkeypatch.setenv("CALLBRIDGE_RTVBP__FAST_LISTEN", value)
    settings = Settings()
    assert settings.listen == settings.rtvbp.fast_listen == ["127.0.0.1:9333", "[::1]:9334"]


def test_a_bad_listen_list_from_the_environment_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CALLBRIDGE_LISTEN", '["127.0.0.1:9333"')
    with pytest.raises(ValueError, match="is not a JSON list of host:port"):
        Settings()
