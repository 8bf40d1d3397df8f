"""The webrtcws.v1 handshake (profile ``rtvbp.webrtc.v1``) for both roles.

Right after the WebSocket upgrade and before the session starts, the connecting peer (the
voice, the offerer) sends one ``transport.webrtc.offer`` request ``{"sdp": offer}``; the
application answers with a response ``{"sdp": answer}``. ICE is not trickled: candidates are in
the SDP. `answer_offer` is the application's half, `send_offer` the voice's; each returns a
`WebRtcTransport` the session then runs over.

Our answer is ICE-lite with one host candidate on the media address, DTLS-SRTP and PCMU
(payload type 0, 20 ms). Our offer is a full ICE agent: it checks the answer's candidates.
Every refusal is a `WebRtcError` with a stable `code`; the answerer also sends it to the peer
as the error response (400 for a bad offer, 500 when no media socket could be opened) and
closes the WebSocket with 1002 (1011 for our own failure). SDP is never logged, and no error
message quotes it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from typing import Final

import msgspec

from callbridge.media import sdp
from callbridge.media.dtls import local_certificate
from callbridge.media.webrtc_sdp import (
    LocalWebRtc,
    WebRtcParameters,
    parse_candidates,
    parse_webrtc,
    write_webrtc_sdp,
)
from callbridge.rtvbp.envelope import (
    ABSENT,
    ErrorBody,
    Request,
    Response,
    decode_frame,
    encode_frame,
)
from callbridge.rtvbp.errors import BAD_REQUEST, INTERNAL, EnvelopeError, RtvbpError
from callbridge.rtvbp.transport_base import CLOSE_INTERNAL_ERROR, MessageKind, Transport
from callbridge.rtvbp.webrtc_media import WebRtcMedia
from callbridge.rtvbp.webrtc_transport import WebRtcTransport

__all__ = [
    "MAX_SDP_BYTES",
    "OFFER_METHOD",
    "WEBRTC_PROFILE",
    "WebRtcError",
    "WebRtcOptions",
    "answer_offer",
    "answer_profile",
    "send_offer",
]

logger = logging.getLogger(__name__)

WEBRTC_PROFILE: Final = "rtvbp.webrtc.v1"
OFFER_METHOD: Final = "transport.webrtc.offer"
MAX_SDP_BYTES: Final = 512 * 1024
CLOSE_PROTOCOL_ERROR: Final = 1002
_PCMU: Final = sdp.Codec("PCMU", 0, 8000)
_AUDIO_SDP_PROTOCOL: Final = "UDP/TLS/RTP/SAVPF"


class WebRtcError(RtvbpError):
    """The WebRTC handshake failed; `code` is the RTVBP error code (400: the peer's SDP or
    frames, 500: our side), also what the answerer sends back."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _SdpPayload(msgspec.Struct, forbid_unknown_fields=False):
    sdp: str


_PAYLOAD_DECODER: Final = msgspec.json.Decoder(_SdpPayload)


class WebRtcOptions(msgspec.Struct, frozen=True):
    """Where and how long: the media address (our host candidate) and the timeouts, seconds."""

    media_address: str = "127.0.0.1"
    offer_timeout_s: float = 10.0
    """How long the answerer waits for the offer, and the offerer for the answer."""
    connect_timeout_s: float = 10.0
    """From the SDP exchange until DTLS has keyed SRTP."""
    consent_timeout_s: float = 30.0
    """The peer's ICE checks (or answers to ours) may pause this long before media fails."""
    port_range: tuple[int, int] | None = None
    """Bind the media socket to a free UDP port in this inclusive range (for a firewall that
    opens only those); None: any free port."""


# ----------------------------------------------------------------------------------- answerer


async def answer_offer(control: Transport, options: WebRtcOptions) -> WebRtcTransport:
    """Read the offer, answer it, return the transport (its media still connecting).

    On any refusal the peer gets the error response (when it sent a request) and the
    WebSocket is closed; then WebRtcError is raised.
    """
    request: Request | None = None
    try:
        request = await _first_request(control, options.offer_timeout_s)
        offer = _sdp_of(request.params, "offer")
        parameters = _check_webrtc(offer, "offer")
        media = await _open_media(options)
        setup = "active" if parameters.setup == "passive" else "passive"
        try:
            answer = _write(media, options.media_address, setup, parameters, ice_lite=True)
            _configure(media, parameters, dtls_client=setup == "active")
            result = msgspec.json.encode(_SdpPayload(answer))
            await control.send_text(encode_frame(Response(request.id, result=result)))
        except BaseException:
            media.close()
            raise
    except WebRtcError as error:
        await _refuse(control, request, error)
        raise
    return WebRtcTransport.attach(control, media)


