"""The sans-I/O session state, driven with bytes and times only: no event loop, no transport."""

from __future__ import annotations

import itertools
import json
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.rtvbp import babelforce_v1 as bf
from callbridge.rtvbp.catalog import Role, encode_payload
from callbridge.rtvbp.envelope import ErrorBody, Event, Request, Response, encode_frame
from callbridge.rtvbp.errors import RtvbpError, SessionClosedError
from callbridge.rtvbp.exchange import NO_REPLY_MESSAGE, IncomingRequest
from callbridge.rtvbp.protocol import (
    CloseInfo,
    EventDispatch,
    Inbound,
    ResponseReceived,
    RtvbpProtocol,
    unique_ids,
)

CATALOG = bf.CATALOG
DTMF = b'{"seq":0,"pressed_at":1,"released_at":2,"digit":"5"}'


def counting_ids() -> Any:
    counter = itertools.count(1)
    return lambda: f"r{next(counter)}"


def protocol(role: Role = Role.APPLICATION) -> RtvbpProtocol:
    return RtvbpProtocol(role, CATALOG, id_factory=counting_ids())


def response(request_id: str, result: bytes = b"{}") -> bytes:
    return encode_frame(Response(request_id, result=result))


async def answer(request: IncomingRequest) -> Any:
    return bf.AudioBufferClearResponse(len=0)


async def receive(data: Any) -> None:
    return None


# -- outgoing requests ------------------------------------------------------------------------


def test_request_bytes_and_ids() -> None:
    session = protocol()
    first = session.send_request("audio.buffer.clear", bf.AudioBufferClearRequest())
    second = session.send_request("session.get", bf.SessionGetRequest(keys=["a"]))
    assert first.request_id == "r1" and second.request_id == "r2"
    wire = json.loads(first.data)
    assert (wire["id"], wire["method"], wire["params"]) == ("r1", "audio.buffer.clear", {})
    assert first.data == encode_frame(Request("r1", "audio.buffer.clear", b"{}"))
    assert session.close(1000, "", by_peer=False) == ("r1", "r2")


def test_request_for_a_method_not_in_the_catalog_is_refused() -> None:
    with pytest.raises(ValueError, match="not in catalog"):
        protocol().send_request("no.such.method")


def test_a_repeated_id_is_refused_until_forgotten() -> None:
    session = RtvbpProtocol(Role.APPLICATION, CATALOG, id_factory=lambda: "same")
    session.send_request("ping", None)
    with pytest.raises(RtvbpError, match="duplicate outgoing request id"):
        session.send_request("ping", None)
    session.receive_text(response("same"), 0)
    with pytest.raises(RtvbpError):
        session.send_request("ping", None)  # answered, but the caller has not let go yet
    session.forget("same")
    assert session.send_request("ping", None).request_id == "same"


def test_unique_ids_differ_within_and_across_sessions() -> None:
    first, second = unique_ids(), unique_ids()
    ids = {first() for _ in range(100)} | {second() for _ in range(100)}
    assert len(ids) == 200


def test_responses_are_resolved_once_unknown_and_second_ones_ignored() -> None:
    session = protocol()
    outgoing = session.send_request("audio.buffer.clear")
    assert session.receive_text(response("never-sent"), 0) is None
    received = session.receive_text(response("r1", b'{"len":1}'), 0)
    assert received == ResponseReceived("r1", Response("r1", result=b'{"len":1}'))
    assert session.receive_text(response(outgoing.request_id, b'{"len":2}'), 0) is None
    assert session.stats.responses_ignored == 2
    assert session.close(1000, "", by_peer=False) == ()


def test_a_forgotten_request_ignores_its_late_response() -> None:
    session = protocol()
    session.send_request("audio.buffer.clear")
    session.forget("r1")
    assert session.receive_text(response("r1"), 0) is None
    assert session.stats.responses_ignored == 1


def test_result_hook_runs_on_arrival_before_the_next_frame() -> None:
    session = protocol(Role.VOICE)
    seen: list[Any] = []
    codec = bf.AudioCodec.l16(16000)

    def open_audio(result: bf.SessionInitializeResponse) -> None:
        seen.append(result.audio_codec)
        session.open_audio(640)

    session.send_request("session.initialize", None, open_audio)
    result = encode_frame(
        Response("r1", result=encode_payload(bf.SessionInitializeResponse(audio_codec=codec)))
    )
    session.receive_text(result, 0)
    assert seen == [codec]
    session.audio.receive(bytes(640))
    assert session.stats.audio_frames_in == 1 and session.stats.audio_messages_dropped == 0


