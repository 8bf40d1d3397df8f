"""Start a `callbridge serve` and see what it holds from outside: memory, fds and UDP sockets
from /proc (Linux), tasks, sessions, endpoints and port pairs from its /metrics.

Used by wire_fuzz.py and soak.py to tell a leak from a working set.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import IO, Any

import aiohttp

from callbridge_relay import SERVER_ENVIRONMENT, _wait_for_port


def start_serve(
    environment: dict[str, str], log: IO[Any] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """`callbridge serve` (the demo application) on a free loopback port; stop it with
    `callbridge_relay.stop_process`."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    process = subprocess.Popen(
        [sys.executable, "-m", "callbridge", "serve", "--listen", f"127.0.0.1:{port}"],
        env={**os.environ, **SERVER_ENVIRONMENT, **environment},
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=None if log is None else subprocess.STDOUT,
    )
    try:
        _wait_for_port(port, process)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process, port


@dataclass(frozen=True)
class Sample:
    rss_mib: float
    fds: int
    udp_sockets: int
    tasks: int
    sessions: int
    endpoints: int
    port_pairs: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


class ServerProbe:
    def __init__(self, pid: int, base_url: str, http: aiohttp.ClientSession) -> None:
        self.pid = pid
        self.base_url = base_url
        self.http = http

    def rss_mib(self) -> float:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def _socket_inodes(self) -> set[str]:
        inodes = set()
        directory = f"/proc/{self.pid}/fd"
        for name in os.listdir(directory):
            try:
                target = os.readlink(f"{directory}/{name}")
            except OSError:
                continue  # closed meanwhile
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        return inodes

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def udp_sockets(self) -> int:
        """UDP sockets of the process (its RTP and RTCP ports)."""
        mine = self._socket_inodes()
        count = 0
        for table in ("udp", "udp6"):
            try:
                with open(f"/proc/{self.pid}/net/{table}") as lines:
                    next(lines)
                    count += sum(1 for line in lines if line.split()[9] in mine)
            except FileNotFoundError:
                pass
        return count

    async def metrics(self) -> dict[str, float]:
        async with self.http.get(f"{self.base_url}/metrics") as response:
            text = await response.text()
        values = {}
        for line in text.splitlines():
            if line.startswith("callbridge_"):
                name, _, value = line.partition(" ")
                values[name.removeprefix("callbridge_")] = float(value)
        return values

    async def sample(self) -> Sample:
        metrics = await self.metrics()
        return Sample(
            rss_mib=round(self.rss_mib(), 1),
            fds=self.open_fds(),
            udp_sockets=self.udp_sockets(),
            tasks=int(metrics.get("tasks", -1)),
            sessions=int(metrics.get("sessions_active", -1)),
            endpoints=int(metrics.get("endpoints_active", -1)),
            port_pairs=int(metrics.get("rtp_port_pairs_in_use", -1)),
        )
