"""libopus through ctypes, at every PCM rate it works at (PyAV's libopus encodes a stereo peer)."""

import ctypes

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.media import opus
from callbridge.media.errors import CodecError
from callbridge.media.opus import OPUS_RATES, OpusDecoder, OpusEncoder, libopus


def _tone(rate: int, samples: int, frequency: float, start: int = 0) -> bytes:
    times = (start + np.arange(samples)) / rate
    return (8000 * np.sin(2 * np.pi * frequency * times)).astype("<i2").tobytes()


def _values(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, "<i2").astype(np.float64)


def _peak_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


def test_the_library_is_found() -> None:
    assert libopus().opus_strerror(0) == b"success"


@pytest.mark.parametrize("rate", OPUS_RATES)
def test_round_trip_keeps_the_tone_at_each_rate(rate: int) -> None:
    samples = rate // 50
    encoder, decoder = OpusEncoder(sample_rate=rate), OpusDecoder(rate)
    decoded = [
        decoder.decode(encoder.encode(_tone(rate, samples, 440, index * samples)))
        for index in range(25)
    ]
    assert all(len(frame) == 2 * samples for frame in decoded)
    steady = _values(b"".join(decoded[5:]))
    assert abs(_peak_frequency(steady, rate) - 440) < 5
    assert 5000 < np.abs(steady).max() < 10000


def test_a_narrowband_decoder_takes_a_fullband_stream() -> None:
    encoder, decoder = OpusEncoder(sample_rate=48000), OpusDecoder(8000)
    decoded = [decoder.decode(encoder.encode(_tone(48000, 960, 1000, i * 960))) for i in range(25)]
    assert all(len(frame) == 320 for frame in decoded)  # 20 ms at 8000 Hz
    assert abs(_peak_frequency(_values(b"".join(decoded[5:])), 8000) - 1000) < 10


@pytest.mark.parametrize(("ptime", "samples"), [(10, 480), (40, 1920), (60, 2880)])
def test_other_frame_durations(ptime: int, samples: int) -> None:
    encoder, decoder = OpusEncoder(ptime_ms=ptime), OpusDecoder()
    payload = encoder.encode(_tone(48000, samples, 440))
    assert len(decoder.decode(payload)) == 2 * samples


@pytest.mark.parametrize("rate", [8000, 48000])
def test_concealment_uses_libopus_plc(rate: int) -> None:
    samples = rate // 50
    encoder, decoder = OpusEncoder(sample_rate=rate), OpusDecoder(rate)
    for index in range(20):
        last = decoder.decode(encoder.encode(_tone(rate, samples, 440, index * samples)))
    filled = [_values(decoder.conceal(samples)) for _ in range(10)]
    assert all(len(frame) == samples for frame in filled)
    # PLC continues the voice (here the tone) instead of dropping to silence, then decays.
    assert abs(_peak_frequency(filled[0], rate) - 440) < 30
    assert np.abs(filled[0]).max() > np.abs(_values(last)).max() / 4
    assert np.abs(filled[-1]).max() < np.abs(filled[0]).max()
    assert len(decoder.conceal(123)) == 246  # no multiple of 2.5 ms: padded to the count


def test_concealment_on_a_fresh_decoder_is_silence() -> None:
    filled = _values(OpusDecoder(8000).conceal(160))
    assert len(filled) == 160
    assert np.abs(filled).max() < 10


def test_fec_and_dtx_are_settings() -> None:
    quiet = bytes(320)
    plain = OpusEncoder(sample_rate=8000)
    saving = OpusEncoder(sample_rate=8000, dtx=True)
    for _ in range(30):
        plain_size, dtx_size = len(plain.encode(quiet)), len(saving.encode(quiet))
    assert dtx_size < plain_size  # silence costs (almost) nothing with DTX
    protected = OpusEncoder(sample_rate=16000, fec=True, bit_rate=32000)
    speechlike = [_tone(16000, 320, 300 + 10 * i, 320 * i) for i in range(10)]
    assert all(protected.encode(frame) for frame in speechlike)


def test_bad_payload_raises_and_the_decoder_survives() -> None:
    encoder, decoder = OpusEncoder(sample_rate=8000), OpusDecoder(8000)
    with pytest.raises(CodecError, match="corrupted"):
        decoder.decode(b"\xff\xff\xff\xff\xff")
    assert decoder.decode(b"") == b""
    assert len(decoder.decode(encoder.encode(_tone(8000, 160, 440)))) == 320


def test_stereo_senders_are_downmixed() -> None:
    context = av.CodecContext.create("libopus", "w")
    context.sample_rate, context.layout, context.format = 48000, "stereo", "s16"
    context.open()
    mono = np.frombuffer(_tone(48000, 960, 440), "<i2")
    frame = av.AudioFrame.from_ndarray(
        np.repeat(mono, 2).reshape(1, -1), format="s16", layout="stereo"
    )
    frame.sample_rate = 48000
    payloads = [bytes(packet) for packet in context.encode(frame)]
    assert len(OpusDecoder(16000).decode(payloads[0])) == 640


def test_validation() -> None:
    with pytest.raises(CodecError):
        OpusEncoder(ptime_ms=30)
    with pytest.raises(CodecError):
        OpusEncoder(complexity=11)
    with pytest.raises(CodecError):
        OpusEncoder(bit_rate=1000)
    with pytest.raises(CodecError, match="not 44100"):
        OpusEncoder(sample_rate=44100)
    with pytest.raises(CodecError, match="not 32000"):
        OpusDecoder(32000)
    with pytest.raises(CodecError, match="320 bytes"):
        OpusEncoder(sample_rate=8000).encode(bytes(1920))  # a 48 kHz frame at 8 kHz


def test_reset_starts_a_new_stream() -> None:
    encoder, decoder = OpusEncoder(sample_rate=16000), OpusDecoder(16000)
    first = encoder.encode(_tone(16000, 320, 440))
    encoder.reset()
    assert encoder.encode(_tone(16000, 320, 440)) == first  # same state as a new encoder
    decoder.decode(first)
    decoder.reset()
    assert len(decoder.decode(first)) == 640


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=5))
def test_any_payload_decodes_or_raises_codec_error(payloads: list[bytes]) -> None:
    opus = OpusDecoder(8000)
    for payload in payloads:
        try:
            pcm = opus.decode(payload)
        except CodecError:
            pass
        else:
            assert len(pcm) % 2 == 0
            assert len(pcm) <= 2 * 960  # at most 120 ms at 8000 Hz
    assert len(opus.conceal(160)) == 320


def test_pyavs_bundled_copy_is_the_fallback() -> None:
    bundled = [path for path in opus._candidates()[1:] if "av" in path]
    assert bundled, "PyAV's wheel bundles libopus"
    library = ctypes.CDLL(bundled[0])
    library.opus_get_version_string.restype = ctypes.c_char_p
    assert library.opus_get_version_string().startswith(b"libopus")


def test_no_library_is_a_clear_codec_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(opus, "_candidates", lambda: ["/nonexistent/libopus.so.0"])
    opus.libopus.cache_clear()
    try:
        with pytest.raises(CodecError, match="libopus not found"):
            OpusEncoder(sample_rate=8000)
    finally:
        monkeypatch.undo()
        opus.libopus.cache_clear()
    assert OpusDecoder(8000).decode(b"") == b""