def test_result_hook_skipped_for_errors_and_its_failure_does_not_lose_the_response(
    caplog: pytest.LogCaptureFixture,
) -> None:
    session = protocol()
    calls: list[Any] = []

    def failing(result: Any) -> None:
        calls.append(result)
        raise RuntimeError("hook bug")

    session.send_request("audio.buffer.clear", None, failing)
    session.send_request("audio.buffer.clear", None, failing)
    error = encode_frame(Response("r1", error=ErrorBody(500, "no")))
    assert isinstance(session.receive_text(error, 0), ResponseReceived)
    assert calls == []
    with caplog.at_level(logging.ERROR):
        assert isinstance(session.receive_text(response("r2", b'{"len":3}'), 0), ResponseReceived)
    assert calls == [bf.AudioBufferClearResponse(len=3)]
    assert "result hook of audio.buffer.clear failed" in caplog.text


# -- inbound classification -------------------------------------------------------------------


def test_requests_and_events_queue_in_receive_order() -> None:
    session = protocol()
    frames: list[Request | Event] = [
        Request("a", "ping", b'{"t0":1}'),
        Event("b", "dtmf", DTMF),
        Request("c", "session.terminate", b"{}"),
    ]
    for at, frame in enumerate(frames):
        assert isinstance(session.receive_text(encode_frame(frame), at), Inbound)
    queued = [session.next_inbound() for _ in range(4)]
    assert queued == [Inbound(frame, at) for at, frame in enumerate(frames)] + [None]


@given(st.binary(max_size=200))
def test_any_bytes_are_classified_never_raised(data: bytes) -> None:
    session = protocol()
    session.send_request("ping")
    received = session.receive_text(data, 7)
    if received is None:
        dropped = session.stats.control_messages_dropped + session.stats.responses_ignored
        assert dropped == 1
    elif isinstance(received, Inbound):
        assert session.next_inbound() == received
    else:
        assert received.request_id == "r1"


@given(
    st.lists(
        st.one_of(
            st.builds(lambda: ("send",)),
            st.tuples(st.just("answer"), st.integers(1, 8)),
            st.tuples(st.just("forget"), st.integers(1, 8)),
        ),
        max_size=30,
    )
)
def test_unanswered_requests_follow_sends_answers_and_forgets(steps: list[tuple[Any, ...]]) -> None:
    session = protocol()
    model: set[str] = set()
    sent = 0
    for step in steps:
        if step[0] == "send":
            sent += 1
            model.add(session.send_request("ping").request_id)
        elif step[0] == "answer":
            request_id = f"r{step[1]}"
            received = session.receive_text(response(request_id, b'{"t0":1}'), 0)
            assert (received is not None) == (request_id in model)
            model.discard(request_id)
        else:
            session.forget(f"r{step[1]}")
            model.discard(f"r{step[1]}")
    assert set(session.close(1000, "", by_peer=False) or ()) == model


def test_undecodable_frames_are_dropped_and_counted() -> None:
    session = protocol()
    for garbage in (b"{", b"[]", b'{"type":"nope"}', b"\xff"):
        assert session.receive_text(garbage, 0) is None
    assert session.stats.control_messages_dropped == 4
    assert session.next_inbound() is None


# -- dispatch decisions -----------------------------------------------------------------------


def dispatch(session: RtvbpProtocol, method: str, params: bytes = b"{}") -> Any:
    return session.dispatch_request(Request("x", method, params), 42)


def test_frozen_rejection_of_reverse_session_terminate() -> None:
    session = protocol(Role.VOICE)
    decision = dispatch(session, "session.terminate")
    assert decision.error is not None and decision.error.code == 501
    assert decision.error.message.startswith("session.terminate is not supported")
    assert decision.terminal
    with pytest.raises(ValueError, match="frozen 501"):
        session.handle("session.terminate", answer)


def test_unknown_method_and_unhandled_method_are_501() -> None:
    session = protocol(Role.VOICE)
    for method in ("no.such.method", "audio.buffer.clear"):
        decision = dispatch(session, method)
        assert decision.error is not None
        assert (decision.error.code, decision.error.message) == (501, f"unknown method: {method}")


def test_params_that_do_not_decode_are_400() -> None:
    session = protocol(Role.VOICE)
    session.handle("session.get", answer)
    decision = dispatch(session, "session.get", b'{"keys":7}')
    assert decision.error is not None and decision.error.code == 400


def test_a_handled_request_gets_its_handler_and_decoded_params() -> None:
    session = protocol(Role.VOICE)
    session.handle("session.get", answer)
    decision = dispatch(session, "session.get", b'{"keys":["a"]}')
    assert decision.error is None and decision.handler is answer
    assert decision.params == bf.SessionGetRequest(keys=["a"])
    assert (decision.received_at_ms, decision.terminal, decision.answer_ping) == (42, False, False)
    assert dispatch(session, "call.hangup").terminal


