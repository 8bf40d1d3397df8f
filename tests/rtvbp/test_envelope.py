"""classic.v1: both catalogs' frame vectors, the Go codec's extra behaviours; properties."""

from __future__ import annotations

import copy
import json
import pickle
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.rtvbp import gojson
from callbridge.rtvbp.envelope import (
    ABSENT,
    AbsentType,
    ErrorBody,
    Event,
    Frame,
    Payload,
    Request,
    Response,
    decode_frame,
    encode_frame,
)
from callbridge.rtvbp.errors import EnvelopeError
from tests.rtvbp.vectors import CATALOG_NAMES, frame_vectors


def _ordered_json(value: Any) -> bytes:
    """Compact JSON in the vector's own key order (the envelope carries payload bytes as-is)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _payload(semantic: dict[str, Any], key: str) -> Payload:
    return _ordered_json(semantic[key]) if key in semantic else ABSENT


def frame_from_semantic(semantic: dict[str, Any]) -> Frame:
    """Build a frame from a vector's semantic form (the error's free-form value is ``data``)."""
    kind = semantic["kind"]
    if kind == "request":
        return Request(semantic["id"], semantic["method"], _payload(semantic, "params"))
    if kind == "event":
        return Event(semantic["id"], semantic["event"], _payload(semantic, "data"))
    assert kind == "response"
    error = semantic.get("error")
    body = None
    if error is not None:
        body = ErrorBody(error["code"], error["message"], _payload(error, "data"))
    return Response(semantic["response"], _payload(semantic, "result"), body)


def assert_payload_matches(actual: Payload, semantic: dict[str, Any], key: str) -> None:
    """Absent is not null: the key's presence must match, then the parsed values must."""
    if key not in semantic:
        assert actual is ABSENT
    else:
        assert isinstance(actual, bytes)
        assert json.loads(actual) == semantic[key]


def assert_matches_semantic(frame: Frame, semantic: dict[str, Any]) -> None:
    kind = semantic["kind"]
    if kind == "request":
        assert isinstance(frame, Request)
        assert (frame.id, frame.method) == (semantic["id"], semantic["method"])
        assert_payload_matches(frame.params, semantic, "params")
    elif kind == "event":
        assert isinstance(frame, Event)
        assert (frame.id, frame.event) == (semantic["id"], semantic["event"])
        assert_payload_matches(frame.data, semantic, "data")
    else:
        assert isinstance(frame, Response)
        assert frame.response == semantic["response"]
        assert_payload_matches(frame.result, semantic, "result")
        if semantic.get("error") is None:
            assert frame.error is None
        else:
            assert frame.error is not None
            assert frame.error.code == semantic["error"]["code"]
            assert frame.error.message == semantic["error"]["message"]
            assert_payload_matches(frame.error.data, semantic["error"], "data")


def _cases(section: str) -> list[Any]:
    return [
        pytest.param(catalog, case, id=f"{catalog}/{section}/{case['name']}")
        for catalog in CATALOG_NAMES
        for case in frame_vectors(catalog)[section]
    ]


def test_vector_counts() -> None:
    for catalog in CATALOG_NAMES:
        vectors = frame_vectors(catalog)
        assert vectors["envelope"] == "classic.v1"
        assert [len(vectors[key]) for key in ("encode", "decode", "invalid")] == [10, 11, 3]


@pytest.mark.parametrize(("catalog", "case"), _cases("encode"))
def test_encode_vector(catalog: str, case: dict[str, Any]) -> None:
    assert encode_frame(frame_from_semantic(case["frame"])) == case["bytes"].encode()


@pytest.mark.parametrize(("catalog", "case"), _cases("decode"))
def test_decode_vector(catalog: str, case: dict[str, Any]) -> None:
    assert_matches_semantic(decode_frame(case["bytes"].encode()), case["frame"])
    assert_matches_semantic(decode_frame(case["bytes"]), case["frame"])


