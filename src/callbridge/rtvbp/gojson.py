"""Go-compatible JSON for free-form values.

The deployed RTVBP peer is Go: free-form maps are ``map[string]any`` (keys sorted byte-wise at
every level), floats are spelled by ``encoding/json`` (``12800``, not ``12800.0``; exponent form
only below 1e-6 and from 1e21), and ``<``, ``>``, ``&``, U+2028 and U+2029 are escaped inside
strings. Byte equality with it is the contract, so these rules are reproduced exactly here.
"""

from __future__ import annotations

import math
from typing import Any, Final

import msgspec

__all__ = ["dumps", "go_escape", "go_float", "loads", "to_wire_tree"]

# U+2028/U+2029 are E2 80 A8/A9 in UTF-8; UTF-8 is self-synchronising, so a byte search is exact.
_ESCAPES: Final[tuple[tuple[bytes, bytes], ...]] = (
    (b"<", b"\\u003c"),
    (b">", b"\\u003e"),
    (b"&", b"\\u0026"),
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
)
# Cheap pre-check: the first byte of every sequence above (E2 also starts other characters).
_ESCAPE_TRIGGERS: Final = b"<>&\xe2"

_encode: Final = msgspec.json.encode
_decode: Final = msgspec.json.decode


def go_float(value: float) -> str:
    """Spell a float64 the way Go's encoding/json does; NaN and infinities raise ValueError."""
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"Go encoding/json rejects the non-finite float {value!r}")
    if value == 0.0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign = "-" if value < 0 else ""
    magnitude = abs(value)
    # repr gives the shortest digits that round-trip, the same digits Go's strconv chooses.
    text = repr(magnitude)
    mantissa, _, exponent_text = text.partition("e")
    exponent = int(exponent_text) if exponent_text else 0
    integer_part, _, fraction_part = mantissa.partition(".")
    all_digits = (integer_part + fraction_part).lstrip("0")
    digits = all_digits.rstrip("0")
    # value == int(digits) * 10**scale
    scale = exponent - len(fraction_part) + (len(all_digits) - len(digits))
    # value == 0.<digits> * 10**point
    point = len(digits) + scale
    if magnitude < 1e-6 or magnitude >= 1e21:
        head, tail = digits[0], digits[1:]
        mantissa_text = f"{head}.{tail}" if tail else head
        power = point - 1
        return f"{sign}{mantissa_text}e{'-' if power < 0 else '+'}{abs(power)}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


def to_wire_tree(value: Any) -> Any:
    """Return a copy msgspec encodes exactly like Go: sorted maps, floats pre-spelled as Raw.

    Accepts what ``map[string]any`` can hold: None, bool, int, float, str, list/tuple and dicts with
    str keys (str/int subclasses such as StrEnum are reduced to their base value). Anything else,
    and NaN/infinity, raises ValueError.
    """
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        return msgspec.Raw(go_float(value).encode())
    if kind is dict:
        tree: dict[str, Any] = {}
        for key in sorted(value, key=_checked_key):
            tree[key] = to_wire_tree(value[key])
        return tree
    if kind is list or kind is tuple:
        return [to_wire_tree(item) for item in value]
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return to_wire_tree(float(value))
    if isinstance(value, str):
        return str(value)
    raise ValueError(f"{kind.__name__} is not a JSON value")


def _checked_key(key: object) -> str:
    if type(key) is not str:
        raise ValueError(f"JSON object keys must be str, got {type(key).__name__}")
    return key


def go_escape(encoded: bytes) -> bytes:
    """Apply Go's HTML-safe escaping to msgspec output (those bytes only occur inside strings)."""
    if len(encoded.translate(None, _ESCAPE_TRIGGERS)) == len(encoded):
        return encoded
    for raw, escaped in _ESCAPES:
        if raw in encoded:
            encoded = encoded.replace(raw, escaped)
    return encoded


def dumps(value: Any) -> bytes:
    """Encode a free-form value compactly, byte-identical to Go's encoding/json of ``any``."""
    try:
        return go_escape(_encode(to_wire_tree(value)))
    except (RecursionError, msgspec.EncodeError) as error:
        raise ValueError(str(error)) from None


def loads(data: bytes | str) -> Any:
    """Strictly parse one JSON document (no NaN/Infinity, no trailing data), else ValueError.

    Integers stay exact Python ints (Go would make every ``any`` number a float64, so ``-0``
    comes back here as ``0``, not ``-0.0``).
    """
    try:
        return _decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as error:
        raise ValueError(str(error)) from None
