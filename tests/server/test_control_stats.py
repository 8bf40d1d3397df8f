"""stats.subscribe / stats.unsubscribe over a real control WebSocket."""

from __future__ import annotations

import pytest

from tests.server.conftest import ControlClient


@pytest.mark.parametrize("method", ["stats.subscribe", "stats.unsubscribe"])
async def test_no_session_comes_first(client: ControlClient, method: str) -> None:
    assert (await client.error(method, {}))["code"] == "NO_SESSION"


@pytest.mark.parametrize(
    "params",
    [
        ControlClient.ABSENT,
        None,
        {"interval_ms": 0},
        {"interval_ms": 100},
        {"interval_ms": 499},
        {"interval_ms": 3_600_001},
        {"interval_ms": -1},
        {"interval_ms": "1000"},
        {"interval_ms": None},
    ],
)
async def test_bad_intervals_and_null_params_are_invalid(
    bound: ControlClient, params: object
) -> None:
    assert (await bound.error("stats.subscribe", params))["code"] == "INVALID_PARAMS"


@pytest.mark.parametrize("params", [{}, {"interval_ms": 3_600_000}, {"interval_ms": 500}])
async def test_the_default_and_the_limits_are_accepted(
    bound: ControlClient, params: object
) -> None:
    assert await bound.result("stats.subscribe", params) == {}


async def test_unsubscribe_always_answers_empty(bound: ControlClient) -> None:
    assert await bound.result("stats.unsubscribe") == {}
    assert await bound.result("stats.unsubscribe", None) == {}
    assert await bound.result("stats.unsubscribe", {"anything": [1]}) == {}


async def test_stats_events_describe_every_endpoint(bound: ControlClient) -> None:
    tone = await bound.result("endpoint.create_tone", {"tone": "busy"})
    assert await bound.result("stats.subscribe", {"interval_ms": 500}) == {}
    event = await bound.next_event("stats")
    [entry] = event["endpoints"]
    assert entry["endpoint_id"] == tone["endpoint_id"]
    assert entry["codec"] == "tone/8000Hz" and entry["state"] == "Playing"
    assert set(entry) == {"endpoint_id", "inbound", "outbound", "rtt_ms", "codec", "state"}
    assert await bound.result("stats.unsubscribe") == {}
