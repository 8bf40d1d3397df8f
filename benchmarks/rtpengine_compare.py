"""callbridge side by side with rtpengine: the same RTP load, on the same machine, in one run.

    .venv/bin/python benchmarks/rtpengine_compare.py            # full comparison, ~8 minutes
    .venv/bin/python benchmarks/rtpengine_compare.py --quick    # ~2-3 minutes
    .venv/bin/python benchmarks/rtpengine_compare.py --scenarios passthrough --runs 5

Relays, each a fresh process per session count, pinned to CPU 0 (`--relay-cpus`):
  rtpengine   Debian's rtpengine-daemon (installed with apt-get when missing), userspace
              forwarding (table = -1), on loopback with a config written here, its own port
              range, driven over ng (bencode over UDP: offer, answer, delete; rtpengine_ng.py).
  callbridge  `python -m callbridge serve`, driven over its control WebSocket (one connection
              per session: session.create, endpoint.create_from_offer per party;
              callbridge_relay.py). Passthrough goes through its native forwarding plane
              (set CALLBRIDGE_NATIVE_FORWARDING=false in the environment for the Python path).
  floor       passthrough only: callbridge's `_forward` extension programmed directly, no
              engine around it (plane_floor.py): one recvmmsg and one sendmmsg per packet in
              C, the physical floor of a userspace relay on this machine.
The load generator (rtp_load.py) is one process pinned to CPU 1 (`--generator-cpu`): every
party of every session sends a 20 ms packet in real time at a random phase from its own
socket, and matches what it receives to what was sent (sender, sequence and send time in the
payload for passthrough, whose payload it also verifies byte for byte; 1 kHz bursts through the
codecs otherwise). Latency is the kernel's receive timestamp minus the send time (one clock).

Scenarios: passthrough (PCMU <-> PCMU), transcode (PCMU <-> Opus; rtpengine transcodes through
its ng `codec: {transcode: [opus]}` option), and for callbridge alone mix3 (three PCMU parties,
N-1 mixing) and rtvbp (an RTP phone talking to an RTVBP echo application, a second
`callbridge serve` on the generator's CPU, through `endpoint.create_rtvbp`; printed as not
available when the server does not have that method).

Figures per scenario and relay, at the same reference load N for both relays: relay CPU
(user+sys from /proc/<pid>/stat, all threads) per packet it delivered to the generator, RSS
growth per session, loss (packets or bursts sent in a run and never received), p50/p99 added
latency (nothing subtracted). Each is the median of `--runs` runs (measurement windows of
`--duration` s on the same sessions); the spread is min-max. Capacity is the largest N
(searched: a jump predicted from CPU shares, then bisection) whose runs lose nothing and whose
median p99 is within the bound: `--p99-limit-ms` for passthrough; for codec scenarios that
plus the relay's own p99 at 5 sessions plus one 20 ms frame (codecs and clocks add a delay of
whole frames that load does not).
A step the load generator could not drive ("generator-bound"), or where the search had to stop
at the generator's limit, gives a lower bound (">="). Before each step the harness waits for
other load on the machine to stop, and measures a step again when something else ran during it.
After the compared scenarios it samples callbridge with py-spy for one more run (`--profile`).
Figures only: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import relay_profile
from callbridge_relay import CallbridgeRelay
from compare_report import (
    OTHER_CPU_LIMIT,
    Capacity,
    Step,
    as_json,
    describe,
    machine,
    opus_note,
    table,
    verdicts,
)
from plane_floor import FloorRelay
from rtp_load import generator_entry, offer_sdp
from rtpengine_ng import NgClient, Rtpengine, ensure_installed, version

RTPENGINE_OPUS_COMPLEXITY = 10
"""rtpengine 10.5 encodes Opus through ffmpeg's libopus wrapper at its default complexity."""
CALLBRIDGE_PORTS = (16000, 23999)
RTPENGINE_PORTS = (24000, 32000)
"""Both below Linux's ephemeral range (32768+), where the generator's sockets live."""
FLOOR_SESSIONS = 5
"""Sessions of the low-load step that gives a codec scenario's own latency floor."""
FRAME_ALLOWANCE_MS = 20.0
"""Codec and clock paths work in 20 ms frames, and how many frames a relay holds a packet for
can change between one set of calls and the next without any load (rtpengine's transcoding
moves between about 1 and 2 frames, callbridge's mixing aligns to its clock): the bound of a
codec scenario is its floor p99 + one frame + --p99-limit-ms."""
NOISE_RMS = 100.0
"""Background between bursts (int16 RMS, about -50 dBFS, a quiet room) so that encoders see
realistic input; two parties mixed stay well under rtp_load's quiet threshold."""
RELAY_TARGET_CPU = 0.85
"""The search's first jump aims at the size where the relay would use this much of its core."""
GENERATOR_TARGET_CPU = 0.85
"""... and stays below the size where the load generator would use this much of its own."""


