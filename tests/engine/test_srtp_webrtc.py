"""SDES-SRTP and WebRTC in one session, each with an independent peer: ffmpeg speaks SRTP
(AES_CM_128_HMAC_SHA1_80, PCMU) on one leg, aiortc speaks DTLS-SRTP (Opus) on the other. Each
direction is checked by what the listener hears: the tone at its pitch (FFT), and for ffmpeg's
recording, whole and without gaps.

Both directions go through the same SRTP endpoint, one after the other: ffmpeg first listens on
the offered port, then sends from that same port (a receiving and a sending ffmpeg cannot share
it at once, and another source port would move symmetric RTP away from the listener).
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from pathlib import Path

import numpy as np

from callbridge.engine.manager import SessionManager
from callbridge.engine.offers import create_from_offer
from callbridge.engine.rtp_endpoint import RtpEndpoint
from callbridge.engine.webrtc_endpoint import WebRtcEndpoint
from callbridge.media.sdp import parse_sdp
from tests.engine.engine_peers import EventLog
from tests.engine.test_ffmpeg_interop import bound, ffmpeg
from tests.engine.test_srtp_ffmpeg import SUITE, free_udp_port, run_ffmpeg, srtp_offer
from tests.engine.tone_checks import analyse
from tests.engine.webrtc_peers import AiortcPeer, connected, manager

__all__ = ["manager"]

BROWSER_HZ = 1000.0
SRTP_PHONE_HZ = 440.0
LISTEN_S = 2.0
SETTLE_S = 0.5
"""Left out of ffmpeg's recording: Opus decoder start and the jitter buffer filling."""


async def test_srtp_phone_and_webrtc_browser_hear_each_other(
    manager: SessionManager, tmp_path: Path
) -> None:
    events = EventLog()
    session = manager.create_session(events)
    ffmpeg_port = free_udp_port()
    offer_key = base64.b64encode(secrets.token_bytes(30)).decode()
    srtp_id, answer = await create_from_offer(
        session, srtp_offer(ffmpeg_port, offer_key), "sendrecv"
    )
    srtp_answer = parse_sdp(answer)
    assert srtp_answer.crypto is not None and srtp_answer.crypto.suite == SUITE
    browser = AiortcPeer(BROWSER_HZ)
    try:
        # WebRTC -> SRTP: ffmpeg decrypts with the key of our answer and records PCMU.
        sdp_file = tmp_path / "receive.sdp"
        sdp_file.write_text(srtp_offer(ffmpeg_port, srtp_answer.crypto.key_base64))
        recording = tmp_path / "heard.raw"
        receiver = await asyncio.create_subprocess_exec(
            ffmpeg(),
            *("-nostdin", "-loglevel", "error", "-protocol_whitelist", "file,udp,rtp,srtp"),
            *("-i", str(sdp_file), "-ac", "1", "-ar", "8000"),
            *("-f", "s16le", "-flush_packets", "1", "-y", str(recording)),
        )
        try:
            await bound(ffmpeg_port)
            webrtc_id, webrtc_answer = await create_from_offer(
                session, await browser.offer(), "sendrecv"
            )
            await browser.accept(webrtc_answer)
            await connected(events, webrtc_id)
            await asyncio.sleep(SETTLE_S + LISTEN_S)
        finally:
            receiver.kill()
            await receiver.wait()
        samples = np.frombuffer(recording.read_bytes(), "<i2")[int(SETTLE_S * 8000) :]
        report = analyse(samples, 8000)
        report.assert_clean(BROWSER_HZ, "the SRTP phone hears the browser")
        assert report.duration_s > LISTEN_S - 0.3, report

        # SRTP -> WebRTC: ffmpeg encrypts with the key of its offer, from the offered port.
        sender = asyncio.ensure_future(
            run_ffmpeg(
                *("-re", "-f", "lavfi", "-i", f"sine=frequency={SRTP_PHONE_HZ:g}:duration=4"),
                *("-acodec", "pcm_mulaw", "-ar", "8000", "-f", "rtp"),
                *("-srtp_out_suite", SUITE, "-srtp_out_params", offer_key),
                f"srtp://127.0.0.1:{srtp_answer.port}?localrtpport={ffmpeg_port}",
            )
        )
        await asyncio.sleep(SETTLE_S)
        browser.heard.clear()
        heard = await browser.heard_frequency(seconds=LISTEN_S)
        assert abs(heard - SRTP_PHONE_HZ) < SRTP_PHONE_HZ * 0.01, heard
        await sender

        srtp = session.endpoints[srtp_id]
        assert isinstance(srtp, RtpEndpoint) and srtp.sdes is not None
        assert srtp.sdes.srtp.authentication_failures == 0
        assert srtp.sdes.srtp.replayed_packets == 0
        webrtc = session.endpoints[webrtc_id]
        assert isinstance(webrtc, WebRtcEndpoint) and webrtc.state == "connected"
        assert webrtc.stats()["inbound"]["packets"] > (SETTLE_S + LISTEN_S) * 50 * 0.8
    finally:
        await browser.close()
