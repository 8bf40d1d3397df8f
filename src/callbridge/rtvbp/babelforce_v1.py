"""The babelforce.v1 catalog: 10 operations and 9 events, frozen byte-identical to the Go peer.

Field order is wire order. Presence classes (see ``catalog``): a field without a default is
required (required-nullable ones are typed ``X | None`` and written as ``null``); a field defaulting
to None is optional. Catalog rules are checked in ``__post_init__``, so an invalid value can neither
be decoded nor built in code (PayloadError "validation").
"""

from __future__ import annotations

from typing import Annotated, Any, TypeAlias

import msgspec

from callbridge.rtvbp.catalog import (
    KEEP_EMPTY,
    Catalog,
    EventSpec,
    Int64,
    OperationSpec,
    PayloadStruct,
    Rejection,
    Role,
    require_at_least,
    require_min_length,
    require_non_zero,
)
from callbridge.rtvbp.errors import NOT_IMPLEMENTED, PayloadError

# Shared types


class AudioCodec(PayloadStruct, frozen=True):
    """A codec offer or selection; ``id`` is ``<name>/<sample_rate>/<channels>``."""

    id: str
    name: str
    sample_rate: Int64
    bit_depth: Int64
    channels: Int64

    @classmethod
    def l16(cls, sample_rate: int, channels: int = 1) -> AudioCodec:
        """Signed 16-bit little-endian PCM at ``sample_rate`` Hz."""
        return cls(
            id=f"L16/{sample_rate}/{channels}",
            name="L16",
            sample_rate=sample_rate,
            bit_depth=16,
            channels=channels,
        )


class AppInfo(PayloadStruct, frozen=True):
    """The IVR application (graph node) that owns the call flow."""

    id: str


class CallInfo(PayloadStruct, frozen=True):
    id: str
    session_id: str
    from_: str = msgspec.field(name="from")
    to: str


class AudioInfoItem(PayloadStruct, frozen=True):
    """Throughput of one audio direction: bytes in the last interval, rate, total since start."""

    bytes: Int64
    bytes_per_second: float
    bytes_total: Int64


# Operations


class SessionInitializeRequest(PayloadStruct, frozen=True):
    application: AppInfo
    call: CallInfo
    audio_codec_offerings: list[AudioCodec]
    metadata: dict[str, Any] | None


class SessionInitializeResponse(PayloadStruct, frozen=True):
    """The selected codec; the Go voice fails the session unless it is one of its offers."""

    audio_codec: AudioCodec | None


class SessionTerminateRequest(PayloadStruct, frozen=True):
    reason: str

    def __post_init__(self) -> None:
        require_min_length("reason", self.reason)


class SessionTerminateResponse(PayloadStruct, frozen=True):
    pass


class PingRequest(PayloadStruct, frozen=True):
    """``t0``: sender epoch ms; ``rtt``: ms measured by the previous ping; ``data``: echoed."""

    t0: Int64
    rtt: Int64 | None = None
    data: Any = None

    def __post_init__(self) -> None:
        require_non_zero("t0", self.t0)


class PingResponse(PayloadStruct, frozen=True):
    """Epoch ms: ``t0`` echoed, ``t1`` received, ``t2`` handled; ``owd`` one-way delay in ms."""

    t0: Int64
    t1: Int64
    t2: Int64
    owd: Int64
    data: Any = None

    def __post_init__(self) -> None:
        require_non_zero("t0", self.t0)
        require_non_zero("t1", self.t1)
        require_non_zero("t2", self.t2)


class CallHangupRequest(PayloadStruct, frozen=True):
    reason: str

    def __post_init__(self) -> None:
        require_min_length("reason", self.reason)


class CallHangupResponse(PayloadStruct, frozen=True):
    pass


class ApplicationMoveRequest(PayloadStruct, frozen=True):
    """Leave the RTVBP node; no ``application_id`` means advance the IVR flow normally."""

    reason: str | None = None
    application_id: str | None = None


class ApplicationMoveResponse(PayloadStruct, frozen=True):
    next_application_id: str | None = None


class AudioBufferClearRequest(PayloadStruct, frozen=True):
    pass


class AudioBufferClearResponse(PayloadStruct, frozen=True):
    """``len``: bytes of buffered, not yet played audio that were discarded."""

    len: Int64


class RecordingStartRequest(PayloadStruct, frozen=True):
    tags: list[str] | None = None


class RecordingStartResponse(PayloadStruct, frozen=True):
    id: str

    def __post_init__(self) -> None:
        require_min_length("id", self.id)


class RecordingStopRequest(PayloadStruct, frozen=True):
    id: str

    def __post_init__(self) -> None:
        require_min_length("id", self.id)


class RecordingStopResponse(PayloadStruct, frozen=True):
    pass


