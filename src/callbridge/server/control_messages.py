"""Wire format of the rtpbridge-compatible control protocol: envelope, params, results, events.

Everything on the wire is a `msgspec.Struct` (fields in declared order). Params are decoded
straight from the raw JSON of the request into their Struct; any type, range or enum error becomes
`INVALID_PARAMS` with msgspec's message, which names the offending field (`params.duration_ms`).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Final, Literal, TypeVar
from uuid import UUID

import msgspec

from callbridge.media.telephone_event import DIGITS
from callbridge.server.errors import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    ControlError,
)

MAX_REQUEST_ID_BYTES: Final = 1024
"""Longest request id echoed back (rtpbridge's limit), in UTF-8 bytes."""

_NULL: Final = msgspec.Raw(b"null")

# --- envelope -------------------------------------------------------------------------------


class _Envelope(msgspec.Struct):
    """The request as sent; `id` and `method` are checked by hand to pick the right error code."""

    id: Any = msgspec.UNSET
    method: Any = msgspec.UNSET
    params: msgspec.Raw = _NULL


class Request(msgspec.Struct):
    """A well-formed request; `params` stays raw JSON until the method decodes its own Struct."""

    id: str
    method: str
    params: msgspec.Raw


class ErrorBody(msgspec.Struct):
    code: str
    message: str


class ErrorResponse(msgspec.Struct):
    id: str
    error: ErrorBody


class Response(msgspec.Struct):
    id: str
    result: Any


class Event(msgspec.Struct):
    event: str
    data: Any


_encoder = msgspec.json.Encoder()
_envelope_decoder = msgspec.json.Decoder(_Envelope)

SERIALIZE_ERROR: Final = b'{"error":{"code":"INTERNAL_ERROR","message":"serialize error"}}'
"""rtpbridge's fallback when a response cannot be serialized (no id)."""
EVENT_ERROR: Final = b'{"event":"error","data":{}}'
"""rtpbridge's fallback when an event cannot be serialized."""


def error_response(request_id: str, code: str, message: str) -> ErrorResponse:
    return ErrorResponse(request_id, ErrorBody(code, message))


def parse_request(frame: str) -> Request | ErrorResponse:
    """Check the envelope: an object with a non-empty string `id` of at most
    MAX_REQUEST_ID_BYTES and a string `method`; a broken one yields the error response to send
    back (with the id echoed when it is usable)."""
    if not frame:
        return error_response("", PARSE_ERROR, "empty message")
    try:
        envelope = _envelope_decoder.decode(frame)
    except msgspec.ValidationError:
        return error_response("", PARSE_ERROR, "request must be a JSON object")
    except msgspec.DecodeError as error:
        return error_response("", PARSE_ERROR, f"invalid JSON: {error}")
    except RecursionError:
        return error_response("", PARSE_ERROR, "invalid JSON: nested too deeply")
    request_id = envelope.id
    if request_id is msgspec.UNSET:
        return error_response("", PARSE_ERROR, "missing request id")
    if not isinstance(request_id, str):
        return error_response("", PARSE_ERROR, "request id must be a string")
    id_bytes = request_id.encode()
    echoed_id = request_id if len(id_bytes) <= MAX_REQUEST_ID_BYTES else ""
    if envelope.method is msgspec.UNSET:
        return error_response(echoed_id, PARSE_ERROR, "missing method")
    if not isinstance(envelope.method, str):
        return error_response(echoed_id, PARSE_ERROR, "method must be a string")
    if not request_id:
        return error_response("", INVALID_REQUEST, "request id must not be empty")
    if len(id_bytes) > MAX_REQUEST_ID_BYTES:
        truncated = id_bytes[:MAX_REQUEST_ID_BYTES].decode(errors="ignore")
        return error_response(
            truncated,
            INVALID_PARAMS,
            f"request id exceeds maximum length of {MAX_REQUEST_ID_BYTES}",
        )
    return Request(request_id, envelope.method, envelope.params)


def encode_message(message: Response | ErrorResponse) -> bytes:
    """Serialize a response; an unserializable result becomes rtpbridge's INTERNAL_ERROR text."""
    try:
        return _encoder.encode(message)
    except (TypeError, ValueError, OverflowError):
        return SERIALIZE_ERROR


def encode_event(name: str, data: Any) -> bytes:
    try:
        return _encoder.encode(Event(name, data))
    except (TypeError, ValueError, OverflowError):
        return EVENT_ERROR


ParamsT = TypeVar("ParamsT", bound=msgspec.Struct)


def decode_params(raw: msgspec.Raw, params_type: type[ParamsT]) -> ParamsT:
    """Decode a method's params; absent or null params fail like every other type error."""
    try:
        return msgspec.json.decode(raw, type=params_type)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as error:
        text = str(error).replace("`$", "`params") or "malformed params"
        raise ControlError(INVALID_PARAMS, f"invalid params: {text}") from None


# --- params ---------------------------------------------------------------------------------

Direction = Literal["sendrecv", "recvonly", "sendonly"]
U32 = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
U64 = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
"""rtpbridge says u64; msgspec bounds stop at the int64 maximum, which no real value reaches."""
ToneKind = Literal["ringback", "ringing", "busy", "beep", "sine"]


class AttachParams(msgspec.Struct):
    session_id: UUID


class BridgeParams(msgspec.Struct):
    target_session_id: UUID
    direction: Direction = "sendrecv"


class CreateFromOfferParams(msgspec.Struct):
    sdp: str
    direction: Direction = "sendrecv"


class CreateOfferParams(msgspec.Struct):
    kind: Literal["webrtc", "rtp"] = msgspec.field(name="type")
    direction: Direction = "sendrecv"
    srtp: bool = False
    codecs: list[str] | None = None


class AcceptAnswerParams(msgspec.Struct):
    endpoint_id: UUID
    sdp: str


class CreateWithFileParams(msgspec.Struct):
    """`loop_count`: absent means play once (0 extra plays), explicit null means loop forever."""

    source: str
    start_ms: U64 = 0
    loop_count: Annotated[int, msgspec.Meta(ge=0, le=10000)] | msgspec.UnsetType | None = (
        msgspec.UNSET
    )
    cache_ttl_secs: U32 = 300
    shared: bool = False
    timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=60000)] = 10000
    headers: dict[str, str] | None = None
    gain_db: float = 0.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.gain_db):
            raise ValueError("gain_db must be a finite number")


