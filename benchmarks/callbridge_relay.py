"""callbridge as a relay under load: `callbridge serve` in its own process, driven over the
control WebSocket exactly as a controller would (one connection = one session).

Used by rtpengine_compare.py. Per session: `session.create`, then `endpoint.create_from_offer`
for every RTP party of the load generator (the answer's port is where that party sends), or for
the RTVBP scenario one RTP party plus `endpoint.create_rtvbp` dialling an echo application that
runs in a second `callbridge serve callbridge.apps.echo:app` process (a peer, like the load
generator; pinned to the generator's CPU). Every process is started here and stopped by its id.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import aiohttp

from rtp_load import offer_sdp
from rtpengine_ng import pinned

SERVER_ENVIRONMENT = {
    "CALLBRIDGE_LOG_LEVEL": "warning",
    "CALLBRIDGE_MAX_SESSIONS": "0",
    "CALLBRIDGE_MAX_CONNECTIONS": "0",
    "CALLBRIDGE_WS_PING_INTERVAL_SECS": "600",
    "CALLBRIDGE_SHUTDOWN_MAX_WAIT_SECS": "1",
    "CALLBRIDGE_MEDIA_TIMEOUT_SECS": "300",
}


ECHO_PORTS = (14000, 14999)
"""RTP ports of the echo application's server (it opens none; the setting must still be valid)."""


class ControlError(Exception):
    """The server answered a control request with an error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def _free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"callbridge exited at start (status {process.returncode})")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"callbridge did not listen on port {port} within {timeout_s} s")


def start_server(
    port: int, cpus: set[int], application: str | None, extra_env: dict[str, str]
) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "callbridge", "serve", "--listen", f"127.0.0.1:{port}"]
    if application:
        command.insert(4, application)
    environment = dict(os.environ, **SERVER_ENVIRONMENT, **extra_env)
    process = subprocess.Popen(
        command,
        env=environment,
        stdin=subprocess.DEVNULL,
        preexec_fn=pinned(cpus),
    )
    try:
        _wait_for_port(port, process)
    except BaseException:
        stop_process(process)
        raise
    return process


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM by pid, SIGKILL after 10 s."""
    if process is None or process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


class ControlConnection:
    """One control WebSocket: requests answered in order, events read and dropped."""

    def __init__(self, websocket: aiohttp.ClientWebSocketResponse) -> None:
        self.websocket = websocket
        self._ids = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.websocket:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            frame = json.loads(message.data)
            future = self._waiting.pop(frame.get("id", ""), None) if "id" in frame else None
            if future is not None and not future.done():
                future.set_result(frame)
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ConnectionError("control connection closed"))

    async def request(self, method: str, params: dict[str, Any]) -> Any:
        request_id = str(next(self._ids))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        await self.websocket.send_str(
            json.dumps({"id": request_id, "method": method, "params": params})
        )
        frame = await asyncio.wait_for(future, 30)
        if "error" in frame:
            raise ControlError(frame["error"]["code"], frame["error"]["message"])
        return frame["result"]

    async def close(self) -> None:
        await self.websocket.close()
        self._reader.cancel()


def _answer_port(sdp: str) -> int:
    line = next(line for line in sdp.splitlines() if line.startswith("m=audio "))
    return int(line.split()[1])


class CallbridgeRelay:
    """`callbridge serve` pinned to `cpus`; sessions made over the control WebSocket."""

    name = "callbridge"

    def __init__(
        self,
        cpus: set[int],
        port_range: tuple[int, int],
        echo_cpu: int,
        opus_complexity: int | None = None,
    ) -> None:
        self.cpus = cpus
        self.port_range = port_range
        self.echo_cpu = echo_cpu
        self.opus_complexity = opus_complexity
        self.port = _free_tcp_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.echo: subprocess.Popen[bytes] | None = None
        self.echo_url = ""
        self.http: aiohttp.ClientSession | None = None
        self.connections: list[ControlConnection] = []

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def peer_pids(self) -> list[int]:
        """Processes on the load generator's side (the RTVBP echo application)."""
        return [] if self.echo is None else [self.echo.pid]

    async def start(self, scenario: Any) -> None:
        """Start the server(s) from this (the main) thread: see `rtpengine_ng.pinned`."""
        ports = json.dumps(list(self.port_range))
        self.process = start_server(
            self.port,
            self.cpus,
            None,
            {"CALLBRIDGE_RTP_PORT_RANGE": ports}
            | (
                {}
                if self.opus_complexity is None
                else {"CALLBRIDGE_OPUS_COMPLEXITY": str(self.opus_complexity)}
            ),
        )
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        if scenario.name == "rtvbp":
            echo_port = _free_tcp_port()
            self.echo = start_server(
                echo_port,
                {self.echo_cpu},
                "callbridge.apps.echo:app",
                {"CALLBRIDGE_RTP_PORT_RANGE": json.dumps(list(ECHO_PORTS))},
            )
            self.echo_url = f"ws://127.0.0.1:{echo_port}/rtvbp"

    async def connect(self) -> ControlConnection:
        assert self.http is not None
        websocket = await self.http.ws_connect(
            f"ws://127.0.0.1:{self.port}/", autoping=True, max_msg_size=0
        )
        connection = ControlConnection(websocket)
        self.connections.append(connection)
        return connection

    async def probe_rtvbp(self) -> str | None:
        """None when endpoint.create_rtvbp exists, else why the scenario cannot run."""
        connection = await self.connect()
        try:
            await connection.request("session.create", {})
            await connection.request("endpoint.create_rtvbp", {"url": "ws://127.0.0.1:9/x"})
        except ControlError as error:
            if error.code == "UNKNOWN_METHOD" or "not implemented" in str(error):
                return "endpoint.create_rtvbp not implemented"
            return None  # it exists (dialling a closed port fails, as it should)
        finally:
            await connection.request("session.destroy", {})
            await connection.close()
            self.connections.remove(connection)
        return None

    async def create(self, scenario: Any, ports: list[int]) -> list[Any]:
        """Targets (our answer's port) for every generator socket, session-major."""
        width = len(scenario.codecs)
        semaphore = asyncio.Semaphore(32)

        async def session(index: int) -> list[int]:
            async with semaphore:
                connection = await self.connect()
                await connection.request("session.create", {})
                targets = []
                for position, codec in enumerate(scenario.codecs):
                    result = await connection.request(
                        "endpoint.create_from_offer",
                        {
                            "sdp": offer_sdp(codec, ports[index * width + position]),
                            "direction": "sendrecv",
                        },
                    )
                    targets.append(_answer_port(result["sdp_answer"]))
                if scenario.name == "rtvbp":
                    await connection.request(
                        "endpoint.create_rtvbp", {"url": self.echo_url, "direction": "sendrecv"}
                    )
                return targets

        groups = await asyncio.gather(*(session(index) for index in range(len(ports) // width)))
        return [port for group in groups for port in group]

    async def stop(self) -> None:
        try:
            await asyncio.gather(
                *(connection.close() for connection in self.connections), return_exceptions=True
            )
            if self.http is not None:
                await self.http.close()
        finally:
            self.connections = []
            self.http = None
            stop_process(self.process)
            stop_process(self.echo)
            self.process = self.echo = None
