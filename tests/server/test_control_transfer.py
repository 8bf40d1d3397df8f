"""endpoint.transfer over the control WebSocket: result, events on both connections, errors."""

from __future__ import annotations

from callbridge.server.control_methods import METHODS
from tests.server.conftest import ControlClient, ServerHandle, StartServer
from tests.server.test_control import RTP_OFFER

UNKNOWN_ID = "00000000-0000-0000-0000-00000000abcd"


async def test_transfer_is_served() -> None:
    assert "endpoint.transfer" in METHODS


async def test_no_session_comes_before_params(client: ControlClient) -> None:
    error = await client.error("endpoint.transfer", {"endpoint_id": "not a uuid"})
    assert error["code"] == "NO_SESSION"


async def test_transfer_moves_the_endpoint_and_tells_both_sides(server: ServerHandle) -> None:
    source, target = await server.connect(), await server.connect()
    source_id = (await source.result("session.create"))["session_id"]
    target_id = (await target.result("session.create"))["session_id"]
    endpoint_id = (await source.result("endpoint.create_from_offer", {"sdp": RTP_OFFER}))[
        "endpoint_id"
    ]
    result = await source.result(
        "endpoint.transfer", {"endpoint_id": endpoint_id, "target_session_id": target_id}
    )
    assert result == {"endpoint_id": endpoint_id, "target_session_id": target_id}
    assert await source.next_event("endpoint.transferred_out") == {
        "endpoint_id": endpoint_id,
        "target_session_id": target_id,
    }
    assert await target.next_event("endpoint.transferred_in") == {
        "endpoint_id": endpoint_id,
        "source_session_id": source_id,
        "endpoint_type": "rtp",
        "direction": "sendrecv",
        "state": "connected",
    }
    assert (await source.result("session.info"))["endpoints"] == []
    [moved] = (await target.result("session.info"))["endpoints"]
    assert moved["endpoint_id"] == endpoint_id and moved["codec"] == "PCMU"
    await target.result("endpoint.remove", {"endpoint_id": endpoint_id})


async def test_transfer_errors(server: ServerHandle, bound: ControlClient) -> None:
    other = await server.connect()
    other_id = (await other.result("session.create"))["session_id"]
    own_id = (await bound.result("session.info"))["session_id"]
    tone_id = (await bound.result("endpoint.create_tone", {"tone": "beep"}))["endpoint_id"]
    cases = [
        ({"endpoint_id": tone_id}, "INVALID_PARAMS"),
        ({"endpoint_id": tone_id, "target_session_id": "x"}, "INVALID_PARAMS"),
        ({"endpoint_id": tone_id, "target_session_id": own_id}, "INVALID_PARAMS"),
        ({"endpoint_id": tone_id, "target_session_id": UNKNOWN_ID}, "SESSION_NOT_FOUND"),
        ({"endpoint_id": UNKNOWN_ID, "target_session_id": other_id}, "ENDPOINT_ERROR"),
        ({"endpoint_id": tone_id, "target_session_id": other_id}, "ENDPOINT_ERROR"),
    ]
    for params, code in cases:
        assert (await bound.error("endpoint.transfer", params))["code"] == code, params


async def test_full_target_is_transfer_failed(start_server: StartServer) -> None:
    server = await start_server(max_endpoints_per_session=1)
    source, target = await server.connect(), await server.connect()
    await source.result("session.create")
    target_id = (await target.result("session.create"))["session_id"]
    await target.result("endpoint.create_tone", {"tone": "beep"})
    endpoint_id = (await source.result("endpoint.create_from_offer", {"sdp": RTP_OFFER}))[
        "endpoint_id"
    ]
    error = await source.error(
        "endpoint.transfer", {"endpoint_id": endpoint_id, "target_session_id": target_id}
    )
    assert error["code"] == "TRANSFER_FAILED"
    [still] = (await source.result("session.info"))["endpoints"]
    assert still["endpoint_id"] == endpoint_id
