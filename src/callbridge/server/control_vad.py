"""Control methods of the `vad.*` family: voice activity detection on one endpoint.

`vad.start {endpoint_id, silence_interval_ms 100..3600000 (1000), speech_threshold 0..1 (0.5)}`
and `vad.stop {endpoint_id}`, with rtpbridge's ranges (INVALID_PARAMS) and its VAD_ERROR for an
unknown endpoint or one without VAD. Beyond rtpbridge, `detector` ("webrtc" or "silero") picks
the detector for this endpoint instead of the configured `vad_detector`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Literal
from uuid import UUID

import msgspec

from callbridge.engine import vad
from callbridge.engine.errors import EngineError
from callbridge.server import control_messages as wire
from callbridge.server.control_context import ControlContext
from callbridge.server.errors import ENDPOINT_ERROR, VAD_ERROR, ControlError

__all__ = ["VadStartParams", "vad_start", "vad_stop"]


class VadStartParams(msgspec.Struct):
    endpoint_id: UUID
    silence_interval_ms: Annotated[int, msgspec.Meta(ge=100, le=3_600_000)] = 1000
    speech_threshold: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.5
    detector: Literal["webrtc", "silero"] | None = None


@contextmanager
def _vad_family() -> Iterator[None]:
    """Endpoint failures inside VAD methods are VAD_ERROR, as rtpbridge wraps them."""
    try:
        yield
    except EngineError as error:
        if error.code != ENDPOINT_ERROR:
            raise
        raise ControlError(VAD_ERROR, error.message) from None


async def vad_start(context: ControlContext, raw: msgspec.Raw) -> object:
    params = context.params(raw, VadStartParams)
    with _vad_family():
        await vad.start_vad(
            context.live(),
            str(params.endpoint_id),
            params.silence_interval_ms,
            params.speech_threshold,
            params.detector,
        )
    return wire.EMPTY


async def vad_stop(context: ControlContext, raw: msgspec.Raw) -> object:
    params = context.params(raw, wire.EndpointParams)
    with _vad_family():
        vad.stop_vad(context.live(), str(params.endpoint_id))
    return wire.EMPTY
