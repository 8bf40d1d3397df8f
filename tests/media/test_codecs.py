import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.media.codecs import (
    G722,
    L16_BRIDGE,
    OPUS,
    PCMA,
    PCMU,
    CodecSpec,
    codec_by_name,
    codec_by_payload_type,
    codec_by_rtpmap,
    create_decoder,
    create_encoder,
    l16,
)
from callbridge.media.errors import CodecError
from callbridge.media.opus import OpusEncoder


def _tone(rate: int, samples: int, frequency: float = 440.0, amplitude: float = 8000) -> bytes:
    times = np.arange(samples) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * times)).astype("<i2").tobytes()


def _values(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, "<i2").astype(np.float64)


@pytest.mark.parametrize(
    ("name", "spec"),
    [
        ("PCMU", PCMU),
        ("pcma", PCMA),
        ("g722", G722),
        ("OPUS", OPUS),
        ("Opus", OPUS),
        ("l16", L16_BRIDGE),
    ],
)
def test_lookup_by_name_is_case_insensitive(name: str, spec: CodecSpec) -> None:
    assert codec_by_name(name) is spec


def test_unknown_names_and_dynamic_payload_types_are_not_found() -> None:
    assert codec_by_name("G729") is None
    assert codec_by_payload_type(111) is None
    assert codec_by_payload_type(18) is None


def test_lookup_by_static_payload_type() -> None:
    assert codec_by_payload_type(0) is PCMU
    assert codec_by_payload_type(8) is PCMA
    assert codec_by_payload_type(9) is G722


def test_spec_figures() -> None:
    assert OPUS.name == "opus"
    assert (PCMU.samples_per_frame, G722.samples_per_frame, OPUS.samples_per_frame) == (
        160,
        320,
        960,
    )
    assert (G722.clock_rate, G722.sample_rate, G722.timestamp_step) == (8000, 16000, 160)
    assert OPUS.timestamp_step == 960
    assert OPUS.rtpmap == "opus/48000/2"
    assert OPUS.fmtp == "minptime=10;useinbandfec=1;stereo=0;sprop-stereo=0"
    assert OPUS.channels == 1
    assert (L16_BRIDGE.payload_type, L16_BRIDGE.sample_rate, L16_BRIDGE.byte_order) == (
        127,
        48000,
        "little",
    )


def test_rtpmap_lookup() -> None:
    assert codec_by_rtpmap("opus/48000/2") is OPUS
    assert codec_by_rtpmap("G722/8000") is G722
    assert codec_by_rtpmap("PCMU/8000", 96) == PCMU.with_payload_type(96)
    assert codec_by_rtpmap("G722/16000") is None
    assert codec_by_rtpmap("PCMU") is None
    assert codec_by_rtpmap("telephone-event/8000") is None
    rtp_l16 = codec_by_rtpmap("L16/16000", 98)
    assert rtp_l16 is not None
    assert (rtp_l16.sample_rate, rtp_l16.byte_order, rtp_l16.payload_type) == (16000, "big", 98)
    assert codec_by_rtpmap("L16/11025") is None


def test_l16_specs() -> None:
    spec = l16(24000)
    assert (spec.name, spec.sample_rate, spec.clock_rate, spec.byte_order) == (
        "L16",
        24000,
        24000,
        "little",
    )
    assert spec.rtpmap == "L16/24000"
    with pytest.raises(ValueError):
        l16(11025)


def test_with_payload_type_keeps_everything_else() -> None:
    moved = OPUS.with_payload_type(96)
    assert moved.payload_type == 96
    assert moved.with_payload_type(111) == OPUS


@pytest.mark.parametrize(
    ("spec", "payload_bytes"),
    [(PCMU, 160), (PCMA, 160), (G722, 160), (L16_BRIDGE, 1920), (l16(8000, "big"), 320)],
)
def test_encoders_make_the_expected_payload_sizes(spec: CodecSpec, payload_bytes: int) -> None:
    encoder = create_encoder(spec)
    decoder = create_decoder(spec)
    for _ in range(3):
        payload = encoder.encode(_tone(spec.sample_rate, spec.samples_per_frame))
        assert len(payload) == payload_bytes
        assert len(decoder.decode(payload)) == 2 * spec.samples_per_frame


