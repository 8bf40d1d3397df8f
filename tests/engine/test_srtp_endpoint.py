"""SRTP (SDES) endpoints with real UDP peers whose packets are protected with libsrtp directly."""

from __future__ import annotations

import asyncio
import base64
import secrets

import numpy as np
import pylibsrtp
import pytest

from callbridge.engine.errors import EngineError
from callbridge.engine.manager import SessionManager
from callbridge.engine.offers import create_from_offer, create_offer, srtp_rekey
from callbridge.engine.rtp_endpoint import RtpEndpoint
from callbridge.engine.session import MediaSession
from callbridge.engine.stats import endpoint_stats
from callbridge.engine.tone_endpoint import create_tone
from callbridge.media import srtp as srtp_module
from callbridge.media.codecs import OPUS, PCMU, create_decoder, create_encoder
from callbridge.media.rtcp import Goodbye, build_goodbye, parse_rtcp
from callbridge.media.rtp import RtpPacket, build_rtp, parse_rtp
from callbridge.media.sdp import parse_sdp
from tests.engine.engine_peers import EventLog, RtpPeer, dominant_frequency, manager, sine_pcm

__all__ = ["manager"]

SUITE = "AES_CM_128_HMAC_SHA1_80"


class SrtpPeer(RtpPeer):
    """An RTP peer that protects what it sends and unprotects what it gets, with libsrtp."""

    def __init__(self) -> None:
        super().__init__()
        self.key = secrets.token_bytes(30)
        self.sender = self._context(self.key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        self.receiver: pylibsrtp.Session | None = None

    @staticmethod
    def _context(key: bytes, ssrc_type: int) -> pylibsrtp.Session:
        return pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=ssrc_type))

    @property
    def inline(self) -> str:
        return base64.b64encode(self.key).decode()

    def rekey(self) -> None:
        self.key = secrets.token_bytes(30)
        self.sender = self._context(self.key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)

    def srtp_offer(self, profile: str = "RTP/SAVP", tag: int = 7) -> str:
        text = self.offer().replace("RTP/AVP", profile)
        return text + f"a=crypto:{tag} {SUITE} inline:{self.inline}\r\n"

    def srtp_answer(self, offer_text: str, key: str | None = None) -> str:
        """An answer with our key (or `key`) under the offer's tag."""
        offer = parse_sdp(offer_text)
        assert offer.crypto is not None
        text = self.answer_to(offer_text).replace("RTP/AVP", "RTP/SAVP")
        return text + f"a=crypto:{offer.crypto.tag} {SUITE} inline:{key or self.inline}\r\n"

    def listen_to(self, sdp_text: str) -> None:
        """Unprotect what the engine sends with the key its SDP announces."""
        crypto = parse_sdp(sdp_text).crypto
        assert crypto is not None
        self.receiver = self._context(crypto.key().master, pylibsrtp.Policy.SSRC_ANY_INBOUND)

    def protected(self, payload: bytes, payload_type: int = 0) -> bytes:
        packet = build_rtp(payload_type, self.sequence, self.timestamp, self.ssrc, payload)
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + 160) & 0xFFFFFFFF
        return self.sender.protect(packet)

    def send_srtp(self, payload: bytes, payload_type: int = 0) -> None:
        self.send_raw(self.protected(payload, payload_type))

    async def receive_srtp(self, within_s: float = 2.0) -> RtpPacket:
        assert self.receiver is not None
        async with asyncio.timeout(within_s):
            while True:
                data, _ = await self.queue.get()
                if 192 <= data[1] <= 223:
                    continue  # SRTCP
                try:
                    return parse_rtp(self.receiver.unprotect(data))
                except pylibsrtp.Error:
                    continue  # sent before the key we now listen with


async def plain_leg(session: MediaSession) -> RtpPeer:
    peer = await RtpPeer.open()
    _, answer = await create_from_offer(session, peer.offer(), "sendrecv")
    peer.use(answer)
    return peer


