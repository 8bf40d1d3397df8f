"""The WebSocket floor: what echoing 20 ms frames costs on aiohttp, websockets and picows.

    .venv/bin/python benchmarks/websocket_floor.py                      # 250 and 1000 calls
    .venv/bin/python benchmarks/websocket_floor.py --calls 2000 --stacks picows,aiohttp

Each stack serves a bare echo (every binary message sent straight back, no protocol on top) in
its own process pinned to CPU 0, on uvloop. One load generator (`ws_load.py`, picows clients,
`--generators` processes pinned to the other CPUs) drives every stack the same way: N calls, one
320-byte frame per call every 20 ms. This is the least any RTVBP transport on that stack can
cost; `rtvbp_echo.py` puts callbridge's RTVBP next to it.

Printed per stack and N: server CPU (% of one core) and µs per echoed frame (receive + send),
the ratio to the cheapest stack of the same N, p50/p99 turnaround (send to echo received), lost
frames, the generator's own CPU (% of one core, all its processes): a generator near 100 %
per process means the figures describe the generator, not the server; and the server's RSS
growth per call. Figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import ws_load

STACKS = ("picows", "aiohttp", "websockets")


# -- the bare echo servers (each runs in its own process) -------------------------------------


async def serve_aiohttp(port: int, stop: asyncio.Event) -> None:
    from aiohttp import WSMsgType, web

    async def echo(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(protocols=("rtvbp.v1",), compress=False)
        await socket.prepare(request)
        try:
            async for message in socket:
                if message.type is WSMsgType.BINARY:
                    await socket.send_bytes(message.data)
        except ConnectionError:
            pass  # the generator hung up while an echo was on its way
        return socket

    app = web.Application()
    app.router.add_get("/rtvbp", echo)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await stop.wait()
    await runner.cleanup()


async def serve_websockets(port: int, stop: asyncio.Event) -> None:
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed

    async def echo(connection: ServerConnection) -> None:
        try:
            async for message in connection:
                if isinstance(message, bytes):
                    await connection.send(message)
        except ConnectionClosed:
            pass  # the generator hung up without waiting for the close handshake

    async with serve(echo, "127.0.0.1", port, subprotocols=["rtvbp.v1"], compression=None):
        await stop.wait()


async def serve_picows(port: int, stop: asyncio.Event) -> None:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

    class Echo(WSListener):
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type is WSMsgType.BINARY:
                transport.send(WSMsgType.BINARY, frame.get_payload_as_memoryview())
            elif frame.msg_type is WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    server = await ws_create_server(lambda request: Echo(), "127.0.0.1", port)
    await stop.wait()
    server.close()


SERVERS = {"aiohttp": serve_aiohttp, "websockets": serve_websockets, "picows": serve_picows}


def run_server(stack: str, port: int) -> None:
    import uvloop

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await SERVERS[stack](port, stop)

    uvloop.run(main())


# -- orchestration ----------------------------------------------------------------------------


@dataclass
class Step:
    label: str
    calls: int
    load: ws_load.LoadResult
    server_cpu_seconds: float
    seconds: float
    rss_kib_growth: int = 0
    """Server RSS at the end of the window minus before the calls were opened."""

    @property
    def cpu_percent(self) -> float:
        return self.server_cpu_seconds / self.seconds * 100

    @property
    def us_per_frame(self) -> float:
        return self.server_cpu_seconds / max(self.load.received, 1) * 1e6

    @property
    def generator_percent(self) -> float:
        return self.load.generator_cpu_seconds / self.seconds * 100

    @property
    def rss_kib_per_call(self) -> float:
        return self.rss_kib_growth / max(self.load.connected, 1)


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def generator_cpus() -> set[int]:
    cpus = os.sched_getaffinity(0)
    return cpus - {0} or cpus


def measure(
    label: str,
    server: subprocess.Popen[bytes],
    url: str,
    calls: int,
    options: argparse.Namespace,
    rtvbp: bool = False,
) -> Step:
    """Drive `server` (already listening) with `calls` and take its CPU over the window."""
    marks: dict[str, float] = {"rss0": process_rss_kib(server.pid)}

    def start() -> None:
        marks["cpu0"], marks["wall0"] = process_cpu_seconds(server.pid), time.monotonic()

    def end() -> None:
        marks["cpu1"], marks["wall1"] = process_cpu_seconds(server.pid), time.monotonic()
        marks["rss1"] = process_rss_kib(server.pid)

    load = ws_load.spawn_generators(
        url,
        calls,
        processes=options.generators,
        cpus=generator_cpus(),
        rtvbp=rtvbp,
        warmup_s=options.warmup,
        duration_s=options.duration,
        on_start=start,
        on_end=end,
    )
    seconds = marks.get("wall1", 0.0) - marks.get("wall0", 0.0)
    return Step(
        label,
        calls,
        load,
        marks.get("cpu1", 0.0) - marks.get("cpu0", 0.0),
        max(seconds, 1e-9),
        int(marks.get("rss1", marks["rss0"]) - marks["rss0"]),
    )


def start_process(
    command: list[str],
    *ports: int,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a server pinned to CPU 0 and wait until it listens on every one of `ports`."""
    server = subprocess.Popen(
        command, env=env, cwd=cwd, preexec_fn=lambda: os.sched_setaffinity(0, {0})
    )
    for port in ports:
        ws_load.wait_for_port(port)
    return server


