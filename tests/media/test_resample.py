import functools
import itertools
import os
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callbridge.media import resample
from callbridge.media.resample import Resampler

RATES = (8000, 16000, 24000, 48000)
PAIRS = [pair for pair in itertools.permutations(RATES, 2)]


Make = Callable[..., Resampler]


@pytest.fixture(params=[True, False], ids=["native", "numpy"])
def make(request: pytest.FixtureRequest) -> Make:
    """Every test runs on the compiled inner loop and on its numpy twin."""
    if request.param and not resample.NATIVE_AVAILABLE:
        if os.environ.get("CALLBRIDGE_NATIVE") == "0":
            pytest.skip("CALLBRIDGE_NATIVE=0")
        pytest.fail("the _polyphase extension is not built: reinstall with a C compiler present")
    return functools.partial(Resampler, native=request.param)


def _tone(rate: int, seconds: float, frequency: float, amplitude: float = 10000) -> np.ndarray:
    times = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * times)).astype("<i2")


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def _chunked(resampler: Resampler, samples: np.ndarray, size: int) -> np.ndarray:
    pieces = [resampler.resample_array(samples[i : i + size]) for i in range(0, len(samples), size)]
    return np.concatenate(pieces)


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_every_20ms_call_returns_a_full_frame_from_the_first(
    make: Make, in_rate: int, out_rate: int
) -> None:
    resampler = make(in_rate, out_rate)
    frame = bytes(in_rate // 50 * 2)
    assert [len(resampler.resample(frame)) for _ in range(60)] == [out_rate // 50 * 2] * 60


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.sampled_from(PAIRS),
    st.lists(st.integers(0, 2000), min_size=1, max_size=40),
)
def test_output_length_follows_the_input_with_carried_rounding(
    make: Make, pair: tuple[int, int], sizes: list[int]
) -> None:
    in_rate, out_rate = pair
    resampler = make(in_rate, out_rate)
    total_in = total_out = 0
    for size in sizes:
        out = resampler.resample_array(np.zeros(size, dtype="<i2"))
        total_in += size
        total_out += len(out)
        # Running total rounded half up: no drift, however the input is chunked.
        assert total_out == (total_in * out_rate + in_rate // 2) // in_rate
        assert abs(len(out) - size * out_rate / in_rate) <= 1


def test_aliasing_is_rejected_when_decimating(make: Make) -> None:
    resampler = make(48000, 8000)
    reference = _chunked(resampler, _tone(48000, 1.0, 1000), 960)[800:]
    resampler.reset()
    alias = _chunked(resampler, _tone(48000, 1.0, 5000), 960)[800:]
    assert 20 * np.log10(max(_rms(alias), 1e-3) / _rms(reference)) < -60


def test_images_are_rejected_when_interpolating(make: Make) -> None:
    out = _chunked(make(8000, 48000), _tone(8000, 1.0, 1000), 160)[4800:]
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    bin_hz = 48000 / len(out)
    tone = spectrum[int(1000 / bin_hz)]
    images = max(spectrum[int(f / bin_hz) - 3 : int(f / bin_hz) + 4].max() for f in (7000, 9000))
    assert 20 * np.log10(images / tone) < -60


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_chunked_output_equals_one_shot_output(make: Make, in_rate: int, out_rate: int) -> None:
    source = _tone(in_rate, 0.5, 700)
    whole = make(in_rate, out_rate).resample_array(source)
    rng = np.random.default_rng(7)
    resampler = make(in_rate, out_rate)
    pieces, start = [], 0
    while start < len(source):
        size = int(rng.integers(1, in_rate // 25))
        pieces.append(resampler.resample_array(source[start : start + size]))
        start += size
    chunked = np.concatenate(pieces)
    assert len(chunked) == len(whole)
    assert np.abs(chunked.astype(np.int32) - whole).max() <= 2


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_delay_is_small_and_reported(make: Make, in_rate: int, out_rate: int) -> None:
    resampler = make(in_rate, out_rate)
    impulse = np.zeros(in_rate // 10, dtype="<i2")
    impulse[in_rate // 50] = 30000
    out = _chunked(resampler, impulse, in_rate // 50)
    expected = out_rate // 50 + resampler.delay_samples
    assert abs(int(np.argmax(np.abs(out))) - expected) <= 1
    assert resampler.delay_ms <= 2.5


def test_equal_rates_pass_audio_through(make: Make) -> None:
    resampler = make(16000, 16000)
    pcm = b"\x01\x00\x02\x00"
    assert resampler.resample(pcm) == pcm
    samples = np.arange(5, dtype="<i2")
    assert resampler.resample_array(samples) is samples
    assert resampler.delay_samples == 0


def test_reset_starts_over_like_a_new_resampler(make: Make) -> None:
    source = _tone(8000, 0.1, 440)
    resampler = make(8000, 16000)
    first = _chunked(resampler, source, 160)
    resampler.resample_array(source[:77])
    resampler.reset()
    assert np.array_equal(_chunked(resampler, source, 160), first)


def test_empty_input_gives_empty_output(make: Make) -> None:
    resampler = make(8000, 48000)
    assert resampler.resample(b"") == b""
    assert len(resampler.resample(bytes(320))) == 1920


def test_rejects_bad_input(make: Make) -> None:
    with pytest.raises(ValueError):
        make(0, 8000)
    with pytest.raises(ValueError):
        make(8000, 16000).resample(b"\x00")


@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 16000), (16000, 8000), (48000, 8000)])
def test_the_telephone_band_passes_flat(make: Make, in_rate: int, out_rate: int) -> None:
    for frequency in (300, 1000, 3400):
        out = _chunked(make(in_rate, out_rate), _tone(in_rate, 0.5, frequency), in_rate // 50)
        gain = _rms(out[out_rate // 10 :]) / _rms(_tone(out_rate, 0.4, frequency))
        assert abs(20 * np.log10(gain)) < 0.6, frequency


def test_what_would_alias_just_above_the_phone_band_is_rejected(make: Make) -> None:
    out = _chunked(make(16000, 8000), _tone(16000, 0.5, 4400), 320)[800:]
    assert 20 * np.log10(max(_rms(out), 1e-3) / 10000 * np.sqrt(2)) < -80


@pytest.mark.parametrize(("in_rate", "out_rate"), [*PAIRS, (44100, 8000), (8000, 44100)])
def test_native_and_numpy_agree_to_one_step(in_rate: int, out_rate: int) -> None:
    if not resample.NATIVE_AVAILABLE:
        pytest.skip("the _polyphase extension is not in use")
    rng = np.random.default_rng(3)
    native, numpy = Resampler(in_rate, out_rate), Resampler(in_rate, out_rate, native=False)
    assert native.native and not numpy.native
    for _ in range(30):
        chunk = (rng.standard_normal(int(rng.integers(0, in_rate // 25))) * 8000).astype("<i2")
        difference = native.resample_array(chunk).astype(np.int32) - numpy.resample_array(chunk)
        assert np.abs(difference).max(initial=0) <= 1


def test_full_scale_input_saturates_instead_of_wrapping(make: Make) -> None:
    square = np.tile(np.repeat(np.array([32767, -32768], dtype="<i2"), 8), 20)
    out = make(8000, 16000).resample_array(square)
    # The filter's overshoot on a square wave exceeds full scale; it must clip, not wrap.
    assert out.max() == 32767 and out.min() == -32768