class SessionGetRequest(PayloadStruct, frozen=True):
    """An empty ``keys`` list asks for every variable."""

    keys: list[str]


SessionGetResponse: TypeAlias = dict[str, Any]
"""The bare open map of variables (not wrapped); missing keys are simply absent."""


class SessionSetRequest(PayloadStruct, frozen=True):
    data: dict[str, Any]


class SessionSetResponse(PayloadStruct, frozen=True):
    pass


# Events


class SessionUpdatedEvent(PayloadStruct, frozen=True):
    audio_codec: AudioCodec | None


class DtmfEvent(PayloadStruct, frozen=True):
    """A key reported after release; ``seq`` counts from 0 per session, times are epoch ms."""

    seq: Int64
    pressed_at: Int64
    released_at: Int64
    digit: str

    def __post_init__(self) -> None:
        require_at_least("seq", self.seq, 0)
        require_at_least("pressed_at", self.pressed_at, 0)
        require_at_least("released_at", self.released_at, 0)
        require_min_length("digit", self.digit)
        if self.pressed_at > self.released_at:
            raise PayloadError(
                "validation", "released_at must be greater than or equal to pressed_at"
            )


class CallHangupEvent(PayloadStruct, frozen=True):
    reason: str | None = None


class AudioInfoEvent(PayloadStruct, frozen=True):
    """``read``: audio the voice read from the session (sent by the application); ``write``:
    caller audio the voice wrote into it."""

    read: AudioInfoItem
    write: AudioInfoItem


class AudioSpeechStartedEvent(PayloadStruct, frozen=True):
    """``origin``: ``"sender"`` or ``"receiver"`` (not enforced: the catalog leaves it open)."""

    origin: str


class AgentToolCallEvent(PayloadStruct, frozen=True):
    """Tool name only: arguments and results stay out of the wire on purpose (redaction)."""

    name: str


class InputTranscriptEvent(PayloadStruct, frozen=True):
    """A complete finalized caller utterance (the legacy field name is ``delta``)."""

    delta: str


class OutputTranscriptDeltaEvent(PayloadStruct, frozen=True):
    delta: str


class OutputTranscriptDoneEvent(PayloadStruct, frozen=True):
    """Absent ``text`` keeps the accumulated deltas; any ``text``, even ``""``, replaces them."""

    text: Annotated[str, KEEP_EMPTY] | None = None


SESSION_TERMINATE_REJECTION = Rejection(
    role=Role.VOICE,
    code=NOT_IMPLEMENTED,
    message=(
        "session.terminate is not supported. please use application.move or call.hangup instead"
    ),
)

CATALOG = Catalog.build(
    "babelforce.v1",
    operations=(
        OperationSpec(
            "session.initialize",
            Role.APPLICATION,
            False,
            SessionInitializeRequest,
            SessionInitializeResponse,
        ),
        OperationSpec(
            "session.terminate",
            Role.APPLICATION,
            True,
            SessionTerminateRequest,
            SessionTerminateResponse,
            rejections=(SESSION_TERMINATE_REJECTION,),
        ),
        OperationSpec(
            "ping", Role.APPLICATION, False, PingRequest, PingResponse, bidirectional=True
        ),
        OperationSpec("call.hangup", Role.VOICE, True, CallHangupRequest, CallHangupResponse),
        OperationSpec(
            "application.move", Role.VOICE, True, ApplicationMoveRequest, ApplicationMoveResponse
        ),
        OperationSpec(
            "audio.buffer.clear",
            Role.VOICE,
            False,
            AudioBufferClearRequest,
            AudioBufferClearResponse,
        ),
        OperationSpec(
            "recording.start", Role.VOICE, False, RecordingStartRequest, RecordingStartResponse
        ),
        OperationSpec(
            "recording.stop", Role.VOICE, False, RecordingStopRequest, RecordingStopResponse
        ),
        OperationSpec("session.get", Role.VOICE, False, SessionGetRequest, SessionGetResponse),
        OperationSpec("session.set", Role.VOICE, False, SessionSetRequest, SessionSetResponse),
    ),
    events=(
        EventSpec("session.updated", Role.VOICE, SessionUpdatedEvent),
        EventSpec("dtmf", Role.VOICE, DtmfEvent),
        EventSpec("call.hangup", Role.VOICE, CallHangupEvent),
        EventSpec("audio.info", Role.VOICE, AudioInfoEvent),
        EventSpec("audio.speech.started", Role.APPLICATION, AudioSpeechStartedEvent),
        EventSpec("agent.tool.call", Role.APPLICATION, AgentToolCallEvent),
        EventSpec("input.transcript", Role.APPLICATION, InputTranscriptEvent),
        EventSpec("output.transcript.delta", Role.APPLICATION, OutputTranscriptDeltaEvent),
        EventSpec("output.transcript.done", Role.APPLICATION, OutputTranscriptDoneEvent),
    ),
)