class CreateToneParams(msgspec.Struct):
    tone: ToneKind
    frequency: Annotated[float, msgspec.Meta(ge=20, le=20000)] | None = None
    """Hz; checked for every tone, used only by `sine` (default 440)."""
    duration_ms: U64 | None = None
    """Absent: play until removed."""


class EndpointParams(msgspec.Struct):
    endpoint_id: UUID


class FileSeekParams(msgspec.Struct):
    endpoint_id: UUID
    position_ms: U64


class DtmfInjectParams(msgspec.Struct):
    endpoint_id: UUID
    digit: str
    duration_ms: U32 = 160
    volume: U32 = 10
    """RFC 4733 volume field: dBm0 below 0, 6 bits."""

    def __post_init__(self) -> None:
        if len(self.digit) != 1:
            raise ValueError("digit must be exactly one character")
        if self.digit.upper() not in DIGITS:
            raise ValueError(f"invalid DTMF digit {self.digit!r}: expected one of 0-9, *, #, A-D")
        self.digit = self.digit.upper()
        if not 1 <= self.duration_ms <= 10000:
            raise ValueError("duration_ms must be between 1 and 10000")
        if self.volume > 63:
            raise ValueError("volume must be at most 63")


class RtvbpCallParams(msgspec.Struct):
    """The call identity sent to an RTVBP application; every field may be left out."""

    id: str | None = None
    session_id: str | None = None
    from_: str | None = msgspec.field(default=None, name="from")
    to: str | None = None


class CreateRtvbpParams(msgspec.Struct):
    """`endpoint.create_rtvbp`: dial an RTVBP application as the voice peer."""

    url: str
    direction: Direction = "sendrecv"
    bearer_token: str | None = None
    headers: dict[str, str] | None = None
    call: RtvbpCallParams | None = None
    application_id: str | None = None
    metadata: dict[str, Any] | None = None
    codecs: list[str | int] | None = None
    """Offers in order: "L16/16000/1", "L16/16000" or a rate (16000); default by session."""
    profile: str = "rtvbp.v1"
    """The RTVBP profile to dial with: "rtvbp.v1", or "rtvbp.webrtc.v1" (audio over WebRTC)."""

    def __post_init__(self) -> None:
        if not self.url.startswith(("ws://", "wss://")):
            raise ValueError("url must be a ws:// or wss:// URL")


class RtvbpRequestParams(msgspec.Struct):
    """`endpoint.rtvbp.request`: `params` stays raw JSON for the catalog's own decoder."""

    endpoint_id: UUID
    method: str
    params: msgspec.Raw = msgspec.Raw(b"{}")


class RtvbpNotifyParams(msgspec.Struct):
    endpoint_id: UUID
    event: str
    data: msgspec.Raw = msgspec.Raw(b"{}")


class VariablesGetParams(msgspec.Struct):
    keys: list[str] | None = None
    """Absent or empty: every variable."""


class VariablesSetParams(msgspec.Struct):
    data: dict[str, Any]


# --- results --------------------------------------------------------------------------------


class Empty(msgspec.Struct):
    """`{}`, the result of void methods."""


EMPTY: Final = Empty()


class SessionCreated(msgspec.Struct):
    session_id: str


class SessionList(msgspec.Struct):
    sessions: list[dict[str, Any]]


class BridgeCreated(msgspec.Struct):
    endpoint_id: str
    target_endpoint_id: str


class OfferAnswered(msgspec.Struct):
    endpoint_id: str
    sdp_answer: str


class OfferCreated(msgspec.Struct):
    endpoint_id: str
    sdp_offer: str


class EndpointCreated(msgspec.Struct):
    endpoint_id: str


class ToneCreated(msgspec.Struct):
    endpoint_id: str
    tone: str


class RtvbpResult(msgspec.Struct):
    """The peer's result of `endpoint.rtvbp.request`, as it was on the RTVBP wire."""

    result: Any


class Variables(msgspec.Struct):
    variables: dict[str, Any]


__all__ = [
    "EMPTY",
    "MAX_REQUEST_ID_BYTES",
    "AcceptAnswerParams",
    "AttachParams",
    "BridgeCreated",
    "BridgeParams",
    "CreateFromOfferParams",
    "CreateOfferParams",
    "CreateRtvbpParams",
    "CreateToneParams",
    "CreateWithFileParams",
    "DtmfInjectParams",
    "Empty",
    "EndpointCreated",
    "EndpointParams",
    "ErrorResponse",
    "FileSeekParams",
    "OfferAnswered",
    "OfferCreated",
    "ParamsT",
    "Request",
    "Response",
    "RtvbpCallParams",
    "RtvbpNotifyParams",
    "RtvbpRequestParams",
    "RtvbpResult",
    "SessionCreated",
    "SessionList",
    "ToneCreated",
    "Variables",
    "VariablesGetParams",
    "VariablesSetParams",
    "decode_params",
    "encode_event",
    "encode_message",
    "error_response",
    "parse_request",
]
