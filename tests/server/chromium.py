"""Headless Debian Chromium driven over the DevTools protocol, with a fake microphone tone.

The browser gets a fresh profile, no background networking, a WAV of a known tone as its
microphone, and one page on 127.0.0.1: the test page served here, or a URL of the server under
test. `evaluate` runs an expression in that page (promises awaited) through the page's DevTools
WebSocket, with aiohttp's client. Loopback candidates are allowed and not hidden behind mDNS
names: the browser scenarios run where loopback is the only interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web

from tests.conftest import serve_app

CHROMIUM = "/usr/bin/chromium"
PAGE = Path(__file__).with_name("webrtc_page.html")


def write_tone_wav(path: Path, frequency: float, seconds: float = 20.0) -> None:
    """A 48 kHz mono 16-bit WAV of a sine (Chromium loops it as the microphone)."""
    times = np.arange(int(48000 * seconds)) / 48000
    samples = (np.sin(2 * np.pi * frequency * times) * 12000).astype("<i2")
    with wave.open(str(path), "wb") as output:
        output.setnchannels(1)
        output.setsampwidth(2)
        output.setframerate(48000)
        output.writeframes(samples.tobytes())


class DevToolsPage:
    """One page target's DevTools WebSocket."""

    def __init__(self, websocket: aiohttp.ClientWebSocketResponse) -> None:
        self.websocket = websocket
        self._ids = itertools.count(1)

    async def evaluate(self, expression: str, timeout_s: float = 15.0) -> Any:
        request_id = next(self._ids)
        await self.websocket.send_json(
            {
                "id": request_id,
                "method": "Runtime.evaluate",
                "params": {"expression": expression, "awaitPromise": True, "returnByValue": True},
            }
        )
        async with asyncio.timeout(timeout_s):
            while True:
                message = await self.websocket.receive_json()
                if message.get("id") == request_id:
                    break
        result = message["result"]
        if "exceptionDetails" in result:
            raise AssertionError(f"page raised: {result['exceptionDetails']}")
        return result["result"].get("value")


@contextlib.asynccontextmanager
async def page_server() -> AsyncIterator[str]:
    """Serve the test page on 127.0.0.1; yields its URL."""
    app = web.Application()

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE.read_text(), content_type="text/html")

    app.router.add_get("/", page)
    async with serve_app(app) as address:
        yield f"http://{address}/"


@contextlib.asynccontextmanager
async def chromium(
    workdir: Path, tone_hz: float, url: str | None = None
) -> AsyncIterator[DevToolsPage]:
    """A headless Chromium on `url` (default: the test page); yields the page's DevTools
    connection once the page has loaded."""
    if shutil.which(CHROMIUM) is None:
        raise AssertionError(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    if url is None:
        async with page_server() as test_page, chromium(workdir, tone_hz, test_page) as page:
            yield page
        return
    wav = workdir / "tone.wav"
    write_tone_wav(wav, tone_hz)
    profile = workdir / "profile"
    profile.mkdir()
    process = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--allow-loopback-in-peer-connection",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        "--autoplay-policy=no-user-gesture-required",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        f"--user-data-dir={profile}",
        "--remote-debugging-port=0",
        url,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as http:
            port = await _devtools_port(profile)
            page_url = await _page_websocket(http, port, url)
            async with http.ws_connect(page_url, max_msg_size=0) as websocket:
                page = DevToolsPage(websocket)
                await _wait_loaded(page, url)
                yield page
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


async def _devtools_port(profile: Path) -> int:
    marker = profile / "DevToolsActivePort"
    async with asyncio.timeout(30):
        while not marker.exists() or not marker.read_text().strip():
            await asyncio.sleep(0.1)
    return int(marker.read_text().split()[0])


async def _page_websocket(http: aiohttp.ClientSession, port: int, url: str) -> str:
    async with asyncio.timeout(30):
        while True:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            for target in targets:
                if target.get("type") == "page" and target.get("url") == url:
                    return str(target["webSocketDebuggerUrl"])
            await asyncio.sleep(0.1)


async def _wait_loaded(page: DevToolsPage, url: str) -> None:
    loaded = f"location.href === {json.dumps(url)} && document.readyState === 'complete'"
    async with asyncio.timeout(30):
        while not await page.evaluate(loaded):
            await asyncio.sleep(0.1)