async def answer_profile(
    control: Transport, profile_token: str | None, options: WebRtcOptions
) -> Transport | None:
    """What an answerer's call runs over once `profile_token` was negotiated: `control` itself,
    or for ``rtvbp.webrtc.v1`` the transport of the answered offer; None when the offer was
    refused (the peer was told, the WebSocket is closed, the reason is logged)."""
    if profile_token != WEBRTC_PROFILE:
        return control
    try:
        return await answer_offer(control, options)
    except WebRtcError:
        return None


async def _open_media(options: WebRtcOptions) -> WebRtcMedia:
    try:
        return await WebRtcMedia.open(
            options.media_address,
            port_range=options.port_range,
            connect_timeout_s=options.connect_timeout_s,
            consent_timeout_s=options.consent_timeout_s,
        )
    except OSError as error:
        raise WebRtcError(INTERNAL, f"no media socket: {error.strerror or error}") from None


async def _first_request(control: Transport, timeout_s: float) -> Request:
    try:
        async with asyncio.timeout(timeout_s):
            message = await control.receive()
    except TimeoutError:
        raise WebRtcError(BAD_REQUEST, f"no {OFFER_METHOD} within {timeout_s:g} s") from None
    if message.kind is MessageKind.CLOSE:
        raise WebRtcError(BAD_REQUEST, f"connection closed before {OFFER_METHOD}")
    if message.kind is not MessageKind.TEXT:
        raise WebRtcError(BAD_REQUEST, f"binary message before {OFFER_METHOD}")
    try:
        frame = decode_frame(message.data)
    except EnvelopeError:
        raise WebRtcError(BAD_REQUEST, f"first message is not a {OFFER_METHOD} frame") from None
    if not isinstance(frame, Request):
        raise WebRtcError(BAD_REQUEST, f"first message must be the {OFFER_METHOD} request")
    if frame.method != OFFER_METHOD:
        # Reported against this request, so the peer learns why its request went unanswered.
        raise _RequestRefused(frame, f"{frame.method} before {OFFER_METHOD}")
    return frame


class _RequestRefused(WebRtcError):
    def __init__(self, request: Request, message: str) -> None:
        super().__init__(BAD_REQUEST, message)
        self.request = request


async def _refuse(control: Transport, request: Request | None, error: WebRtcError) -> None:
    logger.info("RTVBP WebRTC offer refused: %s", error.message)
    if isinstance(error, _RequestRefused):
        request = error.request
    if request is not None:
        body = ErrorBody(error.code, error.message)
        try:
            await control.send_text(encode_frame(Response(request.id, error=body)))
        except RtvbpError:
            pass
    code = CLOSE_INTERNAL_ERROR if error.code == INTERNAL else CLOSE_PROTOCOL_ERROR
    await control.close(code, "WebRTC negotiation failed")


def _sdp_of(payload: bytes | object, what: str) -> str:
    if payload is ABSENT or not isinstance(payload, bytes):
        raise WebRtcError(BAD_REQUEST, f"the {what} carries no sdp")
    if len(payload) > MAX_SDP_BYTES + 1024:  # the JSON around the SDP is small
        raise WebRtcError(BAD_REQUEST, f"the {what} SDP is larger than {MAX_SDP_BYTES} bytes")
    try:
        text = _PAYLOAD_DECODER.decode(payload).sdp
    except msgspec.DecodeError:
        raise WebRtcError(BAD_REQUEST, f'the {what} must be {{"sdp": "<SDP text>"}}') from None
    if len(text.encode("utf-8", "replace")) > MAX_SDP_BYTES:
        raise WebRtcError(BAD_REQUEST, f"the {what} SDP is larger than {MAX_SDP_BYTES} bytes")
    return text


def _check_webrtc(text: str, what: str) -> WebRtcParameters:
    """The peer's SDP, checked for what webrtcws.v1 needs (the error names what is missing)."""
    try:
        if not text.startswith("v=0"):
            raise sdp.SdpError("an SDP starts with v=0")
        description = sdp.parse_sdp(text)
    except sdp.SdpError:
        raise WebRtcError(BAD_REQUEST, f"the {what} is not valid SDP") from None
    parameters = parse_webrtc(text)
    if not description.has_audio or parameters.audio_index is None:
        raise WebRtcError(BAD_REQUEST, f"the {what} has no audio section")
    if not any(
        codec.payload_type == 0 and codec.name.upper() == "PCMU" and codec.clock_rate == 8000
        for codec in description.codecs
    ):
        raise WebRtcError(BAD_REQUEST, f"the {what} has no PCMU/8000 (payload type 0)")
    if not parameters.ice_ufrag or not parameters.ice_password:
        raise WebRtcError(BAD_REQUEST, f"the {what} has no ICE credentials")
    if parameters.fingerprint_algorithm != "sha-256" or not parameters.fingerprint:
        raise WebRtcError(BAD_REQUEST, f"the {what} has no sha-256 DTLS fingerprint")
    return parameters


