"""Control methods of the `endpoint.*` family: RTP legs by SDP offer/answer, file and tone
playback, removal, file transport controls and DTMF injection.

Every method needs a bound session that still runs; SDP bodies are bounded by max_sdp_size_kb.
"""

from __future__ import annotations

import msgspec

from callbridge.engine import file_endpoint, offers, tone_endpoint
from callbridge.server import control_messages as wire
from callbridge.server.control_context import ControlContext

__all__ = [
    "accept_answer",
    "create_from_offer",
    "create_offer",
    "create_tone",
    "create_with_file",
    "dtmf_inject",
    "file_pause",
    "file_resume",
    "file_seek",
    "remove",
]


async def create_from_offer(context: ControlContext, raw: msgspec.Raw) -> object:
    params = context.params(raw, wire.CreateFromOfferParams)
    context.check_sdp(params.sdp)
    endpoint_id, answer = await offers.create_from_offer(
        context.live(), params.sdp, params.direction
    )
    return wire.OfferAnswered(endpoint_id, answer)


async def create_offer(context: ControlContext, raw: msgspec.Raw) -> object:
    params = context.params(raw, wire.CreateOfferParams)
    endpoint_id, offer = await offers.create_offer(
        context.live(), params.kind, params.direction, params.codecs, params.srtp
    )
    return wire.OfferCreated(endpoint_id, offer)


async def accept_answer(context: ControlContext, raw: msgspec.Raw) -> object:
    params = context.params(raw, wire.AcceptAnswerParams)
    context.check_sdp(params.sdp)
    await context.live().accept_answer(str(params.endpoint_id), params.sdp)
    return wire.EMPTY


async def create_with_file(context: ControlContext, raw: msgspec.Raw) -> object:
    params = context.params(raw, wire.CreateWithFileParams)
    loop_count = 0 if isinstance(params.loop_count, msgspec.UnsetType) else params.loop_count
    endpoint_id = await file_endpoint.create_with_file(
        context.live(),
        params.source,
        start_ms=params.start_ms,
        loop_count=loop_count,
        cache_ttl_secs=params.cache_ttl_secs,
        shared=params.shared,
        timeout_ms=params.timeout_ms,
        headers=params.headers,
        gain_db=params.gain_db,
    )
    return wire.EndpointCreated(endpoint_id)


async def create_tone(context: ControlContext, raw: msgspec.Raw) -> object:
    params = context.params(raw, wire.CreateToneParams)
    endpoint_id = await tone_endpoint.create_tone(
        context.live(), params.tone, params.frequency, params.duration_ms
    )
    return wire.ToneCreated(endpoint_id, params.tone)


async def remove(context: ControlContext, raw: msgspec.Raw) -> object:
    params = context.params(raw, wire.EndpointParams)
    await context.live().remove_endpoint(str(params.endpoint_id))
    return wire.EMPTY


async def file_seek(context: ControlContext, raw: msgspec.Raw) -> object:
    params = context.params(raw, wire.FileSeekParams)
    await context.live().file_seek(str(params.endpoint_id), params.position_ms)
    return wire.EMPTY


async def file_pause(context: ControlContext, raw: msgspec.Raw) -> object:
    params = context.params(raw, wire.EndpointParams)
    await context.live().file_pause(str(params.endpoint_id))
    return wire.EMPTY


async def file_resume(context: ControlContext, raw: msgspec.Raw) -> object:
    params = context.params(raw, wire.EndpointParams)
    await context.live().file_resume(str(params.endpoint_id))
    return wire.EMPTY


async def dtmf_inject(context: ControlContext, raw: msgspec.Raw) -> object:
    params = context.params(raw, wire.DtmfInjectParams)
    await context.live().dtmf_inject(
        str(params.endpoint_id), params.digit, params.duration_ms, params.volume
    )
    return wire.EMPTY
