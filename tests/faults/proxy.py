"""A UDP fault proxy for the tests: a bad network between an RTP peer and the engine.

The peer sends to `FaultProxy.port`; each datagram goes through a `Fault`, which says what
reaches the engine and when (nothing, the datagram late, twice, rewritten, with extra datagrams),
and what comes out is sent to every target from one socket (so each engine endpoint latches to
the proxy). Datagrams from the targets go back to the peer unchanged. The proxy counts what it
delivered, so a test can compare it with what the engine forwarded.

Faults are plain functions of (datagram, index) with their own seeded random source, so a run
is reproducible; `chain` composes them.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from callbridge.media import rtcp
from callbridge.media.rtp import RtpExtension, build_rtp, is_rtcp, parse_rtp

Delivery = list[tuple[float, bytes]]
"""(delay in seconds, datagram) pairs to send on to the engine."""
Fault = Callable[[bytes, int], Delivery]
"""Given a datagram from the peer and its index (0, 1, ...), what the engine receives."""
Address = tuple[str, int]


class _Relay(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Any], None]) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.on_datagram(data, addr)


class FaultProxy:
    """Relays peer -> targets through a fault, targets -> peer as they are."""

    def __init__(self, targets: list[Address], fault: Fault) -> None:
        self.targets = targets
        self.fault = fault
        self.port = 0
        self.received = 0
        """Datagrams from the peer."""
        self.delivered: list[bytes] = []
        """Datagrams sent on to each target, in sending order."""
        self._peer: Any = None
        self._downstream: asyncio.DatagramTransport | None = None
        self._upstream: asyncio.DatagramTransport | None = None
        self._pending: set[asyncio.TimerHandle] = set()

    @classmethod
    async def open(cls, targets: list[Address], fault: Fault) -> FaultProxy:
        proxy = cls(targets, fault)
        loop = asyncio.get_running_loop()
        proxy._downstream, _ = await loop.create_datagram_endpoint(
            lambda: _Relay(proxy._from_peer), local_addr=("127.0.0.1", 0)
        )
        proxy._upstream, _ = await loop.create_datagram_endpoint(
            lambda: _Relay(proxy._from_target), local_addr=("127.0.0.1", 0)
        )
        proxy.port = proxy._downstream.get_extra_info("sockname")[1]
        return proxy

    def _from_peer(self, data: bytes, address: Any) -> None:
        self._peer = address
        index = self.received
        self.received += 1
        loop = asyncio.get_running_loop()
        for delay, datagram in self.fault(data, index):
            if delay <= 0:
                self._deliver(datagram)
            else:
                handle = loop.call_later(delay, self._deliver_later, datagram)
                self._pending.add(handle)

    def _deliver_later(self, datagram: bytes) -> None:
        self._pending = {handle for handle in self._pending if not handle.cancelled()}
        self._deliver(datagram)

    def _deliver(self, datagram: bytes) -> None:
        if self._upstream is None:
            return
        self.delivered.append(datagram)
        for target in self.targets:
            self._upstream.sendto(datagram, target)

    def _from_target(self, data: bytes, address: Any) -> None:
        if self._downstream is not None and self._peer is not None:
            self._downstream.sendto(data, self._peer)

    def close(self) -> None:
        for handle in self._pending:
            handle.cancel()
        for transport in (self._downstream, self._upstream):
            if transport is not None:
                transport.close()
        self._downstream = self._upstream = None


# --- faults -------------------------------------------------------------------------------------


def clean(data: bytes, index: int) -> Delivery:
    return [(0.0, data)]


def chain(*faults: Fault) -> Fault:
    """Apply `faults` in order; each sees every datagram the previous one let through."""

    def apply(data: bytes, index: int) -> Delivery:
        deliveries: Delivery = [(0.0, data)]
        for fault in faults:
            deliveries = [
                (delay + later, out)
                for delay, item in deliveries
                for later, out in fault(item, index)
            ]
        return deliveries

    return apply


def loss(rate: float, seed: int = 1) -> Fault:
    rng = random.Random(seed)
    return lambda data, index: [] if rng.random() < rate else [(0.0, data)]


def burst_loss(every: int, length: int) -> Fault:
    """Drop `length` datagrams in a row out of every `every` (after the first `every`)."""
    return lambda data, index: [] if index >= every and index % every < length else [(0.0, data)]


def reorder(rate: float, hold_s: float = 0.045, seed: int = 2) -> Fault:
    """Hold a datagram back by `hold_s`, so the next ones overtake it."""
    rng = random.Random(seed)
    return lambda data, index: [(hold_s if rng.random() < rate else 0.0, data)]


def duplicate(rate: float, seed: int = 3) -> Fault:
    rng = random.Random(seed)

    def apply(data: bytes, index: int) -> Delivery:
        return [(0.0, data), (0.004, data)] if rng.random() < rate else [(0.0, data)]

    return apply


def jitter_spikes(every: int, low_s: float = 0.06, high_s: float = 0.2, seed: int = 4) -> Fault:
    """A queue stall every `every` datagrams: the stall's datagrams all arrive at its end."""
    rng = random.Random(seed)
    spike = {"start": -1, "length_s": 0.0}

    def apply(data: bytes, index: int) -> Delivery:
        if index and index % every == 0:
            spike["start"], spike["length_s"] = index, rng.uniform(low_s, high_s)
        elapsed = (index - spike["start"]) * 0.02
        if spike["start"] >= 0 and elapsed < spike["length_s"]:
            return [(spike["length_s"] - elapsed, data)]
        return [(0.0, data)]

    return apply


