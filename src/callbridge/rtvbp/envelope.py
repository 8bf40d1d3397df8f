"""The classic.v1 envelope: one flat JSON object per control message, ``"version":"1"`` first.

Payloads stay raw JSON bytes (``params``, ``data``, ``result``, error ``any``) so that a frame
decodes and re-encodes byte-exactly, and absent, ``null`` and a value remain three distinct states.
Typing a payload is the catalog's job (``catalog.decode_payload``). This runs once per control
message, so the decoder is a single msgspec pass and the encoder concatenates pre-encoded pieces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeAlias

import msgspec

from callbridge.rtvbp.errors import EnvelopeError
from callbridge.rtvbp.gojson import go_escape

__all__ = [
    "ABSENT",
    "AbsentType",
    "ErrorBody",
    "Event",
    "Frame",
    "Payload",
    "Request",
    "Response",
    "decode_frame",
    "encode_frame",
]

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


class AbsentType:
    """Type of ABSENT: a payload key that is missing from the frame (distinct from JSON null)."""

    __slots__ = ()
    _instance: ClassVar[AbsentType | None] = None

    def __new__(cls) -> AbsentType:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "ABSENT"

    def __reduce__(self) -> str:
        return "ABSENT"


ABSENT: Final[AbsentType] = AbsentType()

Payload: TypeAlias = bytes | AbsentType
"""Raw JSON bytes of a payload exactly as on the wire; ABSENT when the key is missing."""


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """A failed response; ``data`` is the free-form value carried under the wire key ``any``."""

    code: int
    message: str
    data: Payload = ABSENT


@dataclass(frozen=True, slots=True)
class Request:
    """An operation call; answered by exactly one Response whose ``response`` is this ``id``."""

    id: str
    method: str
    params: Payload = ABSENT


@dataclass(frozen=True, slots=True)
class Event:
    """A fire-and-forget notification; never answered (``id`` only identifies it in logs)."""

    id: str
    event: str
    data: Payload = ABSENT


@dataclass(frozen=True, slots=True)
class Response:
    """Answer to the request whose id is ``response``; an error, if any, decides the outcome."""

    response: str
    result: Payload = ABSENT
    error: ErrorBody | None = None


Frame: TypeAlias = Request | Event | Response

_EMPTY_RAW: Final = msgspec.Raw()
_NULL_RAW: Final = msgspec.Raw(b"null")


class _WireFrame(msgspec.Struct, gc=False):
    """Every key any frame kind may carry; the discriminators are checked by hand (precedence)."""

    version: Any = None
    id: Any = None
    event: Any = None
    method: Any = None
    response: Any = None
    params: msgspec.Raw = _EMPTY_RAW
    data: msgspec.Raw = _EMPTY_RAW
    result: msgspec.Raw = _EMPTY_RAW
    error: msgspec.Raw = _EMPTY_RAW


class _WireError(msgspec.Struct, gc=False):
    code: Any = None
    message: Any = None
    any: msgspec.Raw = _EMPTY_RAW


_FRAME_DECODER: Final = msgspec.json.Decoder(_WireFrame)
_ERROR_DECODER: Final = msgspec.json.Decoder(_WireError)
_DECODE_FAILURES: Final = (
    msgspec.DecodeError,
    msgspec.ValidationError,
    UnicodeError,
    RecursionError,
)


def _raw_payload(raw: msgspec.Raw) -> Payload:
    return bytes(raw) if len(raw) else ABSENT


def _decode_error(raw: msgspec.Raw) -> ErrorBody | None:
    if raw == _NULL_RAW:
        return None
    try:
        wire = _ERROR_DECODER.decode(raw)
    except _DECODE_FAILURES:
        raise EnvelopeError("error must be a JSON object") from None
    code = wire.code
    if type(code) is not int or code == 0 or not _INT64_MIN <= code <= _INT64_MAX:
        raise EnvelopeError("error.code must be a non-zero integer")
    message = wire.message
    if type(message) is not str or not message:
        raise EnvelopeError("error.message must be a non-empty string")
    return ErrorBody(code, message, _raw_payload(wire.any))


def decode_frame(message: str | bytes) -> Frame:
    """Decode one control message; EnvelopeError means the receiver drops it without answering."""
    try:
        wire = _FRAME_DECODER.decode(message)
    except _DECODE_FAILURES as failure:
        raise EnvelopeError(f"not a classic.v1 frame: {failure}") from None
    if wire.version != "1":
        raise EnvelopeError('version must be the string "1"')
    # Precedence event > method > response; a non-string or empty value counts as absent.
    name = wire.event
    if type(name) is str and name:
        return Event(_frame_id(wire.id), name, _raw_payload(wire.data))
    name = wire.method
    if type(name) is str and name:
        return Request(_frame_id(wire.id), name, _raw_payload(wire.params))
    correlation = wire.response
    if type(correlation) is str and correlation:
        error = _decode_error(wire.error) if len(wire.error) else None
        return Response(correlation, _raw_payload(wire.result), error)
    raise EnvelopeError("frame has no event, method or response discriminator")


def _frame_id(value: Any) -> str:
    if type(value) is not str or not value:
        raise EnvelopeError("id must be a non-empty string")
    return value


_VERSION_HEAD: Final = b'{"version":"1"'


def _string(value: object, what: str) -> bytes:
    if type(value) is not str or not value:
        raise EnvelopeError(f"{what} must be a non-empty string")
    try:
        return go_escape(msgspec.json.encode(value))
    except UnicodeEncodeError:
        raise EnvelopeError(f"{what} is not valid Unicode") from None


def _payload(value: object, key: bytes) -> bytes:
    if value is ABSENT:
        return b""
    if type(value) is not bytes or not value:
        raise EnvelopeError("a payload must be non-empty JSON bytes or ABSENT")
    return key + value


def _error(error: object) -> bytes:
    if error is None:
        return b""
    if type(error) is not ErrorBody:
        raise EnvelopeError("error must be an ErrorBody or None")
    code = error.code
    if type(code) is not int or code == 0 or not _INT64_MIN <= code <= _INT64_MAX:
        raise EnvelopeError("error code must be a non-zero integer")
    return b"".join(
        (
            b',"error":{"code":',
            str(code).encode(),
            b',"message":',
            _string(error.message, "error message"),
            _payload(error.data, b',"any":'),
            b"}",
        )
    )


def encode_frame(frame: Frame) -> bytes:
    """Encode compactly in the deployed key order; EnvelopeError for frames Go/TS refuse to send.

    Payload bytes are inserted verbatim: they must already be JSON (``catalog.encode_payload``).
    """
    if isinstance(frame, Event):
        return b"".join(
            (
                _VERSION_HEAD,
                b',"id":',
                _string(frame.id, "id"),
                b',"event":',
                _string(frame.event, "event"),
                _payload(frame.data, b',"data":'),
                b"}",
            )
        )
    if isinstance(frame, Request):
        return b"".join(
            (
                _VERSION_HEAD,
                b',"id":',
                _string(frame.id, "id"),
                b',"method":',
                _string(frame.method, "method"),
                _payload(frame.params, b',"params":'),
                b"}",
            )
        )
    if isinstance(frame, Response):
        return b"".join(
            (
                _VERSION_HEAD,
                b',"response":',
                _string(frame.response, "response"),
                _payload(frame.result, b',"result":'),
                _error(frame.error),
                b"}",
            )
        )
    raise EnvelopeError(f"cannot encode {type(frame).__name__} as a frame")
