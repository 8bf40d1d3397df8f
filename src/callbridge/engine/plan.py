"""Wiring a session's decoded media path from its routing table.

Rebuilt with the routing table (on add, remove and state changes). Encoders, resamplers and
mixer inputs whose identity is unchanged are carried over, so a rebuild does not reset codec
state or click: an `EncodeGroup` is identified by what it encodes (its sources and format).
Passthrough routes need nothing here; RTP endpoints read them from the table themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from callbridge.engine.pipeline import (
    EncodeGroup,
    FrameConsumer,
    MixStage,
    OutputFormat,
    SourceChain,
)
from callbridge.engine.routing import RouteMode, RoutingTable
from callbridge.media.errors import MediaError
from callbridge.media.opus import OPUS_BIT_RATE, OPUS_FULL_BAND, OPUS_RATES

if TYPE_CHECKING:
    from callbridge.engine.endpoint import Endpoint
    from callbridge.engine.metrics import EngineMetrics

__all__ = ["MediaPlan", "build_plan", "choose_coding_rates"]

GroupKey = tuple[object, ...]


@dataclass
class MediaPlan:
    """The decoded-path objects of one session for the current routing table."""

    table: RoutingTable = field(default_factory=RoutingTable)
    stages: tuple[MixStage, ...] = ()
    groups: dict[GroupKey, EncodeGroup] = field(default_factory=dict)


class _Builder:
    def __init__(
        self,
        endpoints: Mapping[str, Endpoint],
        previous: MediaPlan | None,
        metrics: EngineMetrics,
        opus_complexity: int,
        opus_bit_rate: int,
    ) -> None:
        self.opus_complexity = opus_complexity
        self.opus_bit_rate = opus_bit_rate
        self.endpoints = endpoints
        self.previous = previous.groups if previous is not None else {}
        self.metrics = metrics
        self.groups: dict[GroupKey, EncodeGroup] = {}
        self.members: dict[GroupKey, list[Endpoint]] = {}
        self.formats: dict[GroupKey, OutputFormat] = {}
        self.consumers: dict[str, dict[int, list[FrameConsumer]]] = {}
        self.fifo_rates: dict[str, set[int]] = {}

    def join(self, key: GroupKey, output_format: OutputFormat, destination: Endpoint) -> None:
        self.members.setdefault(key, []).append(destination)
        self.formats[key] = output_format

    def make_groups(self) -> None:
        for key, members in self.members.items():
            old = self.previous.get(key)
            try:
                group = EncodeGroup(
                    self.formats[key],
                    members,
                    self.metrics,
                    old,
                    self.opus_complexity,
                    self.opus_bit_rate,
                )
            except MediaError:
                self.metrics.transcode_errors_total += 1
                continue
            self.groups[key] = group


def choose_coding_rates(
    endpoints: Mapping[str, Endpoint],
    taps: Mapping[str, Sequence[tuple[int, FrameConsumer]]] | None = None,
) -> None:
    """Code each Opus leg at the lowest libopus rate that carries what its partners and taps
    need: 8000 Hz beside telephones, 16000 beside G.722, 48000 beside full-band legs (another
    Opus leg, a bridge, a 48 kHz file); alone it stays at 48000. So PCMU <-> Opus resamples
    nothing in Python: libopus codes at the phone's rate and the wire keeps its 48 kHz clock."""
    for endpoint in endpoints.values():
        wanted = [rate for rate, _ in (taps or {}).get(endpoint.id, ())]
        for other in endpoints.values():
            rate = other.native_rate if other is not endpoint else None
            if rate:
                wanted.append(rate)
        need = max(wanted) if wanted else OPUS_FULL_BAND
        endpoint.code_at(next((rate for rate in OPUS_RATES if rate >= need), OPUS_FULL_BAND))


