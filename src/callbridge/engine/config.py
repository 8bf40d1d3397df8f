"""Engine configuration: the limits and timeouts the media engine needs, with safe defaults.

The server builds an `EngineConfig` from its own settings (TOML, environment, CLI); the engine
never reads settings itself. Durations are seconds (`_s`), sizes bytes, rates Hz.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["EngineConfig"]


@dataclass(frozen=True)
class EngineConfig:
    """Every limit and timeout of the engine; defaults serve one machine (rtpbridge's values)."""

    media_ip: str = "127.0.0.1"
    """Address every RTP socket binds to and that SDP advertises."""
    rtp_port_range: tuple[int, int] = (30000, 39999)
    """Inclusive UDP port range for RTP/RTCP pairs (start even)."""
    disconnect_timeout_s: float = 30
    """How long an orphaned session waits for a re-attach before it is destroyed."""
    max_sessions: int = 10000
    """0 = unlimited."""
    max_endpoints_per_session: int = 20
    """Every endpoint kind counts; 0 = unlimited."""
    session_idle_timeout_s: float = 0
    """Destroy a session without activity for this long; 0 = disabled."""
    empty_session_timeout_s: float = 0
    """Destroy a session that has had no endpoints for this long; 0 = disabled."""
    media_timeout_s: float = 5
    """`endpoint.media_timeout` after this long without inbound packets on a connected endpoint."""
    media_dir: Path | None = None
    """Local file playback is confined to this directory; None disables it."""
    cache_dir: Path = Path("/tmp/callbridge-cache")
    """Where downloaded URL sources are cached (emptied of files at start)."""
    max_concurrent_downloads: int = 16
    max_file_download_bytes: int = 100 * 1024 * 1024
    cache_cleanup_interval_s: float = 300
    """How often unreferenced, expired cache entries are deleted."""
    native_forwarding: bool = True
    """Forward passthrough RTP in the native plane when it is built (callbridge.engine.forwarding);
    False keeps every packet on the Python path."""
    opus_complexity: int = 5
    """libopus encoder complexity 0-10 for Opus destinations: 0 costs about half of 5."""
    opus_bit_rate: int = 24000
    """libopus target bitrate in bit/s (VBR around it) for Opus destinations, 6000-510000."""
    housekeeping_interval_s: float = 1.0
    """How often the clock checks timeouts (idle, empty, media, orphan-free); rounded to frames."""
    rtvbp_connect_timeout_s: float = 10.0
    """Dialling an RTVBP application: TCP connect plus WebSocket upgrade."""
    rtvbp_request_timeout_s: float = 5.0
    """How long an RTVBP request (session.initialize included) waits for its response."""
    rtvbp_close_timeout_s: float = 2.0
    """How long the graceful end of a removed RTVBP leg (the hang-up exchange) may take."""
    rtvbp_park_timeout_s: float = 30.0
    """How long a parked incoming call waits for `session.attach` before it is hung up."""
    rtvbp_initialize_timeout_s: float = 10.0
    """How long an incoming voice peer may take to send `session.initialize`."""
    recording_dir: Path = Path("/tmp/callbridge-recordings")
    """Every recording file lies inside this directory (created if missing)."""
    max_recordings_per_session: int = 100
    recording_flush_timeout_s: float = 10.0
    """How long finishing a stopped recording's file may take before it is given up."""
    recording_channel_size: int = 1000
    """Items (packets or 20 ms frames) a recording may have queued for the disk; more are
    dropped and counted."""
    # Voice activity detection (vad.start).
    vad_detector: str = "webrtc"
    """Detector used when vad.start names none: "webrtc" or "silero"."""
    vad_silero_model: Path | None = None
    """The Silero ONNX model file; None finds the one an installed package ships."""
    # Metrics under rtpbridge's names.
    metrics_compat: bool = False
    """Also export every rtpbridge metric under its ``rtpbridge_`` name."""
    # WebRTC endpoints
    webrtc_consent_timeout_s: float = 30.0
    """A connected WebRTC endpoint is `disconnected` after this long without a valid ICE check
    from its peer (consent freshness); it becomes `connected` again when checks resume."""
