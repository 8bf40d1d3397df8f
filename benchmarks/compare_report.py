"""The figures of rtpengine_compare.py: steps, capacities, the table and the verdicts."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "OTHER_CPU_LIMIT",
    "Capacity",
    "Step",
    "as_json",
    "describe",
    "machine",
    "opus_note",
    "table",
    "verdicts",
]

GENERATOR_CPU_LIMIT = 0.95
SEND_LAG_LIMIT_MS = 5.0
"""Beyond either, the load generator (not the relay) may be what fails a step."""
OTHER_CPU_LIMIT = 0.10
"""CPU (share of one core) used by processes outside the benchmark above which a step is
marked as disturbed."""


@dataclass
class Step:
    """One relay at one session count: the figures of each measured run (window)."""

    system: str
    scenario: str
    sessions: int
    runs: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    profile: list[str] = field(default_factory=list)

    def median(self, key: str) -> float:
        values = [run[key] for run in self.runs if run[key] == run[key]]  # NaN dropped
        return statistics.median(values) if values else float("nan")

    def spread(self, key: str) -> tuple[float, float]:
        values = [run[key] for run in self.runs if run[key] == run[key]]
        return (min(values), max(values)) if values else (float("nan"), float("nan"))

    def pooled_p99(self) -> float:
        """p99 over the samples of all runs together (steadier than a median of p99s when
        each run has few samples); the median p99 when a run did not keep its samples."""
        samples = [value for run in self.runs for value in run.get("samples_ms", [])]
        if not samples or any(not run.get("samples_ms") for run in self.runs):
            return self.median("p99")
        return float(np.percentile(samples, 99))

    @property
    def lost(self) -> int:
        return sum(run["lost"] + run["corrupt"] for run in self.runs)

    @property
    def generator_bound(self) -> bool:
        """The load side (generator, and the echo application where there is one) fell behind."""
        return any(
            run["generator_cpu"] + run["peer_cpu"] > GENERATOR_CPU_LIMIT
            or run["send_lag_p99_ms"] > SEND_LAG_LIMIT_MS
            for run in self.runs
        )

    @property
    def disturbed(self) -> bool:
        """Something outside the benchmark used a noticeable share of the machine."""
        return any(run["other_cpu"] > OTHER_CPU_LIMIT for run in self.runs)

    def holds(self, limit_ms: float) -> bool:
        """No loss and p99 within the bound, under the load as specified (a step the load
        generator could not pace in real time neither holds nor fails: it decides nothing)."""
        return (
            self.error is None
            and bool(self.runs)
            and not self.generator_bound
            and self.lost == 0
            and (self.median("p99") <= limit_ms)
        )


@dataclass
class Capacity:
    sessions: int
    bound_ms: float
    qualifier: str = ""
    """"" exact to the search's resolution; ">=" a lower bound (generator or harness limit)."""
    note: str = ""

    def text(self) -> str:
        value = f"{self.qualifier}{self.sessions}" if self.sessions else "0"
        return f"{value} (p99 <= {self.bound_ms:.1f} ms; {self.note})"


def describe(step: Step, limit_ms: float) -> str:
    if step.error:
        return f"  {step.system:<10} N={step.sessions:<5} error: {step.error}"
    cpu = step.median("relay_cpu") * 100
    low, high = step.spread("us_per_packet")
    verdict = "holds" if step.holds(limit_ms) else "over"
    if step.generator_bound:
        verdict = "generator-bound: decides nothing"
    if step.disturbed:
        verdict += f" [disturbed: other load {step.spread('other_cpu')[1] * 100:.0f}% of a core]"
    peer = step.median("peer_cpu")
    return (
        f"  {step.system:<10} N={step.sessions:<5} cpu={cpu:5.1f}% "
        f"{step.median('us_per_packet'):6.1f} us/pkt ({low:.1f}-{high:.1f}) "
        f"rss={step.median('rss_per_session_kib'):6.1f} KiB/session lost={step.lost} "
        f"p50={step.median('p50'):6.2f} p99={step.median('p99'):6.2f} ms "
        f"gen cpu={step.median('generator_cpu') * 100:3.0f}%"
        + (f"+echo {peer * 100:.0f}%" if peer else "")
        + f" lag p99={step.median('send_lag_p99_ms'):.1f} ms -> {verdict}"
    )


