"""Media session load benchmark: how many sessions one worker carries in real time.

The engine (`SessionManager`, no WebSocket) runs in this process on uvloop. A load generator
in a separate process (multiprocessing, spawn) plays every party of N sessions: one UDP
socket per party, one 20 ms packet per party in real time, each party at a random phase.

Scenarios:
  passthrough  two PCMU parties (header rewrite only)
  transcode    a PCMU party and an Opus party (decode, resample, encode both ways)
  mix3         three PCMU parties (N-1 mixing on the media clock)
  webrtc       browser-to-phone calls: a WebRTC Opus party (STUN, DTLS, SRTP, as
               benchmarks/webrtc_load.py does it) and a PCMU party (transcoding both ways)

Latency is receive time minus send time, both taken in the generator process. Passthrough
packets carry their leg, sequence number and send time in the payload. Transcoding and mixing
change the payload, so there every party sends a 20 ms 1 kHz burst every 200 ms (silence
otherwise, bursts of one session's parties staggered by 60 ms) and receivers time the first
frame that carries the burst. The same load is also run through a bare UDP relay (asyncio
datagram sockets, same process, same measurement): "added" latency is the scenario's
percentile minus the relay's.

`--record FORMAT[:MODE[:RATE]]` records every engine session (pcap, or wav/flac with mix or split
at RATE, 16 kHz unless given) into a temporary directory: the capacity cost of recording is the
same search with and without it.

Reported per scenario and N: server CPU per forwarded packet (user+sys of this process over
the sending window / packets delivered to destinations), RSS growth per session, loss,
p50/p99 latency and the added p50/p99. A search looks for the largest N with zero loss and
added p99 <= --p99-limit-ms. Mixing on a clock waits up to one frame for unsynchronised
sources, so its criterion adds --mix-alignment-ms (one frame) and says so. Figures only; the
benchmark never passes or fails.

Usage: python benchmarks/media_sessions.py [--scenarios passthrough,transcode,mix3]
       [--sessions 100,200] [--duration 4] [--max-runs 4] [--record pcap|wav:mix|flac:split]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from callbridge.engine.offers import create_from_offer
from callbridge.media.sdp import parse_sdp
from rtp_load import generator_entry, offer_sdp
from webrtc_load import OPUS_PAYLOAD_TYPE, answer_credentials, webrtc_offer_sdp

LOCAL = ("127.0.0.1", 0)


def _same(protocol: Any) -> Any:
    """Protocol factory that returns an existing protocol object."""
    return protocol


@dataclass(frozen=True)
class Scenario:
    name: str
    codecs: tuple[str, ...]
    method: str  # "payload" or "burst"
    target: int
    alignment_ms: float = 0.0


SCENARIOS = {
    "passthrough": Scenario("passthrough", ("pcmu", "pcmu"), "payload", 500),
    "transcode": Scenario("transcode", ("pcmu", "opus"), "burst", 100),
    "mix3": Scenario("mix3", ("pcmu", "pcmu", "pcmu"), "burst", 150, alignment_ms=20.0),
    "webrtc": Scenario("webrtc", ("webrtc", "pcmu"), "burst", 100),
}

# The load generator (child process) is benchmarks/rtp_load.py, shared with rtpengine_compare.


# ---------------------------------------------------------------------------------------------
# Server side (this process)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _RelayLeg(asyncio.DatagramProtocol):
    """Baseline: forwards every datagram unchanged to the other parties of its session."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.remote: Any = None
        self.others: list[_RelayLeg] = []
        self.forwarded = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.remote = addr
        for other in self.others:
            if other.remote is not None and other.transport is not None:
                other.transport.sendto(data, other.remote)
                other.forwarded += 1


@dataclass
class Outcome:
    scenario: str
    sessions: int
    baseline: bool
    figures: dict[str, Any] = field(default_factory=dict)


async def _receive(conn: Connection) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, conn.recv)


