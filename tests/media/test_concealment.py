import numpy as np
import pytest

from callbridge.media.concealment import FadeConcealer


def _frame(samples: int) -> bytes:
    return np.linspace(2000, 10000, samples).astype("<i2").tobytes()


def _values(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, "<i2").astype(np.int32)


def test_concealment_continues_from_the_last_sample_and_fades_out() -> None:
    concealer = FadeConcealer(160)
    good = _frame(160)
    concealer.remember(good)
    filled = _values(concealer.conceal(160))
    assert len(filled) == 160
    assert filled[0] == _values(good)[-1]  # no jump at the loss
    magnitude = np.abs(filled)
    assert magnitude[-1] <= 100
    assert np.all(np.diff(magnitude) <= 0)  # the reversed ramp only fades


def test_long_gaps_continue_the_fade_then_go_silent() -> None:
    concealer = FadeConcealer(160)
    concealer.remember(_frame(160))
    first = concealer.conceal(100)
    second = concealer.conceal(100)
    in_one_go = FadeConcealer(160)
    in_one_go.remember(_frame(160))
    assert first + second == in_one_go.conceal(200)
    assert _values(second)[60:].tolist() == [0] * 40
    assert concealer.conceal(50) == bytes(100)


def test_new_audio_restarts_the_fade() -> None:
    concealer = FadeConcealer(160)
    concealer.remember(_frame(160))
    concealer.conceal(400)
    concealer.remember(_frame(160))
    assert _values(concealer.conceal(1))[0] == 10000


def test_nothing_remembered_or_reset_gives_silence() -> None:
    concealer = FadeConcealer(160)
    assert concealer.conceal(160) == bytes(320)
    concealer.remember(_frame(160))
    concealer.reset()
    assert concealer.conceal(160) == bytes(320)
    assert concealer.conceal(0) == b""


def test_short_last_frame_still_fades_to_near_zero() -> None:
    concealer = FadeConcealer(160)
    concealer.remember(_frame(40))
    filled = _values(concealer.conceal(160))
    assert abs(filled[39]) <= 10000 // 40 + 1
    assert filled[40:].tolist() == [0] * 120


def test_rejects_non_positive_fade() -> None:
    with pytest.raises(ValueError):
        FadeConcealer(0)
