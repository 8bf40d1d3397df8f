"""RTVBP capacity of one worker process: N paced voice calls against the echo application.

    .venv/bin/python benchmarks/rtvbp_echo.py                   # both listeners, N upward
    .venv/bin/python benchmarks/rtvbp_echo.py --calls 500       # one size only
    .venv/bin/python benchmarks/rtvbp_echo.py --listener fast --calls 1000 --calls 2000

The server is a real `callbridge serve callbridge.apps.echo:app` process pinned to CPU 0. Its
RTVBP path is measured on two listeners (`--listener shared|fast|both`): "shared" is the aiohttp
listener (`--listen`), "fast" the picows listener (`rtvbp.fast_listen`, on a port of its own).
The load generator is `ws_load.py` (picows clients, `--generators` processes, pinned to the
CPUs other than 0): each call does the RTVBP handshake (session.initialize, session.updated),
then sends one 320-byte L16/8000 frame every 20 ms at a random phase, each echo matched by the
send time it carries. Beside each listener, in the same run and at the same N, the bare echo of
its WebSocket stack (`websocket_floor.py`: no protocol, no SDK) is the floor: aiohttp for the
shared listener, picows for the fast one. Figures only: nothing here passes or fails.

Printed per N and listener: server CPU (% of one core) and µs per echoed frame (receive + send)
of the floor and of callbridge, callbridge's ratio to its floor, p50/p99 turnaround (send to
echo received), lost frames, the generator's own CPU (near 100 % of its cores: the generator,
not the server, was the limit) and server RSS per call. Without --calls, N grows until a
listener's p99 exceeds 20 ms or it loses frames. Last, one line per listener: the largest N
within that bound, and the issue's target (1000 calls per worker at p99 <= 20 ms, no loss, at
<= 1.3x the fastest floor of the same N) read off the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import websocket_floor
import ws_load
from websocket_floor import Step

ECHO_APPLICATION = "callbridge.apps.echo:app"
FAST_LISTEN_ENV = "CALLBRIDGE_RTVBP__FAST_LISTEN"
FLOOR_STACK = {"shared": "aiohttp", "fast": "picows"}
"""The bare echo each listener is compared with: the WebSocket library it is built on."""
P99_BOUND_MS = 20.0
TARGET_CALLS = 1000
TARGET_RATIO = 1.3
SATURATED_SHARE = 0.9
"""A generator at this share of its cores or more is taken as the limit of the step."""
DEFAULT_SIZES = [250, 500, 750, 1000, 1500, 2000]


def start_callbridge(
    port: int, fast_port: int | None, application: str = ECHO_APPLICATION, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """`callbridge serve` on CPU 0, with the fast RTVBP listener on `fast_port` when given."""
    command = [sys.executable, "-m", "callbridge", "serve", application]
    command += ["--listen", f"127.0.0.1:{port}", "--log-level", "warning"]
    env = {key: value for key, value in os.environ.items() if key != FAST_LISTEN_ENV}
    ports = [port]
    if fast_port is not None:
        # JSON: a nested list setting is not read from a plain "host:port" in the environment.
        env[FAST_LISTEN_ENV] = json.dumps([f"127.0.0.1:{fast_port}"])
        ports.append(fast_port)
    return websocket_floor.start_process(command, *ports, env=env, cwd=cwd)


def measure_callbridge(
    listener: str,
    calls: int,
    options: argparse.Namespace,
    *,
    label: str | None = None,
    application: str = ECHO_APPLICATION,
    cwd: Path | None = None,
) -> Step:
    """RTVBP calls on `listener` ("shared" or "fast") of a fresh callbridge server."""
    port = ws_load.free_port()
    fast_port = None
    if listener == "fast":
        fast_port = ws_load.free_port()
        while fast_port == port:
            fast_port = ws_load.free_port()
    server = start_callbridge(port, fast_port, application, cwd)
    url = f"ws://127.0.0.1:{fast_port or port}/rtvbp"
    try:
        return websocket_floor.measure(
            label or f"callbridge {listener}", server, url, calls, options, rtvbp=True
        )
    finally:
        websocket_floor.stop_process(server)


def within_bound(step: Step) -> bool:
    load = step.load
    return load.connected == step.calls and load.lost == 0 and load.p99_ms <= P99_BOUND_MS


def saturated(step: Step) -> bool:
    """The step's generator (not the server) may have been the limit."""
    return step.generator_percent >= SATURATED_SHARE * 100 * len(websocket_floor.generator_cpus())


