"""SRTP with an independent peer: ffmpeg sends and receives SRTP (AES_CM_128_HMAC_SHA1_80), a
plain RTP peer sits on the other side of the session; what is heard must be the tone at its
pitch (within 1 %), whole and continuous. ffmpeg is a test dependency (`make test` installs it).
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import socket
from pathlib import Path

import numpy as np

from callbridge.engine.manager import SessionManager
from callbridge.engine.offers import create_from_offer
from callbridge.engine.rtp_endpoint import RtpEndpoint
from callbridge.media.g711 import ulaw_decode, ulaw_encode
from callbridge.media.sdp import parse_sdp
from tests.conftest import output_settled
from tests.engine.engine_peers import EventLog, RtpPeer, manager, sine_pcm
from tests.engine.test_ffmpeg_interop import bound, ffmpeg
from tests.engine.tone_checks import analyse

__all__ = ["manager"]

SUITE = "AES_CM_128_HMAC_SHA1_80"
FREQUENCY = 440.0
TONE_S = 2.0


def free_udp_port() -> int:
    """An even local port whose odd neighbour is free too (ffmpeg uses both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1] & ~1
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as first:
                first.bind(("127.0.0.1", port))
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as second:
                    second.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue


def srtp_offer(port: int, key: str) -> str:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=ffmpeg\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        f"a=crypto:1 {SUITE} inline:{key}\r\n"
    )


async def run_ffmpeg(*arguments: str, within_s: float = 20.0) -> None:
    process = await asyncio.create_subprocess_exec(
        ffmpeg(),
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        *arguments,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(within_s):
            _, errors = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, errors.decode(errors="replace")


async def test_ffmpeg_srtp_sender_is_heard_by_a_plain_rtp_peer(manager: SessionManager) -> None:
    """Passthrough: the plain peer gets ffmpeg's packets decrypted, payloads as they were."""
    session = manager.create_session(EventLog())
    ffmpeg_port = free_udp_port()
    key = base64.b64encode(secrets.token_bytes(30)).decode()
    endpoint_id, answer = await create_from_offer(session, srtp_offer(ffmpeg_port, key), "sendrecv")
    engine_port = parse_sdp(answer).port
    plain = await RtpPeer.open()
    _, plain_answer = await create_from_offer(session, plain.offer(), "sendrecv")
    plain.use(plain_answer)
    await run_ffmpeg(
        "-re",
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency={FREQUENCY:g}:duration={TONE_S}",
        "-acodec",
        "pcm_mulaw",
        "-ar",
        "8000",
        "-f",
        "rtp",
        "-srtp_out_suite",
        SUITE,
        "-srtp_out_params",
        key,
        f"srtp://127.0.0.1:{engine_port}?localrtpport={ffmpeg_port}",
    )
    await asyncio.sleep(0.1)  # the last packets arrive
    audio = b"".join(ulaw_decode(bytes(packet.payload)) for packet in plain.drain())
    report = analyse(np.frombuffer(audio, "<i2"), 8000)
    report.assert_clean(FREQUENCY)
    assert abs(report.duration_s - TONE_S) < 0.07, report
    endpoint = session.endpoints[endpoint_id]
    assert isinstance(endpoint, RtpEndpoint) and endpoint.sdes is not None
    assert endpoint.sdes.srtp.authentication_failures == 0
    assert endpoint.sdes.srtp.replayed_packets == 0
    plain.close()


async def test_plain_rtp_peer_is_heard_by_an_ffmpeg_srtp_receiver(
    manager: SessionManager, tmp_path: Path
) -> None:
    session = manager.create_session(EventLog())
    ffmpeg_port = free_udp_port()
    offer_key = base64.b64encode(secrets.token_bytes(30)).decode()
    _, answer = await create_from_offer(session, srtp_offer(ffmpeg_port, offer_key), "sendrecv")
    crypto = parse_sdp(answer).crypto
    assert crypto is not None
    sdp_file = tmp_path / "receive.sdp"
    sdp_file.write_text(srtp_offer(ffmpeg_port, crypto.key_base64))  # what the engine sends with
    output = tmp_path / "heard.raw"
    receiver = await asyncio.create_subprocess_exec(
        ffmpeg(),
        *("-nostdin", "-loglevel", "error", "-protocol_whitelist", "file,udp,rtp,srtp"),
        *("-i", str(sdp_file), "-ac", "1", "-ar", "8000"),
        *("-f", "s16le", "-flush_packets", "1", "-y", str(output)),
    )
    plain = await RtpPeer.open()
    _, plain_answer = await create_from_offer(session, plain.offer(), "sendrecv")
    plain.use(plain_answer)
    try:
        await bound(ffmpeg_port)
        for index in range(round(TONE_S / 0.02)):
            plain.send(ulaw_encode(sine_pcm(FREQUENCY, 8000, 160, start=index * 160)))
            await asyncio.sleep(0.02)
        await output_settled(output)  # the last packets are written
    finally:
        receiver.kill()
        await receiver.wait()
    report = analyse(np.frombuffer(output.read_bytes(), "<i2"), 8000)
    report.assert_clean(FREQUENCY)
    assert abs(report.duration_s - TONE_S) < 0.07, report
    plain.close()
