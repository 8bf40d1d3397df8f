import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.media.avcodecs import G722Decoder, G722Encoder, OpusDecoder, OpusEncoder
from callbridge.media.errors import CodecError


def _tone(rate: int, samples: int, frequency: float, start: int = 0) -> bytes:
    times = (start + np.arange(samples)) / rate
    return (8000 * np.sin(2 * np.pi * frequency * times)).astype("<i2").tobytes()


def _values(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, "<i2").astype(np.float64)


def _peak_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


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


def test_opus_round_trip_keeps_the_tone() -> None:
    encoder, decoder = OpusEncoder(), OpusDecoder()
    decoded = []
    for index in range(25):
        decoded.append(decoder.decode(encoder.encode(_tone(48000, 960, 440, index * 960))))
    assert all(len(frame) == 1920 for frame in decoded)
    steady = _values(b"".join(decoded[5:]))
    assert abs(_peak_frequency(steady, 48000) - 440) < 5
    assert 5000 < np.abs(steady).max() < 10000


@pytest.mark.parametrize(("ptime", "samples"), [(10, 480), (40, 1920), (60, 2880)])
def test_opus_other_frame_durations(ptime: int, samples: int) -> None:
    encoder, decoder = OpusEncoder(ptime_ms=ptime), OpusDecoder()
    payload = encoder.encode(_tone(48000, samples, 440))
    assert len(decoder.decode(payload)) == 2 * samples


def test_opus_concealment_uses_libopus_plc() -> None:
    encoder, decoder = OpusEncoder(), OpusDecoder()
    for index in range(20):
        last = decoder.decode(encoder.encode(_tone(48000, 960, 440, index * 960)))
    filled = [_values(decoder.conceal(960)) for _ in range(10)]
    assert all(len(frame) == 960 for frame in filled)
    # PLC continues the voice (here the tone) instead of dropping to silence, then decays.
    assert abs(_peak_frequency(filled[0], 48000) - 440) < 30
    assert np.abs(filled[0]).max() > np.abs(_values(last)).max() / 4
    assert np.abs(filled[-1]).max() < np.abs(filled[0]).max()
    assert len(decoder.conceal(500)) == 1000


def test_opus_concealment_on_a_fresh_decoder_is_silence() -> None:
    filled = _values(OpusDecoder().conceal(960))
    assert len(filled) == 960
    assert np.abs(filled).max() < 10


def test_opus_bad_payload_raises_and_the_decoder_survives() -> None:
    encoder, decoder = OpusEncoder(), OpusDecoder()
    with pytest.raises(CodecError):
        decoder.decode(b"\xff\xff\xff\xff\xff")
    assert decoder.decode(b"") == b""
    assert len(decoder.decode(encoder.encode(_tone(48000, 960, 440)))) == 1920


def test_opus_stereo_senders_are_downmixed() -> None:
    context = av.CodecContext.create("libopus", "w")
    context.sample_rate, context.layout, context.format = 48000, "stereo", "s16"
    context.open()
    mono = np.frombuffer(_tone(48000, 960, 440), "<i2")
    frame = av.AudioFrame.from_ndarray(
        np.repeat(mono, 2).reshape(1, -1), format="s16", layout="stereo"
    )
    frame.sample_rate = 48000
    payloads = [bytes(packet) for packet in context.encode(frame)]
    assert len(OpusDecoder().decode(payloads[0])) == 1920


def test_opus_encoder_validation() -> None:
    with pytest.raises(CodecError):
        OpusEncoder(ptime_ms=30)
    with pytest.raises(CodecError):
        OpusEncoder(complexity=11)
    with pytest.raises(CodecError):
        OpusEncoder().encode(bytes(100))


def test_reset_starts_a_new_stream() -> None:
    encoder, decoder = OpusEncoder(), OpusDecoder()
    first = encoder.encode(_tone(48000, 960, 440))
    encoder.reset()
    assert encoder.encode(_tone(48000, 960, 440)) == first  # same state as a new encoder
    decoder.decode(first)
    decoder.reset()
    assert len(decoder.decode(first)) == 1920
    g722 = G722Encoder()
    payload = g722.encode(_tone(16000, 320, 1000))
    g722.reset()
    assert g722.encode(_tone(16000, 320, 1000)) == payload


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=5))
def test_any_payload_decodes_or_raises_codec_error(payloads: list[bytes]) -> None:
    opus, g722 = OpusDecoder(), G722Decoder()
    for payload in payloads:
        try:
            pcm = opus.decode(payload)
        except CodecError:
            pass
        else:
            assert len(pcm) % 2 == 0
            assert len(pcm) <= 2 * 5760  # at most 120 ms at 48000 Hz
        assert len(g722.decode(payload)) == 4 * len(payload)
    assert len(opus.conceal(960)) == 1920
