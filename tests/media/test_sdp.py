from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.media.sdp import (
    G722,
    OPUS,
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Codec,
    Crypto,
    SdpError,
    SessionDescription,
    answer_codecs,
    offer_codecs,
    parse_sdp,
    reduce_answer_codecs,
    send_codec,
    telephone_event_codec,
    write_sdp,
)
from callbridge.media.srtp import SUITES, SrtpError

PHONE_OFFER = (
    "v=0\r\n"
    "o=- 3894000000 3894000000 IN IP4 192.0.2.10\r\n"
    "s=SIP Call\r\n"
    "c=IN IP4 192.0.2.10\r\n"
    "t=0 0\r\n"
    "m=audio 40000 RTP/AVP 9 0 8 101\r\n"
    "a=rtpmap:9 G722/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\n"
    "a=ptime:20\r\n"
    "a=sendrecv\r\n"
)

WEBRTC_OFFER = """v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
a=msid-semantic: WMS
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 126
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:Xy1Z
a=ice-pwd:abcdefghijklmnopqrstuvwx
a=fingerprint:sha-256 AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89
a=setup:actpass
a=mid:0
a=sendrecv
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=rtpmap:126 telephone-event/8000
"""  # noqa: E501

KEY = bytes(range(30))
KEY_TEXT = base64.b64encode(KEY).decode()


def test_parses_a_sip_phone_offer() -> None:
    offer = parse_sdp(PHONE_OFFER)
    assert offer.has_audio
    assert offer.remote_address == ("192.0.2.10", 40000)
    assert offer.protocol == "RTP/AVP"
    assert offer.payload_types == (9, 0, 8, 101)
    assert offer.codecs == (
        Codec("G722", 9, 8000),
        Codec("PCMU", 0, 8000),
        Codec("PCMA", 8, 8000),
        Codec("telephone-event", 101, 8000, 1, "0-16"),
    )
    assert offer.ptime_ms == 20
    assert offer.direction == "sendrecv"
    assert not offer.webrtc
    assert not offer.srtp
    assert not offer.rtcp_mux


def test_answer_to_a_sip_phone_offer_has_the_exact_format() -> None:
    codecs = answer_codecs(parse_sdp(PHONE_OFFER))
    answer = write_sdp(address="203.0.113.5", port=30000, codecs=codecs, session_id=1234)
    assert answer == (
        "v=0\r\n"
        "o=callbridge 1234 1 IN IP4 203.0.113.5\r\n"
        "s=callbridge\r\n"
        "c=IN IP4 203.0.113.5\r\n"
        "t=0 0\r\n"
        "m=audio 30000 RTP/AVP 9 0 8 101\r\n"
        "a=rtpmap:9 G722/8000\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-16\r\n"
        "a=sendrecv\r\n"
        "a=rtcp-mux\r\n"
        "a=ptime:20\r\n"
    )
    assert send_codec(codecs) == G722


def test_rtpbridge_codec_set_ignores_pcma() -> None:
    codecs = answer_codecs(parse_sdp(PHONE_OFFER), supported=("PCMU", "G722", "opus"))
    assert [codec.payload_type for codec in codecs] == [9, 0, 101]


def test_default_offer_has_the_exact_format() -> None:
    offer = write_sdp(
        address="10.0.0.1", port=20000, codecs=offer_codecs(), session_id=42, version=1
    )
    assert offer == (
        "v=0\r\n"
        "o=callbridge 42 1 IN IP4 10.0.0.1\r\n"
        "s=callbridge\r\n"
        "c=IN IP4 10.0.0.1\r\n"
        "t=0 0\r\n"
        "m=audio 20000 RTP/AVP 0 8 9 111 101\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:9 G722/8000\r\n"
        "a=rtpmap:111 opus/48000/2\r\n"
        "a=fmtp:111 minptime=10;useinbandfec=1;stereo=0;sprop-stereo=0\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-16\r\n"
        "a=sendrecv\r\n"
        "a=rtcp-mux\r\n"
        "a=ptime:20\r\n"
    )