@pytest.mark.parametrize(("catalog", "case"), _cases("invalid"))
def test_invalid_vector(catalog: str, case: dict[str, Any]) -> None:
    assert case["error"] == "decode"
    with pytest.raises(EnvelopeError):
        decode_frame(case["bytes"].encode())


# The extra behaviours of the Go codec's golden tests.


def test_response_with_both_result_and_error_round_trips() -> None:
    wire = (
        b'{"version":"1","response":"r-1","result":{"partial":true},'
        b'"error":{"code":500,"message":"boom","any":[1,2]}}'
    )
    frame = decode_frame(wire)
    assert frame == Response("r-1", b'{"partial":true}', ErrorBody(500, "boom", b"[1,2]"))
    assert encode_frame(frame) == wire


def test_null_error_decodes_to_no_error_and_reencodes_without_the_key() -> None:
    frame = decode_frame(b'{"version":"1","response":"r-1","result":{},"error":null}')
    assert frame == Response("r-1", b"{}", None)
    assert encode_frame(frame) == b'{"version":"1","response":"r-1","result":{}}'


def test_null_result_and_null_error_data_are_preserved() -> None:
    wire = (
        b'{"version":"1","response":"r-1","result":null,'
        b'"error":{"code":-1,"message":"m","any":null}}'
    )
    frame = decode_frame(wire)
    assert frame == Response("r-1", b"null", ErrorBody(-1, "m", b"null"))
    assert encode_frame(frame) == wire


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        pytest.param(
            b'{"version":"1","event":7,"id":"a","method":"ping"}',
            Request("a", "ping"),
            id="numeric-event-falls-through-to-method",
        ),
        pytest.param(
            b'{"version":"1","event":"","method":["x"],"response":"r"}',
            Response("r"),
            id="empty-event-and-list-method-fall-through-to-response",
        ),
        pytest.param(
            b'{"version":"1","event":null,"method":{},"response":"r","id":5}',
            Response("r"),
            id="null-event-and-object-method-fall-through-response-ignores-id",
        ),
        pytest.param(
            b'{"response":"r","event":"e","version":"1","id":"i","method":"m"}',
            Event("i", "e"),
            id="precedence-is-not-document-order",
        ),
        pytest.param(
            b'{"version":"1","method":"m","id":"i","error":"not-an-object","result":7}',
            Request("i", "m"),
            id="request-ignores-response-keys",
        ),
        pytest.param(
            b'{"version":"1","id":"i","method":"m","params":{"a" : [1, 2]},"extra":{"x":1}}',
            Request("i", "m", b'{"a" : [1, 2]}'),
            id="payload-bytes-exact-unknown-keys-ignored",
        ),
        pytest.param(
            b' {"version":"1","id":"i","event":"e","data":null} ',
            Event("i", "e", b"null"),
            id="surrounding-whitespace-null-data",
        ),
    ],
)
def test_decode_behaviour(wire: bytes, expected: Frame) -> None:
    assert decode_frame(wire) == expected


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"[]", id="array"),
        pytest.param(b'"frame"', id="string"),
        pytest.param(b"null", id="null"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"version":"1","method":"m"}', id="request-missing-id"),
        pytest.param(b'{"version":"1","method":"m","id":7}', id="request-numeric-id"),
        pytest.param(b'{"version":"1","event":"e","id":""}', id="event-empty-id"),
        pytest.param(b'{"version":"1","event":"e","id":null}', id="event-null-id"),
        pytest.param(b'{"version":1,"event":"e","id":"i"}', id="numeric-version"),
        pytest.param(b'{"version":"2","event":"e","id":"i"}', id="version-2"),
        pytest.param(b'{"event":"e","id":"i"}', id="missing-version"),
        pytest.param(b'{"version":"1","event":5,"method":false,"response":0}', id="no-string-key"),
        pytest.param(
            b'{"version":"1","response":"r","error":{"code":0,"message":"m"}}', id="code-0"
        ),
        pytest.param(b'{"version":"1","response":"r","error":"bad"}', id="error-bad"),
        pytest.param(b'{"version":"1","response":"r","error":[]}', id="error-array"),
        pytest.param(
            b'{"version":"1","response":"r","error":{"code":1,"message":""}}', id="empty-message"
        ),
        pytest.param(b'{"version":"1","response":"r","error":{"code":1}}', id="missing-message"),
        pytest.param(b'{"version":"1","response":"r","error":{"message":"m"}}', id="missing-code"),
        pytest.param(
            b'{"version":"1","response":"r","error":{"code":true,"message":"m"}}', id="bool-code"
        ),
        pytest.param(
            b'{"version":"1","response":"r","error":{"code":500.0,"message":"m"}}', id="float-code"
        ),
        pytest.param(
            b'{"version":"1","response":"r","error":{"code":"500","message":"m"}}', id="string-code"
        ),
        pytest.param(
            b'{"version":"1","response":"r","error":{"code":1,"message":7}}', id="numeric-message"
        ),
        pytest.param(
            b'{"version":"1","response":"r","error":{"code":9223372036854775808,"message":"m"}}',
            id="code-beyond-int64",
        ),
        pytest.param(b'{"version":"1","id":"i","event":"e","data":NaN}', id="nan-literal"),
        pytest.param(b'{"version":"1","id":"i","event":"e"} {}', id="trailing-data"),
        pytest.param(b'{"version":"1","id":"\xff","event":"e"}', id="invalid-utf8"),
        pytest.param(b'{"version":"1","id":"\\ud800","event":"e"}', id="lone-surrogate-escape"),
        pytest.param(b"[" * 5000 + b"]" * 5000, id="deep-nesting"),
    ],
)
def test_decode_rejects(wire: bytes) -> None:
    with pytest.raises(EnvelopeError):
        decode_frame(wire)