@pytest.mark.parametrize("role", list(Role))
def test_ping_is_answered_automatically_unless_handled(role: Role) -> None:
    session = protocol(role)
    decision = dispatch(session, "ping", b'{"t0":1000,"data":{"k":1}}')
    assert decision.answer_ping and decision.handler is None and decision.error is None
    result = session.ping_result(decision.params, decision.received_at_ms, 1500)
    assert result == bf.PingResponse(t0=1000, t1=42, t2=1500, owd=500, data={"k": 1})
    with pytest.raises(Exception, match="t0 must be non-zero") as raised:
        session.ping_result(SimpleNamespace(t0=0, data=None), 0, 0)
    assert getattr(raised.value, "code", None) == 400
    session.handle("ping", answer)
    assert dispatch(session, "ping", b'{"t0":1}').handler is answer


def test_a_handler_that_returned_nothing_is_a_500() -> None:
    assert RtvbpProtocol.required_result(bf.CallHangupResponse()) == bf.CallHangupResponse()
    with pytest.raises(Exception, match=NO_REPLY_MESSAGE) as raised:
        RtvbpProtocol.required_result(None)
    assert getattr(raised.value, "code", None) == 500


def test_events_go_to_their_handler_bad_data_dropped_unhandled_ignored() -> None:
    session = protocol()
    session.on_event("dtmf", receive)
    assert session.dispatch_event(Event("e", "call.hangup", b"{}")) is None
    assert session.dispatch_event(Event("e", "dtmf", b'{"seq":-1}')) is None
    assert session.stats.events_dropped == 1
    decision = session.dispatch_event(Event("e", "dtmf", DTMF))
    assert decision == EventDispatch(
        "dtmf", receive, bf.DtmfEvent(seq=0, pressed_at=1, released_at=2, digit="5")
    )
    with pytest.raises(ValueError, match="not in catalog"):
        session.on_event("no.such.event", receive)


# -- close ------------------------------------------------------------------------------------


def test_close_fails_the_unanswered_requests_once_and_stops_everything() -> None:
    session = protocol()
    for _ in range(3):
        session.send_request("audio.buffer.clear")
    session.receive_text(response("r2"), 0)
    session.receive_text(encode_frame(Event("e", "dtmf", DTMF)), 0)
    assert session.close(1001, "bye", by_peer=True) == ("r1", "r3")
    assert session.close(1000, "", by_peer=False) is None
    assert session.close_info == CloseInfo(1001, "bye", by_peer=True)
    assert session.closed and session.close_info.orderly
    assert session.next_inbound() is None
    assert session.receive_text(response("r1"), 0) is None
    with pytest.raises(SessionClosedError):
        session.send_request("audio.buffer.clear")
    with pytest.raises(SessionClosedError):
        session.send_event("audio.speech.started")
    with pytest.raises(SessionClosedError):
        session.send_frame(Response("x", result=b"{}"))


@pytest.mark.parametrize(
    ("code", "method", "ok"),
    [
        (1000, "call.hangup", True),
        (1001, "application.move", True),
        (1006, "call.hangup", False),
        (1000, "audio.buffer.clear", False),
    ],
)
def test_an_interrupted_terminal_request_is_fine_after_an_orderly_close(
    code: int, method: str, ok: bool
) -> None:
    session = protocol()
    assert not session.interrupted_terminal_ok(method)
    session.close(code, "", by_peer=True)
    assert session.interrupted_terminal_ok(method) is ok


def test_orderly_close_codes() -> None:
    assert [CloseInfo(code, "", False).orderly for code in (1000, 1001, 1005, 1006, 1011)] == [
        True,
        True,
        False,
        False,
        False,
    ]


# -- events out and the audio gate ------------------------------------------------------------


def test_event_bytes() -> None:
    session = protocol()
    data = session.send_event("agent.tool.call", bf.AgentToolCallEvent(name="lookup"))
    assert data == encode_frame(Event("r1", "agent.tool.call", b'{"name":"lookup"}'))
    with pytest.raises(ValueError, match="not in catalog"):
        session.send_event("no.such.event")


def test_audio_gate_opens_with_a_frame_size_and_takes_exact_frames_only() -> None:
    session = protocol()
    with pytest.raises(RtvbpError, match="audio is not open"):
        session.check_audio_frame(bytes(320))
    session.audio.receive(bytes(320))
    assert session.stats.audio_messages_dropped == 1
    session.open_audio(320)
    for wrong in (bytes(319), bytes(321), b""):
        with pytest.raises(ValueError, match="expected exactly 320"):
            session.check_audio_frame(wrong)
    session.check_audio_frame(bytes(320))
    session.audio_frame_sent(bytes(320))
    assert (session.stats.audio_frames_out, session.stats.audio_bytes_out) == (1, 320)
    with pytest.raises(ValueError):
        session.open_audio(0)
    session.close(1000, "", by_peer=False)
    with pytest.raises(SessionClosedError):
        session.check_audio_frame(bytes(320))