def test_srtp_offer_carries_crypto_and_savp() -> None:
    crypto = Crypto(1, KEY_TEXT)
    offer = write_sdp(
        address="10.0.0.1", port=20000, codecs=offer_codecs(["pcmu"]), session_id=1, crypto=crypto
    )
    assert "m=audio 20000 RTP/SAVP 0 101\r\n" in offer
    assert f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_TEXT}\r\na=sendrecv\r\n" in offer
    assert parse_sdp(offer).crypto == crypto


def test_offer_codec_filter_is_case_insensitive_and_ordered() -> None:
    codecs = offer_codecs(["OPUS", "pcmu", "G.729", "opus", "telephone-event"])
    assert codecs == (OPUS, PCMU, Codec("telephone-event", 101, 48000, 1, "0-16"))
    assert offer_codecs([]) == (TELEPHONE_EVENT,)


def test_webrtc_offer_is_detected() -> None:
    offer = parse_sdp(WEBRTC_OFFER)
    assert offer.webrtc
    assert offer.rtcp_mux
    assert offer.rtcp_port == 9
    assert offer.codecs[0] == Codec("opus", 111, 48000, 2, "minptime=10;useinbandfec=1")


@pytest.mark.parametrize("marker", ["a=fingerprint:sha-256 00", "a=ice-ufrag:abc"])
def test_webrtc_marker_in_any_section_counts(marker: str) -> None:
    text = "v=0\nm=audio 4000 RTP/AVP 0\nm=video 4002 RTP/AVP 96\n" + marker + "\n"
    assert parse_sdp(text).webrtc
    assert parse_sdp("v=0\n" + marker + "\n").webrtc


def test_lf_only_lines_parse_like_crlf() -> None:
    assert parse_sdp(PHONE_OFFER.replace("\r\n", "\n")) == parse_sdp(PHONE_OFFER)
    assert parse_sdp(PHONE_OFFER.encode()) == parse_sdp(PHONE_OFFER)


def test_media_level_connection_overrides_session_level() -> None:
    text = (
        "v=0\nc=IN IP4 198.51.100.1\nt=0 0\n"
        "m=video 5000 RTP/AVP 96\nc=IN IP4 198.51.100.9\n"
        "m=audio 6000 RTP/AVP 0\nc=IN IP4 198.51.100.2/127\na=rtpmap:0 PCMU/8000\n"
        "m=audio 7000 RTP/AVP 8\nc=IN IP4 198.51.100.3\na=rtpmap:8 PCMA/8000\n"
    )
    offer = parse_sdp(text)
    assert offer.remote_address == ("198.51.100.2", 6000)
    assert offer.codecs == (PCMU,)


def test_session_level_connection_applies_without_media_level() -> None:
    offer = parse_sdp("v=0\nc=IN IP6 2001:db8::1\nm=audio 6000 RTP/AVP 0\n")
    assert offer.remote_address == ("2001:db8::1", 6000)


def test_port_zero_means_no_address() -> None:
    offer = parse_sdp(PHONE_OFFER.replace("m=audio 40000", "m=audio 0"))
    assert offer.connection_address == "192.0.2.10"
    assert offer.remote_address is None


def test_missing_connection_means_no_address() -> None:
    assert parse_sdp("v=0\r\nm=audio 4000 RTP/AVP 0\r\n").remote_address is None


def test_offer_without_known_codecs_gets_a_telephone_event_only_answer() -> None:
    offer = parse_sdp(
        "v=0\nc=IN IP4 192.0.2.1\nm=audio 4000 RTP/AVP 96 18\na=rtpmap:96 iLBC/8000\n"
    )
    assert offer.payload_types == (96, 18)
    assert [codec.name for codec in offer.codecs] == ["iLBC", "G729"]
    codecs = answer_codecs(offer)
    assert codecs == (TELEPHONE_EVENT,)
    answer = write_sdp(address="10.0.0.1", port=20000, codecs=codecs, session_id=1)
    assert "m=audio 20000 RTP/AVP 101\r\n" in answer
    assert send_codec(codecs) is None


def test_static_payload_types_are_known_without_rtpmap() -> None:
    offer = parse_sdp("m=audio 4000 RTP/AVP 0 8 9 96\n")
    assert offer.codecs == (PCMU, PCMA, G722)


def test_rtpmap_overrides_static_meaning_and_first_wins() -> None:
    offer = parse_sdp("m=audio 4000 RTP/AVP 0\na=rtpmap:0 PCMU/8000\na=rtpmap:0 PCMA/8000\n")
    assert offer.codecs == (PCMU,)