def rewrite_rtp(change: Callable[[dict[str, Any], int], None]) -> Fault:
    """Rebuild each RTP datagram after `change` edited its fields (build_rtp's arguments)."""

    def apply(data: bytes, index: int) -> Delivery:
        if is_rtcp(data):
            return [(0.0, data)]
        packet = parse_rtp(data)
        fields: dict[str, Any] = {
            "payload_type": packet.payload_type,
            "sequence": packet.sequence,
            "timestamp": packet.timestamp,
            "ssrc": packet.ssrc,
            "payload": bytes(packet.payload),
            "marker": packet.marker,
            "csrcs": packet.csrcs,
            "extension": packet.extension,
            "padding": packet.padding,
        }
        change(fields, index)
        return [(0.0, build_rtp(**fields))]

    return apply


def ssrc_change(at: int) -> Fault:
    """From datagram `at` on, a restarted stream: new SSRC, sequence and timestamp base."""

    def change(fields: dict[str, Any], index: int) -> None:
        if index >= at:
            fields["ssrc"] ^= 0x5A5A5A5A
            fields["sequence"] = (fields["sequence"] + 20000) & 0xFFFF
            fields["timestamp"] = (fields["timestamp"] + 123456789) & 0xFFFFFFFF

    return rewrite_rtp(change)


def sequence_wrap(start: int = 65500) -> Fault:
    def change(fields: dict[str, Any], index: int) -> None:
        fields["sequence"] = (start + index) & 0xFFFF

    return rewrite_rtp(change)


def timestamp_jump(at: int, jump: int = 1_000_000) -> Fault:
    def change(fields: dict[str, Any], index: int) -> None:
        if index >= at:
            fields["timestamp"] = (fields["timestamp"] + jump) & 0xFFFFFFFF

    return rewrite_rtp(change)


def marker_bits(every: int) -> Fault:
    def change(fields: dict[str, Any], index: int) -> None:
        fields["marker"] = index % every == 0

    return rewrite_rtp(change)


def padding(sizes: tuple[int, ...] = (1, 4, 32, 255)) -> Fault:
    def change(fields: dict[str, Any], index: int) -> None:
        fields["padding"] = sizes[index % len(sizes)]

    return rewrite_rtp(change)


def csrc_lists() -> Fault:
    def change(fields: dict[str, Any], index: int) -> None:
        fields["csrcs"] = tuple(range(0x1000, 0x1000 + 1 + index % 15))

    return rewrite_rtp(change)


def header_extensions() -> Fault:
    """An RFC 8285 one-byte-header extension (profile 0xBEDE) of 1 to 4 words."""

    def change(fields: dict[str, Any], index: int) -> None:
        words = 1 + index % 4
        fields["extension"] = RtpExtension(0xBEDE, bytes([0x10 | 0, index & 0xFF]) * (2 * words))

    return rewrite_rtp(change)


def empty_payloads(every: int) -> Fault:
    def change(fields: dict[str, Any], index: int) -> None:
        if index % every == every - 1:
            fields["payload"] = b""

    return rewrite_rtp(change)


def unknown_rtcp(every: int) -> Fault:
    """After every `every` datagrams, an RTCP compound: RR, SDES, APP and two unassigned types."""
    compound = (
        rtcp.build_receiver_report(0x11223344, cname="fault-proxy")
        + bytes([0x80, 204, 0, 2]) + b"\x11\x22\x33\x44" + b"TEST"  # APP, name TEST
        + bytes([0x80, 210, 0, 1]) + b"\x00" * 4  # unassigned packet types
        + bytes([0x81, 223, 0, 0])
    )  # fmt: skip

    def apply(data: bytes, index: int) -> Delivery:
        return [(0.0, data), (0.001, compound)] if index % every == 0 else [(0.0, data)]

    return apply


def garbage(every: int, seed: int = 5) -> Fault:
    """After every `every` datagrams, one that is neither RTP nor RTCP."""
    rng = random.Random(seed)

    def apply(data: bytes, index: int) -> Delivery:
        if index % every:
            return [(0.0, data)]
        return [(0.0, data), (0.001, bytes([rng.randrange(0, 0x80)]) + rng.randbytes(40))]

    return apply
