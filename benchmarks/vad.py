"""VAD and stats: CPU per 20 ms frame, and each detector's accuracy on real speech.

Speech is espeak-ng's (three sentences with silences between them, white noise added at several
signal-to-noise ratios), so the timeline is known. For each detector it prints the CPU per 20 ms
frame of one monitored stream, the error of the reported onsets (`vad.speech_started` minus the
true onset) and offsets (the end of speech that the first `vad.silence` implies, minus the true
offset), the share of 20 ms frames whose speaking state (hangover included) is right, false
starts and missed utterances. Then the cost of the `stats` event: the per-frame check of a
subscription and one event per endpoint.
Not a test: nothing passes or fails. Run from the repository root:

    .venv/bin/python -m benchmarks.vad
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
from benchmarks.media_codecs import cost_us
from tests.media.speech import SpeechTimeline, speech_timeline

from callbridge.engine.config import EngineConfig
from callbridge.engine.manager import SessionManager
from callbridge.engine.offers import create_from_offer
from callbridge.engine.stats import StatsSubscription, endpoint_stats
from callbridge.media.resample import Resampler
from callbridge.media.vad import (
    DETECTORS,
    HANGOVER_MS,
    VAD_RATE,
    Silence,
    SpeechStarted,
    VoiceActivity,
    create_detector,
)

FRAME = VAD_RATE // 50
SNRS_DB = (30.0, 20.0, 10.0, 5.0)
THRESHOLD = 0.5


@dataclass
class Accuracy:
    cpu_us: float
    onset_errors_ms: list[float]
    offset_errors_ms: list[float]
    frame_accuracy: float
    false_starts: int
    missed: int


def measure(name: str, timeline: SpeechTimeline) -> Accuracy:
    """Feed the timeline frame by frame as the engine does (silence reported every 100 ms, so
    the first report is the speech->silence transition itself)."""
    activity = VoiceActivity(create_detector(name, THRESHOLD), THRESHOLD, 100)
    pcm = timeline.samples.tobytes()
    starts: list[float] = []
    ends: list[float] = []
    decisions: list[bool] = []
    elapsed = 0.0
    for offset in range(0, len(pcm) - FRAME * 2 + 1, FRAME * 2):
        began = time.perf_counter()
        events = activity.feed(pcm[offset : offset + FRAME * 2])
        elapsed += time.perf_counter() - began
        now = (offset // 2 + FRAME) / VAD_RATE
        decisions.append(activity.speaking)
        for event in events:
            if isinstance(event, SpeechStarted):
                starts.append(now)
            elif isinstance(event, Silence) and event.duration_ms < HANGOVER_MS + 100:
                ends.append(now - event.duration_ms / 1000)
    frames = len(decisions)
    truth = np.zeros(frames, dtype=bool)
    onset_errors, offset_errors = [], []
    matched_starts: set[float] = set()
    missed = 0
    for onset, offset_s in timeline.utterances:
        truth[int(onset * 50) : int(offset_s * 50)] = True
        near = [start for start in starts if onset - 0.2 <= start <= offset_s]
        if not near:
            missed += 1
            continue
        matched_starts.add(near[0])
        onset_errors.append((near[0] - onset) * 1000)
        after = [end for end in ends if end >= near[0]]
        if after:
            offset_errors.append((after[0] - offset_s) * 1000)
    # The speaking state, hangover included, against the truth: what a controller sees.
    correct = float(np.mean(np.asarray(decisions) == truth))
    return Accuracy(
        elapsed / frames * 1e6,
        onset_errors,
        offset_errors,
        correct,
        len([start for start in starts if start not in matched_starts]),
        missed,
    )


def _mean(values: list[float]) -> str:
    return f"{statistics.fmean(values):+7.0f}" if values else "      -"


def _worst(values: list[float]) -> str:
    return f"{max(values, key=abs):+7.0f}" if values else "      -"


async def stats_costs() -> tuple[float, float, float]:
    """(µs per frame of a subscription that is not due, µs per RTP endpoint entry, µs per
    event of a 2-endpoint session) on a real session with RTP endpoints."""
    with TemporaryDirectory() as folder:
        manager = SessionManager(EngineConfig(cache_dir=Path(folder)))
        await manager.start()
        session = manager.create_session(lambda name, data, critical: None)
        offer = (
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )
        for _ in range(2):
            await create_from_offer(session, offer, "sendrecv")
        endpoint = next(iter(session.endpoints.values()))
        subscription = StatsSubscription(session, 5000, time.monotonic())
        not_due = time.monotonic()
        idle = cost_us(lambda: subscription._on_tick(not_due), 100_000)
        entry = cost_us(lambda: endpoint_stats(endpoint), 20_000)

        def due() -> None:
            subscription._due = 0.0
            subscription._on_tick(time.monotonic())

        event = cost_us(due, 20_000)
        await session.destroy()
        await manager.shutdown(0)
    return idle, entry, event


def main() -> None:
    timelines = {snr: speech_timeline(snr) for snr in SNRS_DB}
    total_s = timelines[SNRS_DB[0]].samples.size / VAD_RATE
    print(f"speech: {len(timelines[SNRS_DB[0]].utterances)} sentences in {total_s:.1f} s")
    print(
        "detector  SNR dB  CPU us/frame  onset ms mean/worst  offset ms mean/worst"
        "  frames ok  false starts  missed"
    )
    cpu: dict[str, list[float]] = {}
    for name in DETECTORS:
        create_detector(name, THRESHOLD)  # load once before timing
        for snr, timeline in timelines.items():
            result = measure(name, timeline)
            cpu.setdefault(name, []).append(result.cpu_us)
            print(
                f"{name:8}  {snr:6.0f}  {result.cpu_us:12.1f}  "
                f"{_mean(result.onset_errors_ms)} {_worst(result.onset_errors_ms)}      "
                f"{_mean(result.offset_errors_ms)} {_worst(result.offset_errors_ms)}       "
                f"{result.frame_accuracy:8.1%}  {result.false_starts:12d}  {result.missed:6d}"
            )
    ratio = statistics.median(cpu["silero"]) / statistics.median(cpu["webrtc"])
    print(f"silero costs {ratio:.0f}x webrtc per frame (medians over the SNRs)")
    resampler = Resampler(8000, VAD_RATE)
    narrow = bytes(320)
    resampling = cost_us(lambda: resampler.resample(narrow), 20_000)
    print(f"tap resampling 8 -> 16 kHz: {resampling:.1f} us/frame")
    idle, entry, event = asyncio.run(stats_costs())
    print(f"stats: subscription check per frame {idle:.2f} us; RTP endpoint entry {entry:.1f} us;")
    print(f"       one event of a 2-endpoint session {event:.1f} us (once per interval_ms)")


if __name__ == "__main__":
    main()
