"""SRTP over the control WebSocket: SAVP/OSRTP offers, `srtp: true`, `endpoint.srtp_rekey`,
the errors clients rely on, and `srtp_errors_total` in /metrics."""

from __future__ import annotations

import asyncio
import base64
import secrets
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pylibsrtp
import pytest

from callbridge.media.rtp import build_rtp
from callbridge.media.sdp import parse_sdp

if TYPE_CHECKING:
    from tests.server.conftest import ControlClient, ServerHandle

SUITE = "AES_CM_128_HMAC_SHA1_80"
UNKNOWN_ID = "6f1c3e0a-1b2c-4d5e-8f90-0123456789ab"


@pytest.fixture
def peer_port() -> Iterator[int]:
    """A port of ours on loopback for the offers: what the engine sends lands nowhere else."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        yield peer.getsockname()[1]


def srtp_offer(port: int, key: bytes, profile: str = "RTP/SAVP") -> str:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} {profile} 0\r\na=rtpmap:0 PCMU/8000\r\n"
        f"a=crypto:3 {SUITE} inline:{base64.b64encode(key).decode()}\r\n"
    )


async def test_srtp_offer_answer_and_rekey(bound: ControlClient, peer_port: int) -> None:
    result = await bound.result(
        "endpoint.create_from_offer", {"sdp": srtp_offer(peer_port, secrets.token_bytes(30))}
    )
    answer = parse_sdp(result["sdp_answer"])
    assert answer.protocol == "RTP/SAVP" and answer.crypto is not None and answer.crypto.tag == 3
    rekeyed = await bound.result("endpoint.srtp_rekey", {"endpoint_id": result["endpoint_id"]})
    assert set(rekeyed) == {"sdp"}
    offer = parse_sdp(rekeyed["sdp"])
    assert offer.crypto is not None and offer.crypto.key_base64 != answer.crypto.key_base64
    peer_answer = srtp_offer(peer_port, secrets.token_bytes(30))
    accepted = await bound.result(
        "endpoint.accept_answer", {"endpoint_id": result["endpoint_id"], "sdp": peer_answer}
    )
    assert accepted == {}


async def test_osrtp_and_our_srtp_offer(bound: ControlClient, peer_port: int) -> None:
    key = secrets.token_bytes(30)
    result = await bound.result(
        "endpoint.create_from_offer", {"sdp": srtp_offer(peer_port, key, "RTP/AVP")}
    )
    assert parse_sdp(result["sdp_answer"]).protocol == "RTP/SAVP"
    created = await bound.result("endpoint.create_offer", {"type": "rtp", "srtp": True})
    offer = parse_sdp(created["sdp_offer"])
    assert offer.protocol == "RTP/SAVP" and offer.crypto is not None
    assert offer.crypto.suite == SUITE
    await bound.result(
        "endpoint.accept_answer",
        {"endpoint_id": created["endpoint_id"], "sdp": srtp_offer(peer_port, key)},
    )
    state = await bound.next_event("endpoint.state_changed")
    assert state["new_state"] == "connected"


async def test_srtp_errors_are_endpoint_errors(bound: ControlClient, peer_port: int) -> None:
    bad_base64 = srtp_offer(peer_port, bytes(30)).replace("inline:", "inline:*")
    error = await bound.error("endpoint.create_from_offer", {"sdp": bad_base64})
    assert error["code"] == "ENDPOINT_ERROR" and "bad SRTP key base64" in error["message"]
    short = srtp_offer(peer_port, bytes(16))
    error = await bound.error("endpoint.create_from_offer", {"sdp": short})
    assert error == {
        "code": "ENDPOINT_ERROR",
        "message": "SRTP key init failure: SRTP master key for AES_CM_128_HMAC_SHA1_80 is 16 "
        "bytes, need 30",
    }
    unknown = srtp_offer(peer_port, bytes(30)).replace(SUITE, "F8_128_HMAC_SHA1_80")
    error = await bound.error("endpoint.create_from_offer", {"sdp": unknown})
    assert error["code"] == "ENDPOINT_ERROR" and "F8_128_HMAC_SHA1_80" in error["message"]

    plain = srtp_offer(peer_port, bytes(30)).replace("RTP/SAVP", "RTP/AVP").split("a=crypto")[0]
    plain_id = (await bound.result("endpoint.create_from_offer", {"sdp": plain}))["endpoint_id"]
    error = await bound.error("endpoint.srtp_rekey", {"endpoint_id": plain_id})
    assert error == {"code": "ENDPOINT_ERROR", "message": "SRTP is not active on this endpoint"}
    tone = await bound.result("endpoint.create_tone", {"tone": "beep"})
    error = await bound.error("endpoint.srtp_rekey", {"endpoint_id": tone["endpoint_id"]})
    assert error == {"code": "ENDPOINT_ERROR", "message": "Not a plain RTP endpoint"}
    error = await bound.error("endpoint.srtp_rekey", {"endpoint_id": UNKNOWN_ID})
    assert error == {"code": "ENDPOINT_ERROR", "message": "Endpoint not found"}
    error = await bound.error("endpoint.srtp_rekey", {"endpoint_id": "nope"})
    assert error["code"] == "INVALID_PARAMS"


async def test_srtp_rekey_needs_a_session(client: ControlClient) -> None:
    error = await client.error("endpoint.srtp_rekey", {"endpoint_id": UNKNOWN_ID})
    assert error["code"] == "NO_SESSION"


async def test_dropped_srtp_packets_show_in_metrics(
    server: ServerHandle, bound: ControlClient
) -> None:
    loop = asyncio.get_running_loop()
    peer, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    port = peer.get_extra_info("sockname")[1]
    key = secrets.token_bytes(30)
    result = await bound.result("endpoint.create_from_offer", {"sdp": srtp_offer(port, key)})
    target = ("127.0.0.1", parse_sdp(result["sdp_answer"]).port)
    wrong = pylibsrtp.Session(
        pylibsrtp.Policy(key=bytes(30), ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    )
    for sequence in range(3):
        peer.sendto(wrong.protect(build_rtp(0, sequence, 0, 9, b"\xff" * 160)), target)
    metric = ""
    async with asyncio.timeout(5):
        while "callbridge_srtp_errors_total 3.0" not in metric:
            await asyncio.sleep(0.02)
            async with server.http.get(server.base_url + "/metrics") as response:
                metric = await response.text()
    peer.close()
