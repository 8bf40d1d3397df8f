"""The RTVBP control methods of a media session: dial an application, and the controller's
RTVBP requests and events on a leg, validated against the babelforce.v1 catalog.

A digit crossing between an RTVBP leg and other legs is handled by the session's DTMF crossing
(`dtmf_crossing`) like any other digit.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

from yarl import URL

from callbridge.engine.endpoint import Endpoint, check_direction
from callbridge.engine.errors import INVALID_PARAMS, EngineError, endpoint_error
from callbridge.engine.rtvbp_endpoint import RtvbpEndpoint, payload_json
from callbridge.engine.rtvbp_outbound import OutboundRtvbpEndpoint
from callbridge.engine.session import MediaSession
from callbridge.rtvbp import babelforce_v1 as bf
from callbridge.rtvbp.catalog import decode_payload
from callbridge.rtvbp.errors import PayloadError
from callbridge.rtvbp.webrtc import WEBRTC_PROFILE

__all__ = [
    "DEFAULT_RATES",
    "LEG_PROFILES",
    "create_rtvbp",
    "default_offers",
    "parse_codecs",
    "preferred_rate",
    "rtvbp_notify",
    "rtvbp_request",
]

DEFAULT_RATES: Final = (8000, 16000, 24000, 48000)
"""L16 rates offered to an application after the preferred one."""
LEG_PROFILES: Final = ("rtvbp.v1", WEBRTC_PROFILE)
"""What an outbound leg may dial with: audio on the WebSocket, or over WebRTC."""
NARROWBAND: Final = bf.AudioCodec.l16(8000)
MANAGED_BY_CALLBRIDGE: Final = frozenset({"session.initialize", "session.updated"})
"""The handshake callbridge runs itself; a controller may not send these."""


def parse_codecs(values: Sequence[str | int]) -> list[bf.AudioCodec]:
    """Codec offers from the controller: "L16/16000/1", "L16/16000" or a rate such as 16000."""
    codecs: list[bf.AudioCodec] = []
    for value in values:
        if isinstance(value, int):
            rate, channels = value, 1
        else:
            parts = value.split("/")
            if parts[0].upper() != "L16" or not 2 <= len(parts) <= 3:
                raise EngineError(INVALID_PARAMS, f"codec {value!r} is not L16/<rate>[/1]")
            try:
                rate = int(parts[1])
                channels = int(parts[2]) if len(parts) == 3 else 1
            except ValueError:
                raise EngineError(
                    INVALID_PARAMS, f"codec {value!r} is not L16/<rate>[/1]"
                ) from None
        if channels != 1:
            raise EngineError(INVALID_PARAMS, f"codec {value!r}: only mono (1 channel) is carried")
        if not 8000 <= rate <= 48000 or rate % 50:
            raise EngineError(
                INVALID_PARAMS,
                f"codec {value!r}: the rate must be 8000..48000 Hz, a multiple of 50",
            )
        codec = bf.AudioCodec.l16(rate)
        if codec not in codecs:
            codecs.append(codec)
    if not codecs:
        raise EngineError(INVALID_PARAMS, "codecs must not be empty")
    return codecs


def _check_url(url: str) -> None:
    try:
        parsed = URL(url)
    except ValueError:
        parsed = None
    if parsed is None or parsed.scheme not in ("ws", "wss") or not parsed.host:
        raise EngineError(INVALID_PARAMS, "url must be a ws:// or wss:// URL with a host")


def preferred_rate(session: MediaSession, exclude: Endpoint | None = None) -> int | None:
    """The L16 rate that spares the session resampling: the highest rate its endpoints
    already use (PCMU/PCMA 8000, G.722 16000, Opus and bridges 48000: Opus counts as full
    band even while it codes at a partner's lower rate); None if none."""
    rates = []
    for endpoint in session.endpoints.values():
        if endpoint is exclude:
            continue
        rate = endpoint.native_rate
        if rate:
            rates.append(rate)
    return max(rates) if rates else None


def _offers(
    session: MediaSession, codecs: Sequence[str | int] | None, profile: str
) -> list[bf.AudioCodec]:
    """What the leg offers: `codecs` or the session's defaults; over WebRTC only L16/8000."""
    if profile not in LEG_PROFILES:
        raise EngineError(INVALID_PARAMS, f"profile must be one of {', '.join(LEG_PROFILES)}")
    offers = parse_codecs(codecs) if codecs is not None else default_offers(session)
    if profile == WEBRTC_PROFILE:
        if NARROWBAND not in offers:
            raise EngineError(
                INVALID_PARAMS, f"codecs: {WEBRTC_PROFILE} carries L16/8000 (PCMU) only"
            )
        return [NARROWBAND]
    return offers


def default_offers(session: MediaSession) -> list[bf.AudioCodec]:
    preferred = preferred_rate(session) or DEFAULT_RATES[0]
    rates = [preferred, *(rate for rate in DEFAULT_RATES if rate != preferred)]
    return [bf.AudioCodec.l16(rate) for rate in rates]


async def create_rtvbp(
    session: MediaSession,
    url: str,
    *,
    direction: str = "sendrecv",
    bearer_token: str | None = None,
    headers: Mapping[str, str] | None = None,
    call: Mapping[str, str | None] | None = None,
    application_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    codecs: Sequence[str | int] | None = None,
    profile: str = "rtvbp.v1",
) -> str:
    """`endpoint.create_rtvbp`: a leg dialling `url`; returns its id at once (`connecting`).

    `call` may give `id`, `session_id`, `from`, `to` (defaults: a random id, this media
    session's id, "", ""). `codecs` defaults to the rate the session prefers, then the other
    usual rates. `profile` ``rtvbp.webrtc.v1`` moves the audio to WebRTC (L16/8000 offered).
    """
    check_direction(direction)
    session.touch()
    _check_url(url)
    offers = _offers(session, codecs, profile)
    fields = dict(call or {})
    call_info = bf.CallInfo(
        id=fields.get("id") or uuid.uuid4().hex,
        session_id=fields.get("session_id") or session.id,
        from_=fields.get("from") or "",
        to=fields.get("to") or "",
    )
    with session.slot() as slot:
        endpoint = OutboundRtvbpEndpoint(
            session,
            direction,
            url=url,
            call=call_info,
            application_id=application_id or "callbridge",
            metadata=metadata,
            codecs=offers,
            bearer_token=bearer_token,
            headers=headers,
            profile=profile,
        )
        slot.add(endpoint)
    endpoint.start()
    return endpoint.id


async def rtvbp_request(session: MediaSession, endpoint_id: str, method: str, params: bytes) -> Any:
    """`endpoint.rtvbp.request`: call `method` on the leg's peer; the result as plain JSON."""
    session.touch()
    endpoint = _rtvbp_endpoint(session, endpoint_id)
    spec = bf.CATALOG.operations.get(method)
    if spec is None:
        raise EngineError(INVALID_PARAMS, f"unknown RTVBP method {method!r}")
    peer = endpoint.role.peer
    if method in MANAGED_BY_CALLBRIDGE:
        raise EngineError(INVALID_PARAMS, f"{method} is run by callbridge itself")
    if not spec.is_handled_by(peer):
        raise EngineError(
            INVALID_PARAMS,
            f"the peer of this endpoint is the {peer} role, which does not handle {method}",
        )
    try:
        decoded = decode_payload(spec.params_type, params)
    except PayloadError as error:
        raise EngineError(INVALID_PARAMS, f"invalid {method} params: {error.message}") from None
    result = await endpoint.request(method, decoded)
    return {} if result is None else payload_json(result)


async def rtvbp_notify(session: MediaSession, endpoint_id: str, event: str, data: bytes) -> None:
    """`endpoint.rtvbp.notify`: emit `event` (one callbridge's role on that leg emits)."""
    session.touch()
    endpoint = _rtvbp_endpoint(session, endpoint_id)
    spec = bf.CATALOG.events.get(event)
    if spec is None:
        raise EngineError(INVALID_PARAMS, f"unknown RTVBP event {event!r}")
    if event in MANAGED_BY_CALLBRIDGE:
        raise EngineError(INVALID_PARAMS, f"{event} is sent by callbridge itself")
    if spec.emitted_by is not endpoint.role:
        raise EngineError(
            INVALID_PARAMS,
            f"{event} is emitted by the {spec.emitted_by} role; callbridge is the"
            f" {endpoint.role} on this endpoint",
        )
    try:
        decoded = decode_payload(spec.data_type, data)
    except PayloadError as error:
        raise EngineError(INVALID_PARAMS, f"invalid {event} data: {error.message}") from None
    await endpoint.notify(event, decoded)


def _rtvbp_endpoint(session: MediaSession, endpoint_id: str) -> RtvbpEndpoint:
    endpoint = session.endpoint(endpoint_id)
    if not isinstance(endpoint, RtvbpEndpoint):
        raise endpoint_error("Not an RTVBP endpoint")
    return endpoint
