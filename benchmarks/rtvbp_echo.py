"""RTVBP capacity of one worker process: N paced voice calls against the echo application.

    .venv/bin/python benchmarks/rtvbp_echo.py                 # search N upward, ~3 minutes
    .venv/bin/python benchmarks/rtvbp_echo.py --calls 500     # one size only

The server is a real `callbridge serve callbridge.apps.echo:app` process pinned to CPU 0; the
load generator is a separate process pinned to CPU 1. Each generated call does the RTVBP
handshake (session.initialize, session.updated), then sends one 320-byte L16/8000 frame every
20 ms at a random phase and matches each echoed frame by a sequence number in its first bytes.
Beside it, in the same run and at the same N, a bare aiohttp WebSocket echo (no protocol) is the
floor; our cost is printed as a ratio to it. Figures only: nothing here passes or fails.

Reported per N: server CPU per call (% of one core) and per frame (µs, receive + send), server
RSS per call, p50/p99 frame turnaround (send to echo received) and lost frames. The search
stops at the first N whose p99 exceeds 20 ms or that loses frames.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from ws_load import INITIALIZE, UPDATED, free_port, wait_for_port

FRAME_BYTES = 320
FRAME_SECONDS = 0.020
HEADER = struct.Struct("<Id")  # sequence number, send time (perf_counter seconds)
BARE_ECHO_SERVER = """
import asyncio, sys, uvloop
from aiohttp import web, WSMsgType
async def echo(request):
    ws = web.WebSocketResponse(protocols=("rtvbp.v1",), compress=False)
    await ws.prepare(request)
    async for message in ws:
        if message.type == WSMsgType.BINARY:
            await ws.send_bytes(message.data)
        elif message.type == WSMsgType.TEXT and '"session.initialize"' in message.data:
            request_id = message.data.split('"id":"', 1)[1].split('"', 1)[0]
            await ws.send_str('{"version":"1","response":"%s","result":{}}' % request_id)
    return ws
app = web.Application()
app.router.add_get("/rtvbp", echo)
uvloop.install()
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


@dataclass
class Measurement:
    calls: int
    connected: int
    cpu_percent: float
    us_per_frame: float
    rss_kib_per_call: float
    p50_ms: float
    p99_ms: float
    lost: int
    sent: int


# -- load generator (runs in its own process) ---------------------------------------------------


async def generate(url: str, calls: int, warmup_s: float, duration_s: float) -> None:
    import aiohttp

    latencies: list[float] = []
    counts = {"sent": 0, "received": 0}
    window = {"since": float("inf")}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        sockets = await asyncio.gather(
            *(open_call(http, url, index) for index in range(calls)), return_exceptions=True
        )
        live = [ws for ws in sockets if not isinstance(ws, BaseException)]
        readers = [asyncio.create_task(read_echoes(ws, latencies, counts, window)) for ws in live]
        payload = bytes(FRAME_BYTES - HEADER.size)
        phases = sorted((random.random() * FRAME_SECONDS, index) for index in range(len(live)))
        sequence = 0
        start = time.perf_counter()
        next_tick = start
        measure_at = start + warmup_s
        stop_at = measure_at + duration_s
        while True:
            now = time.perf_counter()
            if now >= stop_at:
                break
            if window["since"] == float("inf") and now >= measure_at:
                window["since"] = now
                print("MEASURE_START", flush=True)
            tick_start = next_tick
            for phase, index in phases:
                delay = tick_start + phase - time.perf_counter()
                if delay > 0.0005:
                    await asyncio.sleep(delay)
                frame = HEADER.pack(sequence, time.perf_counter()) + payload
                try:
                    await live[index].send_bytes(frame)
                except ConnectionError:
                    continue
                if now >= window["since"]:
                    counts["sent"] += 1
            sequence += 1
            next_tick += FRAME_SECONDS
            delay = next_tick - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await asyncio.sleep(0.2)  # let the last echoes arrive
        print("MEASURE_END", flush=True)
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*(ws.close() for ws in live), return_exceptions=True)
    latencies.sort()
    result = {
        "connected": len(live),
        "sent": counts["sent"],
        "received": counts["received"],
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }
    print("RESULT " + json.dumps(result), flush=True)


async def open_call(http: object, url: str, index: int) -> object:
    import aiohttp

    assert isinstance(http, aiohttp.ClientSession)
    ws = await http.ws_connect(url, protocols=("rtvbp.v1",), compress=0, autoping=True)
    await ws.send_str(INITIALIZE.format(call=index))
    while True:
        message = await ws.receive(timeout=30)
        if message.type == aiohttp.WSMsgType.TEXT and '"response"' in message.data:
            break
    await ws.send_str(UPDATED.format(call=index))
    return ws


