"""The VAD state machine on scripted scores, and both detectors on real (espeak-ng) speech."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from callbridge.media.vad import (
    HANGOVER_MS,
    VAD_RATE,
    Silence,
    SileroDetector,
    SpeechStarted,
    VadError,
    VadEvent,
    VoiceActivity,
    WebRtcDetector,
    create_detector,
    find_silero_model,
)
from tests.media.speech import espeak_available, speech_timeline

FRAME = VAD_RATE // 50
"""Samples per 20 ms frame."""


class Scripted:
    """Scores each 20 ms window from a list (a stand-in for the network, not under test)."""

    window_samples = FRAME

    def __init__(self) -> None:
        self.scores: list[float] = []

    def probability(self, window: npt.NDArray[np.int16]) -> float:
        assert window.size == FRAME
        return self.scores.pop(0)


def run(activity: VoiceActivity, scores: list[float], chunk: int = FRAME) -> list[VadEvent]:
    detector = activity.detector
    assert isinstance(detector, Scripted)
    detector.scores.extend(scores)
    audio = bytes(len(scores) * FRAME * 2)
    events: list[VadEvent] = []
    for start in range(0, len(audio), chunk * 2):
        events += activity.feed(audio[start : start + chunk * 2])
    return events


def frames(milliseconds: int) -> int:
    return milliseconds // 20


def test_silence_from_the_start_reports_nothing() -> None:
    activity = VoiceActivity(Scripted(), 0.5, 100)
    assert run(activity, [0.1] * frames(5000)) == []


def test_speech_then_silence_after_the_hangover_then_every_interval() -> None:
    activity = VoiceActivity(Scripted(), 0.5, 500)
    assert run(activity, [0.9] * 10) == [SpeechStarted()]
    assert run(activity, [0.2] * frames(HANGOVER_MS - 20)) == []  # a pause inside speech
    assert run(activity, [0.7] * 5) == []  # same utterance: no second start
    events = run(activity, [0.0] * frames(1600))
    assert events == [Silence(500), Silence(1000), Silence(1500)]
    assert run(activity, [0.6]) == [SpeechStarted()]


def test_an_interval_shorter_than_the_hangover_reports_at_the_transition() -> None:
    activity = VoiceActivity(Scripted(), 0.5, 100)
    run(activity, [1.0] * 5)
    events = run(activity, [0.0] * frames(HANGOVER_MS + 100))
    assert events == [Silence(HANGOVER_MS), Silence(400)]  # then on the interval grid


def test_the_threshold_is_inclusive_and_frames_may_come_in_any_size() -> None:
    activity = VoiceActivity(Scripted(), 0.5, 1000)
    assert run(activity, [0.5] * 4, chunk=FRAME * 3 // 2) == [SpeechStarted()]


def test_audio_that_stops_in_mid_speech_forces_silence_of_duration_zero() -> None:
    activity = VoiceActivity(Scripted(), 0.5, 400)
    run(activity, [1.0] * 3)
    assert activity.missing(HANGOVER_MS) == [Silence(0)]
    assert activity.missing(200) == []
    assert activity.missing(250) == [Silence(450)]
    fresh = VoiceActivity(Scripted(), 0.5, 400)
    assert fresh.missing(5000) == []  # no speech yet: nothing


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan")])
def test_bad_thresholds_are_refused(threshold: float) -> None:
    with pytest.raises(ValueError):
        VoiceActivity(Scripted(), threshold, 1000)


def test_detectors_are_made_by_name_or_refused_clearly(tmp_path: Path) -> None:
    detector = create_detector("webrtc", 0.5)
    assert isinstance(detector, WebRtcDetector) and detector.aggressiveness == 2
    assert create_detector("webrtc", 1.0).aggressiveness == 3  # type: ignore[attr-defined]
    with pytest.raises(VadError, match="unknown VAD detector"):
        create_detector("earshot", 0.5)
    with pytest.raises(VadError, match="does not exist"):
        SileroDetector(tmp_path / "missing.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(VadError, match="cannot load"):
        SileroDetector(broken)


def test_the_silero_model_ships_inside_an_installed_package() -> None:
    model = find_silero_model()
    assert model is not None and model.is_file() and "site-packages" in str(model)


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")
@pytest.mark.parametrize("name", ["webrtc", "silero"])
def test_real_speech_with_noise_is_found_at_its_onsets_and_offsets(name: str) -> None:
    timeline = speech_timeline(snr_db=20.0)
    interval_ms = 500
    activity = VoiceActivity(create_detector(name, 0.5), 0.5, interval_ms)
    pcm = timeline.samples.tobytes()
    starts: list[float] = []
    first_silences: list[float] = []
    for offset in range(0, len(pcm), FRAME * 2):
        for event in activity.feed(pcm[offset : offset + FRAME * 2]):
            at = (offset // 2 + FRAME) / VAD_RATE
            if isinstance(event, SpeechStarted):
                starts.append(at)
            elif event.duration_ms <= interval_ms + 40:
                first_silences.append(at)
    for onset, offset_s in timeline.utterances:
        assert any(onset - 0.05 <= start <= onset + 0.2 for start in starts), (onset, starts)
        assert not any(onset + 0.2 < start < offset_s for start in starts), (onset, starts)
        expected = offset_s + interval_ms / 1000
        assert any(abs(at - expected) <= 0.3 for at in first_silences), (expected, first_silences)
    assert len(first_silences) == len(timeline.utterances)
