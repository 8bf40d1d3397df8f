"""Engine metrics for ``/metrics``: rtpbridge's metric names with a ``callbridge_`` prefix.

The hot path only does ``metrics.packets_routed_total += 1`` on a plain int attribute (tens of
nanoseconds); a custom prometheus collector reads the ints at scrape time. The server exposes
`EngineMetrics.registry` and may register its own metrics there (``events_dropped_total``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["EngineMetrics"]

_PREFIX = "callbridge_"

_COUNTERS: tuple[tuple[str, str], ...] = (
    ("sessions", "Media sessions created."),
    ("endpoints", "Endpoints created."),
    ("packets_routed", "Packets delivered to one destination, including mixer output."),
    ("dtmf_events", "DTMF digits detected from remote peers."),
    ("transcode_errors", "Frames that failed to decode or encode."),
    ("packets_malformed", "Inbound datagrams dropped because they were not valid RTP/RTCP."),
    (
        "packets_unexpected_source",
        "RTP packets from another address than the peer's after the learning window.",
    ),
    ("clock_skipped_frames", "Media clock frames skipped after a stall."),
    ("srtp_errors", "SRTP/SRTCP packets dropped: failed authentication, replayed or malformed."),
)


class EngineMetrics:
    """Plain-int counters and gauges of one worker, plus the registry that exports them."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.sessions_total = 0
        self.endpoints_total = 0
        self.packets_routed_total = 0
        self.dtmf_events_total = 0
        self.transcode_errors_total = 0
        self.packets_malformed_total = 0
        """Of endpoints already closed; live ones are added at scrape time (`live_counters`)."""
        self.packets_unexpected_source_total = 0
        self.srtp_errors_total = 0
        self.sessions_active = 0
        self.endpoints_active = 0
        self.clock_skipped_frames: Callable[[], int] = lambda: 0
        """Set by the manager to read the clock's counter at scrape time."""
        self.live_counters: Callable[[], tuple[int, int]] = lambda: (0, 0)
        """Set by the manager: (malformed, unexpected-source) packets of live endpoints."""
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(_EngineCollector(self))


class _EngineCollector(Collector):
    def __init__(self, metrics: EngineMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics
        malformed, unexpected = metrics.live_counters()
        values = {
            "sessions": metrics.sessions_total,
            "endpoints": metrics.endpoints_total,
            "packets_routed": metrics.packets_routed_total,
            "dtmf_events": metrics.dtmf_events_total,
            "transcode_errors": metrics.transcode_errors_total,
            "packets_malformed": metrics.packets_malformed_total + malformed,
            "packets_unexpected_source": metrics.packets_unexpected_source_total + unexpected,
            "clock_skipped_frames": metrics.clock_skipped_frames(),
            "srtp_errors": metrics.srtp_errors_total,
        }
        for name, documentation in _COUNTERS:
            counter = CounterMetricFamily(_PREFIX + name, documentation)
            counter.add_metric([], values[name])
            yield counter
        for name, documentation, value in (
            ("sessions_active", "Media sessions alive.", metrics.sessions_active),
            ("endpoints_active", "Endpoints alive.", metrics.endpoints_active),
        ):
            gauge = GaugeMetricFamily(_PREFIX + name, documentation)
            gauge.add_metric([], value)
            yield gauge
