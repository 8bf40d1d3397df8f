"""SRTP with an independent peer: ffmpeg sends and receives SRTP (AES_CM_128_HMAC_SHA1_80), a
plain RTP peer sits on the other side of the session; the audio is checked by its pitch."""

from __future__ import annotations

import asyncio
import base64
import secrets
import shutil
import socket
from pathlib import Path

import numpy as np
import pylibsrtp
import pytest

from callbridge.engine.manager import SessionManager
from callbridge.engine.offers import create_from_offer
from callbridge.engine.rtp_endpoint import RtpEndpoint
from callbridge.media.g711 import ulaw_decode, ulaw_encode
from callbridge.media.rtp import build_rtp
from callbridge.media.sdp import parse_sdp
from tests.engine.engine_peers import EventLog, RtpPeer, dominant_frequency, manager, sine_pcm

__all__ = ["manager"]

SUITE = "AES_CM_128_HMAC_SHA1_80"
FFMPEG = shutil.which("ffmpeg")
pytestmark = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is installed by `make test`")


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
    assert FFMPEG is not None
    process = await asyncio.create_subprocess_exec(
        FFMPEG,
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


def pitch_of(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2")
    return dominant_frequency(samples[len(samples) // 4 :], 8000)


async def test_ffmpeg_srtp_sender_is_heard_by_a_plain_rtp_peer(manager: SessionManager) -> None:
    session = manager.create_session(EventLog())
    ffmpeg_port = free_udp_port()
    key = base64.b64encode(secrets.token_bytes(30)).decode()
    endpoint_id, answer = await create_from_offer(session, srtp_offer(ffmpeg_port, key), "sendrecv")
    engine_port = parse_sdp(answer).port
    plain = await RtpPeer.open()
    _, plain_answer = await create_from_offer(session, plain.offer(), "sendrecv")
    plain.use(plain_answer)
    plain.send(b"\xff" * 160)
    await run_ffmpeg(
        "-re",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:duration=3",
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
    packets = sorted(plain.drain(), key=lambda packet: packet.timestamp)
    audio = b"".join(ulaw_decode(bytes(packet.payload)) for packet in packets)
    assert len(audio) // 2 > 8000 * 2, f"heard only {len(audio) // 2} samples"
    assert pitch_of(audio) == pytest.approx(440, rel=0.01)
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
    offer_key = secrets.token_bytes(30)
    _, answer = await create_from_offer(
        session, srtp_offer(ffmpeg_port, base64.b64encode(offer_key).decode()), "sendrecv"
    )
    parsed = parse_sdp(answer)
    assert parsed.crypto is not None
    # ffmpeg only listens: open the engine's send path with one packet from ffmpeg's port.
    primer = pylibsrtp.Session(
        pylibsrtp.Policy(key=offer_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", ffmpeg_port))
        udp.sendto(primer.protect(build_rtp(0, 1, 0, 1, b"\xff" * 160)), ("127.0.0.1", parsed.port))
    await asyncio.sleep(0.05)
    sdp_file = tmp_path / "receive.sdp"
    sdp_file.write_text(srtp_offer(ffmpeg_port, parsed.crypto.key_base64))
    output = tmp_path / "heard.raw"
    receiver = asyncio.create_task(
        run_ffmpeg(
            "-protocol_whitelist",
            "file,udp,rtp,srtp",
            "-i",
            str(sdp_file),
            "-t",
            "2",
            "-f",
            "s16le",
            "-ar",
            "8000",
            "-ac",
            "1",
            str(output),
        )
    )
    plain = await RtpPeer.open()
    _, plain_answer = await create_from_offer(session, plain.offer(), "sendrecv")
    plain.use(plain_answer)
    await asyncio.sleep(0.5)  # ffmpeg binds its port
    for index in range(750):  # until ffmpeg has its 2 s, however late it starts
        if receiver.done():
            break
        plain.send(ulaw_encode(sine_pcm(440, 8000, 160, start=index * 160)))
        await asyncio.sleep(0.02)
    await receiver
    audio = output.read_bytes()
    assert len(audio) // 2 > 8000, f"ffmpeg heard only {len(audio) // 2} samples"
    assert pitch_of(audio) == pytest.approx(440, rel=0.01)
    plain.close()
