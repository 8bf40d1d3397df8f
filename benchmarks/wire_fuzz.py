"""Wire fuzzer: hostile clients against a running `callbridge serve` for a bounded time, then
checks that it still serves, that every session can be destroyed and that nothing leaked.

Clients, all at once (inputs are mutated from the seeds of `tests/fuzz/targets.py`):
  control  control WebSockets: valid calls (sessions, RTP endpoints from offers, tones, offers,
           files) mixed with mutated requests; the connection then closes, is reset (RST right
           after the upgrade or mid-stream) or destroys its session.
  rtp      garbage, mutated RTP and RTCP datagrams to the ports of the SDP answers and to
           random ports of the server's range.
  rtvbp    WebSockets to the RTVBP application path and the media ingress (random
           subprotocols, sometimes a valid session.initialize) sending mutated frames.
  http     malformed HTTP requests (no Host, Content-Length with Transfer-Encoding, 8 KiB
           header, `GET *`, random bytes) and valid API requests.

Afterwards: /health answers, every session (orphaned by the dropped connections) is attached
and destroyed, and the server's tasks, fds, UDP sockets and port pairs return to the baseline
taken after a warm-up. Prints the figures; exit status 1 if any check fails.

Usage: python benchmarks/wire_fuzz.py [--seconds 60] [--seed 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from callbridge_relay import ControlConnection, ControlError, stop_process
from server_probe import Sample, ServerProbe, start_serve

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fuzz.mutator import draw_seeds, mutate  # noqa: E402
from tests.fuzz.targets import TARGETS  # noqa: E402

PORT_RANGE = (47000, 47999)
INITIALIZE = (
    '{"version":"1","id":"init-1","method":"session.initialize","params":{"application":'
    '{"id":"fuzz"},"call":{"id":"c","session_id":"s","from":"+1","to":"+2"},'
    '"audio_codec_offerings":[{"id":"L16/8000/1","name":"L16","sample_rate":8000,"bit_depth":16}]}}'
)
MALFORMED_HTTP = (
    b"GET /health HTTP/1.1\r\n\r\n",
    b"POST /sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8192 + b"\r\n\r\n",
    b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /sessions/not-a-uuid HTTP/1.1\r\nHost: x\r\n\r\n",
    b"DELETE /sessions/00000000-0000-0000-0000-000000000000 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /sessions HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /../../etc/passwd HTTP/1.0\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
)


def offer(port: int, codec: str) -> str:
    rtpmap = {"pcmu": "0 PCMU/8000", "g722": "9 G722/8000", "opus": "111 opus/48000/2"}[codec]
    payload_type = rtpmap.split()[0]
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP {payload_type} 101\r\na=rtpmap:{rtpmap}\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    )


def answer_port(sdp: str) -> int | None:
    for line in sdp.splitlines():
        if line.startswith("m=audio "):
            return int(line.split()[1])
    return None


class Fuzzer:
    def __init__(self, base_url: str, port: int, seed: int) -> None:
        self.base_url = base_url
        self.port = port
        self.rng = random.Random(seed)
        self.counts: Counter[str] = Counter()
        self.rtp_ports: list[int] = []
        seeds = {target.name: target for target in TARGETS}
        self.seeds = {
            name: draw_seeds(seeds[name], 100, self.rng)
            for name in ("control", "rtp", "rtcp", "rtvbp_envelope")
        }
        self.sink: socket.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sink.bind(("127.0.0.1", 0))
        self.sink.setblocking(False)

    def mutated(self, kind: str) -> bytes:
        return mutate(self.rng.choice(self.seeds[kind]), self.seeds[kind], self.rng)

    def control_frame(self) -> str:
        return self.mutated("control")[1:].decode(errors="replace")

    def valid_call(self) -> tuple[str, dict[str, Any]]:
        sink_port = self.sink.getsockname()[1]
        choice = self.rng.randrange(7)
        if choice == 0:
            codec = self.rng.choice(("pcmu", "g722", "opus"))
            return "endpoint.create_from_offer", {
                "sdp": offer(sink_port, codec),
                "direction": "sendrecv",
            }
        if choice == 1:
            return "endpoint.create_offer", {"type": "rtp", "direction": "sendrecv"}
        if choice == 2:
            return "endpoint.create_tone", {"tone": "sine", "frequency": 440}
        if choice == 3:
            source = self.rng.choice(("a\u0000b", "../x.wav", "missing.wav", "/etc/passwd"))
            return "endpoint.create_with_file", {"source": source}
        if choice == 4:
            return "session.info", {}
        if choice == 5:
            return "endpoint.dtmf.inject", {
                "endpoint_id": str(uuid.uuid4()),
                "digit": "5",
                "duration_ms": 100,
            }
        return "session.list", {}

    async def control_client(self, http: aiohttp.ClientSession) -> None:
        if self.rng.random() < 0.2:
            await self.reset_after_upgrade()
            return
        async with http.ws_connect(f"{self.base_url}/", autoping=False) as websocket:
            self.counts["control connections"] += 1
            sent = 0
            if self.rng.random() < 0.8:
                await websocket.send_str('{"id":"c","method":"session.create"}')
                sent += 1
            for index in range(self.rng.randrange(1, 30)):
                if self.rng.random() < 0.5:
                    method, params = self.valid_call()
                    text = json.dumps({"id": f"v{index}", "method": method, "params": params})
                else:
                    text = self.control_frame()
                self.counts["control messages"] += 1
                if self.rng.random() < 0.05:
                    await websocket.send_bytes(text.encode())
                else:
                    await websocket.send_str(text)
                    sent += 1
            await self.read_answers(websocket, sent)
            if self.rng.random() < 0.5:
                await websocket.send_str('{"id":"d","method":"session.destroy"}')
                await self.read_answers(websocket, 1)

    async def read_answers(self, websocket: aiohttp.ClientWebSocketResponse, expected: int) -> None:
        """Until `expected` responses (events do not count) or 0.5 s."""
        deadline = time.monotonic() + 0.5
        while expected > 0 and (left := deadline - time.monotonic()) > 0:
            try:
                message = await websocket.receive(timeout=left)
            except TimeoutError:
                return
            if message.type != aiohttp.WSMsgType.TEXT:
                return
            frame = json.loads(message.data)
            expected -= "event" not in frame
            result = frame.get("result")
            sdp = (
                result.get("sdp_answer") or result.get("sdp_offer")
                if isinstance(result, dict)
                else None
            )
            port = answer_port(sdp) if isinstance(sdp, str) else None
            if port:
                self.counts["rtp ports learned"] += 1
                self.rtp_ports = [*self.rtp_ports[-200:], port]

    def masked_frame(self, opcode: int, payload: bytes) -> bytes:
        """A client WebSocket frame (payloads under 126 bytes)."""
        key = self.rng.randbytes(4)
        masked = bytes(byte ^ key[index % 4] for index, byte in enumerate(payload[:125]))
        return bytes([0x80 | opcode, 0x80 | len(masked)]) + key + masked

    async def reset_after_upgrade(self) -> None:
        """A raw upgrade, maybe a session and a ping, then an RST."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.counts["control resets"] += 1
        writer.write(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await writer.drain()
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        except (TimeoutError, asyncio.IncompleteReadError):
            pass
        if self.rng.random() < 0.5:
            writer.write(self.masked_frame(0x1, b'{"id":"1","method":"session.create"}'))
            writer.write(
                self.masked_frame(
                    0x1, b'{"id":"2","method":"endpoint.create_tone","params":{"tone":"beep"}}'
                )
            )
        if self.rng.random() < 0.5:
            writer.write(self.masked_frame(0x9, b"ping"))
        await writer.drain()
        if self.rng.random() < 0.5:
            await asyncio.sleep(0.05)
        raw = writer.get_extra_info("socket")
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async def rtvbp_client(self, http: aiohttp.ClientSession) -> None:
        path = self.rng.choice(("/rtvbp", "/rtvbp/media", f"/rtvbp/media/{uuid.uuid4()}"))
        protocols = self.rng.choice(
            ((), ("rtvbp.v1",), ("rtvbp.demo.v1",), ("x", "rtvbp.v1"), ("bearer.abc", "rtvbp.v1"))
        )
        try:
            websocket = await http.ws_connect(f"{self.base_url}{path}", protocols=protocols)
        except aiohttp.WSServerHandshakeError:
            self.counts["rtvbp refused"] += 1
            return
        async with websocket:
            self.counts["rtvbp sessions"] += 1
            if self.rng.random() < 0.5:
                await websocket.send_str(INITIALIZE)
            for _ in range(self.rng.randrange(1, 20)):
                frame = self.mutated("rtvbp_envelope")
                self.counts["rtvbp frames"] += 1
                if self.rng.random() < 0.8:
                    await websocket.send_str(frame.decode(errors="replace"))
                else:
                    await websocket.send_bytes(frame)
            try:
                await websocket.receive(timeout=0.2)
            except TimeoutError:
                pass

    async def http_client(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        if self.rng.random() < 0.7:
            request = self.rng.choice(MALFORMED_HTTP)
        else:
            request = self.rng.randbytes(self.rng.randrange(1, 200)) + b"\r\n\r\n"
        writer.write(request)
        self.counts["http requests"] += 1
        try:
            await writer.drain()
            await asyncio.wait_for(reader.read(65536), 2)
        except (TimeoutError, ConnectionError):
            pass
        writer.close()

    async def rtp_burst(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(100):
            if self.rtp_ports and self.rng.random() < 0.8:
                port = self.rng.choice(self.rtp_ports)
            else:
                port = self.rng.randrange(*PORT_RANGE)
            kind = self.rng.random()
            if kind < 0.45:
                data = self.mutated("rtp")
            elif kind < 0.7:
                data = self.mutated("rtcp")
            else:
                data = self.rng.randbytes(self.rng.randrange(0, 400))
            try:
                await loop.sock_sendto(self.sink, data, ("127.0.0.1", port + (kind > 0.9)))
            except OSError:
                pass
            self.counts["datagrams"] += 1
        while True:  # what the server sends back to the sink socket
            try:
                self.sink.recv(4096)
            except BlockingIOError:
                break

    async def worker(self, deadline: float, action: Any) -> None:
        while time.monotonic() < deadline:
            try:
                await asyncio.wait_for(action(), 10)
            except (aiohttp.ClientError, ConnectionError, OSError, TimeoutError) as error:
                self.counts[f"client error {type(error).__name__}"] += 1
            await asyncio.sleep(0.005)


async def destroy_every_session(base_url: str, http: aiohttp.ClientSession) -> int:
    """Attach to each session left over and destroy it; how many there were."""
    lister = ControlConnection(await http.ws_connect(f"{base_url}/"))
    sessions = (await lister.request("session.list", {}))["sessions"]
    await lister.close()
    for entry in sessions:
        connection = ControlConnection(await http.ws_connect(f"{base_url}/"))
        try:
            await connection.request("session.attach", {"session_id": entry["session_id"]})
            await connection.request("session.destroy", {})
        except ControlError as error:
            print(f"  session {entry['session_id']} ({entry['state']}): {error}")
        await connection.close()
    return len(sessions)


async def settle(probe: ServerProbe, baseline: Sample, within_s: float = 15) -> Sample:
    """The first sample that is back at the baseline, or the last one after `within_s`."""
    deadline = time.monotonic() + within_s
    while True:
        sample = await probe.sample()
        back = (
            sample.sessions == 0
            and sample.endpoints == 0
            and sample.port_pairs == 0
            and sample.tasks <= baseline.tasks
            and sample.fds <= baseline.fds
            and sample.udp_sockets <= baseline.udp_sockets
        )
        if back or time.monotonic() > deadline:
            return sample
        await asyncio.sleep(0.5)


def start(media_dir: Path, log: Any) -> tuple[subprocess.Popen[bytes], int]:
    return start_serve(
        {
            "CALLBRIDGE_RTP_PORT_RANGE": json.dumps(list(PORT_RANGE)),
            "CALLBRIDGE_MEDIA_DIR": str(media_dir),
            "CALLBRIDGE_CACHE_DIR": str(media_dir / "cache"),
            "CALLBRIDGE_MEDIA_TIMEOUT_SECS": "300",
        },
        log,
    )


async def run(process: subprocess.Popen[bytes], port: int, seconds: float, seed: int) -> bool:
    base_url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        probe = ServerProbe(process.pid, base_url, http)
        fuzzer = Fuzzer(base_url, port, seed)
        await fuzzer.http_client()
        await fuzzer.rtp_burst()
        await fuzzer.control_client(http)
        await fuzzer.rtvbp_client(http)
        await destroy_every_session(base_url, http)
        baseline = await settle(probe, await probe.sample(), 3)
        print(f"baseline after warm-up: {baseline.as_dict()}")
        deadline = time.monotonic() + seconds
        actions = [lambda: fuzzer.control_client(http)] * 4
        actions += [lambda: fuzzer.rtvbp_client(http)] * 2
        actions += [fuzzer.http_client] * 2 + [fuzzer.rtp_burst]
        await asyncio.gather(*(fuzzer.worker(deadline, action) for action in actions))
        during = await probe.sample()
        counts = ", ".join(f"{value} {name}" for name, value in sorted(fuzzer.counts.items()))
        print(f"fuzzed {seconds:.0f} s: {counts}")
        print(f"at the end of fuzzing: {during.as_dict()}")
        async with http.get(f"{base_url}/health") as response:
            healthy = response.status == 200
        destroyed = await destroy_every_session(base_url, http)
        after = await settle(probe, baseline)
        print(f"health {'ok' if healthy else 'FAILED'}; {destroyed} sessions destroyed")
        print(f"after cleanup: {after.as_dict()}")
        leaks = {
            "sessions": after.sessions,
            "endpoints": after.endpoints,
            "port pairs": after.port_pairs,
            "tasks": after.tasks - baseline.tasks,
            "fds": after.fds - baseline.fds,
            "udp sockets": after.udp_sockets - baseline.udp_sockets,
        }
        print("leaked: " + ", ".join(f"{name} {value}" for name, value in leaks.items()))
        return healthy and process.poll() is None and all(v <= 0 for v in leaks.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        media_dir = Path(directory)
        log_path = media_dir / "server.log"
        with open(log_path, "wb") as log:
            process, port = start(media_dir, log)
        try:
            ok = asyncio.run(run(process, port, arguments.seconds, arguments.seed))
        finally:
            stop_process(process)
        log_text = log_path.read_text(errors="replace")
    tracebacks = log_text.count("Traceback (most recent call last)")
    levels = Counter(
        word
        for line in log_text.splitlines()
        for word in line.split()[:4]
        if word in {"WARNING", "ERROR", "CRITICAL"}
    )
    print(
        f"server log: {len(log_text.splitlines())} lines, {tracebacks} tracebacks, {dict(levels)}"
    )
    if tracebacks:
        print(log_text[max(log_text.index("Traceback") - 300, 0) :][:6000])
    ok = ok and not tracebacks
    print("wire fuzz: server survived, nothing leaked" if ok else "wire fuzz: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
