"""The routing table of one session: who hears whom, and how (pure, no I/O).

Rules (as in rtpbridge): only endpoints in state ``connected`` or ``playing`` take part; audio
flows from S to D iff S != D, S is not ``recvonly``, D is not ``sendonly``, and S and D are not
both bridges (a loop guard between bridged sessions).

Per destination the plan is one of:

* PASSTHROUGH: exactly one source, both plain RTP with the same wire codec; packets are forwarded
  on arrival with only a header rewrite (the fast path).
* TRANSCODE: exactly one source otherwise; decode, resample, encode.
* MIX: two or more sources; an N-1 mix on the media clock.

The table is rebuilt from scratch whenever an endpoint is added, removed or changes state: it is
small (max 20 endpoints by default) and rebuilding is simpler than patching.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

__all__ = ["ELIGIBLE_STATES", "RouteMode", "RouteNode", "RoutingTable", "build_routing"]

ELIGIBLE_STATES = frozenset({"connected", "playing"})


class RouteMode(Enum):
    PASSTHROUGH = "passthrough"
    TRANSCODE = "transcode"
    MIX = "mix"


@dataclass(frozen=True)
class RouteNode:
    """What routing needs to know about one endpoint."""

    endpoint_id: str
    direction: str
    """sendrecv | sendonly | recvonly"""
    state: str
    is_bridge: bool = False
    is_rtp: bool = False
    """A packet endpoint whose packets can be forwarded as they are (plain RTP)."""
    wire_codec: str | None = None
    """Name/clock of the codec on the wire (e.g. "PCMU/8000"); None when it carries no audio."""
    accepts_dtmf: bool = False
    """Has a negotiated telephone-event PT, so forwarded RFC 4733 packets make sense to it."""


@dataclass
class RoutingTable:
    """Immutable after build; lookups are plain dict reads on the hot path."""

    destinations: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """source id -> destination ids (every route, any mode)."""
    sources: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """destination id -> source ids."""
    modes: dict[str, RouteMode] = field(default_factory=dict)
    """destination id -> how it is fed (only destinations with at least one source)."""
    passthrough: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """source id -> destinations fed from it by passthrough."""
    dtmf_destinations: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """source id -> destinations that get its RFC 4733 packets (RTP sources, never bridges)."""

    def mode(self, destination_id: str) -> RouteMode | None:
        return self.modes.get(destination_id)


def _routes(source: RouteNode, destination: RouteNode) -> bool:
    return (
        source.endpoint_id != destination.endpoint_id
        and source.direction != "recvonly"
        and destination.direction != "sendonly"
        and not (source.is_bridge and destination.is_bridge)
    )


def build_routing(nodes: Iterable[RouteNode]) -> RoutingTable:
    """Compute the full table for the given endpoints."""
    eligible = [node for node in nodes if node.state in ELIGIBLE_STATES]
    by_id = {node.endpoint_id: node for node in eligible}
    destinations: dict[str, list[str]] = {}
    sources: dict[str, list[str]] = {}
    for source in eligible:
        for destination in eligible:
            if _routes(source, destination):
                destinations.setdefault(source.endpoint_id, []).append(destination.endpoint_id)
                sources.setdefault(destination.endpoint_id, []).append(source.endpoint_id)
    table = RoutingTable(
        destinations={key: tuple(value) for key, value in destinations.items()},
        sources={key: tuple(value) for key, value in sources.items()},
    )
    passthrough: dict[str, list[str]] = {}
    for destination_id, source_ids in table.sources.items():
        destination = by_id[destination_id]
        if len(source_ids) >= 2:
            table.modes[destination_id] = RouteMode.MIX
            continue
        source = by_id[source_ids[0]]
        if (
            source.is_rtp
            and destination.is_rtp
            and source.wire_codec is not None
            and source.wire_codec == destination.wire_codec
        ):
            table.modes[destination_id] = RouteMode.PASSTHROUGH
            passthrough.setdefault(source.endpoint_id, []).append(destination_id)
        else:
            table.modes[destination_id] = RouteMode.TRANSCODE
    table.passthrough = {key: tuple(value) for key, value in passthrough.items()}
    for source_id, destination_ids in table.destinations.items():
        if not by_id[source_id].is_rtp:
            continue
        targets = tuple(
            destination_id
            for destination_id in destination_ids
            if by_id[destination_id].accepts_dtmf and not by_id[destination_id].is_bridge
        )
        if targets:
            table.dtmf_destinations[source_id] = targets
    return table
