"""The paced WebSocket load generator shared by `websocket_floor.py` and `rtvbp_echo.py`.

One generator process opens its share of the calls with picows (the cheapest client measured,
so the generator is rarely the limit) and sends one 320-byte frame per call every 20 ms, each
call at its own random phase. The sender wakes every `TICK_SECONDS` and sends every frame that
fell due since the last wake, so its cost grows with frames, not with calls. Echoes are matched
by the send time stamped into each frame. Several processes split the calls between them
(`spawn_generators`); each reports its own CPU time so the reader sees which side was the limit.

Run directly only through the orchestrators: it prints READY, waits for GO on stdin, prints
MEASURE_START and MEASURE_END, and writes its result as JSON to the file it was given.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import random
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

FRAME_BYTES = 320
FRAME_SECONDS = 0.020
TICK_SECONDS = 0.002
"""How often the sender wakes: a frame leaves at most this late after its phase."""
HEADER = struct.Struct("<d")  # send time, perf_counter seconds
INITIALIZE = (
    '{{"version":"1","id":"init-{call}","method":"session.initialize","params":{{'
    '"application":{{"id":"bench"}},"call":{{"id":"call-{call}","session_id":"s-{call}",'
    '"from":"+4910002000","to":"+4910003000"}},"audio_codec_offerings":[{{"id":"L16/8000/1",'
    '"name":"L16","sample_rate":8000,"bit_depth":16,"channels":1}}],"metadata":null}}}}'
)
UPDATED = (
    '{{"version":"1","id":"upd-{call}","event":"session.updated","data":{{"audio_codec":'
    '{{"id":"L16/8000/1","name":"L16","sample_rate":8000,"bit_depth":16,"channels":1}}}}}}'
)


@dataclass
class Window:
    """The measurement window shared by every call of one generator process."""

    since: float = float("inf")
    latencies: list[float] = field(default_factory=list)
    received: int = 0


class _Call(WSListener):
    """One generated call: answers the RTVBP handshake (when asked), then collects echoes."""

    def __init__(self, index: int, rtvbp: bool, window: Window) -> None:
        self.index = index
        self.rtvbp = rtvbp
        self.window = window
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        if self.rtvbp:
            transport.send(WSMsgType.TEXT, INITIALIZE.format(call=self.index).encode())
        else:
            self.ready.set_result(None)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is WSMsgType.BINARY:
            (sent_at,) = HEADER.unpack_from(frame.get_payload_as_memoryview())
            window = self.window
            if sent_at >= window.since:
                window.latencies.append(time.perf_counter() - sent_at)
                window.received += 1
        elif kind is WSMsgType.TEXT and not self.ready.done():
            if b'"response"' in frame.get_payload_as_bytes():
                transport.send(WSMsgType.TEXT, UPDATED.format(call=self.index).encode())
                self.ready.set_result(None)
        elif kind is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before the call was set up"))


async def _open(url: str, index: int, rtvbp: bool, window: Window) -> _Call:
    _, call = await ws_connect(
        lambda: _Call(index, rtvbp, window),
        url,
        extra_headers={"Sec-WebSocket-Protocol": "rtvbp.v1"},
        websocket_handshake_timeout=30,
    )
    assert isinstance(call, _Call)
    await asyncio.wait_for(call.ready, 30)
    return call


async def _open_all(url: str, calls: range, rtvbp: bool, window: Window) -> list[_Call]:
    """Open the calls 50 at a time: a burst of thousands of handshakes is a different test."""
    opened: list[_Call] = []
    indexes = list(calls)
    for start in range(0, len(indexes), 50):
        batch = await asyncio.gather(
            *(_open(url, index, rtvbp, window) for index in indexes[start : start + 50]),
            return_exceptions=True,
        )
        opened.extend(call for call in batch if isinstance(call, _Call))
    return opened


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def generate(
    url: str, calls: range, rtvbp: bool, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    """Open the calls, print READY, wait for GO on stdin, then pace frames."""
    window = Window()
    live = await _open_all(url, calls, rtvbp, window)
    print(f"READY {len(live)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    phases = sorted(random.random() * FRAME_SECONDS for _ in live)
    payload = bytes(FRAME_BYTES - HEADER.size)
    sent = 0
    start = time.perf_counter()
    measure_at = start + warmup_s
    stop_at = measure_at + duration_s
    cpu_start = 0.0
    cycle_start = start
    position = 0  # the next call (in phase order) whose frame is due this cycle
    while live:
        now = time.perf_counter()
        if now >= stop_at:
            break
        if window.since == float("inf") and now >= measure_at:
            window.since = now
            cpu_start = _cpu_seconds()
            print("MEASURE_START", flush=True)
        while True:
            if position == len(live):
                position = 0
                cycle_start += FRAME_SECONDS
            if cycle_start + phases[position] > now:
                break
            transport = live[position].transport
            if transport is not None and not transport.is_disconnected:
                transport.send(WSMsgType.BINARY, HEADER.pack(time.perf_counter()) + payload)
                if now >= window.since:
                    sent += 1
            position += 1
        await asyncio.sleep(TICK_SECONDS)
    await asyncio.sleep(0.2)  # the last echoes
    cpu = _cpu_seconds() - cpu_start
    print("MEASURE_END", flush=True)
    for call in live:
        if call.transport is not None:
            call.transport.send_close()
            call.transport.disconnect()
    histogram: dict[int, int] = {}
    for latency in window.latencies:
        bucket = int(latency * 1e5)  # 10 µs buckets
        histogram[bucket] = histogram.get(bucket, 0) + 1
    return {
        "connected": len(live),
        "sent": sent,
        "received": window.received,
        "histogram": histogram,
        "cpu_seconds": cpu,
    }


@dataclass
class LoadResult:
    """What all generator processes of one step saw together."""

    connected: int
    sent: int
    received: int
    p50_ms: float
    p99_ms: float
    generator_cpu_seconds: float

    @property
    def lost(self) -> int:
        return self.sent - self.received


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server did not listen on port {port} within {timeout_s} s")


def histogram_percentile(histogram: dict[int, int], fraction: float) -> float:
    """The `fraction` percentile (ms) of a histogram of 10 µs buckets."""
    total = sum(histogram.values())
    if not total:
        return float("nan")
    rank = int(total * fraction)
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen > rank:
            return (bucket + 1) / 100
    return max(histogram) / 100


def _read_lines(child: subprocess.Popen[str], lines: queue.Queue[tuple[int, str]]) -> None:
    assert child.stdout is not None
    for line in child.stdout:
        lines.put((child.pid, line))
    lines.put((child.pid, ""))


def spawn_generators(
    url: str,
    calls: int,
    *,
    processes: int,
    cpus: set[int],
    rtvbp: bool,
    warmup_s: float,
    duration_s: float,
    on_start: Callable[[], None],
    on_end: Callable[[], None],
) -> LoadResult:
    """Run `processes` generator processes on `cpus`, all paced from one GO once every call is
    open; `on_start`/`on_end` run when the first one starts and the first one ends its window."""
    share = -(-calls // processes)
    result_files = [
        Path(tempfile.gettempdir()) / f"ws_load-{os.getpid()}-{first}.json"
        for first in range(0, calls, share)
    ]
    children = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                url,
                str(first),
                str(min(calls, first + share)),
                "1" if rtvbp else "0",
                str(warmup_s),
                str(duration_s),
                str(result_file),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: os.sched_setaffinity(0, cpus),
        )
        for first, result_file in zip(range(0, calls, share), result_files, strict=True)
    ]
    lines: queue.Queue[tuple[int, str]] = queue.Queue()
    readers = [threading.Thread(target=_read_lines, args=(child, lines)) for child in children]
    for reader in readers:
        reader.start()
    ready = started = ended = finished = 0
    while finished < len(children):
        _, line = lines.get()
        if not line:
            finished += 1
        elif line.startswith("READY"):
            ready += 1
            if ready == len(children):
                for child in children:
                    assert child.stdin is not None
                    child.stdin.write("GO\n")
                    child.stdin.flush()
        elif line.startswith("MEASURE_START"):
            started += 1
            if started == 1:
                on_start()
        elif line.startswith("MEASURE_END"):
            ended += 1
            if ended == 1:
                on_end()
    for child, reader in zip(children, readers, strict=True):
        child.wait()
        reader.join()
    if started and not ended:
        on_end()
    results: list[dict[str, Any]] = []
    for result_file in result_files:
        if result_file.exists():
            results.append(json.loads(result_file.read_text()))
            result_file.unlink()
    histogram: dict[int, int] = {}
    for result in results:
        for bucket, count in result["histogram"].items():
            histogram[int(bucket)] = histogram.get(int(bucket), 0) + count
    return LoadResult(
        connected=sum(result["connected"] for result in results),
        sent=sum(result["sent"] for result in results),
        received=sum(result["received"] for result in results),
        p50_ms=histogram_percentile(histogram, 0.50),
        p99_ms=histogram_percentile(histogram, 0.99),
        generator_cpu_seconds=sum(result["cpu_seconds"] for result in results),
    )


def main() -> None:
    url, first, last, rtvbp, warmup_s, duration_s, result_file = sys.argv[1:8]
    import uvloop

    uvloop.install()
    result = asyncio.run(
        generate(
            url, range(int(first), int(last)), rtvbp == "1", float(warmup_s), float(duration_s)
        )
    )
    Path(result_file).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
