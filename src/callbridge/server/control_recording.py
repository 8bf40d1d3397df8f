"""Control methods of the `recording.*` family: start and stop recordings of the bound session.

`recording.start {endpoint_id?, file_path, format?, mode?, sample_rate?}` answers
`{recording_id}`; `recording.stop {recording_id}` answers `{file_path, duration_ms, packets,
dropped_packets}`. Path rules and unknown formats fail with INVALID_PARAMS, everything the
session refuses with RECORDING_ERROR.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

import msgspec

from callbridge.engine.recording import SessionRecordings
from callbridge.server.control_context import ControlContext

__all__ = ["recording_start", "recording_stop"]


class RecordingStartParams(msgspec.Struct):
    file_path: str
    endpoint_id: UUID | None = None
    format: Literal["pcap", "wav", "flac"] = "pcap"
    mode: Literal["mix", "split"] = "mix"
    sample_rate: Literal[8000, 16000, 24000, 48000] = 16000


class RecordingStopParams(msgspec.Struct):
    recording_id: UUID


class RecordingStarted(msgspec.Struct):
    recording_id: str


async def recording_start(context: ControlContext, raw: msgspec.Raw) -> object:
    params = context.params(raw, RecordingStartParams)
    session = context.live()
    endpoint_id = None if params.endpoint_id is None else str(params.endpoint_id)
    recording_id = SessionRecordings.of(session).start(
        endpoint_id, params.file_path, params.format, params.mode, params.sample_rate
    )
    return RecordingStarted(recording_id)


async def recording_stop(context: ControlContext, raw: msgspec.Raw) -> object:
    params = context.params(raw, RecordingStopParams)
    return SessionRecordings.of(context.live()).stop(str(params.recording_id))