def stop_process(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def measure_floor(stack: str, calls: int, options: argparse.Namespace) -> Step:
    port = ws_load.free_port()
    server = start_process([sys.executable, __file__, "--serve", stack, str(port)], port)
    try:
        return measure(stack, server, f"ws://127.0.0.1:{port}/rtvbp", calls, options)
    finally:
        stop_process(server)


HEADING = (
    "stack              calls  conn  server CPU  us/frame  ratio   p50ms   p99ms      lost"
    "  generator CPU  RSS/call"
)


def row(step: Step, base: Step | None) -> str:
    """One table line; the ratio is of µs per frame to `base` (none: "--")."""
    ratio = f"{step.us_per_frame / base.us_per_frame:5.2f}x" if base else "   --"
    return (
        f"{step.label:<18} {step.calls:>5} {step.load.connected:>5} {step.cpu_percent:9.1f} %"
        f" {step.us_per_frame:9.1f} {ratio} {step.load.p50_ms:7.2f} {step.load.p99_ms:7.2f}"
        f" {step.load.lost:>9} {step.generator_percent:9.1f} % {step.rss_kib_per_call:6.1f} KiB"
    )


def add_load_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per step")
    parser.add_argument(
        "--generators", type=int, default=2, help="load generator processes (default 2)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--calls", type=int, action="append", help="call counts (repeatable; 250 and 1000)"
    )
    parser.add_argument(
        "--stacks", default=",".join(STACKS), help=f"comma list of {', '.join(STACKS)}"
    )
    add_load_options(parser)
    parser.add_argument("--serve", nargs=2, metavar=("STACK", "PORT"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve:
        run_server(options.serve[0], int(options.serve[1]))
        return
    stacks = [stack.strip() for stack in options.stacks.split(",") if stack.strip()]
    unknown = set(stacks) - set(STACKS)
    if unknown:
        parser.error(f"unknown stacks: {', '.join(sorted(unknown))}")
    if len(os.sched_getaffinity(0)) < 2:
        print("note: fewer than 2 CPUs; server and load generator share a core", file=sys.stderr)
    print(
        f"WebSocket floor: bare echo of 320-byte frames every 20 ms per call, server on CPU 0,"
        f" {options.generators} generator processes, {options.duration:.0f} s measured per step"
    )
    print(HEADING)
    for calls in options.calls or [250, 1000]:
        steps = [measure_floor(stack, calls, options) for stack in stacks]
        fastest = min(steps, key=lambda step: step.us_per_frame)
        for step in steps:
            print(row(step, fastest), flush=True)


if __name__ == "__main__":
    main()