def test_attributes_outside_the_audio_section_are_ignored() -> None:
    text = (
        "v=0\na=rtpmap:0 PCMA/8000\na=rtcp-mux\na=recvonly\n"
        "m=audio 4000 RTP/AVP 0\n"
        "m=video 5000 RTP/AVP 96\na=rtpmap:96 VP8/90000\na=rtcp-mux\na=ptime:40\n"
    )
    offer = parse_sdp(text)
    assert offer.codecs == (PCMU,)
    assert not offer.rtcp_mux
    assert offer.ptime_ms is None
    assert offer.direction == "recvonly"  # session-level default


def test_media_direction_overrides_session_direction() -> None:
    offer = parse_sdp("v=0\na=sendonly\nm=audio 4000 RTP/AVP 0\na=inactive\n")
    assert offer.direction == "inactive"


def test_osrtp_offer_and_answer() -> None:
    text = PHONE_OFFER + f"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{KEY_TEXT}|2^31|1:1\r\n"
    offer = parse_sdp(text)
    assert offer.osrtp
    assert offer.crypto == Crypto(2, KEY_TEXT)
    assert offer.crypto.key().master == KEY
    answer = write_sdp(
        address="10.0.0.1",
        port=20000,
        codecs=answer_codecs(offer),
        session_id=1,
        crypto=Crypto(offer.crypto.tag, base64.b64encode(bytes(30)).decode()),
    )
    assert "m=audio 20000 RTP/SAVP 9 0 8 101\r\n" in answer
    assert "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:" in answer


def test_savp_offer_is_srtp_not_osrtp() -> None:
    text = PHONE_OFFER.replace("RTP/AVP", "RTP/SAVP")
    text += f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_TEXT}\r\n"
    offer = parse_sdp(text)
    assert offer.srtp
    assert not offer.osrtp


def test_last_aes_cm_80_line_wins_over_other_suites() -> None:
    other = base64.b64encode(bytes(30)).decode()
    text = (
        "m=audio 4000 RTP/SAVP 0\n"
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{KEY_TEXT}\n"
        f"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{KEY_TEXT}\n"
        f"a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{other}\n"
        f"a=crypto:4 AES_256_CM_HMAC_SHA1_80 inline:{KEY_TEXT}\n"
        f"a=crypto:5 AES_CM_128_HMAC_SHA1_32 inline:{KEY_TEXT}\n"
        "a=crypto:6 AES_CM_128_HMAC_SHA1_80 notinline\n"
    )
    assert parse_sdp(text).crypto == Crypto(3, other)


def test_first_other_supported_suite_is_taken_without_aes_cm_80() -> None:
    gcm_key = base64.b64encode(bytes(28)).decode()
    text = (
        "m=audio 4000 RTP/SAVP 0\n"
        f"a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{KEY_TEXT}\n"
        f"a=crypto:2 aead_aes_128_gcm inline:{gcm_key}\n"
        f"a=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:{KEY_TEXT}\n"
    )
    crypto = parse_sdp(text).crypto
    assert crypto == Crypto(2, gcm_key, "AEAD_AES_128_GCM")
    assert crypto.key().master == bytes(28)


def test_crypto_key_decoding_errors() -> None:
    with pytest.raises(SrtpError, match="base64"):
        Crypto(1, "not*base64").key()
    with pytest.raises(SrtpError, match="need 30"):
        Crypto(1, base64.b64encode(bytes(20)).decode()).key()
    assert Crypto(1, base64.b64encode(bytes(range(32))).decode()).key().master == bytes(range(30))
    assert Crypto(1, KEY_TEXT.rstrip("=")).key().master == KEY


def test_garbage_gives_a_neutral_description() -> None:
    for text in ["", "garbage", "\x00\xff\n\n\r\n", "m=\nc=\na=\na=rtpmap:\na=rtpmap:x y/z/w"]:
        assert parse_sdp(text) == SessionDescription()


