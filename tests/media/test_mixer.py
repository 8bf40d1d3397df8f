"""N-1 mixing on both paths (the C twin when built, numpy), and gain."""

from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.media import mixer
from callbridge.media.mixer import gain, mix_minus

_BUILT = mixer._native
"""The extension as imported (the numpy path's fixture hides it from `mix_minus` only)."""


@pytest.fixture(autouse=True, params=["native", "numpy"])
def mix_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "native":
        if not mixer.NATIVE_AVAILABLE:
            pytest.fail("the _mix extension is not built (pip install -e . builds it)")
    else:
        monkeypatch.setattr(mixer, "_native", None)
    yield request.param


def _frame(*values: int) -> np.ndarray:
    return np.array(values, dtype="<i2")


def _pcm(*values: int) -> bytes:
    return _frame(*values).tobytes()


def _values(pcm: bytes) -> list[int]:
    return np.frombuffer(pcm, dtype="<i2").tolist()


def test_each_party_hears_everyone_but_itself() -> None:
    frames = {"a": _pcm(1, 2), "b": _pcm(10, 20), "c": _pcm(100, 200)}
    mixes = mix_minus(frames, ["a", "b", "c"], 2)
    assert _values(mixes["a"]) == [110, 220]
    assert _values(mixes["b"]) == [101, 202]
    assert _values(mixes["c"]) == [11, 22]
    assert all(isinstance(mix, bytes) and len(mix) == 4 for mix in mixes.values())


def test_a_destination_without_a_frame_hears_everyone() -> None:
    frames = {"a": _pcm(1, 2), "b": _pcm(10, 20)}
    mixes = mix_minus(frames, ["a", "listener"], 2)
    assert _values(mixes["a"]) == [10, 20]
    assert _values(mixes["listener"]) == [11, 22]


def test_sources_that_are_not_destinations_are_only_heard() -> None:
    frames = {"file": _pcm(5, 5), "b": _pcm(1, 1)}
    assert list(mix_minus(frames, ["b"], 2)) == ["b"]
    assert _values(mix_minus(frames, ["b"], 2)["b"]) == [5, 5]


def test_the_sum_saturates_instead_of_wrapping() -> None:
    frames = {"a": _pcm(30000, -30000), "b": _pcm(30000, -30000), "c": _pcm(0, 0)}
    mixes = mix_minus(frames, ["a", "c", "d"], 2)
    assert _values(mixes["a"]) == [30000, -30000]
    assert _values(mixes["c"]) == [32767, -32768]
    assert _values(mixes["d"]) == [32767, -32768]


def test_no_frames_is_silence_for_everyone() -> None:
    mixes = mix_minus({}, [1, 2], 3)
    assert [_values(mix) for mix in mixes.values()] == [[0, 0, 0], [0, 0, 0]]


def test_frames_may_be_any_bytes_like_object() -> None:
    pcm = _pcm(0, 7, 8, 0)
    frames = {"a": memoryview(pcm)[2:6], "b": bytearray(_pcm(1, 1))}
    mixes = mix_minus(frames, ["a", "b"], 2)  # type: ignore[arg-type]
    assert _values(mixes["a"]) == [1, 1]
    assert _values(mixes["b"]) == [7, 8]


def test_wrong_frame_length_is_rejected() -> None:
    with pytest.raises(ValueError, match="frame 1 has 2 bytes, expected 6"):
        mix_minus({"a": _pcm(1, 2, 3), "b": _pcm(1)}, ["a"], 3)
    with pytest.raises(ValueError, match="frame 0 has 5 bytes, expected 6"):
        mix_minus({"a": b"\x00" * 5}, ["a"], 3)


def test_the_native_twin_refuses_bad_arguments() -> None:
    native = _BUILT
    assert native is not None, "the _mix extension is not built (pip install -e . builds it)"
    with pytest.raises(TypeError):
        native.mix_minus([_pcm(1), "text"], 1)
    with pytest.raises(TypeError):
        native.mix_minus(5, 1)
    with pytest.raises(ValueError, match="samples"):
        native.mix_minus([], -1)
    with pytest.raises(ValueError, match="samples"):
        native.mix_minus([], 10**6)
    assert native.mix_minus([], 2) == ([], bytes(4))


@given(
    st.lists(st.lists(st.integers(-32768, 32767), min_size=8, max_size=8), min_size=1, max_size=12)
)
def test_mix_matches_a_saturated_sum_of_the_others(parties: list[list[int]]) -> None:
    frames = {index: _pcm(*values) for index, values in enumerate(parties)}
    mixes = mix_minus(frames, [*frames, "everyone"], 8)
    everything = np.array(parties, dtype=np.int64)
    for index in frames:
        expected = np.clip(everything.sum(axis=0) - everything[index], -32768, 32767)
        assert _values(mixes[index]) == expected.tolist()
    assert _values(mixes["everyone"]) == np.clip(everything.sum(axis=0), -32768, 32767).tolist()


def test_gain() -> None:
    samples = _frame(1000, -1000, 20000, 0)
    assert gain(samples, 0.0).tolist() == samples.tolist()
    assert gain(samples, 0.0) is not samples
    assert gain(samples, 20 * np.log10(2)).tolist() == [2000, -2000, 32767, 0]
    assert gain(samples, -20 * np.log10(2)).tolist() == [500, -500, 10000, 0]
    assert gain(_frame(-20000), 6.0).tolist() == [-32768]
    assert gain(samples, -200.0).tolist() == [0, 0, 0, 0]
    assert gain(samples, 6.0).dtype == np.int16
