"""Catalog machinery: roles, specs, presence classes on encode, error classes on decode."""

from __future__ import annotations

import json
from typing import Annotated, Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.rtvbp import babelforce_v1, demo_v1
from callbridge.rtvbp.catalog import (
    KEEP_EMPTY,
    Catalog,
    EventSpec,
    Int64,
    OperationSpec,
    PayloadStruct,
    Rejection,
    Role,
    decode_payload,
    encode_payload,
    require_min_length,
)
from callbridge.rtvbp.envelope import ABSENT
from callbridge.rtvbp.errors import PayloadError


class Inner(PayloadStruct, frozen=True):
    rate: float
    label: str = msgspec.field(name="wire-label")


class Sample(PayloadStruct, frozen=True):
    """One field of every presence class the catalogs use."""

    required: str
    nullable: dict[str, Any] | None
    inner: Inner | None
    count: Int64 | None = None
    text: str | None = None
    kept: Annotated[str, KEEP_EMPTY] | None = None
    tags: list[str] | None = None
    free: Any = None

    def __post_init__(self) -> None:
        require_min_length("required", self.required)


def test_role_peer() -> None:
    assert Role.APPLICATION.peer is Role.VOICE
    assert Role.VOICE.peer is Role.APPLICATION
    assert Role("voice") is Role.VOICE
    assert f"{Role.APPLICATION}" == "application"


def test_operation_spec_roles() -> None:
    one_way = OperationSpec("x.y", Role.VOICE, False, Sample, Sample)
    assert one_way.is_handled_by(Role.VOICE) and not one_way.is_handled_by(Role.APPLICATION)
    assert one_way.may_call(Role.APPLICATION) and not one_way.may_call(Role.VOICE)
    both = OperationSpec("p", Role.APPLICATION, False, Sample, Sample, bidirectional=True)
    assert all(both.is_handled_by(role) and both.may_call(role) for role in Role)


def test_operation_spec_rejection_lookup() -> None:
    rejection = Rejection(Role.VOICE, 501, "no")
    spec = OperationSpec("t", Role.APPLICATION, True, Sample, Sample, rejections=(rejection,))
    assert spec.rejection_for(Role.VOICE) is rejection
    assert spec.rejection_for(Role.APPLICATION) is None


@pytest.mark.parametrize(
    ("operations", "events"),
    [
        pytest.param(
            [OperationSpec("a", Role.VOICE, False, Sample, Sample)] * 2, [], id="duplicate-method"
        ),
        pytest.param([], [EventSpec("e", Role.VOICE, Sample)] * 2, id="duplicate-event"),
        pytest.param(
            [OperationSpec("transport.webrtc.offer", Role.VOICE, False, Sample, Sample)],
            [],
            id="reserved-method",
        ),
        pytest.param([], [EventSpec("transport.x", Role.VOICE, Sample)], id="reserved-event"),
        pytest.param([OperationSpec("", Role.VOICE, False, Sample, Sample)], [], id="empty-method"),
    ],
)
def test_catalog_build_rejects(operations: list[OperationSpec], events: list[EventSpec]) -> None:
    with pytest.raises(ValueError):
        Catalog.build("bad", operations, events)


def test_catalog_mappings_are_read_only() -> None:
    catalog = Catalog.build("c", [OperationSpec("a", Role.VOICE, False, Sample, Sample)], [])
    with pytest.raises(TypeError):
        catalog.operations["b"] = catalog.operations["a"]  # type: ignore[index]


def test_events_by_emitting_role() -> None:
    catalog = babelforce_v1.CATALOG
    assert catalog.events_emitted_by(Role.VOICE) == (
        "session.updated",
        "dtmf",
        "call.hangup",
        "audio.info",
    )
    assert catalog.events_emitted_by(Role.APPLICATION) == (
        "audio.speech.started",
        "agent.tool.call",
        "input.transcript",
        "output.transcript.delta",
        "output.transcript.done",
    )


MINIMAL = Sample(required="r", nullable=None, inner=None)


def test_encode_required_nullable_writes_null_and_optional_absent_is_omitted() -> None:
    assert encode_payload(MINIMAL) == b'{"required":"r","nullable":null,"inner":null}'


def test_encode_omitempty_like_go_except_any_and_keep_empty() -> None:
    zeros = Sample(
        required="r", nullable={}, inner=None, count=0, text="", kept="", tags=[], free={}
    )
    assert encode_payload(zeros) == (
        b'{"required":"r","nullable":{},"inner":null,"kept":"","free":{}}'
    )
    falsy_free = Sample(required="r", nullable=None, inner=None, free=0)
    assert encode_payload(falsy_free) == b'{"required":"r","nullable":null,"inner":null,"free":0}'


def test_encode_declared_order_rename_sorted_maps_and_go_floats() -> None:
    value = Sample(
        required="r",
        nullable={"z": 1.0, "a": {"y": [0.5], "b": None}},
        inner=Inner(rate=12800.0, label="<x>"),
        count=2**60,
        text="t",
        tags=["b", "a"],
        free=[{"k": 1e21}],
    )
    assert encode_payload(value) == (
        b'{"required":"r","nullable":{"a":{"b":null,"y":[0.5]},"z":1},'
        b'"inner":{"rate":12800,"wire-label":"\\u003cx\\u003e"},"count":1152921504606846976,'
        b'"text":"t","tags":["b","a"],"free":[{"k":1e+21}]}'
    )


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(Inner(rate=float("nan"), label="x"), id="nan-field"),
        pytest.param(Sample(required="r", nullable={"x": float("inf")}, inner=None), id="inf-map"),
        pytest.param({1: 2}, id="int-key"),
        pytest.param(object(), id="object"),
    ],
)
def test_encode_rejects_non_json(value: Any) -> None:
    with pytest.raises(ValueError):
        encode_payload(value)