def test_garbage_values_are_skipped() -> None:
    text = (
        "c=IN IP4\nm=audio 99999 RTP/AVP 0 abc 128 -1 ٣ 8\n"
        "a=rtpmap:300 PCMU/8000\na=rtpmap:8 PCMA/abc\na=rtpmap:8 PCMA/0\na=ptime:x\n"
    )
    offer = parse_sdp(text)
    assert offer.port == 0
    assert offer.payload_types == (0, 8)
    assert offer.codecs == (PCMU, PCMA)
    assert offer.connection_address is None
    assert offer.ptime_ms is None


def test_at_most_32_payload_types_and_rtpmaps_are_kept() -> None:
    payload_types = " ".join(str(number) for number in range(40, 128))
    rtpmaps = "".join(f"a=rtpmap:{number} X{number}/8000\n" for number in range(40, 128))
    offer = parse_sdp(f"m=audio 4000 RTP/AVP {payload_types}\n{rtpmaps}")
    assert offer.payload_types == tuple(range(40, 72))
    assert len(offer.codecs) == 32


def test_huge_input_is_handled() -> None:
    text = "m=audio 4000 RTP/AVP " + "0 " * 200_000 + "\n" + "a=rtpmap:0 x/8000\n" * 20_000
    offer = parse_sdp(text + "a=x" * 100_000)
    assert offer.payload_types == (0,)


def test_answer_keeps_offer_payload_types_and_uses_canonical_text() -> None:
    text = (
        "m=audio 4000 RTP/AVP 96 97 98 99 100\n"
        "a=rtpmap:96 OPUS/48000/2\na=rtpmap:97 opus/48000/2\na=rtpmap:98 pcmu/8000\n"
        "a=rtpmap:99 g722/16000\na=rtpmap:100 PCMA/16000\n"
    )
    codecs = answer_codecs(parse_sdp(text))
    assert codecs == (
        Codec("opus", 96, 48000, 2, OPUS.fmtp),
        Codec("PCMU", 98, 8000),
        Codec("G722", 99, 8000),
        Codec("telephone-event", 101, 48000, 1, "0-16"),
    )


def test_answer_prefers_the_telephone_event_at_the_primary_clock() -> None:
    text = (
        "m=audio 4000 RTP/AVP 111 126 101\n"
        "a=rtpmap:111 opus/48000/2\n"
        "a=rtpmap:126 telephone-event/8000\n"
        "a=rtpmap:101 telephone-event/48000\na=fmtp:101 0-15\n"
    )
    assert telephone_event_codec(answer_codecs(parse_sdp(text))) == Codec(
        "telephone-event", 101, 48000, 1, "0-16"
    )
    only_narrowband = text.replace("a=rtpmap:101 telephone-event/48000", "")
    assert telephone_event_codec(answer_codecs(parse_sdp(only_narrowband))) == Codec(
        "telephone-event", 126, 8000, 1, "0-16"
    )


def test_answer_avoids_a_payload_type_taken_by_audio() -> None:
    offer = parse_sdp("m=audio 4000 RTP/AVP 101\na=rtpmap:101 opus/48000/2\n")
    assert [codec.payload_type for codec in answer_codecs(offer)] == [101, 96]


def test_answer_reduced_to_offered_codecs() -> None:
    offered = offer_codecs(["PCMU", "PCMA", "opus"])
    answer = parse_sdp(
        "c=IN IP4 192.0.2.1\nm=audio 5000 RTP/AVP 8 18 96 100\n"
        "a=rtpmap:96 opus/48000/2\na=rtpmap:100 telephone-event/8000\n"
    )
    reduced = reduce_answer_codecs(answer, offered)
    assert [(codec.name, codec.payload_type) for codec in reduced] == [
        ("PCMA", 8),
        ("opus", 96),
        ("telephone-event", 100),
    ]
    assert send_codec(reduced) == PCMA
    assert reduce_answer_codecs(parse_sdp("m=audio 5000 RTP/AVP 18\n"), offered) == ()


