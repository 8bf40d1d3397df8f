"""babelforce.v1: the 48 payload vectors, the catalog's shape, and each payload type's rules."""

from __future__ import annotations

from typing import Any

import pytest

from callbridge.rtvbp import babelforce_v1 as bf
from callbridge.rtvbp.catalog import PayloadStruct, Role, decode_payload, encode_payload
from callbridge.rtvbp.errors import PayloadError
from tests.rtvbp.vectors import payload_cases

CASES = payload_cases("babelforce.v1")


def catalog_type(method: str, side: str) -> Any:
    operation = bf.CATALOG.operations[method]
    return operation.params_type if side == "request" else operation.result_type


def assert_schema_name(payload_type: Any, schema: str) -> None:
    """The vector's schema names the type; EmptyResponse is any field-less struct."""
    if schema == "EmptyResponse":
        assert issubclass(payload_type, PayloadStruct)
        assert payload_type.__struct_fields__ == ()
    elif schema == "SessionGetResponse":
        assert payload_type is bf.SessionGetResponse
    else:
        assert payload_type.__name__ == schema


def test_payload_case_counts() -> None:
    assert len(CASES) == 48
    invalid = [case for *_, case in CASES if "error" in case]
    assert len(invalid) == 28
    assert sum(1 for case in invalid if case["error"] == "decode") == 20
    assert sum(1 for case in invalid if case["error"] == "validation") == 8


@pytest.mark.parametrize(
    ("method", "side", "schema", "case"),
    [pytest.param(*case, id=f"{case[0]}.{case[1]}/{case[3]['name']}") for case in CASES],
)
def test_payload_vector(method: str, side: str, schema: str, case: dict[str, Any]) -> None:
    payload_type = catalog_type(method, side)
    assert_schema_name(payload_type, schema)
    wire = case["json"].encode()
    if "error" not in case:
        assert encode_payload(decode_payload(payload_type, wire)) == wire
        return
    with pytest.raises(PayloadError) as raised:
        decode_payload(payload_type, wire)
    assert raised.value.kind == case["error"]


EXPECTED_OPERATIONS = {
    # method: (handled by, terminal, bidirectional)
    "session.initialize": (Role.APPLICATION, False, False),
    "session.terminate": (Role.APPLICATION, True, False),
    "ping": (Role.APPLICATION, False, True),
    "call.hangup": (Role.VOICE, True, False),
    "application.move": (Role.VOICE, True, False),
    "audio.buffer.clear": (Role.VOICE, False, False),
    "recording.start": (Role.VOICE, False, False),
    "recording.stop": (Role.VOICE, False, False),
    "session.get": (Role.VOICE, False, False),
    "session.set": (Role.VOICE, False, False),
}
EXPECTED_EVENTS = {
    "session.updated": Role.VOICE,
    "dtmf": Role.VOICE,
    "call.hangup": Role.VOICE,
    "audio.info": Role.VOICE,
    "audio.speech.started": Role.APPLICATION,
    "agent.tool.call": Role.APPLICATION,
    "input.transcript": Role.APPLICATION,
    "output.transcript.delta": Role.APPLICATION,
    "output.transcript.done": Role.APPLICATION,
}


def test_catalog_operations() -> None:
    assert bf.CATALOG.name == "babelforce.v1"
    assert {
        method: (spec.handled_by, spec.terminal, spec.bidirectional)
        for method, spec in bf.CATALOG.operations.items()
    } == EXPECTED_OPERATIONS
    for method, spec in bf.CATALOG.operations.items():
        assert spec.method == method


def test_catalog_events() -> None:
    assert {name: spec.emitted_by for name, spec in bf.CATALOG.events.items()} == EXPECTED_EVENTS
    for name, spec in bf.CATALOG.events.items():
        assert spec.name == name


def test_application_must_implement_and_voice_must_implement() -> None:
    def handled(role: Role) -> set[str]:
        return {m for m, spec in bf.CATALOG.operations.items() if spec.is_handled_by(role)}

    assert handled(Role.APPLICATION) == {"ping", "session.initialize", "session.terminate"}
    assert handled(Role.VOICE) == {
        "application.move",
        "audio.buffer.clear",
        "call.hangup",
        "ping",
        "recording.start",
        "recording.stop",
        "session.get",
        "session.set",
    }


