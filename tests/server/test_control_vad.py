"""vad.start / vad.stop over a real control WebSocket: ranges, errors, events, session.info."""

from __future__ import annotations

import uuid

import pytest

from tests.server.conftest import ControlClient

MISSING = str(uuid.uuid4())


@pytest.mark.parametrize("method", ["vad.start", "vad.stop"])
async def test_no_session_comes_first(client: ControlClient, method: str) -> None:
    assert (await client.error(method, {"endpoint_id": "x"}))["code"] == "NO_SESSION"


@pytest.mark.parametrize(
    "params",
    [
        None,
        {},
        {"endpoint_id": "not-a-uuid"},
        {"endpoint_id": MISSING, "silence_interval_ms": 99},
        {"endpoint_id": MISSING, "silence_interval_ms": 3_600_001},
        {"endpoint_id": MISSING, "silence_interval_ms": None},
        {"endpoint_id": MISSING, "speech_threshold": 1.5},
        {"endpoint_id": MISSING, "speech_threshold": -0.1},
        {"endpoint_id": MISSING, "speech_threshold": "0.5"},
        {"endpoint_id": MISSING, "detector": "earshot"},
    ],
)
async def test_bad_params_are_invalid(bound: ControlClient, params: object) -> None:
    assert (await bound.error("vad.start", params))["code"] == "INVALID_PARAMS"


async def test_nan_and_infinity_are_refused(bound: ControlClient) -> None:
    """JSON has no NaN (the frame does not parse); a number beyond float range is out of range."""
    for threshold, code in (("NaN", "PARSE_ERROR"), ("1e999", "INVALID_PARAMS")):
        await bound.send_raw(
            '{"id":"t","method":"vad.start","params":'
            f'{{"endpoint_id":"{MISSING}","speech_threshold":{threshold}}}}}'
        )
        assert (await bound.response())["error"]["code"] == code


async def test_unknown_endpoint_and_inactive_vad_are_vad_errors(bound: ControlClient) -> None:
    assert await bound.error("vad.start", {"endpoint_id": MISSING}) == {
        "code": "VAD_ERROR",
        "message": "Endpoint not found",
    }
    assert await bound.error("vad.stop", {"endpoint_id": MISSING}) == {
        "code": "VAD_ERROR",
        "message": "VAD not active for endpoint",
    }


async def test_the_range_limits_are_accepted(bound: ControlClient) -> None:
    tone = await bound.result("endpoint.create_tone", {"tone": "ringback"})
    endpoint_id = tone["endpoint_id"]
    for interval, threshold in ((100, 0.0), (3_600_000, 1), (1000, 0.5)):
        params = {
            "endpoint_id": endpoint_id,
            "silence_interval_ms": interval,
            "speech_threshold": threshold,
        }
        assert await bound.result("vad.start", params) == {}


async def test_speech_events_and_vad_active_follow_the_endpoint(bound: ControlClient) -> None:
    tone = await bound.result("endpoint.create_tone", {"tone": "sine", "frequency": 440})
    endpoint_id = tone["endpoint_id"]
    assert await bound.result("vad.start", {"endpoint_id": endpoint_id}) == {}
    assert await bound.next_event("vad.speech_started") == {"endpoint_id": endpoint_id}
    assert (await bound.result("session.info"))["vad_active"] == [endpoint_id]
    assert await bound.result("vad.stop", {"endpoint_id": endpoint_id}) == {}
    assert (await bound.result("session.info"))["vad_active"] == []
    await bound.result("vad.start", {"endpoint_id": endpoint_id, "detector": "silero"})
    await bound.result("endpoint.remove", {"endpoint_id": endpoint_id})
    assert (await bound.result("session.info"))["vad_active"] == []
    assert (await bound.error("vad.stop", {"endpoint_id": endpoint_id}))["code"] == "VAD_ERROR"


async def test_an_endpoint_still_negotiating_can_be_monitored(bound: ControlClient) -> None:
    offer = await bound.result("endpoint.create_offer", {"type": "rtp"})
    endpoint_id = offer["endpoint_id"]
    assert await bound.result("vad.start", {"endpoint_id": endpoint_id}) == {}
    assert (await bound.result("session.info"))["vad_active"] == [endpoint_id]
    assert await bound.result("vad.stop", {"endpoint_id": endpoint_id}) == {}
