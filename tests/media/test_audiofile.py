from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.media.audiofile import AudioFileReader
from callbridge.media.errors import AudioFileError, MediaError

# container suffix -> (encoder, sample format it takes, extra options)
FORMATS = {
    "wav": ("pcm_s16le", "s16", {}),
    "flac": ("flac", "s16", {}),
    "ogg": ("vorbis", "fltp", {"strict": "-2"}),
    "mp3": ("libmp3lame", "fltp", {}),
    "opus": ("libopus", "s16", {}),
}


def write_audio(path: Path, channels: np.ndarray, rate: int) -> Path:
    """Encode `channels` (shape channels x samples, int16 values) into `path` with PyAV."""
    codec, sample_format, options = FORMATS[path.suffix[1:]]
    if codec == "vorbis" and len(channels) == 1:
        channels = np.concatenate([channels] * 2)  # FFmpeg's Vorbis encoder is stereo only
    layout = "mono" if len(channels) == 1 else "stereo"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        stream.codec_context.options = options
        for start in range(0, channels.shape[1], 1024):
            block = channels[:, start : start + 1024]
            if sample_format == "s16":
                data = block.T.reshape(1, -1).astype(np.int16)
            else:
                data = (block / 32768).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(data, format=sample_format, layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def tone(rate: int, seconds: float, frequency: float = 440.0, amplitude: int = 10000) -> np.ndarray:
    times = np.arange(int(rate * seconds)) / rate
    return np.rint(amplitude * np.sin(2 * np.pi * frequency * times))[None, :]


def ramp(samples: int) -> np.ndarray:
    return (np.arange(samples) % 30000)[None, :].astype(np.int16)


def read_all(reader: AudioFileReader) -> np.ndarray:
    return np.frombuffer(b"".join(reader), "<i2").astype(np.int32)


def peak_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


@pytest.mark.parametrize("suffix", sorted(FORMATS))
def test_formats_decode_to_mono_frames_at_the_target_rate(tmp_path: Path, suffix: str) -> None:
    stereo = np.concatenate([tone(44100 if suffix != "opus" else 48000, 1.0)] * 2)
    path = write_audio(tmp_path / f"tone.{suffix}", stereo, 44100 if suffix != "opus" else 48000)
    with AudioFileReader(path, sample_rate=8000) as reader:
        assert reader.duration_ms is not None
        assert abs(reader.duration_ms - 1000) <= 30
        frames = list(reader)
        assert reader.read_frame() is None
    assert all(len(frame) == 320 for frame in frames)
    assert 49 <= len(frames) <= 52
    samples = np.frombuffer(b"".join(frames), "<i2").astype(np.float64)
    assert abs(peak_frequency(samples[800:7200], 8000) - 440) < 5
    assert 9000 < np.abs(samples[800:7200]).max() < 11000


def test_wav_is_sample_exact_and_pads_the_last_frame(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "ramp.wav", ramp(8000 + 100), 8000)
    samples = read_all(AudioFileReader(path, sample_rate=8000))
    assert len(samples) == 8000 + 160
    assert samples[:8100].tolist() == ramp(8100)[0].tolist()
    assert samples[8100:].tolist() == [0] * 60


def test_stereo_is_downmixed_by_averaging(tmp_path: Path) -> None:
    left = np.full(1600, 1000)
    right = np.full(1600, 3000)
    path = write_audio(tmp_path / "stereo.wav", np.stack([left, right]), 16000)
    with AudioFileReader(path, sample_rate=16000) as reader:
        assert set(read_all(reader).tolist()[:1600]) == {2000}


@pytest.mark.parametrize("suffix", ["wav", "flac"])
def test_start_and_seek_are_exact_for_lossless_files(tmp_path: Path, suffix: str) -> None:
    path = write_audio(tmp_path / f"ramp.{suffix}", ramp(16000), 8000)
    with AudioFileReader(path, sample_rate=8000, start_ms=250) as reader:
        assert reader.position_ms == 250
        first = np.frombuffer(reader.read_frame() or b"", "<i2")
        assert first.tolist() == list(range(2000, 2160))
        reader.seek(1500)
        assert np.frombuffer(reader.read_frame() or b"", "<i2")[0] == 12000
        assert reader.position_ms == 1520
        reader.seek(0)
        assert read_all(reader)[:16000].tolist() == ramp(16000)[0].tolist()
        reader.seek(5000)
        assert reader.read_frame() is None


@pytest.mark.parametrize("suffix", ["mp3", "ogg", "opus"])
def test_seek_in_compressed_files_lands_within_half_a_sample(tmp_path: Path, suffix: str) -> None:
    rate = 48000 if suffix == "opus" else 16000
    path = write_audio(tmp_path / f"tone.{suffix}", tone(rate, 2.0, 300), rate)
    with AudioFileReader(path, sample_rate=8000) as reader:
        whole = read_all(reader).astype(np.float64)
        reader.seek(1100)
        part = read_all(reader)[:1600]
    positions = np.arange(8800, 8800 + 1600, dtype=np.float64)
    error = min(
        np.abs(np.interp(positions + shift, np.arange(len(whole)), whole) - part).mean()
        for shift in (-0.5, 0.0, 0.5)
    )
    assert error < 0.02 * np.abs(part).mean()


def test_gain_is_applied_with_saturation(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "tone.wav", tone(8000, 0.2, amplitude=10000), 8000)
    quieter = read_all(AudioFileReader(path, gain_db=-20 * np.log10(2)))
    assert 4990 <= np.abs(quieter).max() <= 5000
    louder = read_all(AudioFileReader(path, gain_db=20.0))
    assert louder.max() == 32767
    assert louder.min() == -32768


def test_file_is_read_as_a_stream(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "long.flac", tone(16000, 30.0), 16000)
    reader = AudioFileReader(path, sample_rate=8000)
    # Only the first packets are decoded up front, not the whole 30 s.
    assert len(reader._buffer) < 8000
    assert len(list(reader)) == 1500


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioFileError, match="not found"):
        AudioFileReader(tmp_path / "nope.wav")


@pytest.mark.parametrize(
    "content", [b"", b"RIFF\x00\x00\x00\x00WAVEjunk", bytes(range(256)) * 40, b"hello world\n" * 99]
)
def test_corrupt_or_unsupported_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(MediaError):
        AudioFileReader(path)


def test_file_without_audio(tmp_path: Path) -> None:
    path = tmp_path / "video.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(frame.reformat(format="yuv420p")), *stream.encode(None)]:
            container.mux(packet)
    with pytest.raises(AudioFileError, match="no audio stream"):
        AudioFileReader(path)


def test_truncated_file_plays_what_is_there(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "tone.wav", tone(8000, 1.0), 8000)
    path.write_bytes(path.read_bytes()[:8000])
    frames = list(AudioFileReader(path))
    assert 20 <= len(frames) <= 26


def test_closed_reader(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "tone.wav", tone(8000, 0.5), 8000)
    reader = AudioFileReader(path)
    reader.close()
    reader.close()
    assert reader.read_frame() is None
    with pytest.raises(AudioFileError, match="closed"):
        reader.seek(0)
    with pytest.raises(ValueError):
        AudioFileReader(path).seek(-1)


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=3000), st.sampled_from(["wav", "mp3", "ogg", "flac", "bin"]))
def test_arbitrary_bytes_fail_cleanly(
    tmp_path_factory: pytest.TempPathFactory, content: bytes, suffix: str
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / f"file.{suffix}"
    path.write_bytes(content)
    try:
        with AudioFileReader(path) as reader:
            for frame in reader:
                assert len(frame) == 320
    except AudioFileError:
        pass
