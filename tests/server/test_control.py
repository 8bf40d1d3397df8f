"""Black-box tests of the control WebSocket: a real server, real engine, real sockets."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import uuid
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.server.control import shutdown_control
from callbridge.server.control_messages import ErrorResponse, Request, parse_request

if TYPE_CHECKING:
    from tests.server.conftest import ControlClient, ServerHandle, StartServer

UNKNOWN_ID = "6f1c3e0a-1b2c-4d5e-8f90-0123456789ab"

RTP_OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n"
)
RTP_ANSWER = RTP_OFFER.replace("40000", "40002")

SESSION_BOUND_METHODS = [
    "session.destroy",
    "session.info",
    "session.bridge",
    "endpoint.create_from_offer",
    "endpoint.create_offer",
    "endpoint.accept_answer",
    "endpoint.create_with_file",
    "endpoint.create_tone",
    "endpoint.remove",
    "endpoint.file.seek",
    "endpoint.file.pause",
    "endpoint.file.resume",
    "endpoint.dtmf.inject",
]


async def wait_for(condition: Callable[[], Awaitable[bool]]) -> None:
    """Poll until `condition` holds: for state the server changes after a socket drops, when
    there is nothing to wait on from outside. The test's own timeout is the only limit."""
    while not await condition():
        await asyncio.sleep(0.01)


def error_of(response: dict[str, Any]) -> tuple[str, str]:
    assert set(response) == {"id", "error"}, response
    return response["error"]["code"], response["id"]


# --- envelope -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "expected_id"),
    [
        ("{not json", ""),
        ('{"id":"a","method":"session.list"', ""),
        ("[1,2]", ""),
        ('"session.list"', ""),
        ("42", ""),
        ("null", ""),
        ('{"id":7,"method":"session.list"}', ""),
        ('{"id":null,"method":"session.list"}', ""),
        ('{"method":"session.list"}', ""),
        ('{"id":"keep-me"}', "keep-me"),
        ('{"id":"keep-me","method":5}', "keep-me"),
        ("", ""),
    ],
)
async def test_malformed_envelopes_are_parse_errors(
    client: ControlClient, frame: str, expected_id: str
) -> None:
    await client.send_raw(frame)
    assert error_of(await client.response()) == ("PARSE_ERROR", expected_id)


async def test_empty_id_is_invalid_request(client: ControlClient) -> None:
    await client.send_raw('{"id":"","method":"session.list"}')
    assert error_of(await client.response()) == ("INVALID_REQUEST", "")


async def test_oversized_id_is_invalid_params_and_truncated_on_a_character(
    client: ControlClient,
) -> None:
    long_id = "é" * 600  # 1200 bytes; 1024 bytes is 512 whole characters
    await client.send_raw(f'{{"id":"{long_id}","method":"session.list"}}')
    response = await client.response()
    assert error_of(response) == ("INVALID_PARAMS", "é" * 512)
    assert response["error"]["message"] == "request id exceeds maximum length of 1024"

    await client.send_raw(f'{{"id":"{"x" * 1025}","method":"session.list"}}')
    assert error_of(await client.response()) == ("INVALID_PARAMS", "x" * 1024)


async def test_id_of_exactly_1024_bytes_is_served(client: ControlClient) -> None:
    response = await client.call("session.list", request_id="y" * 1024)
    assert response["result"] == {"sessions": []}


async def test_id_over_the_limit_with_missing_method_is_not_echoed(client: ControlClient) -> None:
    await client.send_raw(f'{{"id":"{"x" * 1025}"}}')
    assert error_of(await client.response()) == ("PARSE_ERROR", "")


async def test_unknown_method(client: ControlClient) -> None:
    response = await client.call("session.explode", {})
    assert error_of(response) == ("UNKNOWN_METHOD", response["id"])


async def test_unknown_fields_are_ignored(client: ControlClient) -> None:
    await client.send_raw('{"id":"u","method":"session.create","params":{"x":1},"extra":[1]}')
    response = await client.response()
    assert set(response) == {"id", "result"}
    session_id = response["result"]["session_id"]
    assert str(uuid.UUID(session_id)) == session_id
    result = await client.result("endpoint.create_tone", {"tone": "beep", "volume": 3})
    assert result["tone"] == "beep"


