import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.media.mixer import gain, mix_minus


def _frame(*values: int) -> np.ndarray:
    return np.array(values, dtype="<i2")


def test_each_party_hears_everyone_but_itself() -> None:
    frames = {"a": _frame(1, 2), "b": _frame(10, 20), "c": _frame(100, 200)}
    mixes = mix_minus(frames, ["a", "b", "c"], 2)
    assert mixes["a"].tolist() == [110, 220]
    assert mixes["b"].tolist() == [101, 202]
    assert mixes["c"].tolist() == [11, 22]
    assert all(mix.dtype == np.int16 for mix in mixes.values())


def test_a_destination_without_a_frame_hears_everyone() -> None:
    frames = {"a": _frame(1, 2), "b": _frame(10, 20)}
    mixes = mix_minus(frames, ["a", "listener"], 2)
    assert mixes["a"].tolist() == [10, 20]
    assert mixes["listener"].tolist() == [11, 22]


def test_sources_that_are_not_destinations_are_only_heard() -> None:
    frames = {"file": _frame(5, 5), "b": _frame(1, 1)}
    assert list(mix_minus(frames, ["b"], 2)) == ["b"]
    assert mix_minus(frames, ["b"], 2)["b"].tolist() == [5, 5]


def test_the_sum_saturates_instead_of_wrapping() -> None:
    frames = {"a": _frame(30000, -30000), "b": _frame(30000, -30000), "c": _frame(0, 0)}
    mixes = mix_minus(frames, ["a", "c", "d"], 2)
    assert mixes["a"].tolist() == [30000, -30000]
    assert mixes["c"].tolist() == [32767, -32768]
    assert mixes["d"].tolist() == [32767, -32768]


def test_no_frames_is_silence_for_everyone() -> None:
    mixes = mix_minus({}, [1, 2], 3)
    assert [mix.tolist() for mix in mixes.values()] == [[0, 0, 0], [0, 0, 0]]


def test_mixes_are_read_only() -> None:
    mixes = mix_minus({"a": _frame(1), "b": _frame(2)}, ["a", "b", "c"], 1)
    for mix in mixes.values():
        with pytest.raises(ValueError):
            mix[0] = 0


def test_wrong_frame_length_is_rejected() -> None:
    with pytest.raises(ValueError, match="expected 3"):
        mix_minus({"a": _frame(1, 2)}, ["a"], 3)


@given(
    st.lists(st.lists(st.integers(-32768, 32767), min_size=8, max_size=8), min_size=1, max_size=12)
)
def test_mix_matches_a_saturated_sum_of_the_others(parties: list[list[int]]) -> None:
    frames = {index: np.array(values, dtype="<i2") for index, values in enumerate(parties)}
    mixes = mix_minus(frames, list(frames), 8)
    everything = np.array(parties, dtype=np.int64)
    for index in frames:
        expected = np.clip(everything.sum(axis=0) - everything[index], -32768, 32767)
        assert mixes[index].tolist() == expected.tolist()


def test_gain() -> None:
    samples = _frame(1000, -1000, 20000, 0)
    assert gain(samples, 0.0).tolist() == samples.tolist()
    assert gain(samples, 0.0) is not samples
    assert gain(samples, 20 * np.log10(2)).tolist() == [2000, -2000, 32767, 0]
    assert gain(samples, -20 * np.log10(2)).tolist() == [500, -500, 10000, 0]
    assert gain(_frame(-20000), 6.0).tolist() == [-32768]
    assert gain(samples, -200.0).tolist() == [0, 0, 0, 0]
    assert gain(samples, 6.0).dtype == np.int16