def build_plan(
    table: RoutingTable,
    endpoints: Mapping[str, Endpoint],
    previous: MediaPlan | None,
    metrics: EngineMetrics,
    opus_complexity: int = 5,
    taps: Mapping[str, Sequence[tuple[int, FrameConsumer]]] | None = None,
    opus_bit_rate: int = OPUS_BIT_RATE,
) -> MediaPlan:
    """Create (or carry over) every chain, encoder group and mix stage the table needs.

    `taps` (endpoint id -> (rate, consumer)) are extra consumers of an endpoint's decoded
    audio (recorders, detectors): a tapped endpoint is decoded even when routing alone would
    only forward its packets.
    """
    choose_coding_rates(endpoints, taps)
    builder = _Builder(endpoints, previous, metrics, opus_complexity, opus_bit_rate)
    transcoded: list[tuple[GroupKey, str]] = []
    mixing: dict[int, list[tuple[Endpoint, OutputFormat, tuple[str, ...]]]] = {}
    for destination_id, mode in table.modes.items():
        destination = endpoints[destination_id]
        output_format = destination.output_format
        if mode is RouteMode.PASSTHROUGH or output_format is None:
            continue
        audible = tuple(
            source_id
            for source_id in table.sources[destination_id]
            if endpoints[source_id].source_rate is not None
        )
        if not audible:
            continue
        if mode is RouteMode.TRANSCODE:
            key: GroupKey = ("transcode", audible[0], output_format.key)
            builder.join(key, output_format, destination)
            transcoded.append((key, audible[0]))
        else:
            mixing.setdefault(output_format.sample_rate, []).append(
                (destination, output_format, audible)
            )
    stage_plans: list[
        tuple[int, set[str], list[tuple[str, GroupKey]], list[tuple[GroupKey, tuple[str, ...]]]]
    ] = []
    for rate, entries in mixing.items():
        union: set[str] = set()
        for _, _, sources in entries:
            union.update(sources)
        standard: list[tuple[str, GroupKey]] = []
        custom: list[tuple[GroupKey, tuple[str, ...]]] = []
        for destination, output_format, sources in entries:
            if set(sources) == union - {destination.id}:
                mix_key = destination.id if destination.id in union else ""
                key = ("mix", rate, mix_key, output_format.key)
                builder.join(key, output_format, destination)
                if (mix_key, key) not in standard:
                    standard.append((mix_key, key))
            else:
                key = ("mix", rate, tuple(sorted(sources)), output_format.key)
                builder.join(key, output_format, destination)
                if (key, sources) not in custom:
                    custom.append((key, sources))
        stage_plans.append((rate, union, standard, custom))
    builder.make_groups()
    for key, source_id in transcoded:
        group = builder.groups.get(key)
        if group is not None:
            rate = group.format.sample_rate
            by_rate = builder.consumers.setdefault(source_id, {})
            consumers = by_rate.setdefault(rate, [])
            if group not in consumers:
                consumers.append(group)
    for rate, union, _, _ in stage_plans:
        for source_id in union:
            builder.fifo_rates.setdefault(source_id, set()).add(rate)
    for endpoint_id, endpoint_taps in (taps or {}).items():
        if endpoint_id in endpoints:
            for rate, consumer in endpoint_taps:
                builder.consumers.setdefault(endpoint_id, {}).setdefault(rate, []).append(consumer)
    for endpoint in endpoints.values():
        consumers_by_rate = builder.consumers.get(endpoint.id, {})
        fifo_rates = builder.fifo_rates.get(endpoint.id, set())
        source_rate = endpoint.source_rate
        if (consumers_by_rate or fifo_rates) and source_rate is not None:
            if endpoint.chain is None or endpoint.chain.rate != source_rate:
                endpoint.chain = SourceChain(source_rate)
            endpoint.chain.configure(consumers_by_rate, fifo_rates)
        elif endpoint.chain is not None:
            endpoint.chain.configure({}, set())
    stages = []
    for rate, union, standard, custom in stage_plans:
        inputs = []
        for source_id in sorted(union):
            chain = endpoints[source_id].chain
            if chain is not None:
                inputs.append((source_id, chain.fifo(rate)))
        outputs = [
            (mix_key, builder.groups[key]) for mix_key, key in standard if key in builder.groups
        ]
        customs = [
            (builder.groups[key], sources) for key, sources in custom if key in builder.groups
        ]
        stages.append(MixStage(rate, inputs, outputs, customs))
    plan = MediaPlan(table, tuple(stages), builder.groups)
    for endpoint in endpoints.values():
        endpoint.plan_changed(table)
    return plan
