import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.media.avcodecs import G722Decoder, G722Encoder
from callbridge.media.errors import CodecError


def _tone(rate: int, samples: int, frequency: float, start: int = 0) -> bytes:
    times = (start + np.arange(samples)) / rate
    return (8000 * np.sin(2 * np.pi * frequency * times)).astype("<i2").tobytes()


def _values(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, "<i2").astype(np.float64)


def _aligned_snr(reference: np.ndarray, decoded: np.ndarray, max_lag: int) -> float:
    """Best signal-to-noise ratio in dB of `decoded` against `reference` over codec delays."""
    best = -np.inf
    for lag in range(max_lag):
        out = decoded[lag:]
        ref = reference[: len(out)]
        noise = np.sum((ref - out) ** 2)
        best = max(best, 10 * np.log10(np.sum(ref**2) / max(noise, 1.0)))
    return best


def test_g722_round_trip() -> None:
    encoder, decoder = G722Encoder(), G722Decoder()
    source, decoded = [], []
    for index in range(25):
        pcm = _tone(16000, 320, 1000, index * 320)
        payload = encoder.encode(pcm)
        assert len(payload) == 160
        source.append(pcm)
        decoded.append(decoder.decode(payload))
    assert all(len(frame) == 640 for frame in decoded)
    assert _aligned_snr(_values(b"".join(source)), _values(b"".join(decoded)), 60) > 20


def test_g722_decodes_other_payload_lengths() -> None:
    decoder = G722Decoder()
    assert len(decoder.decode(bytes(240))) == 960  # 30 ms
    assert decoder.decode(b"") == b""
    assert len(decoder.decode(bytes(160))) == 640  # still usable after the empty payload


def test_g722_encoder_rejects_wrong_frame_size() -> None:
    with pytest.raises(CodecError, match="640 bytes"):
        G722Encoder().encode(bytes(600))


def test_g722_reset_starts_a_new_stream() -> None:
    g722 = G722Encoder()
    payload = g722.encode(_tone(16000, 320, 1000))
    g722.reset()
    assert g722.encode(_tone(16000, 320, 1000)) == payload


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=5))
def test_any_payload_decodes(payloads: list[bytes]) -> None:
    g722 = G722Decoder()
    for payload in payloads:
        assert len(g722.decode(payload)) == 4 * len(payload)