async def run_case(
    scenario: Scenario,
    sessions: int,
    duration: float,
    baseline: bool,
    manager: Any,
    record: str = "",
) -> Outcome:
    """One run of `sessions` sessions through the engine (or the relay when `baseline`), each
    engine session recorded as `record` says ("" for none, "pcap", "wav:mix", "flac:split")."""
    context = multiprocessing.get_context("spawn")
    conn, child_conn = context.Pipe()
    codecs = scenario.codecs if not baseline else ("pcmu",) * len(scenario.codecs)
    process = context.Process(
        target=generator_entry,
        args=(child_conn, codecs, sessions, scenario.method, duration),
        daemon=True,
    )
    process.start()
    ports: list[int] = await _receive(conn)
    loop = asyncio.get_running_loop()
    rss_before = _rss_bytes()
    targets: list[int] = []
    created: list[Any] = []
    relay_legs: list[_RelayLeg] = []
    width = len(codecs)
    for session_index in range(sessions):
        group = ports[session_index * width : (session_index + 1) * width]
        if baseline:
            legs = []
            for _ in group:
                leg = _RelayLeg()
                await loop.create_datagram_endpoint(functools.partial(_same, leg), local_addr=LOCAL)
                legs.append(leg)
            for leg in legs:
                leg.others = [other for other in legs if other is not leg]
                targets.append(leg.transport.get_extra_info("sockname")[1])  # type: ignore[union-attr]
            relay_legs.extend(legs)
        else:
            session = manager.create_session(lambda name, data, critical: None)
            created.append(session)
            for codec, port in zip(codecs, group, strict=True):
                if codec == "webrtc":
                    targets.append(await _webrtc_party(session, *port))
                    continue
                _, answer = await create_from_offer(session, offer_sdp(codec, port), "sendrecv")
                port_line = next(line for line in answer.split("\r\n") if line.startswith("m="))
                targets.append(int(port_line.split()[1]))
            if record:
                _start_recording(session, record, session_index)
    conn.send(targets)
    assert await _receive(conn) == "start"
    cpu_start = _cpu_seconds()
    wall_start = time.monotonic()
    routed_start = manager.metrics.packets_routed_total
    relayed_start = sum(leg.forwarded for leg in relay_legs)
    manager.clock.stats.max_lateness_s = 0.0  # report the window's worst tick only
    assert await _receive(conn) == "stop"
    cpu = _cpu_seconds() - cpu_start
    wall = time.monotonic() - wall_start
    late_ms = manager.clock.stats.max_lateness_s * 1000
    routed = manager.metrics.packets_routed_total - routed_start
    relayed = sum(leg.forwarded for leg in relay_legs) - relayed_start
    figures: dict[str, Any] = await _receive(conn)
    rss = _rss_bytes() - rss_before
    process.join(5)
    for session in created:
        await session.destroy()
    for leg in relay_legs:
        assert leg.transport is not None
        leg.transport.close()
    forwarded = relayed if baseline else routed
    figures.update(
        {
            "server_cpu": cpu / wall,
            "forwarded": forwarded,
            "us_per_packet": cpu / forwarded * 1e6 if forwarded else float("nan"),
            "rss_per_session_kib": rss / sessions / 1024,
            "loss": 1 - figures["matched"] / figures["expected"] if figures["expected"] else 1.0,
            "clock_max_late_ms": late_ms,
        }
    )
    return Outcome(scenario.name, sessions, baseline, figures)


async def _webrtc_party(session: Any, _port: int, fingerprint: str) -> dict[str, Any]:
    """A WebRTC endpoint for a generator party whose certificate has `fingerprint`; its target
    (the endpoint's candidate port, Opus payload type, ICE credentials, fingerprint)."""
    _, answer = await create_from_offer(session, webrtc_offer_sdp(fingerprint), "sendrecv")
    address = parse_sdp(answer).remote_address
    assert address is not None
    return {"port": address[1], "payload_type": OPUS_PAYLOAD_TYPE, **answer_credentials(answer)}


def _start_recording(session: Any, record: str, index: int) -> None:
    from callbridge.engine.recording import SessionRecordings

    recording_format, _, rest = record.partition(":")
    mode, _, rate = rest.partition(":")
    directory = session.context.config.recording_dir
    path = directory / f"{time.monotonic_ns()}-{index}.{recording_format}"
    SessionRecordings.of(session).start(
        None, str(path), recording_format, mode or "mix", int(rate or 16000)
    )


