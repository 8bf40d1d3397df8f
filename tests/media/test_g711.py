import warnings
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.media import g711

ALL_SAMPLES = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view("<i2").tobytes()
ALL_CODES = bytes(range(256))


def _audioop() -> ModuleType:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return pytest.importorskip("audioop")


def test_ulaw_matches_reference_for_every_sample() -> None:
    audioop = _audioop()
    assert g711.ulaw_encode(ALL_SAMPLES) == audioop.lin2ulaw(ALL_SAMPLES, 2)
    assert g711.ulaw_decode(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)


def test_alaw_matches_reference_for_every_sample() -> None:
    audioop = _audioop()
    assert g711.alaw_encode(ALL_SAMPLES) == audioop.lin2alaw(ALL_SAMPLES, 2)
    assert g711.alaw_decode(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)


def _pcm(*samples: int) -> bytes:
    return np.array(samples, dtype="<i2").tobytes()


def test_ulaw_known_values() -> None:
    assert g711.ulaw_encode(_pcm(0, -1, 32767, -32768, 1000)) == b"\xff\x7e\x80\x00\xce"
    decoded = np.frombuffer(g711.ulaw_decode(b"\xff\x7f\x80\x00\xce"), "<i2").tolist()
    assert decoded == [0, 0, 32124, -32124, 988]


def test_alaw_known_values() -> None:
    assert g711.alaw_encode(_pcm(0, -1, 32767, -32768, 1000)) == b"\xd5\x55\xaa\x2a\xfa"
    decoded = np.frombuffer(g711.alaw_decode(b"\xd5\x55\xaa\x2a\xfa"), "<i2").tolist()
    assert decoded == [8, -8, 32256, -32256, 1008]


def test_every_code_survives_decode_then_encode() -> None:
    ulaw = g711.ulaw_encode(g711.ulaw_decode(ALL_CODES))
    # 0x7F is µ-law's negative zero: it decodes to 0, which encodes as 0xFF.
    assert [i for i in range(256) if ulaw[i] != i] == [0x7F]
    assert g711.alaw_encode(g711.alaw_decode(ALL_CODES)) == ALL_CODES


@given(st.lists(st.integers(-32768, 32767), min_size=1, max_size=200))
def test_quantisation_error_is_bounded(samples: list[int]) -> None:
    original = np.array(samples, dtype=np.int32)
    pcm = original.astype("<i2").tobytes()
    for encode, decode in (
        (g711.ulaw_encode, g711.ulaw_decode),
        (g711.alaw_encode, g711.alaw_decode),
    ):
        restored = np.frombuffer(decode(encode(pcm)), "<i2").astype(np.int32)
        # Logarithmic quantiser: at most a half step, about 1/32 of the magnitude (or 32 near 0).
        assert np.all(np.abs(restored - original) <= np.maximum(np.abs(original) // 16, 36) + 1)


def test_ulaw_alaw_transcoding_equals_decode_then_encode() -> None:
    assert g711.ulaw_to_alaw(ALL_CODES) == g711.alaw_encode(g711.ulaw_decode(ALL_CODES))
    assert g711.alaw_to_ulaw(ALL_CODES) == g711.ulaw_encode(g711.alaw_decode(ALL_CODES))


def test_encode_rejects_odd_length() -> None:
    with pytest.raises(ValueError):
        g711.ulaw_encode(b"\x00\x00\x00")
