"""WebRTC SDP: attributes of a browser-style offer, our answer read back by both parsers."""

from __future__ import annotations

import pytest

from callbridge.media.sdp import OPUS, SdpError, parse_sdp
from callbridge.media.webrtc_sdp import LocalWebRtc, parse_webrtc, write_webrtc_sdp

OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 1 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "a=fingerprint:sha-256 ab:cd:ef",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 0.0.0.0",
        "a=mid:0",
        "a=ice-ufrag:Peer",
        "a=ice-pwd:peerpasswordpeerpassword",
        "a=setup:actpass",
        "a=rtpmap:111 opus/48000/2",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "a=mid:1",
        "",
    ]
)
LOCAL = LocalWebRtc("ufrag", "p" * 24, "AB:CD", "passive", 0x1234, "cname")


def test_offer_attributes_session_and_media_level() -> None:
    parameters = parse_webrtc(OFFER)
    assert parameters.ice_ufrag == "Peer" and parameters.ice_password == "peerpasswordpeerpassword"
    assert parameters.fingerprint_algorithm == "sha-256" and parameters.fingerprint == "AB:CD:EF"
    assert parameters.setup == "actpass" and parameters.mid == "0" and not parameters.ice_lite


def test_answer_reads_back() -> None:
    text = write_webrtc_sdp(
        address="127.0.0.1", port=40000, codecs=[OPUS], local=LOCAL, session_id=7, mid="audio"
    )
    parameters = parse_webrtc(text)
    assert parameters.ice_lite and parameters.mid == "audio" and parameters.setup == "passive"
    description = parse_sdp(text)
    assert description.webrtc and description.rtcp_mux and description.port == 40000
    assert [codec.name for codec in description.codecs] == ["opus"]
    assert "a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host" in text


def test_values_that_would_break_the_sdp_are_refused() -> None:
    with pytest.raises(SdpError):
        write_webrtc_sdp(
            address="127.0.0.1", port=1, codecs=[OPUS], local=LOCAL, session_id=1, mid="a\r\nb"
        )


def test_garbage_gives_empty_parameters() -> None:
    parameters = parse_webrtc("\x00garbage\nm=\na=fingerprint:\n")
    assert parameters.fingerprint is None and parameters.ice_ufrag is None


def test_other_sections_are_answered_rejected_in_place() -> None:
    offer = OFFER.replace(
        "m=audio", "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:d\r\nm=audio"
    )
    parameters = parse_webrtc(offer)
    assert [section.kind for section in parameters.sections] == ["application", "audio", "video"]
    assert parameters.audio_index == 1 and parameters.mid == "0"
    text = write_webrtc_sdp(
        address="127.0.0.1",
        port=40000,
        codecs=[OPUS],
        local=LOCAL,
        session_id=7,
        mid="0",
        offered=parameters.sections,
        audio_index=1,
    )
    media = [line for line in text.split("\r\n") if line.startswith("m=")]
    assert media == [
        "m=application 0 UDP/DTLS/SCTP webrtc-datachannel",
        "m=audio 40000 UDP/TLS/RTP/SAVPF 111",
        "m=video 0 UDP/TLS/RTP/SAVPF 96",
    ]
    assert "a=mid:d" in text and "a=mid:1" in text and "a=group:BUNDLE 0\r\n" in text
