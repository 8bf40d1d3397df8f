"""A WebRTC endpoint: ICE-lite, DTLS-SRTP and rtcp-mux on one socket, routed like RTP.

It is an `RtpEndpoint` (passthrough, transcoding, mixing, RFC 4733 detection, forwarding and
injection all come from there) over a `WebRtcTransport` instead of a plain port pair. Audio is
Opus with the payload type the peer offered, DTMF telephone-event at Opus's 48 kHz clock when
offered.

States: `connecting` until the DTLS handshake has keyed SRTP and the peer's certificate matched
its SDP fingerprint, then `connected`. `disconnected` when the peer closes DTLS, when consent
freshness lapses (no valid ICE check for `webrtc_consent_timeout_s`; `connected` again when
checks resume), or when the handshake fails (for good: a wrong fingerprint, garbage DTLS).
DTLS role: an `actpass` or `active` offer is answered `passive`; `passive` is answered `active`.
Our offers say `actpass`. `ice_restart` writes a new offer with fresh ICE credentials; the
answer comes back through `accept_answer`.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Final

from callbridge.engine.endpoint import EndpointHost
from callbridge.engine.errors import endpoint_error
from callbridge.engine.rtp_endpoint import RtpEndpoint
from callbridge.engine.webrtc_transport import WebRtcEvents, WebRtcTransport
from callbridge.media import sdp
from callbridge.media.dtls import local_certificate
from callbridge.media.ice_lite import IceLite
from callbridge.media.webrtc_sdp import (
    LocalWebRtc,
    OfferedSection,
    WebRtcParameters,
    parse_webrtc,
    write_webrtc_sdp,
)

__all__ = ["WebRtcEndpoint"]

logger = logging.getLogger(__name__)

_CODECS: Final = ("opus",)
_ANSWER_DIRECTION: Final = {"sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}


def _check_parameters(parameters: WebRtcParameters, what: str) -> None:
    if not parameters.ice_ufrag or not parameters.ice_password:
        raise endpoint_error(f"WebRTC {what} has no ICE credentials (a=ice-ufrag, a=ice-pwd)")
    if parameters.fingerprint_algorithm != "sha-256" or not parameters.fingerprint:
        raise endpoint_error(f"WebRTC {what} has no sha-256 a=fingerprint")


class WebRtcEndpoint(RtpEndpoint, WebRtcEvents):
    """A browser leg (see the module docstring)."""

    kind = "webrtc"

    def __init__(self, host: EndpointHost, direction: str, state: str) -> None:
        super().__init__(host, direction, state)
        self.ice = IceLite(
            time.monotonic(), consent_timeout_s=host.context.config.webrtc_consent_timeout_s
        )
        self._setup = "actpass"
        self._mid = "0"
        self._sdp_direction = "sendrecv"
        self._sections: tuple[OfferedSection, ...] = ()
        """The m-sections of the peer's offer; the ones other than our audio are rejected."""
        self._audio_index = 0
        self.failure: str | None = None
        """Why the endpoint failed for good (handshake, fingerprint); None while it has not."""
        self._consent_lost = False

    # -- creation and negotiation --------------------------------------------------------------

    @classmethod
    async def answer_offer(
        cls, host: EndpointHost, offer: sdp.SessionDescription, direction: str, text: str
    ) -> tuple[WebRtcEndpoint, str]:
        """Answer a browser's offer; the endpoint is `connecting` until DTLS is done."""
        parameters = parse_webrtc(text)
        _check_parameters(parameters, "offer")
        codecs = sdp.answer_codecs(offer, _CODECS)
        if sdp.send_codec(codecs) is None:
            raise endpoint_error("WebRTC offer has no Opus")
        endpoint = cls(host, direction, "connecting")
        await endpoint._open()
        try:
            endpoint._mid = parameters.mid or "0"
            endpoint._sections = parameters.sections
            endpoint._audio_index = parameters.audio_index or 0
            endpoint._sdp_direction = _ANSWER_DIRECTION.get(offer.direction, "sendrecv")
            endpoint._setup = "active" if parameters.setup == "passive" else "passive"
            endpoint._negotiated(codecs, offer, parameters)
            return endpoint, endpoint._write(endpoint.codecs)
        except sdp.SdpError as error:
            endpoint.close()
            raise endpoint_error(f"Cannot answer this WebRTC offer: {error}") from None
        except BaseException:
            endpoint.close()
            raise

    async def _open_transport(self) -> WebRtcTransport:
        context = self.host.context
        return await WebRtcTransport.open_single(
            context.ports,
            context.config.media_ip,
            on_packet=self._on_packet,
            on_rtcp_bye=self._on_rtcp_bye,
            events=self,
            ice=self.ice,
            now=time.monotonic,
        )

    @property
    def _webrtc(self) -> WebRtcTransport:
        transport = self.transport
        assert isinstance(transport, WebRtcTransport)
        return transport

    def _write(self, codecs: tuple[sdp.Codec, ...]) -> str:
        transport = self._webrtc
        local = LocalWebRtc(
            ice_ufrag=self.ice.local.ufrag,
            ice_password=self.ice.local.password,
            fingerprint=local_certificate().fingerprint,
            setup=self._setup,
            ssrc=transport.stream.ssrc,
            cname=transport.stream.cname,
        )
        return write_webrtc_sdp(
            address=self.host.context.config.media_ip,
            port=transport.local_port,
            codecs=codecs,
            local=local,
            session_id=uuid.UUID(self.id).int & 0x7FFFFFFFFFFFFFFF,
            version=self._sdp_version,
            mid=self._mid,
            direction=self._sdp_direction,
            offered=self._sections,
            audio_index=self._audio_index,
        )

    def _negotiated(
        self,
        codecs: tuple[sdp.Codec, ...],
        remote: sdp.SessionDescription,
        parameters: WebRtcParameters,
    ) -> None:
        """Codecs, the peer's ICE ufrag, and (the first time) our DTLS role."""
        transport = self._webrtc
        self._apply(codecs, remote)
        selected = transport.ice.selected
        transport.set_remote(None if selected is None else (selected[0], selected[1]), None, True)
        assert parameters.ice_ufrag is not None
        self.ice.set_remote(parameters.ice_ufrag)
        if transport.dtls is None and self.failure is None:
            transport.start_dtls(
                client=self._setup == "active", remote_fingerprint=parameters.fingerprint
            )
        elif parameters.fingerprint is not None:
            transport.set_remote_fingerprint(parameters.fingerprint)

    def accept_answer(self, answer_text: str) -> None:
        """The answer to our offer or to an ICE restart."""
        if not self._offered:
            raise endpoint_error("No pending offer to accept answer for")
        answer = sdp.parse_sdp(answer_text)
        parameters = parse_webrtc(answer_text)
        _check_parameters(parameters, "answer")
        codecs = sdp.reduce_answer_codecs(answer, self._offered)
        if sdp.send_codec(codecs) is None:
            raise endpoint_error("SDP answer contains no codecs from the original offer")
        if self._webrtc.dtls is None and self.failure is None:
            if parameters.setup not in ("active", "passive"):
                raise endpoint_error("WebRTC answer must say a=setup:active or a=setup:passive")
            self._setup = "passive" if parameters.setup == "active" else "active"
        self._negotiated(codecs, answer, parameters)
        self.host.routing_changed()

    def ice_restart(self) -> str:
        """A new offer with fresh ICE credentials (the old ones work until the new ones do)."""
        self.ice.restart()
        self._sdp_version += 1
        if not self._offered:
            self._offered = self.codecs
        self._setup = "actpass"
        return self._write(self._offered)

    # -- transport events ----------------------------------------------------------------------

    def secured(self) -> None:
        if self.state == "connecting":
            self.host.set_state(self, "connected")

    def failed(self, reason: str) -> None:
        self.failure = reason
        logger.warning("WebRTC endpoint %s failed: %s", self.id, reason)
        self.host.set_state(self, "disconnected")

    def peer_closed(self) -> None:
        self.host.set_state(self, "disconnected")

    def srtp_dropped(self) -> None:
        self._srtp_dropped()

    def housekeeping(self, now: float) -> None:
        super().housekeeping(now)
        transport = self.transport
        if self.failure is not None or transport is None or transport.closed:
            return
        expired = self.ice.consent_expired(now)
        if self.state == "connected" and expired:
            self._consent_lost = True
            self.host.set_state(self, "disconnected")
        elif self.state == "disconnected" and self._consent_lost and not expired:
            self._consent_lost = False
            self.host.set_state(self, "connected")

    def packet_counters(self) -> tuple[int, int]:
        """SRTP that came before the keys, STUN with wrong credentials and DTLS from unchecked
        sources count as malformed (what fails to unprotect is in `srtp_errors_total`)."""
        malformed, unexpected = super().packet_counters()
        return (malformed + self._rejected(), unexpected)

    def _rejected(self) -> int:
        transport = self._webrtc
        return transport.unkeyed_packets + transport.dtls_ignored + self.ice.checks_rejected

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.metrics.packets_malformed_total += self._rejected()
        super().close()

    def info(self) -> dict[str, object]:
        entry = super().info()
        if self.failure is not None:
            entry["failure"] = self.failure
        return entry
