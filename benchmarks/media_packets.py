"""Per-packet costs of the packet-level media code, in µs per operation (best of 5 runs).

Run: .venv/bin/python benchmarks/media_packets.py [--quick]. Prints figures; never pass/fail.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from typing import cast

from callbridge.media.jitter import JitterBuffer
from callbridge.media.rtcp import (
    ReceptionStats,
    ReportBlock,
    build_sender_report,
    parse_rtcp,
)
from callbridge.media.rtp import build_rtp, parse_rtp, parse_rtp_datagram
from callbridge.media.rtp_stream import RtpStream, Transmit
from callbridge.media.sdp import parse_sdp
from callbridge.media.telephone_event import DtmfDetector, dtmf_packets

PHONE_OFFER = (
    "v=0\r\no=- 3894000000 3894000000 IN IP4 192.0.2.10\r\ns=SIP Call\r\n"
    "c=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 40000 RTP/AVP 9 0 8 101\r\n"
    "a=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)


def measure(operation: Callable[[], object], count: int) -> float:
    """Best-of-5 time of one call, in µs."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter_ns()
        for _ in range(count):
            operation()
        best = min(best, (time.perf_counter_ns() - start) / count)
    return best / 1000.0


def report(name: str, microseconds: float) -> None:
    print(f"{name:<52} {microseconds:8.3f} µs")


def main() -> None:
    count = 2_000 if "--quick" in sys.argv else 50_000
    packet = build_rtp(0, 1234, 160_000, 0x12345678, bytes(160))  # 172-byte PCMU packet
    payload = packet[12:]

    report("parse_rtp (172 B PCMU)", measure(lambda: parse_rtp(packet), count))
    report(
        "parse_rtp_datagram (plain header fast path)",
        measure(lambda: parse_rtp_datagram(packet), count),
    )

    source = ("192.0.2.10", 40000)
    no_op = cast(Transmit, slice)  # a C callable that takes (datagram, address): no Python frame
    stream = RtpStream(0.0, unix_offset=0.0, transmit_rtp=no_op)
    stream.set_remote(source, None, rtcp_mux=True)
    datagrams = [build_rtp(0, index, 160 * index, 0x12345678, bytes(160)) for index in range(2000)]
    stream.receive_rtp(datagrams[0], source, 0.0)
    arrivals = iter(range(10**9))

    def receive() -> None:
        now = next(arrivals) * 0.02
        for datagram in datagrams:
            stream.receive_rtp(datagram, source, now)

    timestamps = iter(range(0, 10**12, 160))
    report("RtpStream.receive_rtp (per packet)", measure(receive, count // 2000 or 1) / 2000)
    report(
        "RtpStream.send (172 B, no-op sink)",
        measure(lambda: stream.send(payload, 0, next(timestamps)), count),
    )

    report(
        "parse_sdp (typical SIP phone offer)", measure(lambda: parse_sdp(PHONE_OFFER), count // 10)
    )

    block = ReportBlock(0x55667788, 12, 34, 0x1000A, 80, 0xA1B28000, 0x10000)
    sender_report = build_sender_report(1, 0xE8E4A1B280000000, 8000, 100, 16000, [block])
    report(
        "build_sender_report (1 block)",
        measure(
            lambda: build_sender_report(1, 0xE8E4A1B280000000, 8000, 100, 16000, [block]), count
        ),
    )
    report("parse_rtcp (SR with 1 block)", measure(lambda: parse_rtcp(sender_report), count))

    stats = ReceptionStats(1, 8000, min_sequential=1)
    sequence = iter(range(10**9))
    report(
        "ReceptionStats.on_rtp",
        measure(lambda: stats.on_rtp(next(sequence) & 0xFFFF, 0, 0.0), count),
    )

    digit_train = [packet.payload for packet in dtmf_packets("5", 200, 10, 8000)]
    detector = DtmfDetector(8000)
    clock = iter(range(10**9))

    def feed_digit() -> None:
        now = next(clock) * 0.5
        for payload in digit_train:
            detector.feed(payload, int(now), now)

    per_packet = measure(feed_digit, count // 10) / len(digit_train)
    report("DtmfDetector.feed (per packet)", per_packet)

    for label, swap_rate in (("in order", 0.0), ("5% reordered", 0.05)):
        order = list(range(count))
        generator = random.Random(7)
        for index in range(count - 1):
            if generator.random() < swap_rate:
                order[index], order[index + 1] = order[index + 1], order[index]
        best = float("inf")
        for _ in range(5):
            jitter: JitterBuffer[int] = JitterBuffer()
            start = time.perf_counter_ns()
            for index in order:
                jitter.push(index & 0xFFFF, index, index * 0.02)
            best = min(best, (time.perf_counter_ns() - start) / count)
        report(f"JitterBuffer.push ({label})", best / 1000.0)


if __name__ == "__main__":
    main()