def test_voice_rejects_session_terminate_with_the_frozen_501() -> None:
    rejection = bf.CATALOG.operations["session.terminate"].rejection_for(Role.VOICE)
    assert rejection is not None
    assert (rejection.code, rejection.message) == (
        501,
        "session.terminate is not supported. please use application.move or call.hangup instead",
    )
    assert bf.CATALOG.operations["session.terminate"].rejection_for(Role.APPLICATION) is None


def test_audio_codec_l16_helper() -> None:
    assert bf.AudioCodec.l16(24000) == bf.AudioCodec(
        id="L16/24000/1", name="L16", sample_rate=24000, bit_depth=16, channels=1
    )
    assert bf.AudioCodec.l16(8000, channels=2).id == "L16/8000/2"


def test_call_info_from_is_renamed() -> None:
    call = bf.CallInfo(id="c", session_id="s", from_="+1", to="+2")
    assert encode_payload(call) == b'{"id":"c","session_id":"s","from":"+1","to":"+2"}'
    assert decode_payload(bf.CallInfo, encode_payload(call)).from_ == "+1"


def test_output_transcript_done_three_states() -> None:
    states = [b"{}", b'{"text":""}', b'{"text":"Hi there"}']
    decoded = [decode_payload(bf.OutputTranscriptDoneEvent, wire) for wire in states]
    assert [event.text for event in decoded] == [None, "", "Hi there"]
    assert [encode_payload(event) for event in decoded] == states


def test_go_omitempty_for_optional_strings_integers_and_lists() -> None:
    assert encode_payload(bf.ApplicationMoveRequest(reason="", application_id="")) == b"{}"
    assert encode_payload(bf.PingRequest(t0=5, rtt=0)) == b'{"t0":5}'
    assert encode_payload(bf.RecordingStartRequest(tags=[])) == b"{}"
    assert encode_payload(bf.CallHangupEvent(reason="")) == b"{}"
    assert encode_payload(bf.PingRequest(t0=5, data={})) == b'{"t0":5,"data":{}}'
    assert encode_payload(bf.PingResponse(t0=1, t1=2, t2=3, owd=0)) == (
        b'{"t0":1,"t1":2,"t2":3,"owd":0}'
    )


def test_ping_data_is_free_form_and_sorted() -> None:
    request = decode_payload(bf.PingRequest, b'{"t0":1,"data":{"b":[1.0,{"d":1,"c":2}],"a":"x"}}')
    assert request.data == {"b": [1.0, {"d": 1, "c": 2}], "a": "x"}
    assert encode_payload(request) == b'{"t0":1,"data":{"a":"x","b":[1,{"c":2,"d":1}]}}'


def test_required_nullable_fields() -> None:
    assert encode_payload(bf.SessionUpdatedEvent(audio_codec=None)) == b'{"audio_codec":null}'
    with pytest.raises(PayloadError) as raised:
        decode_payload(bf.SessionInitializeResponse, b"{}")
    assert raised.value.kind == "validation"
    metadata = {"recording_consent": True, "attempt": 2}
    request = bf.SessionInitializeRequest(
        application=bf.AppInfo(id="1234"),
        call=bf.CallInfo(id="c", session_id="s", from_="+4910002000", to="+4910003000"),
        audio_codec_offerings=[bf.AudioCodec.l16(24000)],
        metadata=metadata,
    )
    wire = encode_payload(request)
    assert wire.endswith(b'"metadata":{"attempt":2,"recording_consent":true}}')
    assert decode_payload(bf.SessionInitializeRequest, wire) == request


