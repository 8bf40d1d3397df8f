"""Engine metrics: plain-int counters exported with rtpbridge's names and a callbridge_ prefix."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest

from callbridge.engine.manager import SessionManager
from callbridge.engine.offers import create_from_offer
from callbridge.engine.tone_endpoint import create_tone
from tests.engine.engine_peers import EventLog, engine_config


async def test_counters_and_gauges_follow_sessions(tmp_path: Path) -> None:
    engine = SessionManager(engine_config(tmp_path))
    await engine.start()
    try:
        session = engine.create_session(EventLog())
        endpoint_id = await create_tone(session, "beep", None, None)
        await create_from_offer(session, "", "sendrecv")
        await session.remove_endpoint(endpoint_id)
        text = generate_latest(engine.metrics.registry).decode()
        for line in (
            "callbridge_sessions_total 1.0",
            "callbridge_endpoints_total 2.0",
            "callbridge_sessions_active 1.0",
            "callbridge_endpoints_active 1.0",
            "callbridge_packets_routed_total 0.0",
            "callbridge_dtmf_events_total 0.0",
            "callbridge_transcode_errors_total 0.0",
            "callbridge_rtp_port_pairs_in_use 1.0",
        ):
            assert line in text
        await session.destroy()
        text = generate_latest(engine.metrics.registry).decode()
        assert "callbridge_sessions_active 0.0" in text
        assert "callbridge_endpoints_active 0.0" in text
        assert "callbridge_tasks " in text
    finally:
        await engine.shutdown(0)