def brief(step: Step) -> str:
    load = step.load
    return (
        f"{step.label} p99 {load.p99_ms:.1f} ms, {load.lost} lost,"
        f" {load.connected}/{step.calls} connected, generator {step.generator_percent:.0f} %"
    )


def ratios(ours: Step, floor: Step, best: Step) -> str:
    """callbridge's µs per frame over its own floor's and, when another was cheaper, that one's."""
    text = f"{ours.us_per_frame / floor.us_per_frame:.2f}x the {floor.label} echo"
    if best is not floor:
        text += f", {ours.us_per_frame / best.us_per_frame:.2f}x the {best.label} echo"
    return text


def summary(listener: str, steps: list[tuple[Step, Step]], fastest: dict[int, Step]) -> str:
    """The largest N within the bound, and the target read off the figures (no pass/fail)."""
    passing = [(ours, floor) for ours, floor in steps if within_bound(ours)]
    line = f"{listener} listener: largest N with p99 <= {P99_BOUND_MS:.0f} ms and no loss: "
    if not passing:
        line += "none of the sizes run"
    else:
        ours, floor = max(passing, key=lambda pair: pair[0].calls)
        line += f"{ours.calls}, {ratios(ours, floor, fastest[ours.calls])}"
    line += f"; target {TARGET_CALLS} calls at <= {TARGET_RATIO}x the fastest floor: "
    at_target = [(ours, floor) for ours, floor in steps if ours.calls >= TARGET_CALLS]
    if not at_target:
        return line + f"not decided: no step at >= {TARGET_CALLS} calls"
    ours, floor = min(at_target, key=lambda pair: pair[0].calls)
    best = fastest[ours.calls]
    figures = f"at {ours.calls}: {brief(ours)}, {ratios(ours, floor, best)}"
    if within_bound(ours):
        met = ours.us_per_frame / best.us_per_frame <= TARGET_RATIO
        return line + ("met" if met else "MISSED") + f" ({figures})"
    if not within_bound(best) or saturated(ours) or saturated(best):
        return line + f"not decided: the generator/floor saturated ({figures}; {brief(best)})"
    if floor is not best and not within_bound(floor):
        figures += f"; the bare {floor.label} echo misses the bound too: {brief(floor)}"
    return line + f"MISSED ({figures})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--calls", type=int, action="append", help="call counts to run (repeatable)"
    )
    parser.add_argument(
        "--listener",
        choices=("shared", "fast", "both"),
        default="both",
        help="the aiohttp listener, the picows one (rtvbp.fast_listen), or both (default)",
    )
    websocket_floor.add_load_options(parser)
    options = parser.parse_args()
    listeners = ["fast", "shared"] if options.listener == "both" else [options.listener]
    if len(os.sched_getaffinity(0)) < 2:
        print("note: fewer than 2 CPUs; server and load generator share a core", file=sys.stderr)
    print(
        f"RTVBP echo, L16/8000 20 ms frames, server on CPU 0, {options.generators} generator"
        f" processes on CPUs {sorted(websocket_floor.generator_cpus())},"
        f" {options.duration:.0f} s measured per step; ratio: callbridge to its floor"
    )
    print(websocket_floor.HEADING)
    steps: dict[str, list[tuple[Step, Step]]] = {listener: [] for listener in listeners}
    fastest: dict[int, Step] = {}
    searching = set(listeners)
    for calls in options.calls or DEFAULT_SIZES:
        if not searching:
            break
        floors: list[Step] = []
        for listener in listeners:
            if listener not in searching:
                continue
            floor = websocket_floor.measure_floor(FLOOR_STACK[listener], calls, options)
            ours = measure_callbridge(listener, calls, options)
            print(websocket_floor.row(floor, None), flush=True)
            print(websocket_floor.row(ours, floor), flush=True)
            steps[listener].append((ours, floor))
            floors.append(floor)
            if options.calls is None and not within_bound(ours):
                searching.discard(listener)
        fastest[calls] = min(floors, key=lambda step: step.us_per_frame)
    print()
    for listener in listeners:
        print(summary(listener, steps[listener], fastest))
    import rtvbp_envelope

    print("\ncontrol message codec (classic.v1), per message:")
    rtvbp_envelope.main()


if __name__ == "__main__":
    main()