def _fmt(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def _with_spread(step: Step, key: str, digits: int = 1, scale: float = 1.0) -> str:
    low, high = step.spread(key)
    return (
        f"{_fmt(step.median(key) * scale, digits)} "
        f"({_fmt(low * scale, digits)}-{_fmt(high * scale, digits)})"
    )


def table(results: list[dict[str, Any]], options: argparse.Namespace) -> list[str]:
    header = (
        f"{'scenario':<12} {'relay':<11} {'N':>5} {'CPU us/pkt':>18} {'RSS KiB/session':>18} "
        f"{'loss':>7} {'p50 ms':>16} {'p99 ms':>16}  capacity (zero loss, p99 <= bound)"
    )
    lines = [header, "-" * len(header)]
    for result in results:
        scenario = result["scenario"]
        if result.get("unavailable"):
            lines.append(f"{scenario.name:<12} {'callbridge':<11} {result['unavailable']}")
            continue
        by_system: dict[str, Step] = result["reference"]
        for system in scenario.systems:
            if system not in by_system:
                continue
            step = by_system[system]
            if step.error or not step.runs:
                lines.append(f"{scenario.name:<12} {system:<11} error: {step.error}")
                continue
            lost = step.lost
            expected = sum(run["expected"] for run in step.runs)
            loss = f"{lost / expected * 100:.2f}%" if expected else "-"
            lines.append(
                f"{scenario.name:<12} {system:<11} {step.sessions:>5} "
                f"{_with_spread(step, 'us_per_packet'):>18} "
                f"{_with_spread(step, 'rss_per_session_kib'):>18} {loss:>7} "
                f"{_with_spread(step, 'p50', 2):>16} {_with_spread(step, 'p99', 2):>16}  "
                f"{result['capacity'][system].text()}"
            )
        if "floor" in by_system and "callbridge" in by_system:
            ours, floor = by_system["callbridge"], by_system["floor"]
            lines.append(
                f"{'':<12} {'cb / floor':<11} {'':>5} "
                f"{_ratio(ours, floor, 'us_per_packet'):>18} "
                f"{_ratio(ours, floor, 'rss_per_session_kib'):>18} {'':>7} "
                f"{_ratio(ours, floor, 'p50'):>16} {_ratio(ours, floor, 'p99'):>16}"
            )
        if "callbridge" in by_system and "rtpengine" in by_system:
            ours, theirs = by_system["callbridge"], by_system["rtpengine"]
            cap_ours = result["capacity"]["callbridge"]
            cap_theirs = result["capacity"]["rtpengine"]
            ratio_cap = (
                f"{cap_ours.sessions / cap_theirs.sessions:.2f}x" if cap_theirs.sessions else "-"
            )
            if cap_theirs.qualifier == ">=" and cap_theirs.sessions:
                ratio_cap = f"<= {ratio_cap}"
            lines.append(
                f"{'':<12} {'cb / rte':<11} {'':>5} "
                f"{_ratio(ours, theirs, 'us_per_packet'):>18} "
                f"{_ratio(ours, theirs, 'rss_per_session_kib'):>18} {'':>7} "
                f"{_ratio(ours, theirs, 'p50'):>16} {_ratio(ours, theirs, 'p99'):>16}  {ratio_cap}"
            )
    return lines


def _ratio(ours: Step, theirs: Step, key: str) -> str:
    if not ours.runs or not theirs.runs or not theirs.median(key) > 0:
        return "-"
    return f"{ours.median(key) / theirs.median(key):.2f}x"


def verdicts(results: list[dict[str, Any]], options: argparse.Namespace) -> list[str]:
    targets = {"passthrough": 1.0, "transcode": 1.0}
    lines = []
    for result in results:
        scenario = result["scenario"]
        if scenario.name not in targets or not {"callbridge", "rtpengine"} <= set(
            result["reference"]
        ):
            continue
        ours, theirs = result["reference"]["callbridge"], result["reference"]["rtpengine"]
        if not ours.runs or not theirs.runs:
            lines.append(f"{scenario.name}: no figures (a relay failed)")
            continue
        ratio = ours.median("us_per_packet") / theirs.median("us_per_packet")
        target = targets[scenario.name]
        state = "met" if ratio <= target else f"MISSED by {ratio / target:.2f}x"
        lines.append(
            f"{scenario.name}: CPU per packet callbridge/rtpengine = {ratio:.2f}x"
            f" (target <= {target}x): {state}"
        )
        lines.append(
            f"{scenario.name}: sessions held within the bound, callbridge >= rtpengine: "
            + _capacity_verdict(result["capacity"]["callbridge"], result["capacity"]["rtpengine"])
        )
    return lines


def _capacity_verdict(ours: Capacity, theirs: Capacity) -> str:
    """Exact figures compare; a lower bound (">=") only decides when the other side is below it."""
    ours_exact, theirs_exact = ours.qualifier != ">=", theirs.qualifier != ">="
    if ours_exact and ours.sessions < theirs.sessions:
        short = 1 - ours.sessions / theirs.sessions
        bound = "at least " if not theirs_exact else ""
        return f"MISSED, {ours.sessions} vs {theirs.text()}: {bound}{short:.0%} fewer"
    if theirs_exact and ours.sessions >= theirs.sessions:
        return f"met, {ours.text()} vs {theirs.sessions}"
    if not ours_exact and not theirs_exact:
        return (
            f"not decided: both held the largest load tried ({ours.sessions} and"
            f" {theirs.sessions} sessions)"
        )
    return f"not decided: {ours.text()} vs {theirs.text()}"


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return (
        f"{model}, {os.cpu_count()} CPUs, {memory_kib / 2**20:.0f} GiB, Linux "
        f"{platform.release()}, CPython {platform.python_version()}"
    )


def opus_note(results: list[dict[str, Any]], noise_rms: float, complexity: int) -> str:
    """The relays' Opus encoders are configured differently: say how, and what it costs."""
    import numpy as np

    from callbridge.media.opus import OPUS_BIT_RATE, OPUS_COMPLEXITY, OpusEncoder

    # the test signal as callbridge's Opus encoder sees it beside a PCMU phone (libopus at the
    # phone's 8 kHz): a 1 kHz burst frame, four quiet ones
    generator = np.random.default_rng(1)
    burst = np.sin(2 * np.pi * 1000 * np.arange(160) / 8000) * 16000
    frames = []
    for index in range(50):
        signal = generator.normal(0.0, noise_rms, 160) + (burst if index % 5 == 0 else 0.0)
        frames.append(np.clip(signal, -32768, 32767).astype("<i2").tobytes())
    costs = {}
    for measured in (OPUS_COMPLEXITY, 10):
        encoder = OpusEncoder(complexity=measured, sample_rate=8000)
        blocks = []
        for _ in range(6):  # best of six blocks: the least disturbed
            start = time.process_time()
            for frame in frames:
                encoder.encode(frame)
            blocks.append((time.process_time() - start) / len(frames) * 1e6)
        costs[measured] = min(blocks[1:])
    sent = []
    for result in results:
        for system, step in result["reference"].items():
            if result["scenario"].name == "transcode" and step.runs:
                sent.append(
                    f"{system} {step.median('opus_received_kbps'):.0f} kbit/s,"
                    f" {step.median('opus_stereo_share') * 100:.0f}% stereo packets"
                )
    return (
        f"Opus: callbridge encoded with libopus complexity {complexity} (VOIP,"
        f" {OPUS_BIT_RATE // 1000} kbit/s,"
        f" mono; its default is {OPUS_COMPLEXITY}); rtpengine 10.5 with libopus through ffmpeg"
        " at its default complexity (10)."
        f" One 20 ms encode of the test signal here: {costs[OPUS_COMPLEXITY]:.0f} us at"
        f" {OPUS_COMPLEXITY}, {costs[10]:.0f} us at 10 (libopus fed 8 kHz PCM). Opus received from"
        f" each relay: {'; '.join(sent) or 'n/a'}."
    )


def as_json(results: list[dict[str, Any]], options: argparse.Namespace) -> dict[str, Any]:
    return {
        "options": {key: value for key, value in vars(options).items() if key != "json"},
        "machine": machine(),
        "results": [
            {
                "scenario": result["scenario"].name,
                "unavailable": result.get("unavailable"),
                "capacity": {k: vars(v) for k, v in result["capacity"].items()},
                "steps": [
                    {
                        **vars(step),
                        "runs": [
                            {key: value for key, value in run.items() if key != "samples_ms"}
                            for run in step.runs
                        ],
                    }
                    for step in result["steps"]
                ],
            }
            for result in results
        ],
    }