@dataclass(frozen=True)
class Scenario:
    name: str
    codecs: tuple[str, ...]
    method: str
    systems: tuple[str, ...]
    reference: int
    """Sessions at which both relays' figures are taken (the same load for both): a middle load
    (30-70 % of a core) where fixed per-process costs (timers, clock ticks, one wake-up per
    packet when idle) no longer dominate and the load generator is far from its limit."""
    description: str = ""


SCENARIOS = {
    "passthrough": Scenario(
        "passthrough",
        ("pcmu", "pcmu"),
        "payload",
        ("rtpengine", "callbridge", "floor"),
        300,
        description="two parties, PCMU both ways, payload passed through",
    ),
    "transcode": Scenario(
        "transcode",
        ("pcmu", "opus"),
        "burst",
        ("rtpengine", "callbridge"),
        15,
        description="two parties, PCMU <-> Opus",
    ),
    "mix3": Scenario(
        "mix3",
        ("pcmu", "pcmu", "pcmu"),
        "burst",
        ("callbridge",),
        30,
        description="three PCMU parties, N-1 mix on the 20 ms clock",
    ),
    "rtvbp": Scenario(
        "rtvbp",
        ("pcmu",),
        "burst",
        ("callbridge",),
        30,
        description="RTP phone (PCMU) <-> RTVBP echo application",
    ),
}


# ------------------------------------------------------------------------- process figures


def process_cpu_seconds(pid: int) -> float:
    """user + system time of the whole process (every thread), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """`pid` and its children (the native load generator runs as a child of the generator)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *map(int, children)]


