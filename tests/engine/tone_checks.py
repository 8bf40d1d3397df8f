"""Test support: what a received test tone says about the path it took; SDP and an engine
with many ports for the peers.

A pure sine goes in; what comes out must have the same pitch (FFT, to well under 1 %) and be
continuous: no gap (a window without the tone) and no repeated or skipped audio (a jump in the
tone's phase). Both are judged on 10 ms windows of the steady part, after the codec's own
start-up and fade-out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from callbridge.engine.forwarding import NATIVE_FORWARDING
from callbridge.engine.manager import SessionManager
from tests.engine.engine_peers import engine_config, free_port_range

WINDOW_S = 0.010
"""Length of the windows that continuity is judged on."""
EDGE_S = 0.060
"""Left out at both ends of the tone: codec start-up (Opus) and the sender's last packet."""
PHASE_JUMP_RAD = 0.35
"""Largest phase step between two windows that is still continuous (a 20 ms repeat of a 440 Hz
tone jumps by 1.26 rad, one lost sample at 8000 Hz by 0.35 rad)."""

CODECS: dict[str, tuple[int, str, int]] = {
    "pcmu": (0, "PCMU/8000", 8000),
    "pcma": (8, "PCMA/8000", 8000),
    "g722": (9, "G722/8000", 16000),
    "opus": (111, "opus/48000/2", 48000),
}
"""Codec name: (payload type, rtpmap, audio sample rate in Hz)."""


@pytest.fixture(params=["native", "python"])
async def roomy_manager(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SessionManager]:
    """An engine with ports for many cases run at once (80 pairs), on both forwarding paths."""
    native = request.param == "native"
    if native and not NATIVE_FORWARDING:
        pytest.skip("the _forward extension is not built (or CALLBRIDGE_NATIVE=0)")
    config = engine_config(tmp_path, rtp_port_range=free_port_range(80), native_forwarding=native)
    engine = SessionManager(config)
    await engine.start()
    yield engine
    await engine.shutdown(0)


def sine(frequency: float, rate: int, samples: int, start: int = 0, level: float = 8000) -> bytes:
    """`samples` samples of a sine, from sample `start` on (so chunks join seamlessly)."""
    times = np.arange(start, start + samples) / rate
    return (np.sin(2 * np.pi * frequency * times) * level).astype("<i2").tobytes()


def offer(
    port: int, codec: str, ptime_ms: int | None = None, maxptime_ms: int | None = None
) -> str:
    """An SDP offer of one codec at 127.0.0.1:`port`, with optional ptime and maxptime."""
    payload_type, rtpmap, _ = CODECS[codec]
    lines = [
        "v=0",
        "o=- 1 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {port} RTP/AVP {payload_type}",
        f"a=rtpmap:{payload_type} {rtpmap}",
    ]
    if ptime_ms is not None:
        lines.append(f"a=ptime:{ptime_ms}")
    if maxptime_ms is not None:
        lines.append(f"a=maxptime:{maxptime_ms}")
    return "\r\n".join([*lines, "a=sendrecv", ""])


@dataclass
class ToneReport:
    pitch_hz: float
    """Frequency of the strongest component (interpolated FFT peak)."""
    duration_s: float
    """How long the tone lasts, in whole windows."""
    gaps: int
    """Windows of the steady part in which the tone is missing or much weaker."""
    jumps: int
    """Window boundaries where the tone's phase jumps: audio repeated or skipped."""
    largest_jump_rad: float

    def assert_clean(self, frequency: float, label: str = "") -> None:
        """Pitch within 1 %, no gap, no jump."""
        assert abs(self.pitch_hz - frequency) < frequency * 0.01, (label, self)
        assert self.gaps == 0 and self.jumps == 0, (label, self)


def analyse(
    samples: np.ndarray[Any, Any],
    rate: int,
    near_hz: float | None = None,
    window_s: float = WINDOW_S,
) -> ToneReport:
    """Pitch, duration and continuity of the tone in int16 `samples` at `rate` Hz.

    `near_hz`: judge the component within 10 % of it (one tone of a mix); windows are then best
    `window_s` = 20 ms, so that tones 300 Hz apart do not leak into each other. The tone's
    span is where its own level is above a quarter of its peak.
    """
    data = samples.astype(np.float64)
    loud = np.flatnonzero(np.abs(data) > 0.25 * np.abs(data).max())
    if len(loud) < 2:
        return ToneReport(0.0, 0.0, 0, 0, 0.0)
    data = data[loud[0] : loud[-1] + 1]
    edge = int(EDGE_S * rate)
    pitch = _pitch(data[edge:-edge], rate, near_hz)
    window = int(window_s * rate)
    count = len(data) // window
    times = np.arange(window) / rate
    weights = np.hanning(window)
    reference = weights * np.exp(-2j * np.pi * pitch * times)
    values = np.array(
        [
            np.dot(data[index * window : (index + 1) * window], reference) * 2 / weights.sum()
            for index in range(count)
        ]
    )
    amplitudes = np.abs(values)
    # each window's phase, referred to the tone's start, so a continuous tone keeps it
    phases = np.angle(values) - 2 * np.pi * pitch * np.arange(count) * window / rate
    present = np.flatnonzero(amplitudes > 0.25 * amplitudes.max())
    duration_s = (present[-1] - present[0] + 1) * window / rate
    edge_windows = -(-edge // window)
    steady = slice(present[0] + edge_windows, present[-1] + 1 - edge_windows)
    amplitudes, phases = amplitudes[steady], phases[steady]
    gaps = int(np.count_nonzero(amplitudes < 0.5 * np.median(amplitudes)))
    steps = np.angle(np.exp(1j * np.diff(phases)))
    largest = float(np.abs(steps).max()) if len(steps) else 0.0
    jumps = int(np.count_nonzero(np.abs(steps) > PHASE_JUMP_RAD))
    return ToneReport(round(pitch, 2), round(duration_s, 3), gaps, jumps, round(largest, 3))


def _pitch(data: np.ndarray[Any, Any], rate: int, near_hz: float | None) -> float:
    """Strongest frequency (within 10 % of `near_hz` if given): 8x zero-padded FFT of a Hann
    window, parabolic peak interpolation."""
    size = len(data) * 8
    spectrum = np.abs(np.fft.rfft((data - data.mean()) * np.hanning(len(data)), n=size))
    low, high = 1, len(spectrum) - 1
    if near_hz is not None:
        low, high = int(near_hz * 0.9 * size / rate), int(near_hz * 1.1 * size / rate)
    peak = int(np.argmax(spectrum[low:high])) + low
    left, middle, right = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
    shift = 0.5 * (left - right) / (left - 2 * middle + right)
    return float((peak + shift) * rate / size)