async def srtp_leg(session: MediaSession, profile: str = "RTP/SAVP") -> tuple[str, SrtpPeer, str]:
    peer = await SrtpPeer.open()
    endpoint_id, answer = await create_from_offer(session, peer.srtp_offer(profile), "sendrecv")
    peer.use(answer)
    peer.listen_to(answer)
    return endpoint_id, peer, answer


def srtp_of(session: MediaSession, endpoint_id: str) -> srtp_module.SrtpSession:
    endpoint = session.endpoints[endpoint_id]
    assert isinstance(endpoint, RtpEndpoint) and endpoint.sdes is not None
    return endpoint.sdes.srtp


async def activate(secure: SrtpPeer, plain: RtpPeer) -> None:
    """Both peers send once, and the plain one hears the SRTP one."""
    plain.send(b"\x00" * 160)
    await asyncio.sleep(0.02)
    secure.send_srtp(b"\x00" * 160)
    assert (await plain.receive()).payload == b"\x00" * 160


async def wait_until_plain_peer_hears(plain: RtpPeer, payload: bytes) -> None:
    async with asyncio.timeout(2):
        while (await plain.receive()).payload != payload:
            pass


@pytest.mark.parametrize("profile", ["RTP/SAVP", "RTP/AVP"])
async def test_srtp_offer_bridges_to_plain_rtp_both_ways(
    manager: SessionManager, profile: str
) -> None:
    """RTP/SAVP, and OSRTP (RTP/AVP with a=crypto), both answered as SRTP under RTP/SAVP."""
    session = manager.create_session(EventLog())
    endpoint_id, secure, answer = await srtp_leg(session, profile)
    parsed = parse_sdp(answer)
    assert parsed.protocol == "RTP/SAVP"
    assert parsed.crypto is not None and parsed.crypto.tag == 7
    assert parsed.crypto.suite == SUITE and parsed.crypto.key_base64 != secure.inline
    plain = await plain_leg(session)
    await activate(secure, plain)
    for _ in range(3):
        plain.send(b"\x33" * 160)
        packet = await secure.receive_srtp()
        while packet.payload != b"\x33" * 160:
            packet = await secure.receive_srtp()
        assert packet.payload_type == 0
        secure.send_srtp(b"\x44" * 160)
        assert (await plain.receive()).payload == b"\x44" * 160
    stats = session.endpoints[endpoint_id].stats()
    assert stats["srtp"]["suite"] == SUITE and stats["srtp"]["authentication_failures"] == 0
    secure.close()
    plain.close()


async def test_bad_packets_are_dropped_and_counted_and_valid_ones_still_flow(
    manager: SessionManager,
) -> None:
    session = manager.create_session(EventLog())
    endpoint_id, secure, _ = await srtp_leg(session)
    plain = await plain_leg(session)
    plain.send(b"\x00" * 160)
    await asyncio.sleep(0.02)
    first = secure.protected(b"\x01" * 160)
    secure.send_raw(first)
    assert (await plain.receive()).payload == b"\x01" * 160
    secure.send_raw(first)  # replayed
    tampered = bytearray(secure.protected(b"\x02" * 160))
    tampered[30] ^= 0x40
    secure.send_raw(bytes(tampered))
    stranger = SrtpPeer()
    stranger.ssrc, stranger.sequence, stranger.timestamp = (
        secure.ssrc,
        secure.sequence,
        secure.timestamp,
    )
    secure.send_raw(stranger.protected(b"\x03" * 160))  # the right SSRC, a wrong key
    secure.send_raw(b"\x80\x00\x01")
    secure.send_srtp(b"\x04" * 160)
    await wait_until_plain_peer_hears(plain, b"\x04" * 160)
    assert not [packet for packet in plain.drain() if packet.payload[0] in (1, 2, 3)]
    counters = srtp_of(session, endpoint_id).counters()
    assert counters["replayed_packets"] == 1
    assert counters["authentication_failures"] == 2
    assert counters["malformed_packets"] == 1
    assert manager.metrics.srtp_errors_total == 4
    entry = endpoint_stats(session.endpoints[endpoint_id])
    assert entry["srtp"]["suite"] == SUITE and entry["srtp"]["replayed_packets"] == 1
    secure.close()
    plain.close()


