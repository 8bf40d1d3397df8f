"""Go-compatible JSON: the float authority vectors, map ordering, escaping, strict parsing."""

from __future__ import annotations

import enum
import json
import math
import re
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.rtvbp.gojson import dumps, go_escape, go_float, loads
from tests.rtvbp.vectors import float_vectors


def test_float_vector_count() -> None:
    vectors = float_vectors()
    assert len(vectors) == 16
    assert sum(1 for vector in vectors if vector.get("rejects")) == 2


@pytest.mark.parametrize("vector", float_vectors(), ids=lambda vector: vector["name"])
def test_float_authority(vector: dict[str, Any]) -> None:
    value = struct.unpack(">d", bytes.fromhex(vector["bits"]))[0]
    if vector.get("rejects"):
        with pytest.raises(ValueError):
            go_float(value)
        with pytest.raises(ValueError):
            dumps({"value": value})
    else:
        assert go_float(value) == vector["json"]
        assert dumps(value) == vector["json"].encode()


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_go_float_rejects_non_finite(value: float) -> None:
    with pytest.raises(ValueError):
        go_float(value)


@pytest.mark.parametrize(
    ("value", "spelling"),
    [
        (12800.0, "12800"),
        (-1.5, "-1.5"),
        (1e-05, "0.00001"),
        (-1e-07, "-1e-7"),
        (1.5e-10, "1.5e-10"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (-1.25e22, "-1.25e+22"),
        (0.1, "0.1"),
        (123456.789, "123456.789"),
    ],
)
def test_go_float_spellings(value: float, spelling: str) -> None:
    assert go_float(value) == spelling


def test_dumps_sorts_keys_at_every_level_and_is_compact() -> None:
    value = {"b": {"z": 1, "a": [{"y": 2, "x": 1}]}, "a": None, "é": True, "B": False}
    assert dumps(value) == '{"B":false,"a":null,"b":{"a":[{"x":1,"y":2}],"z":1},"é":true}'.encode()


def test_dumps_escapes_like_go_and_keeps_other_unicode() -> None:
    assert dumps("<a>&\u2028\u2029é😀\n\x00") == (
        b'"\\u003ca\\u003e\\u0026\\u2028\\u2029\xc3\xa9\xf0\x9f\x98\x80\\n\\u0000"'
    )
    assert dumps({"<": "&"}) == b'{"\\u003c":"\\u0026"}'


def test_go_escape_leaves_other_e2_characters_alone() -> None:
    assert go_escape('"\u2020\u2027\u202a"'.encode()) == '"\u2020\u2027\u202a"'.encode()


def test_dumps_spells_nested_floats_like_go() -> None:
    assert dumps({"rate": 12800.0, "list": [1e21, 1e-7, 2]}) == (
        b'{"list":[1e+21,1e-7,2],"rate":12800}'
    )


class Colour(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


def test_dumps_reduces_str_and_int_subclasses_and_accepts_tuples() -> None:
    assert dumps({"colour": Colour.RED, "level": Level.HIGH, "pair": (1, 2)}) == (
        b'{"colour":"red","level":3,"pair":[1,2]}'
    )


def test_dumps_keeps_big_integers_exact() -> None:
    assert dumps([2**64 + 1, -(2**53) - 1]) == b"[18446744073709551617,-9007199254740993]"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"x": math.nan}, id="nested-nan"),
        pytest.param([math.inf], id="nested-inf"),
        pytest.param({1: "a"}, id="int-key"),
        pytest.param({None: "a"}, id="none-key"),
        pytest.param({"a"}, id="set"),
        pytest.param(b"bytes", id="bytes"),
        pytest.param(object(), id="object"),
        pytest.param({"x": 1j}, id="complex"),
        pytest.param("\ud800", id="lone-surrogate"),
    ],
)
def test_dumps_rejects_non_json(value: Any) -> None:
    with pytest.raises(ValueError):
        dumps(value)


