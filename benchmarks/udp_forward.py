"""CPU per forwarded RTP packet: RtpTransport (receive on A, `send` on B) vs a bare relay, and
the same with SRTP (AES_CM_128_HMAC_SHA1_80) in, and in and out.

The load runs in a child process (blocking sockets, at most `--window` packets in flight, so
nothing is dropped): it sends 172-byte PCMU packets to the relay's input port and counts them
at a sink. The parent runs only the relay, so `time.process_time()` over the run is the relay's
CPU plus the event loop's own overhead. The baseline is a bare asyncio DatagramProtocol relay
with the same shape (one socket in, another socket out, one `sendto` per datagram). Both are
measured with the default asyncio loop and with uvloop, in this one run. The SRTP relays are
RtpTransports with `secure` on: "srtp_in" unprotects on A and sends in the clear on B,
"srtp_both" also protects on B (the load protects what it sends with libsrtp, in the child).
The cost of one libsrtp protect and unprotect call, measured in-process, is printed first.
Prints figures, never passes or fails.

    .venv/bin/python benchmarks/udp_forward.py [--packets 30000] [--window 16] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import statistics
import struct
import sys
import time
import timeit
from collections.abc import Callable, Coroutine
from typing import Any

import pylibsrtp
import uvloop

from callbridge.engine.ports import PortAllocator
from callbridge.engine.rtp_transport import RtpTransport
from callbridge.media.rtp import RtpPacket, build_rtp
from callbridge.media.srtp import DEFAULT_SUITE, SrtpKey, SrtpSession

HOST = "127.0.0.1"
PAYLOAD = b"\xff" * 160
"""One 20 ms PCMU frame, bytes."""
RELAYS = ("bare", "rtp_transport", "srtp_in", "srtp_both")
LOAD_KEY = SrtpKey(DEFAULT_SUITE, bytes(range(30)))
"""What the load protects with, and the SRTP relays' receive key."""


# ---------------------------------------------------------------------------- load (child)


