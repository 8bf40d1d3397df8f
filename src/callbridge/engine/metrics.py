"""Engine metrics for ``/metrics``: rtpbridge's metric names with a ``callbridge_`` prefix.

The hot path only does ``metrics.packets_routed_total += 1`` on a plain int attribute (tens of
nanoseconds); a custom prometheus collector reads the ints at scrape time. The server exposes
`EngineMetrics.registry` and may register its own metrics there (``events_dropped_total``).

With `rtpbridge_names`, every metric rtpbridge exports also appears under its own name
(``rtpbridge_sessions_total`` ...), read at scrape time from the ``callbridge_`` metric of the
same name in the registry, so rtpbridge dashboards and alerts keep working; one callbridge does
not count (yet) is exported as 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["RTPBRIDGE_COUNTERS", "RTPBRIDGE_GAUGES", "EngineMetrics"]

_PREFIX = "callbridge_"
_RTPBRIDGE_PREFIX = "rtpbridge_"

RTPBRIDGE_COUNTERS: tuple[str, ...] = (
    "sessions",
    "endpoints",
    "packets_routed",
    "packets_recorded",
    "srtp_errors",
    "transcode_errors",
    "dtmf_events",
    "events_dropped",
)
"""rtpbridge's counters (``rtpbridge_<name>_total``)."""
RTPBRIDGE_GAUGES: tuple[str, ...] = ("sessions_active", "endpoints_active", "recordings_active")

_COUNTERS: tuple[tuple[str, str], ...] = (
    ("sessions", "Media sessions created."),
    ("endpoints", "Endpoints created."),
    ("packets_routed", "Packets delivered to one destination, including mixer output."),
    (
        "packets_forwarded_native",
        "Of packets_routed: passthrough packets the native forwarding plane sent (no Python).",
    ),
    ("dtmf_events", "DTMF digits detected from remote peers."),
    ("transcode_errors", "Frames that failed to decode or encode."),
    ("packets_malformed", "Inbound datagrams dropped because they were not valid RTP/RTCP."),
    (
        "packets_unexpected_source",
        "RTP packets from another address than the peer's after the learning window.",
    ),
    ("clock_skipped_frames", "Media clock frames skipped after a stall."),
    ("srtp_errors", "SRTP/SRTCP packets dropped: failed authentication, replayed or malformed."),
    (
        "packets_recorded",
        "Inbound packets (and frames of packetless legs) taken by pcap recordings.",
    ),
)


class EngineMetrics:
    """Plain-int counters and gauges of one worker, plus the registry that exports them."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, rtpbridge_names: bool = False
    ) -> None:
        self.sessions_total = 0
        self.endpoints_total = 0
        self.packets_routed_total = 0
        self.packets_forwarded_native_total = 0
        self.dtmf_events_total = 0
        self.transcode_errors_total = 0
        self.packets_malformed_total = 0
        """Of endpoints already closed; live ones are added at scrape time (`live_counters`)."""
        self.packets_unexpected_source_total = 0
        self.srtp_errors_total = 0
        self.sessions_active = 0
        self.endpoints_active = 0
        self.packets_recorded_total = 0
        self.recordings_active = 0
        self.clock_skipped_frames: Callable[[], int] = lambda: 0
        """Set by the manager to read the clock's counter at scrape time."""
        self.live_counters: Callable[[], tuple[int, int]] = lambda: (0, 0)
        """Set by the manager: (malformed, unexpected-source) packets of live endpoints."""
        self.port_pairs_in_use: Callable[[], int] = lambda: 0
        """Set by the manager: RTP/RTCP port pairs allocated now (a leak shows here)."""
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(_EngineCollector(self))
        if rtpbridge_names:
            self.registry.register(_RtpbridgeNames(self.registry))


def _task_count() -> int:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # scraped outside the event loop's thread
        return 0


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
            "packets_forwarded_native": metrics.packets_forwarded_native_total,
            "dtmf_events": metrics.dtmf_events_total,
            "transcode_errors": metrics.transcode_errors_total,
            "packets_malformed": metrics.packets_malformed_total + malformed,
            "packets_unexpected_source": metrics.packets_unexpected_source_total + unexpected,
            "clock_skipped_frames": metrics.clock_skipped_frames(),
            "srtp_errors": metrics.srtp_errors_total,
            "packets_recorded": metrics.packets_recorded_total,
        }
        for name, documentation in _COUNTERS:
            counter = CounterMetricFamily(_PREFIX + name, documentation)
            counter.add_metric([], values[name])
            yield counter
        for name, documentation, value in (
            ("sessions_active", "Media sessions alive.", metrics.sessions_active),
            ("endpoints_active", "Endpoints alive.", metrics.endpoints_active),
            (
                "rtp_port_pairs_in_use",
                "RTP/RTCP port pairs allocated.",
                metrics.port_pairs_in_use(),
            ),
            ("tasks", "Asyncio tasks alive in the worker (a leak shows here).", _task_count()),
            ("recordings_active", "Recordings in progress.", metrics.recordings_active),
        ):
            gauge = GaugeMetricFamily(_PREFIX + name, documentation)
            gauge.add_metric([], value)
            yield gauge


class _RtpbridgeNames(Collector):
    """rtpbridge's metrics, mirrored from the ``callbridge_`` ones of `registry` at scrape time.

    It reads the registry it is registered in, so it ignores the nested call to itself (scrapes
    run one at a time on the event loop's thread).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._collecting = False

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        if self._collecting:
            return
        self._collecting = True
        try:
            values = {
                family.name.removeprefix(_PREFIX): _value(family)
                for family in self._registry.collect()
                if family.name.startswith(_PREFIX)
            }
        finally:
            self._collecting = False
        for name in RTPBRIDGE_COUNTERS:
            counter = CounterMetricFamily(
                _RTPBRIDGE_PREFIX + name, f"rtpbridge name of {_PREFIX}{name}_total."
            )
            counter.add_metric([], values.get(name, 0.0))
            yield counter
        for name in RTPBRIDGE_GAUGES:
            gauge = GaugeMetricFamily(
                _RTPBRIDGE_PREFIX + name, f"rtpbridge name of {_PREFIX}{name}."
            )
            gauge.add_metric([], values.get(name, 0.0))
            yield gauge


def _value(family: Metric) -> float:
    """The unlabelled value of a counter (its ``_total`` sample) or gauge."""
    for sample in family.samples:
        if sample.name in (family.name, family.name + "_total") and not sample.labels:
            return float(sample.value)
    return 0.0
