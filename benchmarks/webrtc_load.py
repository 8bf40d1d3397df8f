"""A WebRTC party for the benchmarks, made of callbridge's own media pieces: what a browser
must do to connect to a callbridge (ICE-lite) WebRTC endpoint and exchange SRTP with it. One
STUN check with USE-CANDIDATE, a DTLS client handshake, then SRTP both ways. Not a browser: no
ICE agent, no RTCP, no retransmission beyond the handshake's.

Used by benchmarks/webrtc_endpoints.py (peers in the engine's process) and by the load generator
of benchmarks/rtp_load.py (its own process: it tells the server its certificate's fingerprint,
the server gives it the endpoint's ICE credentials and fingerprint from the answer).
"""

from __future__ import annotations

import os
from typing import Any

from callbridge.media import stun
from callbridge.media.dtls import DtlsSession, local_certificate
from callbridge.media.srtp import SrtpSession
from callbridge.media.webrtc_sdp import parse_webrtc

__all__ = ["OPUS_PAYLOAD_TYPE", "WebRtcLink", "answer_credentials", "webrtc_offer_sdp"]

PEER_UFRAG = "peer"
PEER_PASSWORD = "peerpasswordpeerpassword"
OPUS_PAYLOAD_TYPE = 111


def webrtc_offer_sdp(fingerprint: str) -> str:
    """A browser-like audio offer (Opus, rtcp-mux, actpass) for a peer whose DTLS certificate
    has `fingerprint`; no candidates (the endpoint is ICE-lite, the peer checks it)."""
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio 9 UDP/TLS/RTP/SAVPF {OPUS_PAYLOAD_TYPE}\r\na=mid:0\r\n"
        f"a=ice-ufrag:{PEER_UFRAG}\r\na=ice-pwd:{PEER_PASSWORD}\r\n"
        f"a=fingerprint:sha-256 {fingerprint}\r\na=setup:actpass\r\na=rtcp-mux\r\n"
        f"a=rtpmap:{OPUS_PAYLOAD_TYPE} opus/48000/2\r\n"
    )


def answer_credentials(answer: str) -> dict[str, str]:
    """What a peer needs from the endpoint's answer: its ICE credentials and fingerprint."""
    ours = parse_webrtc(answer)
    assert ours.ice_ufrag and ours.ice_password and ours.fingerprint, "not a WebRTC answer"
    return {
        "ice_ufrag": ours.ice_ufrag,
        "ice_password": ours.ice_password,
        "fingerprint": ours.fingerprint,
    }


class WebRtcLink:
    """The peer side of one WebRTC endpoint: `start`, then feed it every non-SRTP datagram with
    `handle` and send what it returns; `srtp` is set once the handshake is verified."""

    def __init__(self) -> None:
        self.dtls = DtlsSession(local_certificate(), client=True)
        self.srtp: SrtpSession | None = None
        self.checked = False
        self._check = b""

    @staticmethod
    def fingerprint() -> str:
        """This process's certificate fingerprint (for `webrtc_offer_sdp`)."""
        return local_certificate().fingerprint

    def start(self, credentials: dict[str, str]) -> list[bytes]:
        """The connectivity check to send, nominating the endpoint's one candidate."""
        self.dtls.remote_fingerprint = credentials["fingerprint"]
        self._check = stun.build_stun(
            stun.BINDING_REQUEST,
            os.urandom(12),
            [
                (stun.USERNAME, f"{credentials['ice_ufrag']}:{PEER_UFRAG}".encode()),
                (stun.USE_CANDIDATE, b""),
            ],
            integrity_key=credentials["ice_password"].encode(),
        )
        return [self._check]

    def handle(self, datagram: bytes) -> list[bytes]:
        """A STUN or DTLS datagram from the endpoint; the datagrams to send back."""
        if not datagram:
            return []
        if datagram[0] < 4:  # the check's response: now the DTLS handshake
            if self.checked:
                return []
            self.checked = True
            return self.dtls.start()
        flights = self.dtls.receive(datagram)
        if self.dtls.srtp is not None:
            self.srtp = self.dtls.srtp
        return flights

    def retry(self) -> list[bytes]:
        """What to send again while the link is not up (a lost check or flight)."""
        if not self.checked:
            return [self._check]
        return self.dtls.handle_timeout() if self.srtp is None else []

    def protect(self, packet: Any) -> bytes:
        assert self.srtp is not None
        protected = self.srtp.protect(bytes(packet))
        assert protected is not None
        return protected