def test_text_with_lone_surrogate_is_rejected() -> None:
    with pytest.raises(EnvelopeError):
        decode_frame('{"version":"1","id":"\ud800","event":"e"}')


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(Request("", "m"), id="request-empty-id"),
        pytest.param(Request("i", ""), id="request-empty-method"),
        pytest.param(Event("", "e"), id="event-empty-id"),
        pytest.param(Event("i", ""), id="event-empty-name"),
        pytest.param(Response(""), id="response-empty-correlation"),
        pytest.param(Response("r", error=ErrorBody(0, "m")), id="error-code-0"),
        pytest.param(Response("r", error=ErrorBody(True, "m")), id="error-code-bool"),
        pytest.param(Response("r", error=ErrorBody(2**63, "m")), id="error-code-beyond-int64"),
        pytest.param(Response("r", error=ErrorBody(500, "")), id="error-empty-message"),
        pytest.param(Request("i", "m", b""), id="empty-payload-bytes"),
        pytest.param(Request("i", "m", "{}"), id="payload-not-bytes"),  # type: ignore[arg-type]
        pytest.param(Request(7, "m"), id="id-not-str"),  # type: ignore[arg-type]
        pytest.param(Request("\ud800", "m"), id="id-lone-surrogate"),
        pytest.param(Response("r", error="bad"), id="error-not-body"),  # type: ignore[arg-type]
        pytest.param("frame", id="not-a-frame"),
    ],
)
def test_encode_refuses(frame: Frame) -> None:
    with pytest.raises(EnvelopeError):
        encode_frame(frame)


def test_encode_escapes_strings_like_go_and_keeps_payload_bytes() -> None:
    frame = Request("<a&b>\u2028", "m\u00e9", b'{"x":"<raw>"}')
    wire = encode_frame(frame)
    assert wire == (
        b'{"version":"1","id":"\\u003ca\\u0026b\\u003e\\u2028","method":"m\xc3\xa9",'
        b'"params":{"x":"<raw>"}}'
    )
    assert decode_frame(wire) == frame