def run_load(control_port: int, packets: int, window: int, srtp: bool) -> None:
    """Child process: announce the sink, then on `go` push `packets` through the relay (SRTP
    with `LOAD_KEY` if `srtp`)."""
    protect: Callable[[bytes], bytes] = bytes
    if srtp:
        policy = pylibsrtp.Policy(LOAD_KEY.master, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        protect = pylibsrtp.Session(policy).protect
    control = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for udp_socket in (control, sender, sink):
        udp_socket.bind((HOST, 0))
    sink.settimeout(2.0)
    parent = (HOST, control_port)
    control.sendto(b"ready %d" % sink.getsockname()[1], parent)
    header = struct.Struct("!BBHII")
    while True:
        command, *arguments = control.recv(64).split()
        if command == b"activate":  # open RtpTransport's NAT guard from the sink's address
            sink.sendto(protect(build_rtp(0, 1, 0, 0xACE, PAYLOAD)), (HOST, int(arguments[0])))
        elif command == b"go":
            relay = (HOST, int(arguments[0]))
            sent = received = 0
            try:
                while received < packets:
                    while sent < packets and sent - received < window:
                        packet = header.pack(0x80, 0, sent & 0xFFFF, 160 * sent & 0xFFFFFFFF, 7)
                        sender.sendto(protect(packet + PAYLOAD), relay)
                        sent += 1
                    sink.recv(2048)
                    received += 1
            except TimeoutError:
                pass
            control.sendto(b"done %d" % received, parent)
            break
    for udp_socket in (control, sender, sink):
        udp_socket.close()


# ---------------------------------------------------------------------------- relays (parent)


class Control(asyncio.DatagramProtocol):
    """The parent's end of the control channel: each datagram resolves the next future."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[tuple[list[bytes], tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.messages.put_nowait((data.split(), addr))


class BareRelay(asyncio.DatagramProtocol):
    """Baseline: every datagram is sent on unchanged from a second socket."""

    def __init__(self, output: asyncio.DatagramTransport, target: tuple[str, int]) -> None:
        self.output = output
        self.target = target

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.output.sendto(data, self.target)


async def measure(relay_kind: str, packets: int, window: int) -> tuple[float, float, int]:
    """(CPU µs per packet, wall µs per packet, packets delivered) for one relay."""
    loop = asyncio.get_running_loop()
    control_transport, control = await loop.create_datagram_endpoint(Control, local_addr=(HOST, 0))
    control_port = control_transport.get_extra_info("sockname")[1]
    child = multiprocessing.get_context("spawn").Process(
        target=run_load, args=(control_port, packets, window, relay_kind.startswith("srtp"))
    )
    child.start()
    (_, sink_port), child_address = await control.messages.get()
    sink = (HOST, int(sink_port))
    closers: list[Callable[[], Any]] = [control_transport.close]
    if relay_kind == "bare":
        output, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=(HOST, 0)
        )
        relay_input, _ = await loop.create_datagram_endpoint(
            lambda: BareRelay(output, sink), local_addr=(HOST, 0)
        )
        closers += [output.close, relay_input.close]
        input_port = relay_input.get_extra_info("sockname")[1]
    else:
        allocator = PortAllocator(31000, 31099)
        activated: asyncio.Future[None] = loop.create_future()

        def on_activation(packet: RtpPacket, arrival: float) -> None:
            if not activated.done():
                activated.set_result(None)

        side_b = await RtpTransport.open(
            allocator, HOST, on_packet=on_activation, on_rtcp_bye=lambda ssrcs, reason: None
        )
        side_b.set_remote(sink, None, rtcp_mux=True)
        send = side_b.send

        def passthrough(packet: RtpPacket, arrival: float) -> None:
            send(packet.payload, 0, packet.timestamp, packet.marker)

        side_a = await RtpTransport.open(
            allocator, HOST, on_packet=passthrough, on_rtcp_bye=lambda ssrcs, reason: None
        )
        closers += [side_a.close, side_b.close]
        if relay_kind.startswith("srtp"):
            side_a.secure(SrtpSession(SrtpKey.generate(), LOAD_KEY), _dropped)
        if relay_kind == "srtp_both":
            side_b.secure(SrtpSession(SrtpKey.generate(), LOAD_KEY), _dropped)
        control_transport.sendto(b"activate %d" % side_b.local_port, child_address)
        await activated
        input_port = side_a.local_port

    cpu_start, wall_start = time.process_time(), time.perf_counter()
    control_transport.sendto(b"go %d" % input_port, child_address)
    (_, delivered), _ = await control.messages.get()
    cpu, wall = time.process_time() - cpu_start, time.perf_counter() - wall_start
    for close in closers:
        close()
    await asyncio.sleep(0.01)
    await loop.run_in_executor(None, child.join)
    return cpu / packets * 1e6, wall / packets * 1e6, int(delivered)


def _dropped() -> None:
    """A load packet failed to unprotect: it shows as lost."""


def libsrtp_call_costs(count: int = 20_000) -> tuple[float, float]:
    """(protect, unprotect) µs per call of `SrtpSession` on a 172-byte packet."""
    sender = SrtpSession(LOAD_KEY)
    receiver = SrtpSession(SrtpKey.generate(), LOAD_KEY)
    plain = [build_rtp(0, sequence, sequence * 160, 7, PAYLOAD) for sequence in range(count)]
    protected: list[bytes] = []
    protect_s = timeit.timeit(
        lambda: protected.append(sender.protect(plain[len(protected)]) or b""), number=count
    )
    packets = iter(protected)
    unprotect_s = timeit.timeit(lambda: receiver.unprotect(next(packets), 0.0), number=count)
    assert receiver.dropped_packets == 0
    return protect_s / count * 1e6, unprotect_s / count * 1e6


def run_with(
    runner: Callable[[Coroutine[Any, Any, Any]], Any], relay_kind: str, args: argparse.Namespace
) -> tuple[float, float, int]:
    result: tuple[float, float, int] = runner(measure(relay_kind, args.packets, args.window))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=30_000)
    parser.add_argument("--window", type=int, default=16, help="packets in flight")
    parser.add_argument("--rounds", type=int, default=5, help="runs per configuration")
    args = parser.parse_args()
    loops: dict[str, Callable[[Coroutine[Any, Any, Any]], Any]] = {
        "asyncio": asyncio.run,
        "uvloop": uvloop.run,
    }
    print(f"python {sys.version.split()[0]}, {args.packets} packets of 172 bytes per run, window")
    print(f"{args.window}; CPU = parent process only (the relay). The two relays alternate for")
    print(f"{args.rounds} rounds so both see the same machine load; best and median per relay.")
    protect_us, unprotect_us = libsrtp_call_costs()
    print(f"SrtpSession on 172 bytes: protect {protect_us:.2f} µs, unprotect {unprotect_us:.2f} µs")
    print(
        f"{'loop':8} {'relay':13} {'CPU µs/pkt':>11} {'median':>8} {'wall µs/pkt':>12} {'lost':>5}"
    )
    for loop_name, runner in loops.items():
        runs: dict[str, list[tuple[float, float, int]]] = {relay: [] for relay in RELAYS}
        for _ in range(args.rounds):
            for relay_kind, results in runs.items():
                results.append(run_with(runner, relay_kind, args))
        best = {}
        for relay_kind, results in runs.items():
            cpu, wall, delivered = min(results)
            median = statistics.median(result[0] for result in results)
            best[relay_kind] = cpu
            lost = args.packets - delivered
            print(f"{loop_name:8} {relay_kind:13} {cpu:11.2f} {median:8.2f} {wall:12.2f} {lost:5d}")
        ratio = best["rtp_transport"] / best["bare"]
        added = best["rtp_transport"] - best["bare"]
        print(f"{loop_name:8} ratio RtpTransport/bare = {ratio:.2f} ({added:+.2f} µs per packet)")
        for relay_kind in ("srtp_in", "srtp_both"):
            ratio = best[relay_kind] / best["rtp_transport"]
            added = best[relay_kind] - best["rtp_transport"]
            print(
                f"{loop_name:8} ratio {relay_kind}/RtpTransport = {ratio:.2f} "
                f"({added:+.2f} µs per packet)"
            )


if __name__ == "__main__":
    main()
