"""The media session server, worked example: two RTP phones, then a tone, then a bridge.

    callbridge serve                                   # in one terminal
    python examples/two_phones.py ws://127.0.0.1:9100/ # in another

Two scripted RTP phones (UDP sockets sending PCMU, one at 440 Hz and one at 880 Hz) join one
media session through `endpoint.create_from_offer`; each hears the other. A 1000 Hz tone
endpoint joins: each phone now hears a mix of the other phone and the tone. Then a second
session with a third phone (660 Hz) is bridged to the first: the first two phones hear it.
What each phone hears is printed as the two strongest frequencies of its last second of audio.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import socket
import sys
from typing import Any

import aiohttp
import numpy as np

from callbridge.media.g711 import ulaw_decode, ulaw_encode
from callbridge.media.rtp import build_rtp, parse_rtp

RATE = 8000
FRAME_SAMPLES = 160


class Phone(asyncio.DatagramProtocol):
    """A scripted RTP phone: sends a PCMU sine every 20 ms and keeps what it hears."""

    def __init__(self, name: str, frequency_hz: float) -> None:
        self.name = name
        self.frequency_hz = frequency_hz
        self.heard: list[bytes] = []
        self.remote: tuple[str, int] | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self._phase = 0
        self._ssrc = secrets.randbits(32)
        self._sequence = itertools.count(secrets.randbits(15))

    async def open(self) -> int:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", 0), family=socket.AF_INET
        )
        return int(self.transport.get_extra_info("sockname")[1])

    def offer(self, port: int) -> str:
        """A SIP-phone-like SDP offer: PCMU and telephone-event."""
        return "\r\n".join(
            [
                "v=0",
                "o=phone 1 1 IN IP4 127.0.0.1",
                f"s={self.name}",
                "c=IN IP4 127.0.0.1",
                "t=0 0",
                f"m=audio {port} RTP/AVP 0 101",
                "a=rtpmap:0 PCMU/8000",
                "a=rtpmap:101 telephone-event/8000",
                "a=fmtp:101 0-16",
                "a=sendrecv",
                "",
            ]
        )

    def answer(self, sdp: str) -> None:
        """Send to the address and port of the server's answer."""
        address, port = "127.0.0.1", 0
        for line in sdp.splitlines():
            if line.startswith("c=IN IP4 "):
                address = line.split()[-1]
            elif line.startswith("m=audio "):
                port = int(line.split()[1])
        self.remote = (address, port)

    def send_frame(self) -> None:
        if self.transport is None or self.remote is None:
            return
        t = (self._phase + np.arange(FRAME_SAMPLES)) / RATE
        self._phase += FRAME_SAMPLES
        pcm = (6000 * np.sin(2 * np.pi * self.frequency_hz * t)).astype("<i2").tobytes()
        sequence = next(self._sequence) & 0xFFFF
        packet = build_rtp(0, sequence, self._phase & 0xFFFFFFFF, self._ssrc, ulaw_encode(pcm))
        self.transport.sendto(packet, self.remote)

    def datagram_received(self, data: bytes, address: tuple[str, int]) -> None:
        packet = parse_rtp(data)
        if packet.payload_type == 0:
            self.heard.append(ulaw_decode(bytes(packet.payload)))

    def strongest(self, count: int = 2) -> list[int]:
        """The `count` strongest frequencies (Hz, rounded to 10) of the last second heard."""
        samples = np.frombuffer(b"".join(self.heard[-50:]), "<i2").astype(float)
        if len(samples) < RATE // 2:
            return []
        spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
        peaks: list[int] = []
        for index in np.argsort(spectrum)[::-1]:
            frequency = int(round(index * RATE / len(samples), -1))
            if all(abs(frequency - peak) > 50 for peak in peaks):
                peaks.append(frequency)
            if len(peaks) == count:
                break
        return sorted(peaks)


class Controller:
    """A control connection: one request at a time, events collected."""

    def __init__(self, websocket: aiohttp.ClientWebSocketResponse) -> None:
        self.websocket = websocket
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    async def request(self, method: str, **params: Any) -> Any:
        request_id = str(next(self.ids))
        message = {"id": request_id, "method": method, "params": params}
        print(f"  -> {json.dumps(message)[:110]}")
        await self.websocket.send_json(message)
        while True:
            reply = await self.websocket.receive_json(timeout=10)
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            print(f"  <- {json.dumps(reply)[:110]}")
            return reply["result"]


async def play(phones: list[Phone], seconds: float) -> None:
    """Run the phones' 20 ms clocks for `seconds`."""
    for _ in range(int(seconds * 50)):
        for phone in phones:
            phone.send_frame()
        await asyncio.sleep(0.02)


async def main(url: str) -> None:
    alice, bob, carol = Phone("alice", 440), Phone("bob", 880), Phone("carol", 660)
    async with aiohttp.ClientSession() as http:
        first = Controller(await http.ws_connect(url))
        second = Controller(await http.ws_connect(url))

        print("1. two phones in one session")
        session_id = (await first.request("session.create"))["session_id"]
        for phone in (alice, bob):
            port = await phone.open()
            created = await first.request("endpoint.create_from_offer", sdp=phone.offer(port))
            phone.answer(created["sdp_answer"])
        await play([alice, bob, carol], 1.5)
        print(f"   alice hears {alice.strongest(1)} Hz, bob hears {bob.strongest(1)} Hz")

        print("2. a 1000 Hz tone joins: each phone hears the other phone and the tone")
        await first.request("endpoint.create_tone", tone="sine", frequency=1000)
        await play([alice, bob, carol], 1.5)
        print(f"   alice hears {alice.strongest()} Hz, bob hears {bob.strongest()} Hz")

        print("3. a second session with a third phone, bridged to the first")
        await second.request("session.create")
        port = await carol.open()
        created = await second.request("endpoint.create_from_offer", sdp=carol.offer(port))
        carol.answer(created["sdp_answer"])
        await second.request("session.bridge", target_session_id=session_id)
        await play([alice, bob, carol], 1.5)
        print(f"   alice hears {alice.strongest(3)} Hz, carol hears {carol.strongest(3)} Hz")

        info = await first.request("session.info")
        kinds = sorted(endpoint["endpoint_type"] for endpoint in info["endpoints"])
        print(f"   session {session_id[:8]}... endpoints: {kinds}")
        await first.request("session.destroy")
        await second.request("session.destroy")
    for phone in (alice, bob, carol):
        if phone.transport is not None:
            phone.transport.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:9100/"))
