"""The 48 babelforce.v1 golden fixtures, byte for byte: decode then encode, and built in code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from callbridge.rtvbp import babelforce_v1 as bf
from callbridge.rtvbp.catalog import decode_payload, encode_payload
from callbridge.rtvbp.envelope import (
    ErrorBody,
    Event,
    Frame,
    Request,
    Response,
    decode_frame,
    encode_frame,
)
from tests.rtvbp.vectors import golden_bytes, golden_files

L16_8000 = bf.AudioCodec(id="L16/8000/1", name="L16", sample_rate=8000, bit_depth=16, channels=1)

BUILT_PAYLOADS: dict[str, Any] = {
    "payloads/application.move.request.json": bf.ApplicationMoveRequest(
        reason="handoff", application_id="app-2"
    ),
    "payloads/application.move.response.json": bf.ApplicationMoveResponse(
        next_application_id="app-2"
    ),
    "payloads/audio.buffer.clear.request.json": bf.AudioBufferClearRequest(),
    "payloads/audio.buffer.clear.response.json": bf.AudioBufferClearResponse(len=320),
    "payloads/call.hangup.request.json": bf.CallHangupRequest(reason="caller"),
    "payloads/call.hangup.response.json": bf.CallHangupResponse(),
    "payloads/ping.request.json": bf.PingRequest(
        t0=1700000000000, rtt=42, data={"probe": "canonical"}
    ),
    "payloads/ping.response.json": bf.PingResponse(
        t0=1700000000000,
        t1=1700000000010,
        t2=1700000000012,
        owd=5,
        data={"probe": "canonical"},
    ),
    "payloads/recording.start.request.json": bf.RecordingStartRequest(
        tags=["support", "canonical"]
    ),
    "payloads/recording.start.response.json": bf.RecordingStartResponse(id="recording-1"),
    "payloads/recording.stop.request.json": bf.RecordingStopRequest(id="recording-1"),
    "payloads/recording.stop.response.json": bf.RecordingStopResponse(),
    "payloads/session.get.request.json": bf.SessionGetRequest(keys=["customer", "attempt"]),
    # Built in the "wrong" order on purpose: the open map is sorted on the wire.
    "payloads/session.get.response.json": {"customer": "Ada", "attempt": 2},
    "payloads/session.initialize.request.json": bf.SessionInitializeRequest(
        application=bf.AppInfo(id="app-1"),
        call=bf.CallInfo(
            id="call-1", session_id="session-1", from_="+12025550100", to="+12025550101"
        ),
        audio_codec_offerings=[bf.AudioCodec.l16(8000)],
        metadata=None,
    ),
    "payloads/session.initialize.response.json": bf.SessionInitializeResponse(audio_codec=None),
    "payloads/session.set.request.json": bf.SessionSetRequest(
        data={"customer": "Ada", "attempt": 2}
    ),
    "payloads/session.set.response.json": bf.SessionSetResponse(),
    "payloads/session.terminate.request.json": bf.SessionTerminateRequest(reason="completed"),
    "payloads/session.terminate.response.json": bf.SessionTerminateResponse(),
    "events/agent.tool.call.json": bf.AgentToolCallEvent(name="lookup_order"),
    "events/audio.info.json": bf.AudioInfoEvent(
        read=bf.AudioInfoItem(bytes=0, bytes_per_second=0.0, bytes_total=0),
        write=bf.AudioInfoItem(bytes=0, bytes_per_second=0.0, bytes_total=0),
    ),
    "events/audio.speech.started.json": bf.AudioSpeechStartedEvent(origin="sender"),
    "events/call.hangup.json": bf.CallHangupEvent(reason="caller"),
    "events/dtmf.json": bf.DtmfEvent(
        seq=7, pressed_at=1700000000000, released_at=1700000000120, digit="5"
    ),
    "events/input.transcript.json": bf.InputTranscriptEvent(delta="hello there"),
    "events/output.transcript.delta.json": bf.OutputTranscriptDeltaEvent(delta="Hi "),
    "events/output.transcript.done.json": bf.OutputTranscriptDoneEvent(),
    "events/session.updated.json": bf.SessionUpdatedEvent(audio_codec=L16_8000),
    "variants/events/audio.info-nonzero.json": bf.AudioInfoEvent(
        read=bf.AudioInfoItem(bytes=1280, bytes_per_second=12800.0, bytes_total=6400),
        write=bf.AudioInfoItem(bytes=32, bytes_per_second=320 / 3, bytes_total=96),
    ),
    "variants/events/call.hangup-no-reason.json": bf.CallHangupEvent(),
    "variants/events/output.transcript.done-text-empty.json": bf.OutputTranscriptDoneEvent(text=""),
    "variants/events/output.transcript.done-text.json": bf.OutputTranscriptDoneEvent(
        text="Hi there"
    ),
    "variants/payloads/application.move.request-empty.json": bf.ApplicationMoveRequest(),
    "variants/payloads/application.move.response-no-next.json": bf.ApplicationMoveResponse(),
    "variants/payloads/ping.request-no-optionals.json": bf.PingRequest(t0=1700000000000),
    "variants/payloads/ping.response-no-data.json": bf.PingResponse(
        t0=1700000000000, t1=1700000000010, t2=1700000000012, owd=5
    ),
    "variants/payloads/recording.start.request-no-tags.json": bf.RecordingStartRequest(),
}

NOT_IMPLEMENTED_MESSAGE = (
    "session.terminate is not supported. please use application.move or call.hangup instead"
)

BUILT_FRAMES: dict[str, Frame] = {
    "envelope/classic.v1/event.json": Event(
        id="event-1",
        event="dtmf",
        data=encode_payload(
            bf.DtmfEvent(seq=7, pressed_at=1700000000000, released_at=1700000000120, digit="5")
        ),
    ),
    "envelope/classic.v1/request-with-params.json": Request(
        id="request-terminate-1",
        method="session.terminate",
        params=encode_payload(bf.SessionTerminateRequest(reason="completed")),
    ),
    "envelope/classic.v1/request.json": Request(id="request-1", method="session.get"),
    "envelope/classic.v1/response-error-internal.json": Response(
        response="request-1", error=ErrorBody(code=500, message="internal failure")
    ),
    "envelope/classic.v1/response-error-not-implemented.json": Response(
        response="request-terminate-1", error=ErrorBody(code=501, message=NOT_IMPLEMENTED_MESSAGE)
    ),
    "envelope/classic.v1/response-error-unknown.json": Response(
        response="request-1", error=ErrorBody(code=-1, message="unknown failure")
    ),
    "envelope/classic.v1/response-error.json": Response(
        response="request-1",
        error=ErrorBody(
            code=400,
            message="invalid request",
            data=encode_payload({"retryable": False, "field": "reason"}),
        ),
    ),
    "envelope/classic.v1/response-ok-no-result.json": Response(response="request-1"),
    "envelope/classic.v1/response-ok-null-result.json": Response(
        response="request-1", result=b"null"
    ),
    "envelope/classic.v1/response-ok.json": Response(
        response="request-1", result=encode_payload(bf.SessionSetResponse())
    ),
}

PAYLOAD_FIXTURES = [path for path in golden_files() if path.parts[0] != "envelope"]
FRAME_FIXTURES = [path for path in golden_files() if path.parts[0] == "envelope"]


def payload_type(fixture: Path) -> Any:
    """File name to catalog type, as the golden layout defines it."""
    stem = fixture.stem
    if fixture.parent.name == "events":
        if fixture.parts[0] == "variants":
            stem = stem.split("-", 1)[0]
        return bf.CATALOG.events[stem].data_type
    method, side = stem.rsplit(".", 1)
    side = side.split("-", 1)[0]
    operation = bf.CATALOG.operations[method]
    return operation.params_type if side == "request" else operation.result_type


def test_fixture_counts() -> None:
    assert len(golden_files()) == 48
    assert len(PAYLOAD_FIXTURES) == 38
    assert len(FRAME_FIXTURES) == 10
    assert sorted(BUILT_PAYLOADS) == [str(path) for path in PAYLOAD_FIXTURES]
    assert sorted(BUILT_FRAMES) == [str(path) for path in FRAME_FIXTURES]


@pytest.mark.parametrize("fixture", PAYLOAD_FIXTURES, ids=str)
def test_payload_decode_then_encode_is_byte_exact(fixture: Path) -> None:
    wire = golden_bytes(fixture)
    value = decode_payload(payload_type(fixture), wire)
    assert encode_payload(value) == wire


@pytest.mark.parametrize("fixture", PAYLOAD_FIXTURES, ids=str)
def test_payload_built_in_code_encodes_to_fixture(fixture: Path) -> None:
    built = BUILT_PAYLOADS[str(fixture)]
    expected_type = payload_type(fixture)
    assert isinstance(built, getattr(expected_type, "__origin__", expected_type))
    assert encode_payload(built) == golden_bytes(fixture)
    assert decode_payload(payload_type(fixture), golden_bytes(fixture)) == built


@pytest.mark.parametrize("fixture", FRAME_FIXTURES, ids=str)
def test_frame_decode_then_encode_is_byte_exact(fixture: Path) -> None:
    wire = golden_bytes(fixture)
    assert encode_frame(decode_frame(wire)) == wire
    assert encode_frame(decode_frame(wire.decode())) == wire


@pytest.mark.parametrize("fixture", FRAME_FIXTURES, ids=str)
def test_frame_built_in_code_encodes_to_fixture(fixture: Path) -> None:
    built = BUILT_FRAMES[str(fixture)]
    assert encode_frame(built) == golden_bytes(fixture)
    assert decode_frame(golden_bytes(fixture)) == built