def test_absent_is_a_falsy_singleton() -> None:
    assert not ABSENT
    assert repr(ABSENT) == "ABSENT"
    assert AbsentType() is ABSENT
    assert copy.deepcopy(ABSENT) is ABSENT
    assert pickle.loads(pickle.dumps(ABSENT)) is ABSENT
    assert ABSENT != b"null"
    assert Request("i", "m") == Request("i", "m", ABSENT)


# Properties.

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
FRAME_KEYS = st.sampled_from(
    ["version", "id", "event", "method", "response", "params", "data", "result", "error"]
)
FRAME_VALUES = st.one_of(
    st.sampled_from(["1", "", "ping", "x"]),
    JSON_VALUES,
    st.fixed_dictionaries(
        {},
        optional={"code": JSON_VALUES | st.integers(), "message": JSON_VALUES, "any": JSON_VALUES},
    ),
)


@given(st.binary())
def test_decode_arbitrary_bytes_only_raises_envelope_error(wire: bytes) -> None:
    try:
        decode_frame(wire)
    except EnvelopeError:
        pass


@given(st.text())
def test_decode_arbitrary_text_only_raises_envelope_error(wire: str) -> None:
    try:
        decode_frame(wire)
    except EnvelopeError:
        pass


def _expected_kind(obj: dict[str, Any]) -> type | None:
    """Oracle for the classic.v1 decode rules, written independently of the codec."""

    def is_name(value: Any) -> bool:
        return isinstance(value, str) and value != ""

    if obj.get("version") != "1":
        return None
    for key, kind in (("event", Event), ("method", Request), ("response", Response)):
        if not is_name(obj.get(key)):
            continue
        if kind is not Response:
            return kind if is_name(obj.get("id")) else None
        error = obj.get("error")
        if error is None:
            return Response
        code = error.get("code") if isinstance(error, dict) else None
        valid_code = type(code) is int and code != 0 and -(2**63) <= code < 2**63
        return Response if valid_code and is_name(error.get("message")) else None
    return None


@given(st.dictionaries(FRAME_KEYS | st.text(max_size=5), FRAME_VALUES, max_size=8))
def test_decode_arbitrary_objects_follows_the_rules(obj: dict[str, Any]) -> None:
    wire = json.dumps(obj).encode()
    expected = _expected_kind(obj)
    if expected is None:
        with pytest.raises(EnvelopeError):
            decode_frame(wire)
        return
    frame = decode_frame(wire)
    assert type(frame) is expected
    # A decoded frame always re-encodes, and that encoding is a fixed point.
    again = encode_frame(frame)
    assert decode_frame(again) == frame


NAMES = st.text(min_size=1, max_size=24)
PAYLOADS: st.SearchStrategy[Payload] = st.one_of(
    st.just(ABSENT), st.just(b"null"), JSON_VALUES.map(gojson.dumps)
)
ERROR_BODIES = st.builds(
    ErrorBody,
    code=st.integers(min_value=-(2**63), max_value=2**63 - 1).filter(bool),
    message=NAMES,
    data=PAYLOADS,
)
FRAMES: st.SearchStrategy[Frame] = st.one_of(
    st.builds(Request, id=NAMES, method=NAMES, params=PAYLOADS),
    st.builds(Event, id=NAMES, event=NAMES, data=PAYLOADS),
    st.builds(Response, response=NAMES, result=PAYLOADS, error=st.none() | ERROR_BODIES),
)


@given(FRAMES)
def test_valid_frames_round_trip(frame: Frame) -> None:
    wire = encode_frame(frame)
    assert wire.startswith(b'{"version":"1",')
    assert decode_frame(wire) == frame
    assert decode_frame(wire.decode()) == frame
    assert encode_frame(decode_frame(wire)) == wire