def test_encode_free_form_top_level_values() -> None:
    assert encode_payload({"b": 1, "a": 2}) == b'{"a":2,"b":1}'
    assert encode_payload({}) == b"{}"


def test_decode_absent_and_null_are_an_empty_object() -> None:
    assert decode_payload(babelforce_v1.AudioBufferClearRequest, ABSENT) == (
        babelforce_v1.AudioBufferClearRequest()
    )
    assert decode_payload(babelforce_v1.ApplicationMoveRequest, b"null") == (
        babelforce_v1.ApplicationMoveRequest()
    )
    assert decode_payload(babelforce_v1.SessionGetResponse, ABSENT) == {}
    with pytest.raises(PayloadError) as raised:
        decode_payload(babelforce_v1.PingRequest, ABSENT)
    assert raised.value.kind == "validation"


def test_decode_ignores_unknown_fields_and_optional_null() -> None:
    wire = b'{"required":"r","nullable":null,"inner":null,"count":null,"new":[1],"tags":null}'
    assert decode_payload(Sample, wire) == MINIMAL


@pytest.mark.parametrize(
    ("wire", "kind"),
    [
        pytest.param(b"{", "decode", id="malformed"),
        pytest.param(b"[]", "decode", id="not-an-object"),
        pytest.param(b'"x"', "decode", id="string"),
        pytest.param(b'{"required":1,"nullable":null,"inner":null}', "decode", id="wrong-type"),
        pytest.param(
            b'{"required":"r","nullable":null,"inner":null,"count":true}', "decode", id="bool-int"
        ),
        pytest.param(
            b'{"required":"r","nullable":null,"inner":null,"count":7.0}', "decode", id="float-int"
        ),
        pytest.param(
            b'{"required":"r","nullable":null,"inner":null,"count":9223372036854775808}',
            "decode",
            id="beyond-int64",
        ),
        pytest.param(
            b'{"required":"r","nullable":null,"inner":null,"free":NaN}', "decode", id="nan"
        ),
        pytest.param(
            b'{"required":"r","nullable":null,"inner":{"rate":"1","wire-label":"x"}}',
            "decode",
            id="nested-type",
        ),
        pytest.param(
            b'{"required":"r","nullable":null,"inner":null,"tags":["a",1]}',
            "decode",
            id="list-item",
        ),
        pytest.param(b'{"required":"r","nullable":null,"inner":null} x', "decode", id="trailing"),
        pytest.param(b'{"required":"\xff","nullable":null,"inner":null}', "decode", id="bad-utf8"),
        pytest.param(b'{"nullable":null,"inner":null}', "validation", id="missing-required"),
        pytest.param(b'{"required":"r","inner":null}', "validation", id="missing-nullable"),
        pytest.param(
            b'{"required":"r","nullable":null,"inner":{"rate":1}}',
            "validation",
            id="missing-nested",
        ),
        pytest.param(b'{"required":"","nullable":null,"inner":null}', "validation", id="rule"),
    ],
)
def test_decode_error_classes(wire: bytes, kind: str) -> None:
    with pytest.raises(PayloadError) as raised:
        decode_payload(Sample, wire)
    assert raised.value.kind == kind
    assert raised.value.message


def test_decode_integers_beyond_two_to_53() -> None:
    wire = b'{"required":"r","nullable":null,"inner":null,"count":9223372036854775807}'
    assert decode_payload(Sample, wire).count == 2**63 - 1


def test_rules_apply_when_building_in_code_too() -> None:
    with pytest.raises(PayloadError) as raised:
        Sample(required="", nullable=None, inner=None)
    assert raised.value.kind == "validation"


ALL_TYPES = sorted(
    {
        spec_type
        for catalog in (babelforce_v1.CATALOG, demo_v1.CATALOG)
        for spec_type in [
            *(operation.params_type for operation in catalog.operations.values()),
            *(operation.result_type for operation in catalog.operations.values()),
            *(event.data_type for event in catalog.events.values()),
        ]
    },
    key=repr,
)


WIRE_NAMES = sorted(
    {
        field.encode_name
        for payload_type in ALL_TYPES
        if isinstance(payload_type, type) and issubclass(payload_type, msgspec.Struct)
        for field in msgspec.structs.fields(payload_type)
    }
    | {"id", "name", "sample_rate", "bytes", "bytes_per_second"}
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False)
    | st.text(max_size=4),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(WIRE_NAMES), children, max_size=5)
    ),
    max_leaves=10,
)
OBJECTS = st.dictionaries(st.sampled_from(WIRE_NAMES), JSON_VALUES, max_size=6).map(
    lambda obj: json.dumps(obj).encode()
)


@settings(max_examples=400)
@given(
    payload_type=st.sampled_from(ALL_TYPES),
    wire=st.binary(max_size=64) | st.text(max_size=64).map(str.encode) | OBJECTS,
)
def test_decode_payload_only_raises_payload_error(payload_type: Any, wire: bytes) -> None:
    try:
        value = decode_payload(payload_type, wire)
    except PayloadError as error:
        assert error.kind in ("decode", "validation")
        return
    # Re-encoding is a fixed point (a float such as 4e16 comes back as the int Go spells).
    encoded = encode_payload(value)
    assert encode_payload(decode_payload(payload_type, encoded)) == encoded
