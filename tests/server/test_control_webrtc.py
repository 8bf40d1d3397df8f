"""`endpoint.ice_restart` and WebRTC offers over the control protocol: results and refusals."""

from __future__ import annotations

from callbridge.media.webrtc_sdp import parse_webrtc
from tests.engine.engine_peers import RtpPeer
from tests.engine.webrtc_peers import browser_offer
from tests.server.conftest import ControlClient


async def test_ice_restart_gives_fresh_credentials_each_time(bound: ControlClient) -> None:
    created = await bound.result("endpoint.create_offer", {"type": "webrtc"})
    endpoint_id = created["endpoint_id"]
    ufrags = {parse_webrtc(created["sdp_offer"]).ice_ufrag}
    fingerprints = {parse_webrtc(created["sdp_offer"]).fingerprint}
    for _ in range(3):
        restart = await bound.result("endpoint.ice_restart", {"endpoint_id": endpoint_id})
        parameters = parse_webrtc(restart["sdp_offer"])
        ufrags.add(parameters.ice_ufrag)
        fingerprints.add(parameters.fingerprint)
    assert len(ufrags) == 4 and len(fingerprints) == 1
    info = await bound.result("session.info")
    assert info["endpoints"][0]["endpoint_type"] == "webrtc"
    assert info["endpoints"][0]["state"] == "connecting"


async def test_ice_restart_refusals(bound: ControlClient) -> None:
    peer = await RtpPeer.open()
    try:
        rtp = await bound.result("endpoint.create_from_offer", {"sdp": peer.offer("pcmu")})
        error = await bound.error("endpoint.ice_restart", {"endpoint_id": rtp["endpoint_id"]})
        assert error == {"code": "ENDPOINT_ERROR", "message": "Not a WebRTC endpoint"}
    finally:
        peer.close()
    missing = "00000000-0000-0000-0000-000000000000"
    error = await bound.error("endpoint.ice_restart", {"endpoint_id": missing})
    assert error == {"code": "ENDPOINT_ERROR", "message": "Endpoint not found"}
    error = await bound.error("endpoint.ice_restart", {})
    assert error["code"] == "INVALID_PARAMS"


async def test_webrtc_offer_refusals(bound: ControlClient) -> None:
    huge = "v=0\r\na=ice-ufrag:abcd\r\n" + "a=x:" + "y" * 70000 + "\r\n"
    error = await bound.error("endpoint.create_from_offer", {"sdp": huge})
    assert error["code"] == "INVALID_PARAMS" and "too large" in error["message"]
    error = await bound.error("endpoint.create_from_offer", {"sdp": "a=ice-ufrag:x\r\n"})
    assert error["code"] == "ENDPOINT_ERROR" and "ICE credentials" in error["message"]
    created = await bound.result("endpoint.create_offer", {"type": "webrtc"})
    error = await bound.error(
        "endpoint.accept_answer", {"endpoint_id": created["endpoint_id"], "sdp": "garbage"}
    )
    assert error["code"] == "ENDPOINT_ERROR"
    assert (await bound.result("session.info"))["endpoints"][0]["state"] == "connecting"
    answered = await bound.result("endpoint.create_from_offer", {"sdp": browser_offer()})
    error = await bound.error(
        "endpoint.accept_answer", {"endpoint_id": answered["endpoint_id"], "sdp": browser_offer()}
    )
    assert error == {"code": "ENDPOINT_ERROR", "message": "No pending offer to accept answer for"}