async def read_echoes(
    ws: object, latencies: list[float], counts: dict[str, int], window: dict[str, float]
) -> None:
    """Match echoes of frames sent inside the measurement window (by their send time)."""
    import aiohttp

    assert isinstance(ws, aiohttp.ClientWebSocketResponse)
    async for message in ws:
        if message.type != aiohttp.WSMsgType.BINARY:
            continue
        _, sent_at = HEADER.unpack_from(message.data)
        if sent_at >= window["since"]:
            latencies.append(time.perf_counter() - sent_at)
            counts["received"] += 1


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * fraction))]


# -- orchestration ---------------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start_server(kind: str, port: int) -> subprocess.Popen[bytes]:
    if kind == "callbridge":
        command = [
            sys.executable,
            "-m",
            "callbridge",
            "serve",
            "callbridge.apps.echo:app",
            "--listen",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
        ]
    else:
        command = [sys.executable, "-c", BARE_ECHO_SERVER, str(port)]
    server = subprocess.Popen(command, preexec_fn=lambda: os.sched_setaffinity(0, {0}))
    wait_for_port(port)
    return server


def measure(kind: str, calls: int, warmup_s: float, duration_s: float) -> Measurement:
    port = free_port()
    server = start_server(kind, port)
    try:
        idle_rss = process_rss_kib(server.pid)
        generator = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--generate",
                f"ws://127.0.0.1:{port}/rtvbp",
                "--calls",
                str(calls),
                "--warmup",
                str(warmup_s),
                "--duration",
                str(duration_s),
            ],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: os.sched_setaffinity(0, {1}),
        )
        assert generator.stdout is not None
        cpu_start = wall_start = cpu_end = wall_end = 0.0
        rss = idle_rss
        result: dict[str, float] = {}
        for line in generator.stdout:
            if line.startswith("MEASURE_START"):
                cpu_start, wall_start = process_cpu_seconds(server.pid), time.monotonic()
            elif line.startswith("MEASURE_END"):
                cpu_end, wall_end = process_cpu_seconds(server.pid), time.monotonic()
                rss = process_rss_kib(server.pid)
            elif line.startswith("RESULT "):
                result = json.loads(line[7:])
        generator.wait()
    finally:
        server.terminate()
        server.wait(timeout=30)
    seconds = max(wall_end - wall_start, 1e-9)
    cpu = cpu_end - cpu_start
    received = int(result.get("received", 0))
    connected = int(result.get("connected", 0))
    return Measurement(
        calls=calls,
        connected=connected,
        cpu_percent=cpu / seconds * 100,
        us_per_frame=cpu / max(received, 1) * 1e6,
        rss_kib_per_call=(rss - idle_rss) / max(connected, 1),
        p50_ms=float(result.get("p50_ms", float("nan"))),
        p99_ms=float(result.get("p99_ms", float("nan"))),
        lost=int(result.get("sent", 0)) - received,
        sent=int(result.get("sent", 0)),
    )


def row(label: str, m: Measurement, floor: Measurement | None) -> str:
    ratio = f"{m.us_per_frame / floor.us_per_frame:5.2f}x" if floor else "   --"
    return (
        f"{label:<11} {m.calls:>5} {m.connected:>5} {m.cpu_percent:7.1f} % "
        f"{m.cpu_percent / max(m.connected, 1):7.3f} % {m.us_per_frame:8.1f} {ratio} "
        f"{m.rss_kib_per_call:7.1f} {m.p50_ms:7.2f} {m.p99_ms:7.2f} {m.lost:>6}/{m.sent}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--calls", type=int, action="append", help="call counts to run (repeatable)"
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per step")
    parser.add_argument("--generate", metavar="URL", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.generate:
        import uvloop

        uvloop.install()
        asyncio.run(generate(options.generate, options.calls[0], options.warmup, options.duration))
        return
    if len(os.sched_getaffinity(0)) < 2:
        print("note: fewer than 2 CPUs; server and load generator share a core", file=sys.stderr)
    sizes = options.calls or [250, 500, 750, 1000, 1250, 1500]
    print(f"RTVBP echo, L16/8000 20 ms frames, {options.duration:.0f} s measured per step")
    print(
        "server      calls  conn   CPU      CPU/call   us/frame ratio"
        "  RSS/call   p50ms   p99ms   lost"
    )
    largest_within_bound = 0
    for calls in sizes:
        floor = measure("bare", calls, options.warmup, options.duration)
        ours = measure("callbridge", calls, options.warmup, options.duration)
        print(row("bare-echo", floor, None), flush=True)
        print(row("callbridge", ours, floor), flush=True)
        within = ours.connected == calls and ours.lost == 0 and ours.p99_ms <= 20.0
        if within:
            largest_within_bound = calls
        elif options.calls is None:
            break
    print(
        "largest N with p99 <= 20 ms and no loss:",
        largest_within_bound or "none of the sizes run",
    )
    import rtvbp_envelope

    print("\ncontrol message codec (classic.v1), per message:")
    rtvbp_envelope.main()


if __name__ == "__main__":
    main()
