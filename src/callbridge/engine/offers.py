"""Endpoints negotiated with SDP: which kind answers an offer, and which kind makes ours.

Each SDP endpoint kind is registered here once (`SDP_KINDS`): it says whether it answers a
remote offer (`answers`) and which `type` of `endpoint.create_offer` it makes. A kind that is
not registered is refused with ENDPOINT_ERROR.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from callbridge.engine.endpoint import Endpoint, EndpointHost, check_direction
from callbridge.engine.errors import INVALID_PARAMS, EngineError, endpoint_error
from callbridge.engine.rtp_endpoint import RtpEndpoint
from callbridge.engine.session import MediaSession
from callbridge.engine.webrtc_endpoint import WebRtcEndpoint
from callbridge.media import sdp

__all__ = ["SDP_KINDS", "SdpKind", "create_from_offer", "create_offer", "srtp_rekey"]

Answerer = Callable[
    [EndpointHost, sdp.SessionDescription, str, str], Awaitable[tuple[Endpoint, str]]
]
"""(host, parsed remote offer, direction, offer text) -> (endpoint, answer SDP)."""
Offerer = Callable[[EndpointHost, str, list[str] | None, bool], Awaitable[tuple[Endpoint, str]]]
"""(host, direction, codec names, srtp) -> (endpoint, offer SDP)."""


@dataclass(frozen=True)
class SdpKind:
    """One endpoint kind that speaks SDP offer/answer."""

    name: str
    """The `type` of `endpoint.create_offer` (and `endpoint_type` in session.info)."""
    answers: Callable[[sdp.SessionDescription], bool]
    from_offer: Answerer
    with_offer: Offerer


def _plain_rtp(offer: sdp.SessionDescription) -> bool:
    """Plain RTP, with SDES-SRTP when the offer has a=crypto (RTP/SAVP, or RTP/AVP: OSRTP)."""
    return not offer.webrtc


async def _rtp_answer(
    host: EndpointHost, offer: sdp.SessionDescription, direction: str, text: str
) -> tuple[Endpoint, str]:
    return await RtpEndpoint.from_offer(host, offer, direction)


def _webrtc(offer: sdp.SessionDescription) -> bool:
    return offer.webrtc


async def _webrtc_offer(
    host: EndpointHost, direction: str, codecs: list[str] | None, srtp: bool
) -> tuple[Endpoint, str]:
    """Opus and telephone-event whatever `codecs` says (browsers all speak Opus)."""
    return await WebRtcEndpoint.with_offer(host, direction, ["opus"])


SDP_KINDS: Final = (
    SdpKind("rtp", _plain_rtp, _rtp_answer, RtpEndpoint.with_offer),
    SdpKind("webrtc", _webrtc, WebRtcEndpoint.answer_offer, _webrtc_offer),
)


async def create_from_offer(
    session: MediaSession, sdp_text: str, direction: str
) -> tuple[str, str]:
    """`endpoint.create_from_offer`: the kind that answers the offer; (endpoint_id, answer)."""
    check_direction(direction)
    session.touch()
    with session.slot() as slot:
        offer = sdp.parse_sdp(sdp_text)
        kind = next((kind for kind in SDP_KINDS if kind.answers(offer)), None)
        if kind is None:
            raise endpoint_error("No endpoint type answers this offer")
        endpoint, answer = await kind.from_offer(session, offer, direction, sdp_text)
        slot.add(endpoint)
    return endpoint.id, answer


async def create_offer(
    session: MediaSession, kind_name: str, direction: str, codecs: list[str] | None, srtp: bool
) -> tuple[str, str]:
    """`endpoint.create_offer`: our offer; the endpoint is routable once its answer is in."""
    check_direction(direction)
    session.touch()
    kind = next((kind for kind in SDP_KINDS if kind.name == kind_name), None)
    if kind is None:
        raise EngineError(INVALID_PARAMS, f"unknown endpoint type {kind_name!r}")
    with session.slot() as slot:
        endpoint, offer = await kind.with_offer(session, direction, codecs, srtp)
        slot.add(endpoint)
    return endpoint.id, offer


async def srtp_rekey(session: MediaSession, endpoint_id: str) -> str:
    """`endpoint.srtp_rekey`: new SRTP keys for a plain RTP endpoint; the offer carrying them."""
    session.touch()
    endpoint = session.endpoint(endpoint_id)
    if not isinstance(endpoint, RtpEndpoint) or endpoint.kind != RtpEndpoint.kind:
        raise endpoint_error("Not a plain RTP endpoint")
    return endpoint.srtp_rekey()
