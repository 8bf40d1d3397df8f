"""Browser scenarios: a real browser (headless Debian Chromium) in a session through the control
protocol, run by test_webrtc_browser.py in a network namespace that has only loopback.

The test page's RTCPeerConnection has no ICE servers; the fake microphone is a 700 Hz tone and
an RTP PCMU phone in the same session sends 440 Hz. The browser must hear 440 Hz (inbound-rtp
stats and an AnalyserNode on the remote track) and the phone 700 Hz; DTMF, ICE restart and our
own offer are exercised against the same browser.

The example page (`/browser`, examples/browser/README.md) is driven as a user would: fill in
the fields, press Call; an echoing agent must send the 700 Hz tone back, by the page's own
analyser; a wrong token and an unreachable agent must be reported as such.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from callbridge.apps.echo import app as echo_app
from callbridge.engine.rtvbp_endpoint import RtvbpEndpoint
from callbridge.engine.webrtc_endpoint import WebRtcEndpoint
from callbridge.media.webrtc_sdp import parse_webrtc
from tests.conftest import serve_application
from tests.engine.engine_peers import RtpPeer
from tests.engine.webrtc_peers import PcmuPhone
from tests.server.chromium import DevToolsPage, chromium
from tests.server.conftest import ControlClient, ServerHandle, StartServer
from tests.server.loopback_namespace import only_loopback
from tests.server.test_cli import running_server

pytestmark = pytest.mark.skipif(
    not only_loopback(),
    reason="runs in a loopback-only namespace, from tests/server/test_webrtc_browser.py",
)

BROWSER_TONE_HZ = 700.0
PHONE_TONE_HZ = 440.0
CONTROL_TOKEN = "browser-example-token-0123456789"


async def phone_leg(client: ControlClient) -> PcmuPhone:
    peer = await RtpPeer.open()
    result = await client.result("endpoint.create_from_offer", {"sdp": peer.offer("pcmu")})
    peer.use(result["sdp_answer"])
    phone = PcmuPhone(peer, PHONE_TONE_HZ)
    phone.start()
    return phone


async def call(page: DevToolsPage, function: str, argument: Any = None) -> Any:
    arguments = "" if argument is None else json.dumps(argument)
    return await page.evaluate(f"{function}({arguments})")


async def browser_hears(page: DevToolsPage, frequency: float, within_s: float = 15.0) -> None:
    heard = 0.0
    async with asyncio.timeout(within_s):
        while abs(heard - frequency) > 12:
            await asyncio.sleep(0.25)
            heard = await call(page, "dominantFrequency")


async def inbound_packets(page: DevToolsPage) -> int:
    packets: int = (await call(page, "inbound"))["packets"]
    return packets


async def connected(client: ControlClient, endpoint_id: str) -> None:
    change = await client.next_event("endpoint.state_changed")
    assert change == {
        "endpoint_id": endpoint_id,
        "old_state": "connecting",
        "new_state": "connected",
    }


def webrtc_endpoint(server: ServerHandle, endpoint_id: str) -> WebRtcEndpoint:
    (session,) = server.manager.sessions()
    endpoint = session.endpoints[endpoint_id]
    assert isinstance(endpoint, WebRtcEndpoint)
    return endpoint


async def test_browser_offer_audio_dtmf_and_ice_restart(
    server: ServerHandle, bound: ControlClient, tmp_path: Path
) -> None:
    phone = await phone_leg(bound)
    try:
        async with chromium(tmp_path, BROWSER_TONE_HZ) as page:
            offer = await call(page, "makeOffer")
            result = await bound.result("endpoint.create_from_offer", {"sdp": offer})
            endpoint_id = result["endpoint_id"]
            await call(page, "acceptAnswer", result["sdp_answer"])
            await connected(bound, endpoint_id)
            await browser_hears(page, PHONE_TONE_HZ)
            assert await inbound_packets(page) > 0
            assert abs(await phone.heard_frequency() - BROWSER_TONE_HZ) < 12

            await call(page, "sendDigits", "7")
            digit = await bound.next_event("dtmf")
            assert digit["endpoint_id"] == endpoint_id and digit["digit"] == "7"
            endpoint = webrtc_endpoint(server, endpoint_id)
            sent = endpoint.stats()["outbound"]["packets"]
            await bound.result("endpoint.dtmf.inject", {"endpoint_id": endpoint_id, "digit": "3"})

            ufrags = {parse_webrtc(result["sdp_answer"]).ice_ufrag}
            for _ in range(2):
                restart = await bound.result("endpoint.ice_restart", {"endpoint_id": endpoint_id})
                ufrags.add(parse_webrtc(restart["sdp_offer"]).ice_ufrag)
                answer = await call(page, "answerOffer", restart["sdp_offer"])
                await bound.result(
                    "endpoint.accept_answer", {"endpoint_id": endpoint_id, "sdp": answer}
                )
                async with asyncio.timeout(15):
                    while endpoint.ice.restarting:
                        await asyncio.sleep(0.1)
            assert len(ufrags) == 3
            before = await inbound_packets(page)
            await asyncio.sleep(1)
            assert await inbound_packets(page) > before + 25
            assert endpoint.state == "connected"
            assert endpoint.stats()["outbound"]["packets"] > sent + 50
            assert abs(await phone.heard_frequency() - BROWSER_TONE_HZ) < 12
            assert (await call(page, "state"))["connection"] == "connected"
    finally:
        await phone.stop()


async def test_browser_answers_our_offer(bound: ControlClient, tmp_path: Path) -> None:
    phone = await phone_leg(bound)
    try:
        async with chromium(tmp_path, BROWSER_TONE_HZ) as page:
            result = await bound.result("endpoint.create_offer", {"type": "webrtc"})
            endpoint_id = result["endpoint_id"]
            answer = await call(page, "answerOffer", result["sdp_offer"])
            await bound.result(
                "endpoint.accept_answer", {"endpoint_id": endpoint_id, "sdp": answer}
            )
            await connected(bound, endpoint_id)
            await browser_hears(page, PHONE_TONE_HZ)
            assert abs(await phone.heard_frequency() - BROWSER_TONE_HZ) < 12
    finally:
        await phone.stop()


async def test_browser_offer_with_video_and_data_channel(
    bound: ControlClient, tmp_path: Path
) -> None:
    """Only the audio section is accepted; video and data are answered rejected, in place."""
    phone = await phone_leg(bound)
    try:
        async with chromium(tmp_path, BROWSER_TONE_HZ) as page:
            offer = await call(page, "makeOffer", True)
            assert "m=video" in offer and "m=application" in offer
            result = await bound.result("endpoint.create_from_offer", {"sdp": offer})
            assert "m=video 0 " in result["sdp_answer"]
            await call(page, "acceptAnswer", result["sdp_answer"])
            await connected(bound, result["endpoint_id"])
            await browser_hears(page, PHONE_TONE_HZ)
            assert abs(await phone.heard_frequency() - BROWSER_TONE_HZ) < 12
    finally:
        await phone.stop()


async def page_text(page: DevToolsPage, element_id: str) -> str:
    text: str = await page.evaluate(
        f"document.getElementById({json.dumps(element_id)}).textContent"
    )
    return text


async def page_state(page: DevToolsPage, wanted: str, within_s: float = 15.0) -> None:
    async with asyncio.timeout(within_s):
        while (state := await page_text(page, "state")) != wanted:
            assert not state.startswith("failed"), (state, await page_text(page, "log"))
            await asyncio.sleep(0.2)


async def test_example_page_calls_an_echo_agent(start_server: StartServer, tmp_path: Path) -> None:
    """examples/browser: the page served on /browser, with a control token, dials an agent that
    echoes; the browser hears its own microphone tone back through the agent."""
    server = await start_server(browser_page=True, control={"tokens": [CONTROL_TOKEN]})
    async with (
        serve_application(echo_app) as agent_url,
        chromium(tmp_path, BROWSER_TONE_HZ, f"{server.base_url}/browser") as page,
    ):
        fill = {"agent": agent_url, "token": CONTROL_TOKEN}
        await page.evaluate(
            f"for (const [id, value] of Object.entries({json.dumps(fill)}))"
            " document.getElementById(id).value = value;"
            " document.getElementById('call').click(); true"
        )
        await page_state(page, "connected")
        (session,) = server.manager.sessions()
        browser, agent = sorted(
            session.endpoints.values(), key=lambda endpoint: isinstance(endpoint, RtvbpEndpoint)
        )
        assert isinstance(browser, WebRtcEndpoint) and isinstance(agent, RtvbpEndpoint)
        await browser_hears(page, BROWSER_TONE_HZ)
        async with asyncio.timeout(5):  # the page's own readout, refreshed twice a second
            while "strongest at" not in (shown := await page_text(page, "hearing")):
                await asyncio.sleep(0.2)
        assert abs(float(shown.split()[-2]) - BROWSER_TONE_HZ) < 12, shown

        await page.evaluate("document.getElementById('hangup').click(); true")
        await page_state(page, "ended")
        async with asyncio.timeout(10):
            while server.manager.sessions():
                await asyncio.sleep(0.1)


async def test_example_page_says_why_a_token_is_refused(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server(browser_page=True, control={"tokens": [CONTROL_TOKEN]})
    async with chromium(tmp_path, BROWSER_TONE_HZ, f"{server.base_url}/browser") as page:
        await page.evaluate(
            "document.getElementById('token').value = 'not-the-token-at-all';"
            " document.getElementById('call').click(); true"
        )
        async with asyncio.timeout(15):
            while not (state := await page_text(page, "state")).startswith("failed"):
                await asyncio.sleep(0.2)
        assert "control WebSocket was refused" in state
        assert not server.manager.sessions()


async def test_example_guide_from_zero(tmp_path: Path) -> None:
    """examples/browser/README.md as written: `callbridge serve --browser-page`, open /browser,
    press Call with the agent field as it comes (the server's own demo application): the demo
    greets, then echoes the microphone tone."""
    with running_server("--browser-page") as port:
        async with chromium(tmp_path, BROWSER_TONE_HZ, f"http://127.0.0.1:{port}/browser") as page:
            agent = await page.evaluate("document.getElementById('agent').value")
            assert agent == f"ws://127.0.0.1:{port}/rtvbp"
            await page.evaluate("document.getElementById('call').click(); true")
            await page_state(page, "connected")
            await browser_hears(page, BROWSER_TONE_HZ)
            await page.evaluate("document.getElementById('hangup').click(); true")
            await page_state(page, "ended")


async def test_example_page_says_when_the_agent_cannot_be_reached(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server(browser_page=True)
    async with chromium(tmp_path, BROWSER_TONE_HZ, f"{server.base_url}/browser") as page:
        unreachable = "ws://127.0.0.1:9/rtvbp"  # the discard port: nothing listens
        await page.evaluate(
            f"document.getElementById('agent').value = {json.dumps(unreachable)};"
            " document.getElementById('call').click(); true"
        )
        async with asyncio.timeout(20):
            while not (state := await page_text(page, "state")).startswith("failed"):
                await asyncio.sleep(0.2)
        assert state.startswith("failed: the agent could not be reached (failed: "), state
        async with asyncio.timeout(10):  # hung up: the page closed its control connection
            while server.manager.sessions():
                await asyncio.sleep(0.1)