async def test_params_absent_or_null(client: ControlClient) -> None:
    assert "result" in await client.call("session.create")  # ignores params
    assert "result" in await client.call("session.info", None)
    assert (await client.error("session.bridge"))["code"] == "INVALID_PARAMS"
    assert (await client.error("session.bridge", None))["code"] == "INVALID_PARAMS"
    await client.result("session.destroy", None)
    assert (await client.error("session.attach"))["code"] == "INVALID_PARAMS"


@pytest.mark.parametrize("depth", [100, 100_000])
async def test_deeply_nested_json_does_not_crash(client: ControlClient, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    await client.send_raw(f'{{"id":"deep","method":"session.attach","params":{nested}}}')
    response = await client.response()
    assert response["error"]["code"] in {"PARSE_ERROR", "INVALID_PARAMS"}
    await client.send_raw(f'{{"id":"deep2","method":"session.list","params":{nested}}}')
    response = await client.response()
    assert "result" in response or response["error"]["code"] == "PARSE_ERROR"
    assert await client.result("session.list") == {"sessions": []}


async def test_fifty_malformed_messages_then_a_valid_request(client: ControlClient) -> None:
    for index in range(50):
        await client.send_raw(["{", "[]", '{"id":1}', "", "\x00"][index % 5])
    for _ in range(50):
        assert (await client.response())["error"]["code"] == "PARSE_ERROR"
    assert "session_id" in await client.result("session.create")


async def test_binary_frames_are_ignored(client: ControlClient) -> None:
    await client.websocket.send_bytes(b'{"id":"b","method":"session.create"}')
    assert await client.result("session.list") == {"sessions": []}


# --- session binding ------------------------------------------------------------------------


@pytest.mark.parametrize("method", SESSION_BOUND_METHODS)
async def test_no_session_comes_before_params(client: ControlClient, method: str) -> None:
    for params in (client.ABSENT, None, {"endpoint_id": "garbage", "sdp": 5}):
        error = await client.error(method, params)
        assert error == {
            "code": "NO_SESSION",
            "message": "No session bound. Call session.create or session.attach first.",
        }


async def test_create_twice_is_already_bound(bound: ControlClient) -> None:
    assert (await bound.error("session.create"))["code"] == "SESSION_ALREADY_BOUND"


async def test_attach_errors_in_order(server: ServerHandle, bound: ControlClient) -> None:
    session_id = (await bound.result("session.info"))["session_id"]
    # Already bound wins over bad params.
    assert (await bound.error("session.attach", {"session_id": "nope"}))[
        "code"
    ] == "SESSION_ALREADY_BOUND"
    other = await server.connect()
    for params in ({}, {"session_id": "nope"}, {"session_id": 5}, None):
        assert (await other.error("session.attach", params))["code"] == "INVALID_PARAMS"
    assert (await other.error("session.attach", {"session_id": UNKNOWN_ID}))[
        "code"
    ] == "SESSION_NOT_FOUND"
    assert (await other.error("session.attach", {"session_id": session_id}))[
        "code"
    ] == "SESSION_NOT_ORPHANED"


async def test_destroy_then_create_again(bound: ControlClient) -> None:
    first = (await bound.result("session.info"))["session_id"]
    assert await bound.result("session.destroy") == {}
    assert (await bound.error("session.info"))["code"] == "NO_SESSION"
    assert (await bound.error("session.destroy"))["code"] == "NO_SESSION"
    second = (await bound.result("session.create"))["session_id"]
    assert second != first


async def test_session_list_covers_all_connections(server: ServerHandle) -> None:
    first, second, observer = [await server.connect() for _ in range(3)]
    a = (await first.result("session.create"))["session_id"]
    b = (await second.result("session.create"))["session_id"]
    sessions = (await observer.result("session.list"))["sessions"]
    assert {session["session_id"] for session in sessions} == {a, b}
    for session in sessions:
        assert set(session) == {"session_id", "state", "endpoint_count", "created_at"}
        assert session["state"] == "active"
        assert session["endpoint_count"] == 0


async def test_dead_session_is_gone_until_destroyed(start_server: StartServer) -> None:
    server = await start_server(empty_session_timeout_secs=0.1)
    client = await server.connect()
    session_id = (await client.result("session.create"))["session_id"]
    timeout = await client.next_event("session.empty_timeout")
    assert timeout["session_id"] == session_id

    async def gone() -> bool:
        return (await client.error("session.info"))["code"] == "SESSION_GONE"

    await wait_for(gone)
    assert (await client.error("endpoint.remove", {"endpoint_id": UNKNOWN_ID}))[
        "code"
    ] == "SESSION_GONE"
    # Bad params still say so first.
    assert (await client.error("endpoint.remove", {}))["code"] == "INVALID_PARAMS"
    assert (await client.error("session.create"))["code"] == "SESSION_ALREADY_BOUND"
    assert (await client.error("session.destroy"))["code"] == "SESSION_NOT_FOUND"
    assert (await client.error("session.info"))["code"] == "NO_SESSION"
    assert "session_id" in await client.result("session.create")


async def test_max_sessions_is_exact_under_concurrency(start_server: StartServer) -> None:
    server = await start_server(max_sessions=5)
    clients = [await server.connect() for _ in range(10)]
    responses = await asyncio.gather(*(client.call("session.create") for client in clients))
    created = [response for response in responses if "result" in response]
    refused = [response["error"]["code"] for response in responses if "error" in response]
    assert len(created) == 5
    assert refused == ["MAX_SESSIONS_REACHED"] * 5
    assert len(await server.session_states()) == 5


async def test_max_connections(start_server: StartServer) -> None:
    server = await start_server(max_connections=2)
    first = await server.connect()
    await server.connect()
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await server.connect()
    assert refused.value.status == 503
    await first.close()

    async def accepted() -> bool:
        return len(server.control.connections) < 2

    await wait_for(accepted)
    await (await server.connect()).result("session.list")


async def test_shutdown_refuses_sessions_while_connections_keep_working(
    start_server: StartServer,
) -> None:
    server = await start_server(shutdown_max_wait_secs=60)
    idle = await server.connect()
    busy = await server.connect()
    await busy.result("session.create")
    shutdown = asyncio.create_task(shutdown_control(server.app))

    async def draining() -> bool:
        return server.manager.shutting_down

    await wait_for(draining)
    assert (await idle.error("session.create"))["code"] == "SHUTTING_DOWN"
    assert (await busy.result("session.info"))["state"] == "active"
    await busy.result("session.destroy")
    await shutdown  # the drain ends once no session is left
    closing = await idle.websocket.receive(timeout=10)
    assert closing.type is aiohttp.WSMsgType.CLOSE
    assert closing.data == aiohttp.WSCloseCode.GOING_AWAY


# --- orphaning ------------------------------------------------------------------------------


async def test_orphan_and_reattach_keeps_endpoints(server: ServerHandle) -> None:
    first = await server.connect()
    session_id = (await first.result("session.create"))["session_id"]
    tone = (await first.result("endpoint.create_tone", {"tone": "ringing"}))["endpoint_id"]
    rtp = (await first.result("endpoint.create_from_offer", {"sdp": RTP_OFFER}))["endpoint_id"]
    await first.close()  # the server orphans the session before it answers the close
    assert (await server.session_states())[session_id] == "orphaned"

    second = await server.connect()
    assert await second.result("session.attach", {"session_id": session_id}) == {}
    info = await second.result("session.info")
    assert info["state"] == "active"
    states = {endpoint["endpoint_id"]: endpoint["state"] for endpoint in info["endpoints"]}
    assert states == {tone: "playing", rtp: "connected"}


class UdpPeer(asyncio.DatagramProtocol):
    """The remote side of an RTP endpoint: a real UDP socket that keeps what it receives."""

    def __init__(self) -> None:
        self.packets: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.packets.put_nowait(data)

    async def fresh_packet(self) -> bytes:
        """A packet that arrives from now on."""
        while not self.packets.empty():
            self.packets.get_nowait()
        return await asyncio.wait_for(self.packets.get(), 10)


async def test_media_flows_while_orphaned_and_after_reattach(server: ServerHandle) -> None:
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(UdpPeer, local_addr=("127.0.0.1", 0))
    try:
        peer_port = transport.get_extra_info("sockname")[1]
        first = await server.connect()
        session_id = (await first.result("session.create"))["session_id"]
        offer = RTP_OFFER.replace("40000", str(peer_port))
        answer = (await first.result("endpoint.create_from_offer", {"sdp": offer}))["sdp_answer"]
        assert re.search(r"m=audio (\d+)", answer) is not None
        await first.result("endpoint.create_tone", {"tone": "ringing"})
        # The endpoint sends to the offer's address at once: the peer never has to send first.
        assert (await peer.fresh_packet())[1] & 0x7F == 0  # PCMU

        await first.close()
        assert (await server.session_states())[session_id] == "orphaned"
        await peer.fresh_packet()

        second = await server.connect()
        await second.result("session.attach", {"session_id": session_id})
        await peer.fresh_packet()
        assert len((await second.result("session.info"))["endpoints"]) == 2
    finally:
        transport.close()


async def test_rapid_close_attach_cycles_leave_one_active_session(server: ServerHandle) -> None:
    client = await server.connect()
    session_id = (await client.result("session.create"))["session_id"]
    for _ in range(5):
        await client.close()
        client = await server.connect()
        await client.result("session.attach", {"session_id": session_id})
    assert await server.session_states() == {session_id: "active"}


async def test_orphan_notice_is_sent_on_the_closing_socket(server: ServerHandle) -> None:
    raw = await server.open_raw()
    await raw.send_text('{"id":"c","method":"session.create"}')
    await raw.read_until(b'"session_id"')
    await raw.send_close()
    rest = await raw.read_until_eof()
    assert b'{"event":"session.orphaned","data":{"timeout_remaining_ms":30000}}' in rest
    assert list((await server.session_states()).values()) == ["orphaned"]


async def test_abrupt_disconnect_mid_request_orphans_the_session(server: ServerHandle) -> None:
    raw = await server.open_raw()
    await raw.send_text('{"id":"c","method":"session.create"}')
    raw.abort()

    async def orphaned() -> bool:
        return list((await server.session_states()).values()) == ["orphaned"]

    await wait_for(orphaned)
    (session_id,) = await server.session_states()
    client = await server.connect()
    await client.result("session.attach", {"session_id": session_id})


@pytest.mark.parametrize("moment", ["upgrade sent", "upgraded", "pings sent", "session bound"])
async def test_connection_reset_leaves_no_traceback(
    server: ServerHandle, caplog: pytest.LogCaptureFixture, moment: str
) -> None:
    caplog.set_level(logging.DEBUG)
    attempts = 20  # the reset lands at a slightly different point of the server's work each time
    for _ in range(attempts):
        raw = await server.open_raw(await_upgrade=moment != "upgrade sent")
        if moment == "pings sent":
            for _ in range(20):
                await raw.send_ping()
        if moment == "session bound":
            await raw.send_text('{"id":"c","method":"session.create"}')
            await raw.read_until(b'"session_id"')
            await raw.send_ping()
        raw.reset()

    async def all_closed() -> bool:
        return not server.control.connections

    await wait_for(all_closed)
    client = await server.connect()
    await client.result("session.list")
    loud = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert not loud, [record.getMessage() for record in loud]
    assert not [record for record in caplog.records if record.exc_info]
    resets = [record for record in caplog.records if "reset" in record.getMessage().lower()]
    assert len(resets) <= attempts


async def test_oversized_frame_closes_the_connection_and_orphans(
    start_server: StartServer,
) -> None:
    server = await start_server(ws_max_message_size_kb=1)
    client = await server.connect()
    session_id = (await client.result("session.create"))["session_id"]
    await client.send_raw('{"id":"big","method":"session.info","pad":"' + "x" * 2000 + '"}')
    closing = await client.websocket.receive(timeout=10)
    assert closing.type is aiohttp.WSMsgType.CLOSE
    assert closing.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG

    async def orphaned() -> bool:
        return (await server.session_states()).get(session_id) == "orphaned"

    await wait_for(orphaned)
    other = await server.connect()
    await other.result("session.attach", {"session_id": session_id})


# --- params ---------------------------------------------------------------------------------

INVALID_PARAMS_CASES: list[tuple[str, Any, str]] = [
    ("session.bridge", {}, "target_session_id"),
    ("session.bridge", {"target_session_id": "nope"}, "Invalid UUID"),
    ("session.bridge", {"target_session_id": UNKNOWN_ID, "direction": "both"}, "direction"),
    ("endpoint.create_from_offer", {}, "sdp"),
    ("endpoint.create_from_offer", {"sdp": 5}, "params.sdp"),
    ("endpoint.create_from_offer", {"sdp": "v=0", "direction": "inactive"}, "enum"),
    ("endpoint.create_offer", {}, "type"),
    ("endpoint.create_offer", {"type": "sip"}, "enum"),
    ("endpoint.create_offer", {"type": "rtp", "srtp": "yes"}, "params.srtp"),
    ("endpoint.create_offer", {"type": "rtp", "codecs": "PCMU"}, "params.codecs"),
    ("endpoint.accept_answer", {"endpoint_id": "nope", "sdp": "v=0"}, "Invalid UUID"),
    ("endpoint.accept_answer", {"endpoint_id": UNKNOWN_ID}, "sdp"),
    ("endpoint.create_with_file", {}, "source"),
    ("endpoint.create_with_file", {"source": "a.wav", "loop_count": 10001}, "loop_count"),
    ("endpoint.create_with_file", {"source": "a.wav", "loop_count": -1}, "loop_count"),
    ("endpoint.create_with_file", {"source": "a.wav", "timeout_ms": 0}, "timeout_ms"),
    ("endpoint.create_with_file", {"source": "a.wav", "timeout_ms": 60001}, "timeout_ms"),
    ("endpoint.create_with_file", {"source": "a.wav", "cache_ttl_secs": -1}, "cache_ttl"),
    ("endpoint.create_with_file", {"source": "a.wav", "headers": {"a": 1}}, "headers"),
    ("endpoint.create_with_file", {"source": "a.wav", "gain_db": "loud"}, "gain_db"),
    ("endpoint.create_with_file", {"source": "a.wav", "shared": 1}, "shared"),
    ("endpoint.create_tone", {}, "tone"),
    ("endpoint.create_tone", {"tone": "siren"}, "enum"),
    ("endpoint.create_tone", {"tone": "sine", "frequency": 19.5}, "frequency"),
    ("endpoint.create_tone", {"tone": "beep", "frequency": 20001}, "frequency"),
    ("endpoint.create_tone", {"tone": "beep", "duration_ms": -5}, "duration_ms"),
    ("endpoint.remove", {}, "endpoint_id"),
    ("endpoint.remove", {"endpoint_id": 5}, "endpoint_id"),
    ("endpoint.remove", {"endpoint_id": "6f1c3e0a"}, "Invalid UUID"),
    ("endpoint.file.seek", {"endpoint_id": UNKNOWN_ID}, "position_ms"),
    ("endpoint.file.seek", {"endpoint_id": UNKNOWN_ID, "position_ms": -1}, "position_ms"),
    ("endpoint.file.pause", {"endpoint_id": "x"}, "Invalid UUID"),
    ("endpoint.file.resume", [], "object"),
    ("endpoint.dtmf.inject", {"endpoint_id": UNKNOWN_ID}, "digit"),
    ("endpoint.dtmf.inject", {"endpoint_id": UNKNOWN_ID, "digit": "12"}, "exactly one character"),
    ("endpoint.dtmf.inject", {"endpoint_id": UNKNOWN_ID, "digit": ""}, "exactly one character"),
    ("endpoint.dtmf.inject", {"endpoint_id": UNKNOWN_ID, "digit": "x"}, "0-9, *, #, A-D"),
    (
        "endpoint.dtmf.inject",
        {"endpoint_id": UNKNOWN_ID, "digit": "1", "duration_ms": 0},
        "duration_ms",
    ),
    (
        "endpoint.dtmf.inject",
        {"endpoint_id": UNKNOWN_ID, "digit": "1", "duration_ms": 10001},
        "duration_ms",
    ),
    ("endpoint.dtmf.inject", {"endpoint_id": UNKNOWN_ID, "digit": "1", "volume": 64}, "volume"),
]


@pytest.mark.parametrize(("method", "params", "mentions"), INVALID_PARAMS_CASES)
async def test_invalid_params(
    bound: ControlClient, method: str, params: Any, mentions: str
) -> None:
    error = await bound.error(method, params)
    assert error["code"] == "INVALID_PARAMS"
    assert mentions in error["message"]


async def test_self_bridge_is_invalid_params(bound: ControlClient) -> None:
    session_id = (await bound.result("session.info"))["session_id"]
    error = await bound.error("session.bridge", {"target_session_id": session_id})
    assert error["code"] == "INVALID_PARAMS"


async def test_sdp_size_limit(start_server: StartServer) -> None:
    server = await start_server(max_sdp_size_kb=1)
    client = await server.connect()
    await client.result("session.create")
    too_large = RTP_OFFER + "a=x-pad:" + "p" * 1024 + "\r\n"
    for method, params in (
        ("endpoint.create_from_offer", {"sdp": too_large}),
        ("endpoint.accept_answer", {"endpoint_id": UNKNOWN_ID, "sdp": too_large}),
    ):
        assert await client.error(method, params) == {
            "code": "INVALID_PARAMS",
            "message": "SDP too large",
        }
    assert (await client.result("session.info"))["endpoints"] == []
    await client.result("endpoint.create_from_offer", {"sdp": RTP_OFFER})


# --- methods through the engine -------------------------------------------------------------


async def test_rtp_offer_answer_and_events_follow_the_response(bound: ControlClient) -> None:
    created = await bound.result("endpoint.create_offer", {"type": "rtp", "codecs": ["pcmu"]})
    assert set(created) == {"endpoint_id", "sdp_offer"}
    assert "m=audio" in created["sdp_offer"]
    endpoint_id = created["endpoint_id"]
    assert (
        await bound.result(
            "endpoint.accept_answer", {"endpoint_id": endpoint_id, "sdp": RTP_ANSWER}
        )
        == {}
    )
    assert bound.events == []  # nothing before the response
    assert await bound.receive() == {
        "event": "endpoint.state_changed",
        "data": {"endpoint_id": endpoint_id, "old_state": "connecting", "new_state": "connected"},
    }


async def test_create_from_offer_and_info(bound: ControlClient) -> None:
    created = await bound.result("endpoint.create_from_offer", {"sdp": RTP_OFFER})
    assert set(created) == {"endpoint_id", "sdp_answer"}
    info = await bound.result("session.info")
    assert set(info) >= {"session_id", "state", "created_at", "endpoints"}
    (endpoint,) = info["endpoints"]
    assert endpoint["endpoint_id"] == created["endpoint_id"]
    assert endpoint["endpoint_type"] == "rtp"
    assert endpoint["direction"] == "sendrecv"
    assert endpoint["state"] == "connected"


async def test_endpoint_errors_are_translated(bound: ControlClient) -> None:
    for method, params in (
        ("endpoint.remove", {"endpoint_id": UNKNOWN_ID}),
        ("endpoint.accept_answer", {"endpoint_id": UNKNOWN_ID, "sdp": "garbage"}),
        ("endpoint.create_with_file", {"source": "anything.wav"}),  # no media_dir
        ("endpoint.file.pause", {"endpoint_id": UNKNOWN_ID}),
    ):
        assert (await bound.error(method, params))["code"] == "ENDPOINT_ERROR"
    tone = (await bound.result("endpoint.create_tone", {"tone": "busy"}))["endpoint_id"]
    assert (await bound.error("endpoint.file.seek", {"endpoint_id": tone, "position_ms": 0}))[
        "code"
    ] == "ENDPOINT_ERROR"
    dtmf = {"endpoint_id": tone, "digit": "5"}
    assert (await bound.error("endpoint.dtmf.inject", dtmf))["code"] == "ENDPOINT_ERROR"
    assert await bound.result("endpoint.remove", {"endpoint_id": tone}) == {}
    assert (await bound.error("endpoint.remove", {"endpoint_id": tone}))["code"] == "ENDPOINT_ERROR"


async def test_endpoint_limit(start_server: StartServer) -> None:
    server = await start_server(max_endpoints_per_session=1)
    client = await server.connect()
    await client.result("session.create")
    await client.result("endpoint.create_tone", {"tone": "beep"})
    assert (await client.error("endpoint.create_tone", {"tone": "beep"}))[
        "code"
    ] == "ENDPOINT_ERROR"


async def test_tone_result_and_finished_event(bound: ControlClient) -> None:
    result = await bound.result(
        "endpoint.create_tone", {"tone": "sine", "frequency": 1000, "duration_ms": 40}
    )
    assert result["tone"] == "sine"
    finished = await bound.next_event("endpoint.tone.finished")
    assert finished == {"endpoint_id": result["endpoint_id"]}


async def test_dtmf_inject_on_rtp_endpoint(bound: ControlClient) -> None:
    endpoint = (await bound.result("endpoint.create_from_offer", {"sdp": RTP_OFFER}))["endpoint_id"]
    params = {"endpoint_id": endpoint, "digit": "a", "duration_ms": 40}
    assert await bound.result("endpoint.dtmf.inject", params) == {}


async def test_bridge_between_sessions(server: ServerHandle, bound: ControlClient) -> None:
    other = await server.connect()
    target = (await other.result("session.create"))["session_id"]
    assert (await bound.error("session.bridge", {"target_session_id": UNKNOWN_ID}))[
        "code"
    ] == "SESSION_NOT_FOUND"
    result = await bound.result(
        "session.bridge", {"target_session_id": target, "direction": "sendonly"}
    )
    assert set(result) == {"endpoint_id", "target_endpoint_id"}
    (mine,) = (await bound.result("session.info"))["endpoints"]
    (theirs,) = (await other.result("session.info"))["endpoints"]
    assert (mine["endpoint_id"], mine["endpoint_type"]) == (result["endpoint_id"], "bridge")
    assert theirs["endpoint_id"] == result["target_endpoint_id"]


def write_wav(path: Path, duration_ms: int) -> None:
    frames = 8 * duration_ms
    samples = bytearray()
    for index in range(frames):
        value = int(8000 * math.sin(2 * math.pi * 440 * index / 8000))
        samples += value.to_bytes(2, "little", signed=True)
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(bytes(samples))


async def test_file_playback_controls(start_server: StartServer, tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    write_wav(media / "long.wav", 5000)
    write_wav(media / "short.wav", 60)
    server = await start_server(media_dir=media)
    client = await server.connect()
    await client.result("session.create")
    endpoint = (await client.result("endpoint.create_with_file", {"source": "long.wav"}))[
        "endpoint_id"
    ]
    assert await client.result("endpoint.file.pause", {"endpoint_id": endpoint}) == {}
    assert await client.receive() == {
        "event": "endpoint.state_changed",
        "data": {"endpoint_id": endpoint, "old_state": "playing", "new_state": "paused"},
    }
    seek = {"endpoint_id": endpoint, "position_ms": 1000}
    assert await client.result("endpoint.file.seek", seek) == {}
    assert await client.result("endpoint.file.resume", {"endpoint_id": endpoint}) == {}
    assert (await client.next_event("endpoint.state_changed"))["new_state"] == "playing"

    looping = {"source": "short.wav", "loop_count": None, "gain_db": -6, "start_ms": 0}
    await client.result("endpoint.create_with_file", looping)
    once = (await client.result("endpoint.create_with_file", {"source": "short.wav"}))[
        "endpoint_id"
    ]
    finished = await client.next_event("endpoint.file.finished")
    assert finished == {"endpoint_id": once, "reason": "completed"}


# --- events ---------------------------------------------------------------------------------


async def test_events_dropped_when_queues_are_full(start_server: StartServer) -> None:
    server = await start_server(event_channel_size=1, critical_event_channel_size=1)
    client = await server.connect()
    await client.result("session.list")
    (connection,) = server.control.connections
    # No await in between: the engine's events all land before the writer can run.
    connection.emit("endpoint.state_changed", {"n": 1}, True)
    connection.emit("endpoint.file.finished", {"n": 2}, True)  # critical full: normal queue
    connection.emit("dtmf", {"n": 3}, False)
    connection.emit("dtmf", {"n": 4}, False)
    connection.emit("recording.stopped", {"n": 5}, True)
    assert [await client.receive() for _ in range(3)] == [
        {"event": "events.dropped", "data": {"count": 3}},
        {"event": "endpoint.state_changed", "data": {"n": 1}},
        {"event": "endpoint.file.finished", "data": {"n": 2}},
    ]
    connection.emit("dtmf", {"n": 6}, False)
    assert await client.receive() == {"event": "dtmf", "data": {"n": 6}}
    async with server.http.get(f"{server.base_url}/metrics") as response:
        assert "callbridge_events_dropped_total 3.0" in await response.text()


async def test_critical_events_overtake_normal_ones(
    client: ControlClient, server: ServerHandle
) -> None:
    await client.result("session.list")
    (connection,) = server.control.connections
    connection.emit("dtmf", {"digit": "1"}, False)
    connection.emit("session.idle_timeout", {"session_id": "s"}, True)
    assert [(await client.receive())["event"] for _ in range(2)] == [
        "session.idle_timeout",
        "dtmf",
    ]


async def test_events_after_close_are_ignored(server: ServerHandle) -> None:
    client = await server.connect()
    await client.result("session.list")
    (connection,) = server.control.connections
    await client.close()
    connection.emit("dtmf", {"digit": "1"}, False)
    assert connection.dropped == 0


# --- keepalive and logging ------------------------------------------------------------------


async def test_server_pings(start_server: StartServer) -> None:
    server = await start_server(ws_ping_interval_secs=0.05)
    async with server.http.ws_connect(f"{server.base_url}/", autoping=False) as websocket:
        message = await websocket.receive(timeout=10)
        assert message.type is aiohttp.WSMsgType.PING
        await websocket.pong(message.data)


async def test_logging_names_connections_and_sessions_but_not_sdp(
    server: ServerHandle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="callbridge.server")
    client = await server.connect()
    session_id = (await client.result("session.create"))["session_id"]
    await client.result("endpoint.create_from_offer", {"sdp": RTP_OFFER})
    await client.result("session.destroy")
    await client.close()
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "opened from" in text
    assert f"session {session_id} created" in text
    assert f"session {session_id} destroyed" in text
    assert "closed" in text
    assert "m=audio" not in text


# --- the envelope parser, property-based ----------------------------------------------------

json_text = st.text(st.characters(exclude_categories=["Cs"]))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | json_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(json_text, children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.text())
def test_any_frame_gets_a_request_or_an_error(frame: str) -> None:
    assert isinstance(parse_request(frame), Request | ErrorResponse)


@given(request_id=json_text, method=json_text, params=json_values, extra=json_values)
def test_well_formed_requests_parse(
    request_id: str, method: str, params: object, extra: object
) -> None:
    frame = msgspec.json.encode(
        {"id": request_id, "method": method, "params": params, "other": extra}
    ).decode()
    parsed = parse_request(frame)
    size = len(request_id.encode())
    if size == 0:
        assert isinstance(parsed, ErrorResponse)
        assert (parsed.id, parsed.error.code) == ("", "INVALID_REQUEST")
    elif size > 1024:
        assert isinstance(parsed, ErrorResponse)
        assert parsed.error.code == "INVALID_PARAMS"
        assert request_id.startswith(parsed.id)
        assert 1021 <= len(parsed.id.encode()) <= 1024
    else:
        assert isinstance(parsed, Request)
        assert (parsed.id, parsed.method) == (request_id, method)
        assert msgspec.json.decode(parsed.params) == params
