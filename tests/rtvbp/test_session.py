"""The asyncio session runtime against a peer that speaks the classic.v1 codec directly."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from callbridge.rtvbp import babelforce_v1
from callbridge.rtvbp.catalog import Role, decode_payload
from callbridge.rtvbp.envelope import (
    ABSENT,
    ErrorBody,
    Event,
    Frame,
    Payload,
    Request,
    Response,
    decode_frame,
    encode_frame,
)
from callbridge.rtvbp.errors import RemoteError, RequestTimeoutError, RtvbpError, SessionClosedError
from callbridge.rtvbp.memory import MemoryTransport
from callbridge.rtvbp.session import (
    AUDIO_BACKLOG_FRAMES,
    NO_REPLY_MESSAGE,
    IncomingRequest,
    RtvbpSession,
)
from callbridge.rtvbp.transport_base import MessageKind, TransportMessage

CATALOG = babelforce_v1.CATALOG
TERMINATE_REJECTION = (
    "session.terminate is not supported. please use application.move or call.hangup instead"
)
GUARD_S = 2.0
"""Hang guard for awaiting the other side; never a pass/fail timing."""


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    before = asyncio.all_tasks()
    yield
    leaked = asyncio.all_tasks() - before - {asyncio.current_task()}
    assert not leaked, f"tasks left running: {leaked}"


def result(method: str, raw: str) -> Any:
    return decode_payload(CATALOG.operations[method].result_type, raw.encode())


def params(method: str, raw: str) -> Any:
    return decode_payload(CATALOG.operations[method].params_type, raw.encode())


def parsed(raw: Payload) -> Any:
    assert isinstance(raw, bytes), "payload is absent"
    return json.loads(raw)


class Peer:
    """The far end, driven by the test with the envelope codec."""

    def __init__(self, transport: MemoryTransport) -> None:
        self.transport = transport

    async def send(self, frame: Frame) -> None:
        await self.transport.send_text(encode_frame(frame))

    async def request(self, request_id: str, method: str, raw_params: str | None = None) -> None:
        payload: Payload = ABSENT if raw_params is None else raw_params.encode()
        await self.send(Request(request_id, method, payload))

    async def message(self) -> TransportMessage:
        return await asyncio.wait_for(self.transport.receive(), GUARD_S)

    async def frame(self) -> Frame:
        message = await self.message()
        assert message.kind is MessageKind.TEXT, message
        return decode_frame(message.data)

    async def response(self, request_id: str) -> Response:
        frame = await self.frame()
        assert isinstance(frame, Response), frame
        assert frame.response == request_id
        return frame

    async def error(self, request_id: str) -> ErrorBody:
        response = await self.response(request_id)
        assert response.error is not None, response
        return response.error

    async def incoming_request(self, method: str) -> Request:
        frame = await self.frame()
        assert isinstance(frame, Request), frame
        assert frame.method == method
        return frame


@pytest.fixture
async def pair() -> AsyncIterator[tuple[MemoryTransport, Peer]]:
    local, remote = MemoryTransport.pair()
    yield local, Peer(remote)
    await remote.close()


def make_session(transport: MemoryTransport, role: Role = Role.APPLICATION) -> RtvbpSession:
    return RtvbpSession(role, CATALOG, transport, request_timeout_s=GUARD_S)


async def test_responses_are_correlated_by_id(pair: tuple[MemoryTransport, Peer]) -> None:
    local, peer = pair
    async with make_session(local) as session:
        first = asyncio.create_task(
            session.request("recording.start", params("recording.start", "{}"))
        )
        second = asyncio.create_task(session.request("audio.buffer.clear"))
        first_request = await peer.incoming_request("recording.start")
        second_request = await peer.incoming_request("audio.buffer.clear")
        assert parsed(second_request.params) == {}
        await peer.send(Response(second_request.id, result=b'{"len":320}'))
        await peer.send(Response(first_request.id, result=b'{"id":"recording-1"}'))
        assert (await first).id == "recording-1"
        assert (await second).len == 320


async def test_request_timeout_then_late_response_is_ignored(
    pair: tuple[MemoryTransport, Peer],
) -> None:
    local, peer = pair
    async with make_session(local) as session:
        with pytest.raises(RequestTimeoutError):
            await session.request("audio.buffer.clear", timeout_s=0.2)
        request = await peer.incoming_request("audio.buffer.clear")
        await peer.send(Response(request.id, result=b'{"len":0}'))
        await peer.request("p1", "ping", '{"t0":1}')
        await peer.response("p1")
        assert session.stats.responses_ignored == 1


async def test_error_response_raises_remote_error_with_data(
    pair: tuple[MemoryTransport, Peer],
) -> None:
    local, peer = pair
    async with make_session(local) as session:
        task = asyncio.create_task(
            session.request("recording.stop", params("recording.stop", '{"id":"x"}'))
        )
        request = await peer.incoming_request("recording.stop")
        await peer.send(Response(request.id, error=ErrorBody(500, "not active", b'{"id":"x"}')))
        with pytest.raises(RemoteError) as caught:
            await task
        assert (caught.value.code, caught.value.message, caught.value.data) == (
            500,
            "not active",
            {"id": "x"},
        )


async def test_nested_request_from_event_handler(pair: tuple[MemoryTransport, Peer]) -> None:
    local, peer = pair
    cleared: asyncio.Queue[int] = asyncio.Queue()
    session = make_session(local)

    async def on_dtmf(data: Any) -> None:
        response = await session.request("audio.buffer.clear")
        await cleared.put(response.len)

    session.on_event("dtmf", on_dtmf)
    async with session:
        dtmf = b'{"seq":0,"pressed_at":1,"released_at":2,"digit":"5"}'
        await peer.send(Event("e1", "dtmf", dtmf))
        request = await peer.incoming_request("audio.buffer.clear")
        await peer.send(Response(request.id, result=b'{"len":640}'))
        assert await asyncio.wait_for(cleared.get(), GUARD_S) == 640


async def test_nested_request_from_request_handler(pair: tuple[MemoryTransport, Peer]) -> None:
    local, peer = pair
    session = make_session(local)

    async def initialize(request: IncomingRequest) -> Any:
        variables = await session.request("session.get", params("session.get", '{"keys":[]}'))
        assert variables == {"customer": "Ada"}
        return result("session.initialize", '{"audio_codec":null}')

    session.handle("session.initialize", initialize)

    async with session:
        await peer.request("init", "session.initialize", INITIALIZE_PARAMS)
        nested = await peer.incoming_request("session.get")
        await peer.send(Response(nested.id, result=b'{"customer":"Ada"}'))
        response = await peer.response("init")
        assert parsed(response.result) == {"audio_codec": None}


async def test_deferred_response_does_not_block_the_dispatcher(
    pair: tuple[MemoryTransport, Peer],
) -> None:
    local, peer = pair
    session = make_session(local)
    release = asyncio.Event()
    background: list[asyncio.Task[None]] = []

    async def initialize(request: IncomingRequest) -> None:
        reply = request.defer()

        async def finish() -> None:
            await release.wait()
            await reply.resolve(result("session.initialize", '{"audio_codec":null}'))

        background.append(asyncio.create_task(finish()))

    session.handle("session.initialize", initialize)

    async with session:
        await peer.request("init", "session.initialize", INITIALIZE_PARAMS)
        await peer.request("p1", "ping", '{"t0":1}')
        assert (await peer.response("p1")).error is None
        release.set()
        response = await peer.response("init")
        assert parsed(response.result) == {"audio_codec": None}
        await background[0]


async def test_deferred_reject_and_double_answer(pair: tuple[MemoryTransport, Peer]) -> None:
    local, peer = pair
    session = make_session(local)
    outcome: asyncio.Queue[BaseException | None] = asyncio.Queue()

    async def initialize(request: IncomingRequest) -> None:
        reply = request.defer()
        await reply.reject(409, "busy", {"retry": True})
        try:
            await reply.resolve(result("session.initialize", '{"audio_codec":null}'))
        except RtvbpError as error:
            await outcome.put(error)
        else:
            await outcome.put(None)

    session.handle("session.initialize", initialize)

    async with session:
        await peer.request("init", "session.initialize", INITIALIZE_PARAMS)
        error = await peer.error("init")
        assert (error.code, error.message, parsed(error.data)) == (409, "busy", {"retry": True})
        assert isinstance(await outcome.get(), RtvbpError)


@pytest.mark.parametrize("method", ["no.such.method", "call.hangup", "session.get"])
async def test_unknown_or_wrong_direction_method_is_501(
    pair: tuple[MemoryTransport, Peer], method: str
) -> None:
    local, peer = pair
    async with make_session(local, Role.APPLICATION):
        await peer.request("r1", method, '{"reason":"x"}')
        error = await peer.error("r1")
        assert (error.code, error.message) == (501, f"unknown method: {method}")


async def test_wrong_direction_method_with_a_handler_is_served(
    pair: tuple[MemoryTransport, Peer],
) -> None:
    local, peer = pair
    session = make_session(local, Role.APPLICATION)

    async def start_recording(request: IncomingRequest) -> Any:
        return result("recording.start", '{"id":"r-9"}')

    session.handle("recording.start", start_recording)

    async with session:
        await peer.request("r1", "recording.start", "{}")
        assert parsed((await peer.response("r1")).result) == {"id": "r-9"}


@pytest.mark.parametrize(
    ("method", "raw_params"),
    [
        ("ping", '{"t0":0}'),
        ("ping", None),
        ("ping", '{"t0":"soon"}'),
        ("call.hangup", '{"reason":""}'),
        ("call.hangup", "[1,2]"),
    ],
)
async def test_invalid_params_are_400(
    pair: tuple[MemoryTransport, Peer], method: str, raw_params: str | None
) -> None:
    local, peer = pair
    session = make_session(local, Role.VOICE)

    async def hangup(request: IncomingRequest) -> Any:
        raise AssertionError("must not be called with invalid params")

    session.handle("call.hangup", hangup)

    async with session:
        await peer.request("r1", method, raw_params)
        error = await peer.error("r1")
        assert error.code == 400
        assert error.message
        assert not session.closed


async def test_handler_failures_are_500_and_remote_errors_pass_through(
    pair: tuple[MemoryTransport, Peer],
) -> None:
    local, peer = pair
    session = make_session(local, Role.VOICE)

    async def stop(request: IncomingRequest) -> Any:
        raise ValueError(f"recording {request.params.id!r} is not active")

    session.handle("recording.stop", stop)

    async def start(request: IncomingRequest) -> Any:
        raise RemoteError(403, "recording not allowed", {"consent": False})

    session.handle("recording.start", start)

    async def set_variables(request: IncomingRequest) -> None:
        return None

    session.handle("session.set", set_variables)

    async with session:
        await peer.request("stop", "recording.stop", '{"id":"x"}')
        await peer.request("start", "recording.start", "{}")
        await peer.request("set", "session.set", '{"data":{"a":1}}')
        stop_error = await peer.error("stop")
        start_error = await peer.error("start")
        set_error = await peer.error("set")
        assert (stop_error.code, stop_error.message) == (500, "recording 'x' is not active")
        assert (start_error.code, start_error.message) == (403, "recording not allowed")
        assert parsed(start_error.data) == {"consent": False}
        assert (set_error.code, set_error.message) == (500, NO_REPLY_MESSAGE)


async def test_terminal_success_responds_then_closes_1000(
    pair: tuple[MemoryTransport, Peer],
) -> None:
    local, peer = pair
    session = make_session(local, Role.APPLICATION)

    async def terminate(request: IncomingRequest) -> Any:
        return result("session.terminate", "{}")

    session.handle("session.terminate", terminate)

    async with session:
        await peer.request("t1", "session.terminate", '{"reason":"hangup"}')
        assert parsed((await peer.response("t1")).result) == {}
        close = await peer.message()
        assert (close.kind, close.close_code, close.close_reason) == (
            MessageKind.CLOSE,
            1000,
            "Closed",
        )
        info = await session.wait_closed()
        assert (info.code, info.by_peer, info.orderly) == (1000, False, True)


async def test_deferred_terminal_success_closes(pair: tuple[MemoryTransport, Peer]) -> None:
    local, peer = pair
    session = make_session(local, Role.VOICE)
    replies: list[Any] = []

    async def hangup(request: IncomingRequest) -> None:
        replies.append(request.defer())

    session.handle("call.hangup", hangup)

    async with session:
        await peer.request("h1", "call.hangup", '{"reason":"done"}')
        await peer.request("p1", "ping", '{"t0":5}')
        await peer.response("p1")
        await replies[0].resolve(result("call.hangup", "{}"))
        await peer.response("h1")
        assert (await peer.message()).close_code == 1000
        assert (await session.wait_closed()).code == 1000


async def test_terminal_error_does_not_close(pair: tuple[MemoryTransport, Peer]) -> None:
    local, peer = pair
    session = make_session(local, Role.APPLICATION)

    async def terminate(request: IncomingRequest) -> Any:
        raise RemoteError(500, "not now")

    session.handle("session.terminate", terminate)

    async with session:
        await peer.request("t1", "session.terminate", '{"reason":"hangup"}')
        assert (await peer.error("t1")).code == 500
        await peer.request("p1", "ping", '{"t0":5}')
        assert (await peer.response("p1")).error is None
        assert not session.closed


async def test_voice_answers_session_terminate_with_frozen_501(
    pair: tuple[MemoryTransport, Peer],
) -> None:
    local, peer = pair
    session = make_session(local, Role.VOICE)

    async def terminate(request: IncomingRequest) -> Any:
        return result("session.terminate", "{}")

    with pytest.raises(ValueError):
        session.handle("session.terminate", terminate)
    async with session:
        await peer.request("t1", "session.terminate", '{"reason":""}')
        error = await peer.error("t1")
        assert (error.code, error.message) == (501, TERMINATE_REJECTION)
        await peer.request("p1", "ping", '{"t0":5}')
        assert (await peer.response("p1")).error is None
        assert not session.closed


async def test_pending_requests_fail_when_the_peer_closes(
    pair: tuple[MemoryTransport, Peer],
) -> None:
    local, peer = pair
    async with make_session(local) as session:
        task = asyncio.create_task(session.request("audio.buffer.clear"))
        await peer.incoming_request("audio.buffer.clear")
        await peer.transport.close(1001, "going away")
        with pytest.raises(SessionClosedError):
            await task
        info = await session.wait_closed()
        assert (info.code, info.reason, info.by_peer, info.orderly) == (
            1001,
            "going away",
            True,
            True,
        )
        with pytest.raises(SessionClosedError):
            await session.request("audio.buffer.clear")
        with pytest.raises(SessionClosedError):
            await session.notify("input.transcript", None)


async def test_pending_requests_fail_on_local_close(pair: tuple[MemoryTransport, Peer]) -> None:
    local, peer = pair
    session = make_session(local)
    session.start()
    task = asyncio.create_task(session.request("audio.buffer.clear"))
    await peer.incoming_request("audio.buffer.clear")
    await session.close()
    with pytest.raises(SessionClosedError):
        await task
    close = await peer.message()
    assert (close.kind, close.close_code) == (MessageKind.CLOSE, 1000)
    assert session.close_info is not None and not session.close_info.by_peer


@pytest.mark.parametrize(("close_code", "returns"), [(1000, True), (1006, False)])
async def test_terminal_ok_accepts_an_orderly_close_only(
    pair: tuple[MemoryTransport, Peer], close_code: int, returns: bool
) -> None:
    local, peer = pair
    async with make_session(local) as session:
        hangup = params("call.hangup", '{"reason":"bye"}')
        plain = asyncio.create_task(session.request("call.hangup", hangup))
        tolerant = asyncio.create_task(session.request("call.hangup", hangup, terminal_ok=True))
        await peer.incoming_request("call.hangup")
        await peer.incoming_request("call.hangup")
        if close_code == 1000:
            await peer.transport.close()
        else:
            peer.transport.abort()
        with pytest.raises(SessionClosedError):
            await plain
        if returns:
            assert await tolerant is None
        else:
            with pytest.raises(SessionClosedError):
                await tolerant


async def test_duplicate_and_unknown_response_ids_are_ignored(
    pair: tuple[MemoryTransport, Peer],
) -> None:
    local, peer = pair
    async with make_session(local) as session:
        await peer.send(Response("never-sent", result=b"{}"))
        task = asyncio.create_task(session.request("audio.buffer.clear"))
        request = await peer.incoming_request("audio.buffer.clear")
        await peer.send(Response(request.id, result=b'{"len":1}'))
        await peer.send(Response(request.id, result=b'{"len":2}'))
        assert (await task).len == 1
        await peer.request("p1", "ping", '{"t0":5}')
        await peer.response("p1")
        assert session.stats.responses_ignored == 2


async def test_duplicate_incoming_request_ids_are_each_answered(
    pair: tuple[MemoryTransport, Peer],
) -> None:
    local, peer = pair
    async with make_session(local):
        await peer.request("same", "ping", '{"t0":5,"data":1}')
        await peer.request("same", "ping", '{"t0":6,"data":2}')
        first = await peer.response("same")
        second = await peer.response("same")
        assert [parsed(first.result)["data"], parsed(second.result)["data"]] == [1, 2]


@pytest.mark.parametrize(
    "garbage",
    [
        b"{",
        b"",
        b"\xff\xfe\xfd",
        b"[]",
        b'{"version":"2","id":"x","method":"ping","params":{"t0":1}}',
        b'{"version":"1"}',
        b'{"version":"1","id":7,"method":"ping"}',
        b'{"version":"1","response":"x","error":{"code":0,"message":"m"}}',
    ],
)
async def test_undecodable_frames_are_dropped_and_the_session_survives(
    pair: tuple[MemoryTransport, Peer], garbage: bytes
) -> None:
    local, peer = pair
    async with make_session(local) as session:
        await peer.transport.send_text(garbage)
        await peer.request("p1", "ping", '{"t0":5}')
        response = await peer.response("p1")
        assert response.error is None
        assert session.stats.control_messages_dropped == 1
        assert not session.closed


async def test_events_with_invalid_data_are_dropped_unknown_events_ignored(
    pair: tuple[MemoryTransport, Peer],
) -> None:
    local, peer = pair
    session = make_session(local)
    received: list[Any] = []

    async def on_dtmf(data: Any) -> None:
        received.append(data.digit)

    session.on_event("dtmf", on_dtmf)
    async with session:
        await peer.send(
            Event("e1", "dtmf", b'{"seq":-1,"pressed_at":1,"released_at":2,"digit":"1"}')
        )
        await peer.send(Event("e2", "no.such.event", b"{}"))
        await peer.send(
            Event("e3", "dtmf", b'{"seq":1,"pressed_at":1,"released_at":2,"digit":"2"}')
        )
        await peer.request("p1", "ping", '{"t0":5}')
        await peer.response("p1")
        assert received == ["2"]
        assert session.stats.events_dropped == 1


async def test_failing_event_handler_does_not_stop_dispatch(
    pair: tuple[MemoryTransport, Peer],
) -> None:
    local, peer = pair
    session = make_session(local)

    async def on_hangup(data: Any) -> None:
        raise RuntimeError("handler bug")

    session.on_event("call.hangup", on_hangup)
    async with session:
        await peer.send(Event("e1", "call.hangup", b"{}"))
        await peer.request("p1", "ping", '{"t0":5}')
        assert (await peer.response("p1")).error is None


@pytest.mark.parametrize("role", [Role.APPLICATION, Role.VOICE])
async def test_ping_is_answered_first_thing(pair: tuple[MemoryTransport, Peer], role: Role) -> None:
    local, peer = pair
    async with make_session(local, role):
        t0 = 1_700_000_000_000
        await peer.request("p1", "ping", f'{{"t0":{t0},"rtt":42,"data":{{"probe":"x"}}}}')
        pong = parsed((await peer.response("p1")).result)
        assert pong["t0"] == t0
        assert t0 < pong["t1"] <= pong["t2"]
        assert pong["owd"] == pong["t2"] - t0
        assert pong["data"] == {"probe": "x"}
        await peer.request("p2", "ping", f'{{"t0":{t0}}}')
        assert "data" not in parsed((await peer.response("p2")).result)


async def test_user_ping_handler_overrides_the_builtin(pair: tuple[MemoryTransport, Peer]) -> None:
    local, peer = pair
    session = make_session(local)
    canned = '{"t0":1,"t1":2,"t2":3,"owd":4}'

    async def ping(request: IncomingRequest) -> Any:
        return result("ping", canned)

    session.handle("ping", ping)

    async with session:
        await peer.request("p1", "ping", '{"t0":1}')
        assert parsed((await peer.response("p1")).result) == json.loads(canned)


async def test_ping_helper_returns_the_round_trip_time(pair: tuple[MemoryTransport, Peer]) -> None:
    local, peer = pair
    async with make_session(local) as session:
        task = asyncio.create_task(session.ping(rtt_ms=42))
        request = await peer.incoming_request("ping")
        sent = parsed(request.params)
        assert sent["t0"] > 0 and sent["rtt"] == 42
        pong = {"t0": sent["t0"], "t1": sent["t0"], "t2": sent["t0"], "owd": 0}
        await peer.send(Response(request.id, result=json.dumps(pong).encode()))
        assert await task >= 0


async def test_inbound_audio_before_open_is_dropped(pair: tuple[MemoryTransport, Peer]) -> None:
    local, peer = pair
    frames: list[bytes] = []
    async with make_session(local) as session:
        session.on_audio(frames.append)
        await peer.transport.send_binary(bytes(320))
        await peer.transport.send_binary(bytes(320))
        await peer.request("p1", "ping", '{"t0":5}')
        await peer.response("p1")
        session.open_audio(320)
        await peer.transport.send_binary(b"\x01" * 320)
        await peer.request("p2", "ping", '{"t0":5}')
        await peer.response("p2")
        assert frames == [b"\x01" * 320]
        assert session.stats.audio_messages_dropped == 2
        assert (session.stats.audio_frames_in, session.stats.audio_bytes_in) == (1, 320)


async def test_wrong_size_inbound_audio_is_rechunked_without_loss(
    pair: tuple[MemoryTransport, Peer],
) -> None:
    local, peer = pair
    frames: list[bytes] = []
    stream = bytes(range(256)) * 4
    async with make_session(local) as session:
        session.open_audio(320)
        session.on_audio(frames.append)
        for start, end in [(0, 100), (100, 400), (400, 640), (640, 960), (960, 1024)]:
            await peer.transport.send_binary(stream[start:end])
        await peer.request("p1", "ping", '{"t0":5}')
        await peer.response("p1")
        assert [len(frame) for frame in frames] == [320, 320, 320]
        assert b"".join(frames) == stream[:960]
        assert session.stats.audio_messages_resized == 4
        assert session.stats.audio_frames_in == 3


async def test_send_audio_requires_open_and_exact_frames(
    pair: tuple[MemoryTransport, Peer],
) -> None:
    local, peer = pair
    async with make_session(local) as session:
        with pytest.raises(RtvbpError, match="audio is not open"):
            await session.send_audio(bytes(320))
        session.open_audio(320)
        with pytest.raises(ValueError):
            await session.send_audio(bytes(319))
        with pytest.raises(ValueError):
            await session.send_audio(bytes(640))
        await session.send_audio(b"\x02" * 320)
        await session.notify("audio.speech.started", None)
        audio = await peer.message()
        assert (audio.kind, audio.data) == (MessageKind.BINARY, b"\x02" * 320)
        event = await peer.frame()
        assert isinstance(event, Event) and event.event == "audio.speech.started"
        assert (session.stats.audio_frames_out, session.stats.audio_bytes_out) == (1, 320)


async def test_send_audio_nowait_without_a_synchronous_transport(
    pair: tuple[MemoryTransport, Peer],
) -> None:
    """The memory transport only sends awaiting: frames wait for the writer, bounded, in order
    with `send_audio`, and the backlog is sent before our close."""
    local, peer = pair
    async with make_session(local) as session:
        with pytest.raises(RtvbpError, match="audio is not open"):
            session.send_audio_nowait(bytes(320))
        session.open_audio(320)
        with pytest.raises(ValueError):
            session.send_audio_nowait(bytes(319))
        frames = [index.to_bytes(2, "little") * 160 for index in range(AUDIO_BACKLOG_FRAMES + 3)]
        sent = [session.send_audio_nowait(frame) for frame in frames]
        assert sent == [True] * AUDIO_BACKLOG_FRAMES + [False] * 3
        assert session.stats.audio_frames_out_dropped == 3
        await session.send_audio(b"\xff" * 320)  # after the backlog, not before it
        for frame in [*frames[:AUDIO_BACKLOG_FRAMES], b"\xff" * 320]:
            assert (await peer.message()).data == frame
        assert session.send_audio_nowait(b"\x01" * 320)
    assert (await peer.message()).data == b"\x01" * 320
    assert (await peer.message()).kind is MessageKind.CLOSE
    assert session.stats.audio_frames_out == AUDIO_BACKLOG_FRAMES + 2
    with pytest.raises(SessionClosedError):
        session.send_audio_nowait(bytes(320))


async def test_result_hook_opens_audio_before_frames_that_follow_the_response(
    pair: tuple[MemoryTransport, Peer],
) -> None:
    local, peer = pair
    frames: list[bytes] = []
    hooked: list[Any] = []
    async with make_session(local, Role.VOICE) as session:
        session.on_audio(frames.append)

        def open_audio(result: Any) -> None:
            hooked.append(result)
            session.open_audio(320)

        initialize = params("session.initialize", INITIALIZE_PARAMS)
        task = asyncio.create_task(
            session.request("session.initialize", initialize, on_result=open_audio)
        )
        request = await peer.incoming_request("session.initialize")
        await peer.send(Response(request.id, result=b'{"audio_codec":null}'))
        await peer.transport.send_binary(b"\x03" * 320)
        await task
        failing = asyncio.create_task(
            session.request(
                "recording.stop", params("recording.stop", '{"id":"x"}'), on_result=hooked.append
            )
        )
        request = await peer.incoming_request("recording.stop")
        await peer.send(Response(request.id, error=ErrorBody(500, "not active")))
        with pytest.raises(RemoteError):
            await failing
        assert frames == [b"\x03" * 320]
        assert len(hooked) == 1 and hooked[0].audio_codec is None


async def test_leaving_the_context_with_an_error_closes_1011(
    pair: tuple[MemoryTransport, Peer],
) -> None:
    local, peer = pair
    session = make_session(local)
    with pytest.raises(KeyError):
        async with session:
            raise KeyError("bug")
    close = await peer.message()
    assert (close.kind, close.close_code) == (MessageKind.CLOSE, 1011)
    assert session.close_info is not None and not session.close_info.orderly


async def test_abrupt_transport_loss_closes_as_failure(pair: tuple[MemoryTransport, Peer]) -> None:
    local, peer = pair
    session = make_session(local)
    session.start()
    task = asyncio.create_task(session.request("audio.buffer.clear"))
    await peer.incoming_request("audio.buffer.clear")
    peer.transport.abort()
    with pytest.raises(SessionClosedError):
        await task
    info = await session.wait_closed()
    assert (info.code, info.by_peer, info.orderly) == (1006, True, False)
    await session.close()


async def test_running_handler_is_cancelled_when_the_peer_closes(
    pair: tuple[MemoryTransport, Peer],
) -> None:
    local, peer = pair
    session = make_session(local)
    entered = asyncio.Event()
    cancelled = asyncio.Event()

    async def initialize(request: IncomingRequest) -> Any:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    session.handle("session.initialize", initialize)

    async with session:
        await peer.request("init", "session.initialize", INITIALIZE_PARAMS)
        await asyncio.wait_for(entered.wait(), GUARD_S)
        await peer.transport.close()
        await session.wait_closed()
        assert cancelled.is_set()


async def test_close_is_idempotent_and_wait_closed_returns_the_info(
    pair: tuple[MemoryTransport, Peer],
) -> None:
    local, _ = pair
    session = make_session(local)
    session.start()
    await asyncio.gather(session.close(1001, "bye"), session.close())
    assert await session.wait_closed() == session.close_info
    assert session.close_info is not None and session.close_info.code == 1001


async def test_request_before_start_is_refused(pair: tuple[MemoryTransport, Peer]) -> None:
    local, _ = pair
    session = make_session(local)
    with pytest.raises(RuntimeError):
        await session.request("audio.buffer.clear")
    with pytest.raises(ValueError):
        session.on_event("no.such.event", session_event_sink)
    await session.close()


async def session_event_sink(data: Any) -> None:
    """An event handler that does nothing (registration tests)."""


INITIALIZE_PARAMS = (
    '{"application":{"id":"app-1"},"call":{"id":"call-1","session_id":"session-1",'
    '"from":"+12025550100","to":"+12025550101"},"audio_codec_offerings":[{"id":"L16/8000/1",'
    '"name":"L16","sample_rate":8000,"bit_depth":16,"channels":1}],"metadata":null}'
)
