"""RTP media to an RTVBP agent: a phone in a media session talks to an agent that callbridge dials.

    callbridge serve                                      # in one terminal (demo agent on /rtvbp)
    python examples/rtp_to_agent.py ws://127.0.0.1:9100/  # in another

1. A control connection creates a media session and an RTP endpoint from a scripted phone's
   SDP offer (PCMU, telephone-event).
2. `endpoint.create_rtvbp` dials the agent (here the demo agent that `callbridge serve` hosts
   on /rtvbp: two greeting beeps, then it echoes the caller; key 1-9 plays a beep, # hangs up).
   The endpoint is `connecting`, then `endpoint.state_changed` says `connected`.
3. The phone says 440 Hz and hears itself back through the agent (PCMU/8000 <-> L16).
4. The phone presses 3 (RFC 4733): the agent receives a `dtmf` event and answers with a
   700 Hz beep. Then it presses #: the agent hangs up, and `endpoint.rtvbp.ended` says why.

Any agent URL works: pass it as the second argument (e.g. ws://127.0.0.1:8080/ws).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import socket
import struct
import sys
import time

import aiohttp
import numpy as np

from callbridge.media.g711 import ulaw_decode, ulaw_encode
from callbridge.media.rtp import build_rtp, parse_rtp
from control_client import Controller

RATE = 8000
FRAME_SAMPLES = 160
EVENT_WAIT_S = 10.0
"""How long the example waits for an event before it gives up."""


class Phone(asyncio.DatagramProtocol):
    """A scripted RTP phone: sends PCMU every 20 ms, keeps what it hears with arrival times."""

    def __init__(self) -> None:
        self.frequency_hz: float | None = None
        self.heard: list[tuple[float, bytes]] = []
        self.remote: tuple[str, int] | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self._samples = 0
        self._timestamp = secrets.randbits(32)
        self._ssrc = secrets.randbits(32)
        self._sequence = itertools.count(secrets.randbits(15))

    async def open(self) -> int:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", 0), family=socket.AF_INET
        )
        return int(self.transport.get_extra_info("sockname")[1])

    def offer(self, port: int) -> str:
        return "\r\n".join(
            [
                "v=0",
                "o=phone 1 1 IN IP4 127.0.0.1",
                "s=phone",
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
        address, port = "127.0.0.1", 0
        for line in sdp.splitlines():
            if line.startswith("c=IN IP4 "):
                address = line.split()[-1]
            elif line.startswith("m=audio "):
                port = int(line.split()[1])
        self.remote = (address, port)

    def _send(self, payload: bytes, payload_type: int, timestamp: int, marker: bool) -> None:
        if self.transport is not None and self.remote is not None:
            sequence = next(self._sequence) & 0xFFFF
            packet = build_rtp(
                payload_type, sequence, timestamp, self._ssrc, payload, marker=marker
            )
            self.transport.sendto(packet, self.remote)

    def send_frame(self) -> None:
        t = (self._samples + np.arange(FRAME_SAMPLES)) / RATE
        self._samples += FRAME_SAMPLES
        self._timestamp = (self._timestamp + FRAME_SAMPLES) & 0xFFFFFFFF
        amplitude = 0 if self.frequency_hz is None else 6000
        pcm = (amplitude * np.sin(2 * np.pi * (self.frequency_hz or 0) * t)).astype("<i2")
        self._send(ulaw_encode(pcm.tobytes()), 0, self._timestamp, False)

    async def press(self, digit: str, duration_ms: int = 120) -> None:
        """One RFC 4733 digit (telephone-event, PT 101): updates every 20 ms, three ends."""
        event = "0123456789*#".index(digit)
        timestamp = self._timestamp
        steps = duration_ms // 20
        for step in range(1, steps + 1):
            end = step == steps
            payload = struct.pack("!BBH", event, (0x80 if end else 0) | 10, step * 160)
            for _ in range(3 if end else 1):
                self._send(payload, 101, timestamp, step == 1)
            await asyncio.sleep(0.02)

    def datagram_received(self, data: bytes, address: tuple[str, int]) -> None:
        packet = parse_rtp(data)
        if packet.payload_type == 0:
            self.heard.append((time.monotonic(), ulaw_decode(bytes(packet.payload))))

    def strongest(self, since: float) -> int | None:
        """The strongest frequency (Hz, rounded to 10) heard since `since`, None if silence."""
        pcm = b"".join(frame for arrival, frame in self.heard if arrival >= since)
        samples = np.frombuffer(pcm, "<i2").astype(float)
        if len(samples) < RATE // 10 or np.sqrt(np.mean(samples**2)) < 300:
            return None
        spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
        return int(round(int(np.argmax(spectrum)) * RATE / len(samples), -1))


async def talk(phone: Phone, seconds: float) -> None:
    """The phone's 20 ms clock, for `seconds`."""
    next_at = time.monotonic()
    for _ in range(int(seconds * 50)):
        phone.send_frame()
        next_at += 0.02
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def main(control_url: str, agent_url: str) -> None:
    phone = Phone()
    async with aiohttp.ClientSession() as http:
        controller = Controller(await http.ws_connect(control_url))
        print("1. a media session with an RTP phone")
        await controller.request("session.create")
        created = await controller.request(
            "endpoint.create_from_offer", sdp=phone.offer(await phone.open())
        )
        phone.answer(created["sdp_answer"])

        print(f"2. dial the agent at {agent_url}")
        leg = await controller.request("endpoint.create_rtvbp", url=agent_url)
        changed = await controller.event("endpoint.state_changed")
        print(f"   the leg is {changed['new_state']}")
        info = await controller.request("session.info")
        for endpoint in info["endpoints"]:
            print(f"   {endpoint['endpoint_type']:5} {endpoint['codec']}")
        await talk(phone, 1.2)  # the demo agent's greeting

        print("3. the phone says 440 Hz")
        phone.frequency_hz = 440
        await talk(phone, 1.0)
        print(f"   the phone hears {phone.strongest(time.monotonic() - 0.5)} Hz")

        print("4. the phone presses 3, then #")
        phone.frequency_hz = None
        await talk(phone, 1.0)  # the demo agent's echo runs behind its greeting: let it drain
        await phone.press("3")
        pressed = time.monotonic()
        await talk(phone, 1.2)
        print(f"   the agent answers with a {phone.strongest(pressed)} Hz beep")
        await phone.press("#")
        ended = await controller.event("endpoint.rtvbp.ended")
        print(f"   the leg ended: {ended['reason']} ({ended['detail']})")
        assert ended["endpoint_id"] == leg["endpoint_id"]
        await controller.request("session.destroy")
    if phone.transport is not None:
        phone.transport.close()


if __name__ == "__main__":
    control = sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:9100/"
    agent = sys.argv[2] if len(sys.argv) > 2 else control.rstrip("/") + "/rtvbp"
    asyncio.run(main(control, agent))
