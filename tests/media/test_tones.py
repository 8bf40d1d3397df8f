import numpy as np
import pytest

from callbridge.media.tones import DTMF_TONE_HZ, ToneGenerator, dtmf_tone_frames


def _frames(generator: ToneGenerator, count: int) -> list[np.ndarray]:
    frames = []
    for _ in range(count):
        frame = generator.next_frame()
        assert frame is not None
        frames.append(np.frombuffer(frame, "<i2"))
    return frames


def _peaks(samples: np.ndarray, rate: int, count: int) -> list[float]:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    bins = np.argsort(spectrum)[::-1]
    peaks: list[float] = []
    for index in bins:
        frequency = index * rate / len(samples)
        if all(abs(frequency - peak) > 20 for peak in peaks):
            peaks.append(frequency)
        if len(peaks) == count:
            break
    return sorted(peaks)


def _expected(frequencies: tuple[float, ...], rate: int, samples: int) -> np.ndarray:
    times = np.arange(samples) / rate
    waves = sum(np.sin(2 * np.pi * f * times) for f in frequencies)
    return np.rint(waves * 8000 / len(frequencies))


@pytest.mark.parametrize(
    ("kind", "frequencies"),
    [("ringing", (440, 480)), ("busy", (480, 620)), ("beep", (1000,)), ("sine", (440,))],
)
def test_tone_frequencies_and_level(kind: str, frequencies: tuple[int, ...]) -> None:
    samples = np.concatenate(_frames(ToneGenerator(kind), 25))  # type: ignore[arg-type]
    assert len(samples) == 4000
    peaks = _peaks(samples, 8000, len(frequencies))
    assert all(abs(peak - f) <= 4 for peak, f in zip(peaks, frequencies, strict=True))
    assert 7900 <= np.abs(samples).max() <= 8000


@pytest.mark.parametrize("frequency", [440.0, 440.5, 3333.3])
def test_phase_is_continuous_across_frames(frequency: float) -> None:
    samples = np.concatenate(_frames(ToneGenerator("sine", frequency), 200))
    expected = _expected((frequency,), 8000, len(samples))
    assert np.abs(samples - expected).max() <= 1


def test_dual_tone_matches_the_formula_at_other_rates() -> None:
    generator = ToneGenerator("ringing", sample_rate=48000)
    samples = np.concatenate(_frames(generator, 60))
    assert len(samples) == 60 * 960
    assert np.abs(samples - _expected((440, 480), 48000, len(samples))).max() <= 1


def test_ringback_cadence_is_two_seconds_on_four_off() -> None:
    frames = _frames(ToneGenerator("ringback"), 400)
    loud = [bool(np.abs(frame).max()) for frame in frames]
    assert loud[:100] == [True] * 100
    assert loud[100:300] == [False] * 200
    assert loud[300:400] == [True] * 100
    # Each burst starts afresh at phase 0.
    assert np.array_equal(frames[300], frames[0])


def test_busy_cadence_is_half_a_second_each() -> None:
    loud = [bool(np.abs(frame).max()) for frame in _frames(ToneGenerator("busy"), 100)]
    assert loud == ([True] * 25 + [False] * 25) * 2


def test_duration_ends_the_tone_on_whole_frames() -> None:
    generator = ToneGenerator("beep", duration_ms=100)
    assert len(_frames(generator, 5)) == 5
    assert generator.finished
    assert generator.next_frame() is None
    rounded = ToneGenerator("beep", duration_ms=30)
    assert not rounded.finished
    assert len(list(iter(rounded.next_frame, None))) == 2


def test_without_duration_the_tone_never_finishes() -> None:
    generator = ToneGenerator("sine")
    _frames(generator, 500)
    assert not generator.finished


@pytest.mark.parametrize("frequency", [19.9, 20000.5, -1.0])
def test_frequency_out_of_range_is_rejected(frequency: float) -> None:
    with pytest.raises(ValueError, match=r"20\.\.20000 Hz"):
        ToneGenerator("sine", frequency)


def test_frequency_limits_are_accepted() -> None:
    assert ToneGenerator("sine", 20).frequencies == (20.0,)
    assert ToneGenerator("sine", 20000, sample_rate=48000).next_frame() is not None


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown tone"):
        ToneGenerator("siren")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sine tones only"):
        ToneGenerator("busy", 500)
    with pytest.raises(ValueError, match="positive"):
        ToneGenerator("beep", duration_ms=0)


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_dtmf_tone_frames_are_the_key_pair_then_a_pause(rate: int) -> None:
    frames = dtmf_tone_frames("5", 100, rate)
    assert len(frames) == 5 + 3
    assert all(len(frame) == rate // 50 * 2 for frame in frames)
    tone = np.frombuffer(b"".join(frames[:5]), "<i2").astype(np.float64)
    low, high = sorted(_peaks(tone, rate, 2))
    assert abs(low - 770) < 20 and abs(high - 1336) < 20
    assert np.abs(tone).max() <= 8000
    assert not any(np.frombuffer(frame, "<i2").any() for frame in frames[5:])


def test_dtmf_tone_frames_cover_every_key_and_refuse_others() -> None:
    assert set(DTMF_TONE_HZ) == set("0123456789*#ABCD")
    assert len(dtmf_tone_frames("#", 1, 8000)) == 1 + 3  # at least one tone frame
    with pytest.raises(KeyError):
        dtmf_tone_frames("X", 100, 8000)
