"""metrics_compat: rtpbridge dashboards find every rtpbridge_* metric on /metrics."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from callbridge.engine.metrics import RTPBRIDGE_COUNTERS, RTPBRIDGE_GAUGES
from tests.server.conftest import ServerHandle, StartServer


async def scrape(server: ServerHandle) -> dict[str, float]:
    async with server.http.get(server.base_url + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


async def test_every_rtpbridge_metric_mirrors_callbridge(start_server: StartServer) -> None:
    server = await start_server(metrics_compat=True)
    client = await server.connect()
    await client.result("session.create")
    await client.result("endpoint.create_tone", {"tone": "beep"})
    await client.result("endpoint.create_tone", {"tone": "busy"})
    samples = await scrape(server)
    for name in RTPBRIDGE_COUNTERS:
        assert f"rtpbridge_{name}_total" in samples, name
        if f"callbridge_{name}_total" in samples:
            assert samples[f"rtpbridge_{name}_total"] == samples[f"callbridge_{name}_total"]
    for name in RTPBRIDGE_GAUGES:
        assert f"rtpbridge_{name}" in samples, name
    assert samples["rtpbridge_sessions_total"] == 1
    assert samples["rtpbridge_endpoints_total"] == 2
    assert samples["rtpbridge_sessions_active"] == 1
    assert samples["rtpbridge_endpoints_active"] == 2
    assert samples["rtpbridge_packets_routed_total"] == samples["callbridge_packets_routed_total"]
    await client.result("session.destroy")
    samples = await scrape(server)
    assert samples["rtpbridge_sessions_active"] == 0
    assert samples["rtpbridge_endpoints_active"] == 0


async def test_off_by_default(server: ServerHandle) -> None:
    samples = await scrape(server)
    assert "callbridge_sessions_total" in samples
    assert not any(name.startswith("rtpbridge_") for name in samples)