def test_ipv6_writer_and_validation() -> None:
    text = write_sdp(address="2001:db8::1", port=4000, codecs=[PCMU], session_id=1)
    assert "c=IN IP6 2001:db8::1\r\n" in text
    assert "o=callbridge 1 1 IN IP6 2001:db8::1\r\n" in text
    for bad_address in ["", "10.0.0.1\r\na=evil", "a b"]:
        with pytest.raises(SdpError):
            write_sdp(address=bad_address, port=4000, codecs=[PCMU], session_id=1)
    with pytest.raises(SdpError):
        write_sdp(address="10.0.0.1", port=70000, codecs=[PCMU], session_id=1)
    with pytest.raises(SdpError):
        write_sdp(address="10.0.0.1", port=4000, codecs=[Codec("X\n", 96, 8000)], session_id=1)
    with pytest.raises(SdpError):
        write_sdp(address="10.0.0.1", port=4000, codecs=[Codec("X", 128, 8000)], session_id=1)


@given(st.text(max_size=400))
def test_parse_never_raises_on_text(text: str) -> None:
    offer = parse_sdp(text)
    assert len(offer.payload_types) <= 32


line_starts = st.sampled_from(
    [
        "v=0",
        "c=IN IP4 ",
        "c=IN IP6 ",
        "m=audio ",
        "m=video ",
        "m=audio 4000 RTP/AVP ",
        "a=rtpmap:",
        "a=rtpmap:0 ",
        "a=fmtp:",
        "a=crypto:",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:",
        "a=rtcp:",
        "a=rtcp-mux",
        "a=ptime:",
        "a=sendonly",
        "a=fingerprint:",
        "",
    ]
)
sdp_like = st.lists(
    st.tuples(line_starts, st.text(alphabet="0123456789 /:|;.abcAZ-\t=", max_size=20)),
    max_size=30,
)


@given(sdp_like, st.sampled_from(["\n", "\r\n"]))
def test_parse_never_raises_on_sdp_like_lines(lines: list[tuple[str, str]], ending: str) -> None:
    offer = parse_sdp(ending.join(start + rest for start, rest in lines))
    assert all(0 <= number <= 127 for number in offer.payload_types)
    answer_codecs(offer)


@given(
    st.lists(st.sampled_from(["PCMU", "PCMA", "G722", "opus", "iLBC"]), max_size=6),
    st.integers(1, 65535),
    st.ip_addresses().map(str),
    st.booleans(),
    st.integers(0, (1 << 63) - 1),
)
def test_written_sdp_parses_back(
    names: list[str], port: int, address: str, srtp: bool, session_id: int
) -> None:
    codecs = offer_codecs(names)
    crypto = Crypto(1, KEY_TEXT) if srtp else None
    text = write_sdp(
        address=address, port=port, codecs=codecs, session_id=session_id, crypto=crypto
    )
    parsed = parse_sdp(text)
    assert parsed.codecs == codecs
    assert parsed.remote_address == (address, port)
    assert parsed.crypto == crypto
    assert parsed.rtcp_mux
    assert parsed.ptime_ms == 20
    assert parsed.protocol == ("RTP/SAVP" if srtp else "RTP/AVP")
    assert not parsed.webrtc
    assert answer_codecs(parsed) == codecs


def test_unsupported_crypto_suites_are_reported_and_savp_is_secure() -> None:
    text = (
        "m=audio 4000 RTP/SAVPF 0\n"
        f"a=crypto:1 F8_128_HMAC_SHA1_80 inline:{KEY_TEXT}\n"
        f"a=crypto:2 AES_256_CM_HMAC_SHA1_32 inline:{KEY_TEXT}\n"
        "a=crypto:3\n"
    )
    offer = parse_sdp(text)
    assert offer.crypto is None and offer.secure_profile
    assert offer.unsupported_crypto_suites == ("F8_128_HMAC_SHA1_80", "AES_256_CM_HMAC_SHA1_32")
    assert not parse_sdp(PHONE_OFFER).secure_profile


@given(
    st.text(max_size=120)
    | st.builds(
        "1 {} inline:{}".format,
        st.sampled_from([*SUITES, "AES_CM_128_HMAC_SHA1_81"]),
        st.text("ABCDEFabcdef0123456789+/=*|:", max_size=80),
    )
)
def test_any_crypto_line_parses_and_its_key_fails_only_with_srtp_error(value: str) -> None:
    offer = parse_sdp("m=audio 4000 RTP/SAVP 0\na=crypto:" + value + "\n")
    if offer.crypto is not None:
        try:
            assert len(offer.crypto.key().master) in (28, 30, 44)
        except SrtpError:
            pass
