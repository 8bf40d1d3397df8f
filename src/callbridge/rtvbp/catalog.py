"""Catalog machinery: who handles which operation, who emits which event, and typed payload codecs.

A catalog (``babelforce.v1``, ``demo.v1``) names its payload types; this module turns raw payload
bytes into those types and back, byte-identical to the deployed Go peer:

* fields go out in declared order (Go struct order), free-form maps with sorted keys;
* a required field is always written, ``null`` when it is None (the required-nullable fields);
* an optional field (default None) is omitted when None and, like Go's ``omitempty``, also when it
  holds a zero value (``""``, ``0``, ``false``, empty list or map), except free-form ``Any`` fields
  (Go ``any``: omitted only when nil) and fields marked ``KEEP_EMPTY`` (Go pointers);
* floats use Go's spelling (``gojson.go_float``).

Decoding is two-stage, which is how errors are classified: JSON syntax, wrong JSON types and
out-of-range integers are ``decode`` errors; a missing required field and the catalog rules
(minLength, non-zero, ranges), checked by each type's ``__post_init__``, are ``validation`` errors.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal, TypeVar, cast

import msgspec
import msgspec.inspect

from callbridge.rtvbp.envelope import AbsentType, Payload
from callbridge.rtvbp.errors import PayloadError
from callbridge.rtvbp.gojson import go_escape, to_wire_tree

__all__ = [
    "KEEP_EMPTY",
    "Catalog",
    "EventSpec",
    "Int64",
    "OperationSpec",
    "PayloadStruct",
    "Rejection",
    "Role",
    "decode_payload",
    "encode_payload",
    "require_at_least",
    "require_min_length",
    "require_non_zero",
]

T = TypeVar("T")

Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
"""A Go int/int64: JSON integers only (no bool, no 7.0), beyond 2**53 allowed, within int64."""

KEEP_EMPTY: Final = msgspec.Meta(extra={"keep_empty": True})
"""Marks an optional field whose zero value is still written (a Go pointer): ``""`` != absent."""

_RESERVED_PREFIX: Final = "transport."


class Role(enum.StrEnum):
    """The two RTVBP roles, named by responsibility (not by which side opened the socket)."""

    APPLICATION = "application"
    VOICE = "voice"

    @property
    def peer(self) -> Role:
        return Role.VOICE if self is Role.APPLICATION else Role.APPLICATION


@dataclass(frozen=True, slots=True)
class Rejection:
    """A frozen error answer a role gives instead of handling an operation."""

    role: Role
    code: int
    message: str


@dataclass(frozen=True, slots=True)
class OperationSpec:
    """One request/response operation.

    ``bidirectional`` operations (babelforce.v1 ``ping``) are handled by both roles and callable by
    both; ``handled_by`` is then the role that conventionally answers it. Use ``is_handled_by`` and
    ``may_call`` rather than comparing ``handled_by`` directly.
    """

    method: str
    handled_by: Role
    terminal: bool
    params_type: type[Any]
    result_type: type[Any]
    bidirectional: bool = False
    rejections: tuple[Rejection, ...] = ()

    def is_handled_by(self, role: Role) -> bool:
        return self.bidirectional or role is self.handled_by

    def may_call(self, role: Role) -> bool:
        return self.bidirectional or role is self.handled_by.peer

    def rejection_for(self, role: Role) -> Rejection | None:
        """The frozen error ``role`` answers with when asked to handle this operation, if any."""
        for rejection in self.rejections:
            if rejection.role is role:
                return rejection
        return None


@dataclass(frozen=True, slots=True)
class EventSpec:
    """One fire-and-forget event; never answered."""

    name: str
    emitted_by: Role
    data_type: type[Any]


@dataclass(frozen=True, slots=True)
class Catalog:
    name: str
    operations: Mapping[str, OperationSpec]
    events: Mapping[str, EventSpec]

    @classmethod
    def build(
        cls, name: str, operations: Iterable[OperationSpec], events: Iterable[EventSpec]
    ) -> Catalog:
        """Index operations and events by name; reject duplicates and the reserved prefix."""
        operation_index: dict[str, OperationSpec] = {}
        for operation in operations:
            if operation.method in operation_index or not operation.method:
                raise ValueError(f"{name}: duplicate or empty method {operation.method!r}")
            if operation.method.startswith(_RESERVED_PREFIX):
                raise ValueError(f"{name}: {_RESERVED_PREFIX}* methods are reserved for transports")
            operation_index[operation.method] = operation
        event_index: dict[str, EventSpec] = {}
        for event in events:
            if event.name in event_index or not event.name:
                raise ValueError(f"{name}: duplicate or empty event {event.name!r}")
            if event.name.startswith(_RESERVED_PREFIX):
                raise ValueError(f"{name}: {_RESERVED_PREFIX}* names are reserved for transports")
            event_index[event.name] = event
        return cls(name, MappingProxyType(operation_index), MappingProxyType(event_index))

    def events_emitted_by(self, role: Role) -> tuple[str, ...]:
        """Names of the events `role` emits, in catalog order (what its peer subscribes to)."""
        return tuple(name for name, spec in self.events.items() if spec.emitted_by is role)


class PayloadStruct(msgspec.Struct, frozen=True, omit_defaults=True):
    """Base of catalog payload types: immutable, unknown incoming fields ignored."""


def require_min_length(name: str, value: str, minimum: int = 1) -> None:
    if len(value) < minimum:
        raise PayloadError("validation", f"{name} must contain at least {minimum} character(s)")


def require_non_zero(name: str, value: int) -> None:
    if value == 0:
        raise PayloadError("validation", f"{name} must be non-zero")


def require_at_least(name: str, value: int, minimum: int) -> None:
    if value < minimum:
        raise PayloadError("validation", f"{name} must be at least {minimum}")


@functools.cache
def _decoder(payload_type: Hashable) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(payload_type)


_MISSING_FIELD: Final = "Object missing required field"
_NULL: Final = b"null"
_EMPTY_OBJECT: Final = b"{}"


def decode_payload(payload_type: type[T], raw: Payload) -> T:
    """Decode and validate a raw payload; raises PayloadError("decode" | "validation").

    An absent payload is treated as ``{}`` before validation, and so is ``null`` (Go unmarshals
    ``null`` into a struct as a no-op, leaving the zero value to be validated).
    """
    data = _EMPTY_OBJECT if isinstance(raw, AbsentType) or raw == _NULL else raw
    try:
        value: T = _decoder(cast(Hashable, payload_type)).decode(data)
    except msgspec.ValidationError as error:
        message = str(error)
        kind: Literal["decode", "validation"] = (
            "validation" if message.startswith(_MISSING_FIELD) else "decode"
        )
        raise PayloadError(kind, message) from None
    except (msgspec.DecodeError, UnicodeError, RecursionError, TypeError) as error:
        raise PayloadError("decode", str(error) or type(error).__name__) from None
    return value


_OMIT_NEVER: Final = 0
_OMIT_NONE: Final = 1
_OMIT_EMPTY: Final = 2


def _keeps_empty(field_type: msgspec.inspect.Type) -> bool:
    if isinstance(field_type, msgspec.inspect.AnyType):
        return True
    if isinstance(field_type, msgspec.inspect.Metadata):
        return bool((field_type.extra or {}).get("keep_empty")) or _keeps_empty(field_type.type)
    if isinstance(field_type, msgspec.inspect.UnionType):
        return any(_keeps_empty(member) for member in field_type.types)
    return False


@functools.cache
def _plan(struct_type: type[msgspec.Struct]) -> tuple[tuple[str, str, int], ...]:
    """(attribute, wire key, omit rule) per field, in declared order."""
    info = msgspec.inspect.type_info(struct_type)
    assert isinstance(info, msgspec.inspect.StructType)
    plan: list[tuple[str, str, int]] = []
    for struct_field in info.fields:
        if struct_field.required or struct_field.default is not None:
            omit = _OMIT_NEVER
        elif _keeps_empty(struct_field.type):
            omit = _OMIT_NONE
        else:
            omit = _OMIT_EMPTY
        plan.append((struct_field.name, struct_field.encode_name, omit))
    return tuple(plan)


def _wire_tree(value: Any) -> Any:
    if isinstance(value, msgspec.Struct):
        tree: dict[str, Any] = {}
        for attribute, key, omit in _plan(type(value)):
            item = getattr(value, attribute)
            if omit and (item is None or (omit == _OMIT_EMPTY and not item)):
                continue
            tree[key] = _wire_tree(item)
        return tree
    if type(value) is list or type(value) is tuple:
        return [_wire_tree(item) for item in value]
    if type(value) is dict:
        return {key: _wire_tree(value[key]) for key in sorted(value, key=_string_key)}
    return to_wire_tree(value)


def _string_key(key: object) -> str:
    if type(key) is not str:
        raise ValueError(f"JSON object keys must be str, got {type(key).__name__}")
    return key


def encode_payload(value: Any) -> bytes:
    """Exact wire bytes of a payload (a catalog Struct, or a free-form value such as a dict).

    Raises ValueError for values JSON cannot carry (NaN, infinities, non-str keys, other types).
    """
    try:
        return go_escape(msgspec.json.encode(_wire_tree(value)))
    except (msgspec.EncodeError, RecursionError) as error:
        raise ValueError(str(error)) from None