def _line(outcome: Outcome, baseline: Outcome | None, limit: float) -> tuple[str, bool]:
    f = outcome.figures
    added50 = f["p50"] - (baseline.figures["p50"] if baseline else 0.0)
    added99 = f["p99"] - (baseline.figures["p99"] if baseline else 0.0)
    relay = baseline.figures if baseline else {"p50": 0.0, "p99": 0.0, "server_cpu": 0.0}
    ok = f["loss"] <= 0 and f["unmatched"] == 0 and added99 <= limit
    verdict = "OK" if ok else "over"
    if baseline and (baseline.figures["loss"] > 0 or relay["p99"] > limit):
        ok, verdict = False, "relay baseline itself overloaded (generator/host limit)"
    text = (
        f"{outcome.scenario:<11} N={outcome.sessions:<5} "
        f"cpu={f['server_cpu'] * 100:5.1f}% {f['us_per_packet']:6.1f}us/pkt "
        f"rss={f['rss_per_session_kib']:6.1f}KiB/session loss={f['loss'] * 100:6.3f}% "
        f"lat p50={f['p50']:6.2f} p99={f['p99']:6.2f} ms "
        f"added p50={added50:6.2f} p99={added99:6.2f} ms "
        f"(relay p50={relay['p50']:.2f} p99={relay['p99']:.2f}"
        f" cpu={relay['server_cpu'] * 100:.0f}%) "
        f"tick late max={f['clock_max_late_ms']:.0f} ms "
        f"gen_cpu={f['generator_cpu'] * 100:.0f}% -> {verdict}"
    )
    return text, ok


async def search(scenario: Scenario, arguments: argparse.Namespace, manager: Any) -> str:
    """Runs at fixed N (--sessions) or a doubling/bisecting search; returns the summary line."""
    limit = arguments.p99_limit_ms + scenario.alignment_ms
    if scenario.alignment_ms:
        print(
            f"[{scenario.name}] criterion: added p99 <= {limit:g} ms ({arguments.p99_limit_ms:g} ms"
            f" + {scenario.alignment_ms:g} ms frame alignment inherent to mixing unsynchronised"
            " sources on a clock)"
        )
    fixed = [int(n) for n in arguments.sessions.split(",")] if arguments.sessions else []
    candidates = iter(fixed)
    candidate = next(candidates) if fixed else scenario.target
    best, failed, tried = 0, None, []
    for _ in range(len(fixed) if fixed else arguments.max_runs):
        baseline = await run_case(scenario, candidate, arguments.duration, True, manager)
        outcome = await run_case(
            scenario, candidate, arguments.duration, False, manager, arguments.record
        )
        text, ok = _line(outcome, baseline, limit)
        print(text, flush=True)
        tried.append(candidate)
        if ok:
            best = max(best, candidate)
        else:
            failed = candidate if failed is None else min(failed, candidate)
        if fixed:
            candidate = next(candidates, candidate)
            continue
        candidate = candidate * 2 if failed is None else (best + failed) // 2
        if candidate in tried or candidate <= 0:
            break
        if failed is not None and failed - best <= max(10, best // 10):
            break
    return (
        f"{scenario.name:<11} largest N passing: {best or 'none'} (target {scenario.target};"
        f" tried {', '.join(map(str, tried))})"
    )


async def main(arguments: argparse.Namespace) -> None:
    from callbridge.engine.config import EngineConfig
    from callbridge.engine.manager import SessionManager

    with tempfile.TemporaryDirectory() as cache:
        config = EngineConfig(
            rtp_port_range=(30000, 39999),
            cache_dir=Path(cache),
            recording_dir=Path(cache),
            max_sessions=0,
            opus_complexity=arguments.opus_complexity,
        )
        manager = SessionManager(config)
        await manager.start()
        print(
            f"media_sessions benchmark: {os.cpu_count()} CPUs, {arguments.duration:g} s per run,"
            f" criterion zero loss and added p99 <= {arguments.p99_limit_ms:g} ms,"
            f" opus complexity {config.opus_complexity},"
            f" recording {arguments.record or 'off'}"
        )
        try:
            summary = [
                await search(SCENARIOS[name], arguments, manager)
                for name in arguments.scenarios.split(",")
            ]
        finally:
            await manager.shutdown(0)
        print("summary:")
        for line in summary:
            print("  " + line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", default="passthrough,transcode,mix3")
    parser.add_argument("--sessions", default="", help="comma list of N; no search")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per run")
    parser.add_argument("--max-runs", type=int, default=4, help="search runs per scenario")
    parser.add_argument("--p99-limit-ms", type=float, default=5.0)
    parser.add_argument(
        "--record",
        default="",
        help="record every engine session: pcap, wav:mix, wav:split, flac:mix or flac:split,"
        " optionally with a sample rate (wav:split:8000; default 16000)",
    )
    parser.add_argument("--opus-complexity", type=int, default=5, help="engine Opus encoder 0-10")
    import uvloop

    uvloop.run(main(parser.parse_args()))