def machine_busy_seconds() -> float:
    """CPU time spent by anything on the machine (all CPUs, from /proc/stat)."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def process_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ------------------------------------------------------------------------------- relays


class RtpengineRelay:
    """rtpengine under load: offer from party A, answer from party B, per session."""

    name = "rtpengine"

    def __init__(self, cpus: set[int], threads: int) -> None:
        self.daemon = Rtpengine(free_port(socket.SOCK_DGRAM), RTPENGINE_PORTS, cpus, threads)
        self.ng: NgClient | None = None
        self.calls: list[str] = []

    @property
    def pid(self) -> int:
        return self.daemon.pid

    async def start(self, scenario: Scenario) -> None:
        self.daemon.start()
        self.ng = await NgClient.connect("127.0.0.1", self.daemon.ng_port)
        await self.ng.request("ping")

    async def create(self, scenario: Scenario, ports: list[int]) -> list[Any]:
        """Targets for the generator's sockets: (port, payload type) per party."""
        assert self.ng is not None and len(scenario.codecs) == 2
        offer_codec, answer_codec = scenario.codecs
        semaphore = asyncio.Semaphore(32)

        async def call(index: int) -> list[Any]:
            call_id = f"bench-{os.getpid()}-{index}"
            options: dict[str, Any] = {}
            if answer_codec != offer_codec:
                options["codec"] = {"transcode": [answer_codec]}
            async with semaphore:
                offer = await self.ng.request(  # type: ignore[union-attr]
                    "offer",
                    call_id=call_id,
                    from_tag="a",
                    sdp=offer_sdp(offer_codec, ports[2 * index]),
                    **options,
                )
                b_port, b_types = _sdp_port_and_types(offer["sdp"])
                b_type = b_types.get(answer_codec, 111 if answer_codec == "opus" else 0)
                answer = await self.ng.request(  # type: ignore[union-attr]
                    "answer",
                    call_id=call_id,
                    from_tag="a",
                    to_tag="b",
                    sdp=offer_sdp(answer_codec, ports[2 * index + 1], b_type),
                )
            self.calls.append(call_id)
            a_port, a_types = _sdp_port_and_types(answer["sdp"])
            a_type = a_types.get(offer_codec, 0)
            return [(a_port, a_type), (b_port, b_type)]

        groups = await asyncio.gather(*(call(index) for index in range(len(ports) // 2)))
        return [target for group in groups for target in group]

    async def stop(self) -> None:
        try:
            if self.ng is not None:
                await asyncio.gather(
                    *(
                        self.ng.request("delete", call_id=call_id, from_tag="a", attempts=1)
                        for call_id in self.calls
                    ),
                    return_exceptions=True,
                )
                self.ng.close()
        finally:
            self.ng = None
            self.calls = []
            self.daemon.stop()


def _sdp_port_and_types(sdp: str) -> tuple[int, dict[str, int]]:
    """The audio port of an SDP and its payload types by codec ("pcmu", "opus")."""
    port = 0
    types: dict[str, int] = {}
    for line in sdp.splitlines():
        if line.startswith("m=audio "):
            port = int(line.split()[1])
        elif line.startswith("a=rtpmap:"):
            payload_type, encoding = line[len("a=rtpmap:") :].split(" ", 1)
            name = encoding.split("/")[0].lower()
            types.setdefault(name, int(payload_type))
    return port, types


# --------------------------------------------------------------------------------- steps


async def run_step(
    system: str,
    scenario: Scenario,
    sessions: int,
    options: argparse.Namespace,
    profile: bool = False,
) -> Step:
    """`measure_step` on a quiet machine: wait for other load to go away first, and measure
    again (once) if something else ran during the measurement."""
    step = Step(system, scenario.name, sessions)
    for attempt in range(2):
        await wait_for_quiet(options.quiet_wait)
        step = await measure_step(system, scenario, sessions, options, profile)
        if not step.disturbed or attempt:
            break
        print(f"  ({system} N={sessions}: other load during the runs, measuring again)")
    return step


async def wait_for_quiet(max_wait_s: float) -> None:
    """Return once the machine's CPU outside this process stays under the disturbance limit
    for a second (or after `max_wait_s`, with a note)."""
    deadline = time.monotonic() + max_wait_s
    while True:
        busy = machine_busy_seconds() - process_cpu_seconds(os.getpid())
        await asyncio.sleep(1.0)
        other = machine_busy_seconds() - process_cpu_seconds(os.getpid()) - busy
        if other <= OTHER_CPU_LIMIT:
            return
        if time.monotonic() > deadline:
            print(f"  (other load {other * 100:.0f}% of a core persists; measuring anyway)")
            return


async def measure_step(
    system: str,
    scenario: Scenario,
    sessions: int,
    options: argparse.Namespace,
    profile: bool = False,
) -> Step:
    """Start a fresh relay, create `sessions` sessions, measure `options.runs` windows (one,
    sampled with py-spy, when `profile`)."""
    step = Step(system, scenario.name, sessions)
    runs = 1 if profile else options.runs
    relay_cpus = set(options.relay_cpus)
    relay: Any
    if system == "rtpengine":
        relay = RtpengineRelay(relay_cpus, options.rtpengine_threads)
    elif system == "floor":
        relay = FloorRelay(relay_cpus)
    else:
        relay = CallbridgeRelay(
            relay_cpus, CALLBRIDGE_PORTS, options.generator_cpu, options.opus_complexity
        )
    context = multiprocessing.get_context("spawn")
    conn, child_conn = context.Pipe()
    generator = context.Process(
        target=generator_entry,
        args=(
            child_conn,
            scenario.codecs,
            sessions,
            scenario.method,
            options.duration,
            runs,
            options.generator_cpu,
            NOISE_RMS,
        ),
        daemon=True,
    )
    loop = asyncio.get_running_loop()

    async def receive() -> Any:
        if not await loop.run_in_executor(None, conn.poll, 120):
            raise RuntimeError("the load generator stopped answering")
        return conn.recv()

    try:
        await relay.start(scenario)
        rss_before = process_rss_bytes(relay.pid)
        generator.start()
        ports: list[int] = await receive()
        conn.send(await relay.create(scenario, ports))
        peers = getattr(relay, "peer_pids", [])
        for _ in range(runs):
            assert await receive() == "start"
            ours = [os.getpid(), *process_tree(generator.pid or 0), *peers]
            cpu_start, wall_start = process_cpu_seconds(relay.pid), time.monotonic()
            peer_start = sum(process_cpu_seconds(pid) for pid in peers)
            others_start = machine_busy_seconds() - sum(process_cpu_seconds(pid) for pid in ours)
            if profile:
                sampling = loop.run_in_executor(
                    None, relay_profile.record, relay.pid, options.duration, options.generator_cpu
                )
            assert await receive() == "stop"
            cpu = process_cpu_seconds(relay.pid) - cpu_start
            wall = time.monotonic() - wall_start
            peer_cpu = sum(process_cpu_seconds(pid) for pid in peers) - peer_start
            others = machine_busy_seconds() - sum(process_cpu_seconds(pid) for pid in ours)
            others -= others_start + cpu
            rss = process_rss_bytes(relay.pid)
            figures: dict[str, Any] = await receive()
            if profile:
                stacks = await sampling
                step.profile = relay_profile.summarise(stacks) if stacks else ["py-spy missing"]
            received = figures["received"]
            figures.update(
                relay_cpu=cpu / wall,
                peer_cpu=peer_cpu / wall,
                other_cpu=max(others, 0.0) / wall,
                us_per_packet=cpu / received * 1e6 if received else float("nan"),
                rss_per_session_kib=(rss - rss_before) / sessions / 1024,
                lost=max(figures["expected"] - figures["matched"], 0),
                loss=(1 - figures["matched"] / figures["expected"]) if figures["expected"] else 1.0,
            )
            step.runs.append(figures)
    except Exception as error:  # a relay that fails at this size is a finding, not a crash
        step.error = f"{type(error).__name__}: {error}"
    finally:
        if generator.is_alive():
            generator.join(5)
        if generator.is_alive() and generator.pid is not None:
            os.kill(generator.pid, signal.SIGKILL)
            generator.join(5)
        await relay.stop()
        conn.close()
    return step


# -------------------------------------------------------------------------------- search


async def search(
    system: str, scenario: Scenario, first: Step, options: argparse.Namespace, limit_ms: float
) -> tuple[Capacity, list[Step]]:
    """Largest N that holds: a jump predicted from the relay's CPU share per session (capped
    where the generator's own share predicts it would fall behind), then bisection."""
    steps = [first]
    best = first.sessions if first.holds(limit_ms) else 0
    best_step = first if best else None
    failed: Step | None = None if best else first
    at_generator_limit = False
    while len(steps) < options.max_steps:
        if failed is not None and failed.generator_bound:
            break
        if failed is None:
            assert best_step is not None
            relay_share = best_step.median("relay_cpu") / best
            generator_share = best_step.median("generator_cpu") / best
            candidate = int(RELAY_TARGET_CPU / relay_share) if relay_share > 0 else best * 4
            candidate = min(max(candidate, int(best * 1.25) + 1), best * 4, options.max_sessions)
            capped = False
            if generator_share > 0 and candidate > GENERATOR_TARGET_CPU / generator_share:
                candidate, capped = int(GENERATOR_TARGET_CPU / generator_share), True
            if candidate < best * 1.1:
                at_generator_limit = capped
                break
        else:
            if failed.sessions - best <= max(2, best // 10):
                break
            candidate = (best + failed.sessions) // 2
            if candidate <= 0:
                break
        step = await run_step(system, scenario, candidate, options)
        print(describe(step, limit_ms), flush=True)
        steps.append(step)
        if step.holds(limit_ms):
            best, best_step = candidate, step
        elif failed is None or candidate < failed.sessions:
            failed = step
    if failed is None:
        if at_generator_limit:
            note = "the load generator at its limit"
        elif best >= options.max_sessions:
            note = "harness limit"
        else:
            note = "no size tried failed"
        return Capacity(best, limit_ms, ">=", note), steps
    if failed.generator_bound:
        note = f"generator-bound at {failed.sessions}"
        return Capacity(best, limit_ms, ">=", note), steps
    return Capacity(best, limit_ms, "", f"fails at {failed.sessions}"), steps


# --------------------------------------------------------------------------------- main


async def compare(options: argparse.Namespace) -> list[dict[str, Any]]:
    # SIGTERM ends the run like Ctrl-C does: the current step's finally blocks stop every
    # process it started.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    results: list[dict[str, Any]] = []
    for name in options.scenarios.split(","):
        scenario = SCENARIOS[name]
        print(f"\n[{name}] {scenario.description}")
        result: dict[str, Any] = {
            "scenario": scenario,
            "reference": {},
            "capacity": {},
            "floor": {},
            "bound": {},
            "steps": [],
        }
        results.append(result)
        if name == "rtvbp":
            reason = await rtvbp_unavailable(options)
            if reason:
                result["unavailable"] = f"rtvbp leg: not available ({reason})"
                print(result["unavailable"], flush=True)
                continue
        for system in scenario.systems:
            if system not in options.systems:
                continue
            limit_ms = options.p99_limit_ms
            if scenario.method == "burst":
                floor = await run_step(system, scenario, FLOOR_SESSIONS, options)
                print(describe(floor, float("inf")) + " (latency floor)", flush=True)
                result["floor"][system] = floor
                if floor.runs:
                    limit_ms += floor.pooled_p99() + FRAME_ALLOWANCE_MS
            print(f"  {system}: bound zero loss and p99 <= {limit_ms:.1f} ms", flush=True)
            result["bound"][system] = limit_ms
            reference = options.reference.get(name, scenario.reference)
            first = await run_step(system, scenario, reference, options)
            print(describe(first, limit_ms), flush=True)
            capacity, steps = await search(system, scenario, first, options, limit_ms)
            result["reference"][system] = first
            result["capacity"][system] = capacity
            result["steps"] += steps
            wanted = options.profile == "all" or (
                options.profile == "compared" and len(scenario.systems) == 2
            )
            if wanted and system == "callbridge":
                sampled = await run_step(system, scenario, reference, options, profile=True)
                print(f"  profile of callbridge at N={reference} (one {options.duration:g} s run):")
                for line in sampled.profile or [sampled.error or "no profile"]:
                    print("    " + line)
                result["profile"] = sampled.profile
    return results


async def rtvbp_unavailable(options: argparse.Namespace) -> str | None:
    relay = CallbridgeRelay(set(options.relay_cpus), CALLBRIDGE_PORTS, options.generator_cpu)
    try:
        await relay.start(SCENARIOS["passthrough"])
        return await relay.probe_rtvbp()
    finally:
        await relay.stop()


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenarios", default="passthrough,transcode,mix3,rtvbp")
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer search steps")
    parser.add_argument("--runs", type=int, help="measured windows per step (default 3)")
    parser.add_argument("--duration", type=float, help="seconds per window (default 4, quick 1.5)")
    parser.add_argument("--max-steps", type=int, help="sizes tried per relay (default 4, quick 2)")
    parser.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="SCENARIO=N",
        help="reference session count of a scenario (e.g. passthrough=300)",
    )
    parser.add_argument("--max-sessions", type=int, default=1800)
    parser.add_argument("--p99-limit-ms", type=float, default=5.0)
    parser.add_argument("--relay-cpus", type=int, nargs="+", default=[0])
    parser.add_argument("--generator-cpu", type=int, default=1)
    parser.add_argument(
        "--rtpengine-threads",
        type=int,
        help="rtpengine num-threads (default: as many as relay CPUs)",
    )
    parser.add_argument(
        "--systems", default="rtpengine,callbridge,floor", help="relays to run (comma list)"
    )
    parser.add_argument(
        "--opus-complexity",
        type=int,
        default=RTPENGINE_OPUS_COMPLEXITY,
        help="callbridge's Opus encoder complexity (CALLBRIDGE_OPUS_COMPLEXITY); default the"
        " complexity rtpengine 10.5 encodes with, so both relays do the same encoder work"
        " (callbridge's own default is 5)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="seconds to wait before a step for other load on the machine to stop",
    )
    parser.add_argument(
        "--profile",
        choices=("none", "compared", "all"),
        default="compared",
        help="after a scenario, sample callbridge at the reference load with py-spy for one"
        " more run (not counted in the figures) and summarise where its time goes: in the"
        " scenarios compared with rtpengine (default), all, or none",
    )
    parser.add_argument("--json", type=Path, help="write every step's figures here")
    options = parser.parse_args()
    options.runs = options.runs or 3
    options.systems = options.systems.split(",")
    options.duration = options.duration or (1.5 if options.quick else 4.0)
    options.max_steps = options.max_steps or (2 if options.quick else 4)
    options.rtpengine_threads = options.rtpengine_threads or len(options.relay_cpus)
    options.reference = {
        key: int(value) for key, value in (item.split("=", 1) for item in options.reference)
    }
    return options


def main() -> None:
    options = parse_arguments()
    ensure_installed()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by every child
    os.sched_setaffinity(0, {options.generator_cpu})  # the harness stays off the relay's CPU
    started = time.monotonic()
    print(f"callbridge vs rtpengine {version()}, same load, same machine, one run")
    print(f"machine: {machine()}")
    print(
        f"relay pinned to CPU {','.join(map(str, options.relay_cpus))}, load generator to CPU"
        f" {options.generator_cpu}; rtpengine userspace (table = -1),"
        f" num-threads = {options.rtpengine_threads}; callbridge one worker (uvloop),"
        f" Opus complexity {options.opus_complexity}"
    )
    print(
        f"each figure: median of {options.runs} runs of {options.duration:g} s on the same"
        " sessions (min-max in brackets); capacity searched over at most"
        f" {options.max_steps} sizes per relay"
    )
    try:
        results = asyncio.run(compare(options))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted: the processes of the current step were stopped", file=sys.stderr)
        raise SystemExit(130) from None
    print(f"\n=== results ({time.monotonic() - started:.0f} s) ===")
    for line in table(results, options):
        print(line)
    print()
    for line in verdicts(results, options):
        print(line)
    if any(result["scenario"].name == "transcode" for result in results):
        print(opus_note(results, NOISE_RMS, options.opus_complexity))
    if options.json:
        options.json.write_text(json.dumps(as_json(results, options), indent=1, default=str))
        print(f"figures of every step: {options.json}")


if __name__ == "__main__":
    main()