async def test_our_srtp_offer_and_the_answer_key(manager: SessionManager) -> None:
    events = EventLog()
    session = manager.create_session(events)
    endpoint_id, offer = await create_offer(session, "rtp", "sendrecv", ["PCMU"], True)
    parsed = parse_sdp(offer)
    assert parsed.protocol == "RTP/SAVP" and parsed.crypto is not None
    assert parsed.crypto.suite == SUITE and len(parsed.crypto.key().master) == 30
    secure = await SrtpPeer.open()
    secure.listen_to(offer)
    await session.accept_answer(endpoint_id, secure.srtp_answer(offer))
    await events.wait_for("endpoint.state_changed")
    plain = await plain_leg(session)
    await activate(secure, plain)
    plain.send(b"\x07" * 160)
    while (await secure.receive_srtp()).payload != b"\x07" * 160:
        pass
    secure.close()
    plain.close()


async def test_an_answer_may_echo_our_key(manager: SessionManager) -> None:
    session = manager.create_session(EventLog())
    endpoint_id, offer = await create_offer(session, "rtp", "sendrecv", None, True)
    echo = await SrtpPeer.open()
    crypto = parse_sdp(offer).crypto
    assert crypto is not None
    echo.key = crypto.key().master
    echo.sender = echo._context(echo.key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    await session.accept_answer(endpoint_id, echo.srtp_answer(offer))
    plain = await plain_leg(session)
    await activate(echo, plain)
    echo.close()
    plain.close()


async def test_rekey_sends_with_the_new_key_and_tries_the_pending_one(
    manager: SessionManager,
) -> None:
    session = manager.create_session(EventLog())
    endpoint_id, secure, answer = await srtp_leg(session)
    plain = await plain_leg(session)
    await activate(secure, plain)

    offer = await srtp_rekey(session, endpoint_id)
    parsed = parse_sdp(offer)
    assert parsed.crypto is not None and parsed.crypto != parse_sdp(answer).crypto
    assert "o=callbridge " in offer and " 2 IN IP4 " in offer
    secure.listen_to(offer)
    plain.send(b"\x11" * 160)
    while (await secure.receive_srtp()).payload != b"\x11" * 160:  # the new send key at once
        pass

    old_sender = secure.sender
    secure.rekey()
    await session.accept_answer(endpoint_id, secure.srtp_answer(offer))
    srtp = srtp_of(session, endpoint_id)
    assert srtp.pending_receive_key is not None
    secure.sender, new_sender = old_sender, secure.sender
    secure.send_srtp(b"\x12" * 160)  # the old key still works during the trial
    await wait_until_plain_peer_hears(plain, b"\x12" * 160)
    secure.sender = new_sender
    secure.send_srtp(b"\x13" * 160)  # the first packet with the new key promotes it
    await wait_until_plain_peer_hears(plain, b"\x13" * 160)
    assert srtp.pending_receive_key is None
    secure.sender = old_sender
    secure.send_srtp(b"\x14" * 160)
    secure.sender = new_sender
    secure.send_srtp(b"\x15" * 160)
    await wait_until_plain_peer_hears(plain, b"\x15" * 160)
    assert srtp.authentication_failures == 1
    secure.close()
    plain.close()


async def test_pending_receive_key_is_forced_when_the_trial_ends(
    manager: SessionManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(srtp_module, "PENDING_KEY_TIMEOUT_S", 0.3)
    session = manager.create_session(EventLog())
    endpoint_id, secure, _ = await srtp_leg(session)
    plain = await plain_leg(session)
    await activate(secure, plain)
    offer = await srtp_rekey(session, endpoint_id)
    old_sender = secure.sender
    secure.rekey()
    await session.accept_answer(endpoint_id, secure.srtp_answer(offer))
    secure.sender, new_sender = old_sender, secure.sender
    await asyncio.sleep(0.4)
    secure.send_srtp(b"\x21" * 160)  # the old key, after the trial: dropped
    secure.sender = new_sender
    secure.send_srtp(b"\x22" * 160)
    await wait_until_plain_peer_hears(plain, b"\x22" * 160)
    srtp = srtp_of(session, endpoint_id)
    assert srtp.pending_receive_key is None and srtp.authentication_failures == 1
    secure.close()
    plain.close()


@pytest.mark.parametrize(
    ("crypto_line", "message"),
    [
        ("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:not*base64!!", "bad SRTP key base64"),
        ("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + "A" * 20, "is 15 bytes, need 30"),
        (
            "a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:" + "A" * 60,
            "offered suites: AES_256_CM_HMAC_SHA1_80; supported: AES_CM_128_HMAC_SHA1_80",
        ),
        ("a=crypto:1 AES_CM_128_HMAC_SHA1_80 notinline", "offered suites: none"),
    ],
)
async def test_bad_srtp_offers_are_refused_clearly(
    manager: SessionManager, crypto_line: str, message: str
) -> None:
    session = manager.create_session(EventLog())
    offer = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 5000 RTP/SAVP 0\r\n" + crypto_line + "\r\n"
    with pytest.raises(EngineError) as error:
        await create_from_offer(session, offer, "sendrecv")
    assert error.value.code == "ENDPOINT_ERROR" and message in error.value.message
    assert session.endpoints == {}


async def test_osrtp_offer_with_an_unknown_suite_stays_plain_rtp(manager: SessionManager) -> None:
    session = manager.create_session(EventLog())
    offer = (
        "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 5000 RTP/AVP 0\r\na=crypto:1 F8_128 inline:AAAA\r\n"
    )
    _, answer = await create_from_offer(session, offer, "sendrecv")
    assert parse_sdp(answer).protocol == "RTP/AVP" and parse_sdp(answer).crypto is None


async def test_bad_answers_and_rekey_errors(manager: SessionManager) -> None:
    session = manager.create_session(EventLog())
    endpoint_id, offer = await create_offer(session, "rtp", "sendrecv", None, True)
    peer = await SrtpPeer.open()
    plain_answer = peer.answer_to(offer)
    with pytest.raises(EngineError, match="no a=crypto line"):
        await session.accept_answer(endpoint_id, plain_answer)
    with pytest.raises(EngineError, match="SRTP key init failure: bad SRTP key base64"):
        await session.accept_answer(endpoint_id, peer.srtp_answer(offer, key="***"))
    other_suite = peer.srtp_answer(offer).replace(SUITE, "AES_CM_128_HMAC_SHA1_32")
    with pytest.raises(EngineError, match="uses crypto suite AES_CM_128_HMAC_SHA1_32"):
        await session.accept_answer(endpoint_id, other_suite)
    assert session.endpoints[endpoint_id].state == "connecting"

    plain_id, _ = await create_from_offer(session, peer.offer(), "sendrecv")
    with pytest.raises(EngineError, match="SRTP is not active on this endpoint"):
        await srtp_rekey(session, plain_id)
    tone_id = await create_tone(session, "sine", 440.0, None)
    with pytest.raises(EngineError, match="Not a plain RTP endpoint"):
        await srtp_rekey(session, tone_id)
    with pytest.raises(EngineError, match="Endpoint not found"):
        await srtp_rekey(session, "00000000-0000-0000-0000-000000000000")
    peer.close()


async def test_answer_with_crypto_the_offer_lacked_turns_srtp_on(
    manager: SessionManager,
) -> None:
    session = manager.create_session(EventLog())
    endpoint_id, offer = await create_offer(session, "rtp", "sendrecv", None, False)
    assert parse_sdp(offer).crypto is None
    peer = await SrtpPeer.open()
    answer = peer.answer_to(offer) + f"a=crypto:1 {SUITE} inline:{peer.inline}\r\n"
    await session.accept_answer(endpoint_id, answer)
    plain = await plain_leg(session)
    await activate(peer, plain)
    peer.close()
    plain.close()


async def test_srtcp_both_ways_muxed_and_on_the_rtcp_port(manager: SessionManager) -> None:
    events = EventLog()
    session = manager.create_session(events)
    secure = await SrtpPeer.open()
    offer = secure.srtp_offer() + "a=rtcp-mux\r\n"
    endpoint_id, answer = await create_from_offer(session, offer, "sendrecv")
    secure.use(answer)
    secure.listen_to(answer)
    secure.send_srtp(b"\x00" * 160)
    secure.send_raw(secure.sender.protect_rtcp(build_goodbye([secure.ssrc], "muxed")))
    [bye] = await events.wait_for("endpoint.rtcp_bye")
    assert bye["reason"] == "muxed"
    assert secure.target is not None
    rtcp_port = (secure.target[0], secure.target[1] + 1)
    assert secure.transport is not None
    secure.transport.sendto(
        secure.sender.protect_rtcp(build_goodbye([secure.ssrc], "odd port")), rtcp_port
    )
    tampered = bytearray(secure.sender.protect_rtcp(build_goodbye([secure.ssrc], "forged")))
    tampered[12] ^= 0x01
    secure.transport.sendto(bytes(tampered), rtcp_port)
    second = await events.wait_for("endpoint.rtcp_bye", 2)
    assert [event["reason"] for event in second] == ["muxed", "odd port"]
    async with asyncio.timeout(2):
        while manager.metrics.srtp_errors_total < 1:
            await asyncio.sleep(0.01)
    assert srtp_of(session, endpoint_id).rtcp_drops == 1
    await session.remove_endpoint(endpoint_id)
    assert secure.receiver is not None
    async with asyncio.timeout(2):
        while True:
            data, _ = await secure.queue.get()
            if 192 <= data[1] <= 223:
                break
    goodbyes = [
        packet
        for packet in parse_rtcp(secure.receiver.unprotect_rtcp(data))
        if isinstance(packet, Goodbye)
    ]
    assert len(goodbyes) == 1 and secure.ssrc not in goodbyes[0].ssrcs
    assert [event["reason"] for event in events.named("endpoint.rtcp_bye")] == ["muxed", "odd port"]
    secure.close()


async def test_srtp_pcmu_is_transcoded_to_plain_opus_and_back(manager: SessionManager) -> None:
    session = manager.create_session(EventLog())
    _, secure, _ = await srtp_leg(session)
    opus_peer = await RtpPeer.open()
    _, opus_answer = await create_from_offer(session, opus_peer.offer("opus"), "sendrecv")
    opus_peer.use(opus_answer)
    pcmu, opus = create_encoder(PCMU), create_encoder(OPUS)
    for index in range(60):
        secure.send_srtp(pcmu.encode(sine_pcm(800, 8000, 160, index * 160)))
        opus_peer.send(opus.encode(sine_pcm(1300, 48000, 960, index * 960)), 111, samples=960)
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    decoder = create_decoder(OPUS)
    packets = [packet for packet in opus_peer.drain() if packet.payload_type == 111][10:]
    heard = b"".join(decoder.decode(bytes(packet.payload)) for packet in packets)
    assert abs(dominant_frequency(np.frombuffer(heard, "<i2"), 48000) - 800) < 15
    decoder = create_decoder(PCMU)
    payloads = []
    while not secure.queue.empty():
        data, _ = secure.queue.get_nowait()
        if not 192 <= data[1] <= 223:
            assert secure.receiver is not None
            payloads.append(parse_rtp(secure.receiver.unprotect(data)).payload)
    heard = b"".join(decoder.decode(bytes(payload)) for payload in payloads[10:])
    assert abs(dominant_frequency(np.frombuffer(heard, "<i2"), 8000) - 1300) < 15
    secure.close()
    opus_peer.close()