@pytest.mark.parametrize(
    ("payload_type", "wire"),
    [
        pytest.param(
            bf.DtmfEvent, b'{"seq":-1,"pressed_at":0,"released_at":0,"digit":"1"}', id="dtmf-seq"
        ),
        pytest.param(
            bf.DtmfEvent,
            b'{"seq":0,"pressed_at":-1,"released_at":0,"digit":"1"}',
            id="dtmf-pressed",
        ),
        pytest.param(
            bf.DtmfEvent,
            b'{"seq":0,"pressed_at":0,"released_at":-1,"digit":"1"}',
            id="dtmf-released",
        ),
        pytest.param(
            bf.DtmfEvent, b'{"seq":0,"pressed_at":0,"released_at":0,"digit":""}', id="dtmf-digit"
        ),
        pytest.param(
            bf.DtmfEvent, b'{"seq":0,"pressed_at":5,"released_at":4,"digit":"1"}', id="dtmf-order"
        ),
        pytest.param(bf.DtmfEvent, b'{"seq":0,"pressed_at":5,"digit":"1"}', id="dtmf-missing"),
        pytest.param(bf.PingRequest, b"{}", id="ping-absent-t0"),
        pytest.param(bf.RecordingStopRequest, b"{}", id="recording-stop-missing-id"),
        pytest.param(bf.SessionGetRequest, b"{}", id="session-get-missing-keys"),
        pytest.param(bf.SessionSetRequest, b"{}", id="session-set-missing-data"),
        pytest.param(
            bf.AudioInfoEvent,
            b'{"read":{"bytes":1,"bytes_per_second":1,"bytes_total":1}}',
            id="audio-info-missing-write",
        ),
    ],
)
def test_validation_rules(payload_type: Any, wire: bytes) -> None:
    with pytest.raises(PayloadError) as raised:
        decode_payload(payload_type, wire)
    assert raised.value.kind == "validation"


@pytest.mark.parametrize(
    ("payload_type", "wire"),
    [
        pytest.param(bf.PingRequest, b'{"t0":true}', id="bool-int"),
        pytest.param(bf.PingRequest, b'{"t0":1700000000000.0}', id="float-int"),
        pytest.param(bf.PingRequest, b'{"t0":1.5}', id="fraction-int"),
        pytest.param(bf.PingRequest, b'{"t0":"1"}', id="string-int"),
        pytest.param(bf.PingRequest, b'{"t0":1,"rtt":"1"}', id="string-optional-int"),
        pytest.param(bf.PingRequest, b'{"t0":-9223372036854775809}', id="below-int64"),
        pytest.param(bf.SessionGetRequest, b'{"keys":"all"}', id="keys-not-list"),
        pytest.param(bf.SessionSetRequest, b'{"data":[]}', id="data-not-object"),
        pytest.param(bf.SessionInitializeRequest, b'{"metadata":7}', id="metadata-not-object"),
        pytest.param(
            bf.AudioInfoEvent,
            b'{"read":{"bytes":1,"bytes_per_second":"1","bytes_total":1}}',
            id="float-as-string",
        ),
        pytest.param(bf.SessionGetResponse, b"[]", id="open-map-not-object"),
    ],
)
def test_decode_errors(payload_type: Any, wire: bytes) -> None:
    with pytest.raises(PayloadError) as raised:
        decode_payload(payload_type, wire)
    assert raised.value.kind == "decode"


def test_integers_beyond_two_to_53_are_legal() -> None:
    wire = b'{"t0":9007199254740993,"rtt":-9223372036854775808}'
    request = decode_payload(bf.PingRequest, wire)
    assert (request.t0, request.rtt) == (2**53 + 1, -(2**63))
    assert encode_payload(request) == wire


def test_float_field_accepts_integers_and_spells_like_go() -> None:
    item = decode_payload(bf.AudioInfoItem, b'{"bytes":1,"bytes_per_second":7,"bytes_total":1}')
    assert item.bytes_per_second == 7.0
    assert encode_payload(item) == b'{"bytes":1,"bytes_per_second":7,"bytes_total":1}'


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: bf.PingRequest(t0=0), id="ping-t0"),
        pytest.param(lambda: bf.PingResponse(t0=1, t1=1, t2=0, owd=0), id="pong-t2"),
        pytest.param(lambda: bf.CallHangupRequest(reason=""), id="hangup-reason"),
        pytest.param(lambda: bf.SessionTerminateRequest(reason=""), id="terminate-reason"),
        pytest.param(lambda: bf.RecordingStartResponse(id=""), id="recording-id"),
        pytest.param(
            lambda: bf.DtmfEvent(seq=0, pressed_at=2, released_at=1, digit="1"), id="dtmf-order"
        ),
    ],
)
def test_invalid_values_cannot_be_built(build: Any) -> None:
    with pytest.raises(PayloadError) as raised:
        build()
    assert raised.value.kind == "validation"


def test_payloads_are_immutable() -> None:
    request = bf.PingRequest(t0=1)
    with pytest.raises(AttributeError):
        request.t0 = 2  # type: ignore[misc]
