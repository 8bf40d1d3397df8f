"""The periodic `stats` event against real peers: a lossy, jittery RTP peer that answers our
sender reports with receiver reports, and generated endpoints."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from callbridge.engine.manager import SessionManager
from callbridge.engine.offers import create_from_offer
from callbridge.engine.stats import StatsSubscription, subscribe_stats, unsubscribe_stats
from callbridge.engine.tone_endpoint import create_tone
from callbridge.media import rtcp
from callbridge.media.codecs import PCMU, create_encoder
from tests.engine.engine_peers import EventLog, RtpPeer, manager

__all__ = ["manager"]

PACKETS = 300
"""6 s of 20 ms packets: long enough for the engine's first sender report (after 5 s)."""
REPORT_DELAY_S = 0.03
"""How long the peer holds its receiver report without saying so: the RTT it should cause."""


class TimedLog(EventLog):
    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def __call__(self, name: str, data: dict[str, Any], critical: bool) -> None:
        if name == "stats":
            self.times.append(time.monotonic())
        super().__call__(name, data, critical)


async def _answer_sender_reports(peer: RtpPeer) -> None:
    """Reply to each SR (rtcp-mux: it arrives on the RTP port) with an RR about it, late by
    REPORT_DELAY_S while claiming no delay."""
    while True:
        data, _ = await peer.queue.get()
        if not (len(data) > 1 and data[1] == rtcp.RTCP_SR):
            continue
        for packet in rtcp.parse_rtcp(data):
            if isinstance(packet, rtcp.SenderReport):
                await asyncio.sleep(REPORT_DELAY_S)
                block = rtcp.ReportBlock(
                    packet.ssrc, 0, 0, 0, 0, rtcp.compact_ntp(packet.ntp_timestamp), 0
                )
                peer.send_raw(rtcp.build_receiver_report(peer.ssrc, [block]))


async def test_a_peer_losing_ten_percent_with_jitter_is_reported_so(
    manager: SessionManager,
) -> None:
    events = EventLog()
    session = manager.create_session(events)
    peer = await RtpPeer.open()
    offer = peer.offer("pcmu").replace("a=sendrecv", "a=rtcp-mux\r\na=sendrecv")
    endpoint_id, answer = await create_from_offer(session, offer, "sendrecv")
    peer.use(answer)
    subscribe_stats(session, 500, time.monotonic())
    responder = asyncio.create_task(_answer_sender_reports(peer))
    loop = asyncio.get_running_loop()
    jitter = random.Random(11)
    payload = create_encoder(PCMU).encode(bytes(320))
    first_sequence, first_timestamp = peer.sequence, peer.timestamp
    start = loop.time() + 0.05
    for index in range(PACKETS):
        if index % 10 == 3:
            continue  # dropped by sequence number: 10 %
        loop.call_at(
            start + index * 0.02 + jitter.uniform(0.0, 0.010),
            lambda index=index: peer.send(
                payload,
                0,
                sequence=(first_sequence + index) & 0xFFFF,
                timestamp=(first_timestamp + index * 160) & 0xFFFFFFFF,
            ),
        )
    await asyncio.sleep(PACKETS * 0.02 + 0.3)
    async with asyncio.timeout(5):
        while True:
            [entry] = (await events.wait_for("stats", len(events.named("stats")) + 1))[-1][
                "endpoints"
            ]
            if entry["rtt_ms"] is not None and entry["inbound"]["packets"] == PACKETS * 9 // 10:
                break
    responder.cancel()
    inbound = entry["inbound"]
    lost = inbound["packets_lost"]
    assert abs(lost / (lost + inbound["packets"]) - 0.10) <= 0.01
    assert inbound["bytes"] == inbound["packets"] * 160  # payload bytes, not headers
    assert 1.0 <= inbound["jitter_ms"] <= 20.0, inbound  # uniform 0..10 ms delay: ~3.3 ms
    assert 0 <= inbound["last_received_ms_ago"] < 5000
    assert REPORT_DELAY_S * 1000 * 0.8 <= entry["rtt_ms"] <= 250, entry
    assert entry["endpoint_id"] == endpoint_id
    assert entry["codec"] == "PCMU" and entry["state"] == "Connected"
    assert set(entry["outbound"]) == {"packets", "bytes"}
    peer.close()
    await session.destroy()


async def test_events_come_on_the_interval_and_stop_after_unsubscribe(
    manager: SessionManager,
) -> None:
    events = TimedLog()
    session = manager.create_session(events)
    tone_id = await create_tone(session, "ringback", None, None)
    subscribe_stats(session, 5000, time.monotonic())
    subscribe_stats(session, 500, time.monotonic())  # a second subscribe replaces the interval
    await asyncio.sleep(3.1)
    assert len(events.times) >= 3  # 6 on an idle machine
    gaps = [later - earlier for earlier, later in zip(events.times, events.times[1:], strict=False)]
    assert all(0.1 <= gap <= 1.5 for gap in gaps), gaps
    [entry] = events.named("stats")[-1]["endpoints"]
    assert entry == {
        "endpoint_id": tone_id,
        "inbound": {
            "packets": 0,
            "bytes": 0,
            "packets_lost": 0,
            "jitter_ms": 0.0,
            "last_received_ms_ago": 0,
        },
        "outbound": {"packets": 0, "bytes": 0},
        "rtt_ms": None,
        "codec": "tone/8000Hz",
        "state": "Playing",
    }
    unsubscribe_stats(session)
    unsubscribe_stats(session)  # not subscribed: nothing happens
    count = len(events.times)
    await asyncio.sleep(1.2)
    assert len(events.times) == count
    assert StatsSubscription.find(session) is None
    subscribe_stats(session, 500, time.monotonic())
    await session.destroy()
    count = len(events.times)
    await asyncio.sleep(0.7)
    assert len(events.times) == count
