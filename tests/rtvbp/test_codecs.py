"""Codec choice among session.initialize offers: which L16 codecs qualify, defaults, preferences."""

from __future__ import annotations

import pytest

from callbridge.rtvbp import babelforce_v1 as bf
from callbridge.rtvbp.codecs import first_l16, is_l16, prefer_sample_rate, select_codec
from callbridge.rtvbp.errors import RemoteError

PCMU = bf.AudioCodec(id="PCMU/8000/1", name="PCMU", sample_rate=8000, bit_depth=8, channels=1)
L16_8K = bf.AudioCodec.l16(8000)
L16_16K = bf.AudioCodec.l16(16000)
L16_16K_STEREO = bf.AudioCodec.l16(16000, channels=2)


@pytest.mark.parametrize(
    ("codec", "usable"),
    [
        (L16_8K, True),
        (L16_16K_STEREO, True),
        (bf.AudioCodec(id="l16", name="l16", sample_rate=8000, bit_depth=16, channels=1), True),
        (PCMU, False),
        (bf.AudioCodec(id="x", name="L16", sample_rate=8000, bit_depth=8, channels=1), False),
        (bf.AudioCodec(id="x", name="L16", sample_rate=8010, bit_depth=16, channels=1), False),
        (bf.AudioCodec(id="x", name="L16", sample_rate=8000, bit_depth=16, channels=0), False),
    ],
)
def test_is_l16(codec: bf.AudioCodec, usable: bool) -> None:
    assert is_l16(codec) is usable


def test_first_l16_prefers_mono() -> None:
    assert first_l16([PCMU, L16_16K_STEREO, L16_8K]) == L16_8K
    assert first_l16([PCMU, L16_16K_STEREO]) == L16_16K_STEREO
    assert first_l16([PCMU]) is None


def test_prefer_sample_rate_falls_back_to_the_first_l16() -> None:
    choose = prefer_sample_rate(24000, 16000)
    assert choose([L16_8K, L16_16K]) == L16_16K
    assert choose([PCMU, L16_8K]) == L16_8K


def test_select_codec_errors() -> None:
    with pytest.raises(RemoteError, match="no audio codec offerings") as empty:
        select_codec([], first_l16)
    with pytest.raises(RemoteError, match="PCMU/8000/1") as unusable:
        select_codec([PCMU], first_l16)
    assert empty.value.code == unusable.value.code == 400
    with pytest.raises(RuntimeError, match="was not offered"):
        select_codec([L16_8K], lambda offers: L16_16K)
    assert select_codec([PCMU, L16_8K], first_l16) == L16_8K