def test_opus_payload_is_small_and_decodes_to_a_frame() -> None:
    encoder = create_encoder(OPUS)
    decoder = create_decoder(OPUS)
    payload = encoder.encode(_tone(48000, 960))
    assert 2 < len(payload) < 200
    assert len(decoder.decode(payload)) == 1920


@pytest.mark.parametrize("spec", [PCMU, PCMA])
def test_g711_round_trip_is_close(spec: CodecSpec) -> None:
    pcm = _tone(8000, 160)
    decoded = _values(create_decoder(spec).decode(create_encoder(spec).encode(pcm)))
    error = decoded - _values(pcm)
    snr = 10 * np.log10(np.sum(_values(pcm) ** 2) / np.sum(error**2))
    assert snr > 30


def test_g711_codecs_take_any_frame_length() -> None:
    encoder = create_encoder(PCMU)
    decoder = create_decoder(PCMU)
    assert len(decoder.decode(encoder.encode(_tone(8000, 240)))) == 480


def test_l16_byte_orders() -> None:
    pcm = b"\x01\x02\x03\x04"
    assert create_encoder(l16(8000, "big")).encode(pcm) == b"\x02\x01\x04\x03"
    assert create_decoder(l16(8000, "big")).decode(b"\x02\x01\x04\x03") == pcm
    assert create_encoder(L16_BRIDGE).encode(pcm) == pcm
    assert create_decoder(L16_BRIDGE).decode(pcm + b"\x05") == pcm


@pytest.mark.parametrize("spec", [PCMU, PCMA, G722, L16_BRIDGE])
def test_concealment_fades_out_the_last_frame(spec: CodecSpec) -> None:
    decoder = create_decoder(spec)
    frames = [create_encoder(spec).encode(_tone(spec.sample_rate, spec.samples_per_frame))]
    last = _values(decoder.decode(frames[0]))
    filled = _values(decoder.conceal(spec.samples_per_frame))
    assert len(filled) == spec.samples_per_frame
    assert filled[0] == last[-1]
    assert np.abs(filled[-10:]).max() < np.abs(last).max() / 10
    assert decoder.conceal(spec.samples_per_frame) == bytes(2 * spec.samples_per_frame)
    decoder.reset()
    assert decoder.conceal(10) == bytes(20)


def test_unsupported_codec_and_ptime_raise_codec_errors() -> None:
    unknown = CodecSpec("G729", 18, 8000, 8000, "G729/8000")
    with pytest.raises(CodecError, match="unsupported"):
        create_encoder(unknown)
    with pytest.raises(CodecError, match="unsupported"):
        create_decoder(unknown)
    with pytest.raises(CodecError):
        create_encoder(PCMU, ptime_ms=0)


@pytest.mark.parametrize(("ptime", "payload_bytes"), [(10, 80), (30, 240), (40, 320)])
def test_encoders_follow_other_ptimes(ptime: int, payload_bytes: int) -> None:
    for spec in (PCMU, G722):
        samples = spec.sample_rate * ptime // 1000
        payload = create_encoder(spec, ptime).encode(_tone(spec.sample_rate, samples))
        assert len(payload) == payload_bytes


@given(st.text(max_size=40), st.none() | st.integers(0, 127))
def test_rtpmap_lookup_never_raises(encoding: str, payload_type: int | None) -> None:
    spec = codec_by_rtpmap(encoding, payload_type)
    if spec is not None:
        assert encoding.strip().lower().startswith(spec.name.lower())
        assert payload_type is None or spec.payload_type == payload_type


@given(st.binary(max_size=400))
def test_stateless_decoders_take_any_payload(payload: bytes) -> None:
    assert len(create_decoder(PCMU).decode(payload)) == 2 * len(payload)
    assert len(create_decoder(PCMA).decode(payload)) == 2 * len(payload)
    assert len(create_decoder(l16(8000, "big")).decode(payload)) == len(payload) // 2 * 2


def test_opus_complexity_is_a_setting() -> None:
    encoder = create_encoder(OPUS, opus_complexity=0)
    assert isinstance(encoder, OpusEncoder)
    assert encoder.complexity == 0
    with pytest.raises(CodecError):
        create_encoder(OPUS, opus_complexity=11)
