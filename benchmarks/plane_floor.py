"""The floor of passthrough forwarding on this machine: the native plane with nothing around it.

`rtpengine_compare.py` runs it as the relay "floor" beside rtpengine and callbridge, on the same
CPU and under the same load: a process that binds two UDP sockets per session, learns each
party's SSRC from its first packet, and then leaves every packet to callbridge's `_forward`
extension, programmed directly: one `recvmmsg` and one `sendmmsg` per packet and the header
rewrite, plus one event-loop wake-up per batch of ready sockets. No engine, no sessions, no
media clock, no RTCP. What callbridge spends above this is the engine's; what this spends is
the kernel's UDP path and the system calls, which no userspace relay avoids.

Protocol (stdin/stdout, one JSON line each way): the parent sends {"ports": [generator port per
party, session-major], "width": parties per session}; the child answers with its own port for
each party. The child runs until its stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import struct
import subprocess
import sys
import threading
from typing import Any

_HEADER = struct.Struct("!BBHII")
_SAME_TYPE = bytes(range(64)) + b"\xff" * 32 + bytes(range(96, 128))
"""Every payload type to itself, except the range RTCP occupies under rtcp-mux."""


class FloorRelay:
    """The relay interface of rtpengine_compare (start, create, stop, pid) for the floor."""

    def __init__(self, cpus: set[int]) -> None:
        self.cpus = cpus
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, scenario: Any) -> None:
        if scenario.name != "passthrough":
            raise ValueError("the floor relay forwards passthrough only")
        self.process = _spawn(self.cpus)

    async def create(self, scenario: Any, ports: list[int]) -> list[int]:
        process = self.process
        assert process is not None and process.stdin is not None and process.stdout is not None
        request = {"ports": ports, "width": len(scenario.codecs)}
        process.stdin.write(json.dumps(request).encode() + b"\n")
        process.stdin.flush()
        line = await asyncio.get_running_loop().run_in_executor(None, process.stdout.readline)
        if not line:
            raise RuntimeError("the floor relay exited (is the _forward extension built?)")
        answer: list[int] = json.loads(line)
        return answer

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.get_running_loop().run_in_executor(None, process.wait, 10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _spawn(cpus: set[int]) -> subprocess.Popen[bytes]:
    """The relay process, pinned to `cpus` (it pins itself once its interpreter is up)."""
    pinned = ",".join(map(str, sorted(cpus)))
    return subprocess.Popen(
        [sys.executable, __file__, pinned], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )


def _serve(cpus: set[int]) -> None:
    import uvloop

    from callbridge.engine import forwarding

    if not forwarding.NATIVE_FORWARDING:
        sys.exit("the _forward extension is not built (or CALLBRIDGE_NATIVE=0)")
    os.sched_setaffinity(0, cpus)
    request = json.loads(sys.stdin.readline())
    ports, width = request["ports"], request["width"]
    if width != 2:
        sys.exit("the floor relay forwards between two parties")

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stopped = loop.create_future()
        sockets: list[socket.socket] = []
        partner: dict[int, tuple[socket.socket, int]] = {}

        def learn(descriptor: int, data: bytes, address: tuple[Any, ...]) -> None:
            """A party's first packet: its SSRC; from then on the plane forwards it."""
            if len(data) < 12 or data[0] != 0x80:
                return
            _, _, sequence, _, ssrc = _HEADER.unpack_from(data)
            other, _ = partner[descriptor]
            plane.arm_receiver(
                descriptor, address, ssrc, 8000.0, sequence, 0, 1, 0.0, None, 0, 1, 0, 0.0,
                [(other.fileno(), _SAME_TYPE)],
            )  # fmt: skip

        plane = forwarding._native.Plane(learn)
        for session in range(len(ports) // width):
            pair = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(width)]
            for party, udp in enumerate(pair):
                udp.bind(("127.0.0.1", 0))
                udp.setblocking(False)
                sockets.append(udp)
                plane.add(udp.fileno())
                target = ports[session * width + party]
                # This socket sends toward its own party what the other party sent.
                plane.arm_sender(
                    udp.fileno(), ("127.0.0.1", target), secrets.randbits(32),
                    secrets.randbits(16), 1, 0, 0, 0, 0.0,
                )  # fmt: skip
            partner[pair[0].fileno()] = (pair[1], ports[session * width + 1])
            partner[pair[1].fileno()] = (pair[0], ports[session * width])
        loop.add_reader(plane.fileno(), plane.run)
        print(json.dumps([udp.getsockname()[1] for udp in sockets]), flush=True)

        def wait_for_eof() -> None:
            sys.stdin.read()
            loop.call_soon_threadsafe(stopped.set_result, None)

        threading.Thread(target=wait_for_eof, daemon=True).start()
        await stopped
        loop.remove_reader(plane.fileno())
        plane.close()
        for udp in sockets:
            udp.close()

    uvloop.run(run())


if __name__ == "__main__":
    _serve({int(cpu) for cpu in sys.argv[1].split(",")})