def _configure(
    media: WebRtcMedia,
    remote: WebRtcParameters,
    *,
    dtls_client: bool,
    candidates: Sequence[tuple[str, int]] = (),
) -> None:
    """Start `media` toward the peer of a checked SDP (`_check_webrtc`)."""
    assert remote.ice_ufrag is not None and remote.ice_password is not None
    assert remote.fingerprint is not None
    media.configure(
        remote_ufrag=remote.ice_ufrag,
        remote_password=remote.ice_password,
        remote_fingerprint=remote.fingerprint,
        dtls_client=dtls_client,
        candidates=candidates,
    )


def _write(
    media: WebRtcMedia,
    address: str,
    setup: str,
    remote: WebRtcParameters | None,
    *,
    ice_lite: bool,
) -> str:
    local = LocalWebRtc(
        ice_ufrag=media.ice.local.ufrag,
        ice_password=media.ice.local.password,
        fingerprint=local_certificate().fingerprint,
        setup=setup,
        ssrc=media.ssrc,
        cname=secrets.token_hex(8),
    )
    try:
        return write_webrtc_sdp(
            address=address,
            port=media.local_port,
            codecs=(_PCMU,),
            local=local,
            session_id=secrets.randbits(62),
            mid=(remote.mid if remote is not None else None) or "0",
            offered=remote.sections if remote is not None else (),
            audio_index=(remote.audio_index or 0) if remote is not None else 0,
            ice_lite=ice_lite,
        )
    except sdp.SdpError:
        raise WebRtcError(BAD_REQUEST, "the offer's media sections cannot be answered") from None


# ------------------------------------------------------------------------------------ offerer


async def send_offer(control: Transport, options: WebRtcOptions) -> WebRtcTransport:
    """Offer, read the answer, wait until the media is keyed; WebRtcError (WebSocket closed)
    when the answer is an error, bad, late, or the media does not connect."""
    try:
        media = await _open_media(options)
    except WebRtcError:
        await control.close(CLOSE_INTERNAL_ERROR, "no media socket")
        raise
    try:
        offer = _write(media, options.media_address, "actpass", None, ice_lite=False)
        request_id = f"webrtc-offer-{secrets.token_hex(6)}"
        params = msgspec.json.encode(_SdpPayload(offer))
        await control.send_text(encode_frame(Request(request_id, OFFER_METHOD, params)))
        answer = _sdp_of(await _answer_to(control, request_id, options.offer_timeout_s), "answer")
        parameters = _check_webrtc(answer, "answer")
        if parameters.setup not in ("active", "passive"):
            raise WebRtcError(BAD_REQUEST, "the answer must say a=setup:active or passive")
        candidates = parse_candidates(answer)
        if not candidates:
            raise WebRtcError(BAD_REQUEST, "the answer has no usable UDP candidate")
        _configure(
            media, parameters, dtls_client=parameters.setup == "passive", candidates=candidates
        )
        try:
            await media.secured
        except (ConnectionError, asyncio.CancelledError) as error:
            if media.failure is None:
                raise
            raise WebRtcError(INTERNAL, media.failure) from error
    except BaseException as error:
        media.close()
        failure = error.message if isinstance(error, WebRtcError) else "aborted"
        logger.info("RTVBP WebRTC offer failed: %s", failure)
        await control.close(CLOSE_PROTOCOL_ERROR, "WebRTC negotiation failed")
        raise
    return WebRtcTransport.attach(control, media)


async def _answer_to(control: Transport, request_id: str, timeout_s: float) -> object:
    """The result of the response to our offer; WebRtcError for an error or anything else."""
    try:
        async with asyncio.timeout(timeout_s):
            message = await control.receive()
    except TimeoutError:
        raise WebRtcError(
            BAD_REQUEST, f"no answer to {OFFER_METHOD} within {timeout_s:g} s"
        ) from None
    if message.kind is not MessageKind.TEXT:
        raise WebRtcError(BAD_REQUEST, f"no answer to {OFFER_METHOD}: the connection closed")
    try:
        frame = decode_frame(message.data)
    except EnvelopeError:
        raise WebRtcError(BAD_REQUEST, "the answer is not a classic.v1 frame") from None
    if not isinstance(frame, Response) or frame.response != request_id:
        raise WebRtcError(BAD_REQUEST, f"expected the response to {OFFER_METHOD} first")
    if frame.error is not None:
        raise WebRtcError(frame.error.code, f"the offer was refused: {frame.error.message}")
    return frame.result
