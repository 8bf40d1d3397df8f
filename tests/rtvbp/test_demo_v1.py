"""demo.v1: its 6 payload vectors and its catalog."""

from __future__ import annotations

from typing import Any

import pytest

from callbridge.rtvbp import demo_v1
from callbridge.rtvbp.catalog import Role, decode_payload, encode_payload
from callbridge.rtvbp.errors import PayloadError
from tests.rtvbp.vectors import payload_cases

CASES = payload_cases("demo.v1")


def test_payload_case_count() -> None:
    assert len(CASES) == 6


@pytest.mark.parametrize(
    ("method", "side", "schema", "case"),
    [pytest.param(*case, id=f"{case[0]}.{case[1]}/{case[3]['name']}") for case in CASES],
)
def test_payload_vector(method: str, side: str, schema: str, case: dict[str, Any]) -> None:
    operation = demo_v1.CATALOG.operations[method]
    payload_type = operation.params_type if side == "request" else operation.result_type
    assert payload_type.__name__ == schema
    wire = case["json"].encode()
    if "error" not in case:
        assert encode_payload(decode_payload(payload_type, wire)) == wire
        return
    with pytest.raises(PayloadError) as raised:
        decode_payload(payload_type, wire)
    assert raised.value.kind == case["error"]


def test_catalog() -> None:
    assert demo_v1.CATALOG.name == "demo.v1"
    echo = demo_v1.CATALOG.operations["demo.echo"]
    assert (echo.handled_by, echo.terminal, echo.bidirectional) == (Role.APPLICATION, False, False)
    assert (echo.params_type, echo.result_type) == (
        demo_v1.DemoEchoRequest,
        demo_v1.DemoEchoResponse,
    )
    assert list(demo_v1.CATALOG.operations) == ["demo.echo"]
    observed = demo_v1.CATALOG.events["demo.observed"]
    assert (observed.emitted_by, observed.data_type) == (
        Role.APPLICATION,
        demo_v1.DemoObservedEvent,
    )
    assert list(demo_v1.CATALOG.events) == ["demo.observed"]


def test_observed_event_rules() -> None:
    assert encode_payload(demo_v1.DemoObservedEvent(message="hi")) == b'{"message":"hi"}'
    with pytest.raises(PayloadError) as raised:
        decode_payload(demo_v1.DemoObservedEvent, b'{"message":""}')
    assert raised.value.kind == "validation"