def test_dumps_rejects_cycles() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(ValueError):
        dumps(cycle)


@pytest.mark.parametrize(
    "text",
    [
        "NaN",
        "[Infinity]",
        '{"a":-Infinity}',
        "[1,]",
        "{",
        '{"a":1} {}',
        "",
        "[1e400]",
        "'a'",
        '"\\ud800"',
    ],
)
def test_loads_is_strict(text: str) -> None:
    with pytest.raises(ValueError):
        loads(text)


def test_loads_rejects_invalid_utf8() -> None:
    with pytest.raises(ValueError):
        loads(b'"\xff"')


def test_loads_parses_values() -> None:
    assert loads(b' {"a":[1,2.5,"x",null,true],"b":18446744073709551617} ') == {
        "a": [1, 2.5, "x", None, True],
        "b": 18446744073709551617,
    }


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=16,
)
FLOAT_FREE_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=16,
)


def same_json(parsed: Any, original: Any) -> bool:
    """Equality as a Go float64 reader sees it: ``39265829150071950`` is that float again."""
    if isinstance(original, float):
        return isinstance(parsed, int | float) and float(parsed) == original
    if isinstance(original, dict):
        return (
            isinstance(parsed, dict)
            and parsed.keys() == original.keys()
            and all(same_json(parsed[key], original[key]) for key in original)
        )
    if isinstance(original, list):
        return (
            isinstance(parsed, list)
            and len(parsed) == len(original)
            and all(
                same_json(item, expected) for item, expected in zip(parsed, original, strict=True)
            )
        )
    return type(parsed) is type(original) and parsed == original


def without_negative_zero(value: Any) -> Any:
    if isinstance(value, float) and value == 0:
        return 0.0
    if isinstance(value, dict):
        return {key: without_negative_zero(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_negative_zero(item) for item in value]
    return value


@given(JSON_VALUES)
def test_dumps_parses_back_equal(value: Any) -> None:
    encoded = dumps(value)
    assert same_json(loads(encoded), value)
    assert same_json(json.loads(encoded), value)
    # A fixed point, once -0.0 is set aside: "-0" parses as the integer 0 (Go keeps float64 -0).
    positive = dumps(without_negative_zero(value))
    assert dumps(loads(positive)) == positive


def test_negative_zero_parses_as_integer_zero() -> None:
    assert dumps(-0.0) == b"-0"
    assert dumps(loads(b"-0")) == b"0"


@given(FLOAT_FREE_VALUES)
def test_dumps_matches_stdlib_with_sorted_keys_plus_go_escaping(value: Any) -> None:
    reference = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for raw, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        reference = reference.replace(raw, escaped)
    assert dumps(value) == reference.encode()


GO_FLOAT_SHAPE = re.compile(
    r"-?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?|-?[1-9](\.[0-9]*[1-9])?e[+-][1-9][0-9]*"
)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_go_float_round_trips_in_the_right_form(value: float) -> None:
    spelling = go_float(value)
    assert float(spelling) == value
    assert math.copysign(1.0, float(spelling)) == math.copysign(1.0, value)
    assert GO_FLOAT_SHAPE.fullmatch(spelling), spelling
    exponent_form = value != 0 and (abs(value) < 1e-6 or abs(value) >= 1e21)
    assert ("e" in spelling) == exponent_form
    # Shortest digits: the same significant digits as Python's shortest repr.
    significant = re.sub(r"e.*|[-.]", "", spelling).strip("0")
    reference = re.sub(r"e.*|[-.]", "", repr(abs(value))).strip("0")
    assert significant == reference


@given(st.binary(max_size=64) | st.text(max_size=64))
def test_loads_arbitrary_input_only_raises_value_error(data: bytes | str) -> None:
    try:
        value = loads(data)
    except ValueError:
        return
    assert same_json(loads(dumps(value)), value)
