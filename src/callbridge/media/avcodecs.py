"""G.722 through PyAV's bundled FFmpeg (libavcodec's g722); Opus has its own module (`opus`).

Stateful: use one encoder per outbound stream and one decoder per inbound stream. Frames cross
into libav as `av.AudioFrame`s; PCM is mono int16 at 16000 Hz.

Measured per 20 ms frame on the project's 2-core VM (benchmarks/media_codecs.py, shared with
other work, so rough): encode about 40 µs (PyAV re-chunks every frame through a filter graph),
decode about 20 µs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path
from typing import Any, Final

import av
import numpy as np
from numpy.typing import NDArray

from callbridge.media.concealment import FadeConcealer
from callbridge.media.errors import CodecError
from callbridge.media.pcm import SAMPLE_BYTES, SAMPLE_DTYPE, frame_samples

G722_SAMPLE_RATE: Final = 16000
G722_BIT_RATE: Final = 64000

_CODEC_THREADS: Final = 1
"""Threads per codec context and per filter graph: one. libav's default starts one per core
for audio frames far too small to split; hundreds of streams would mean thousands of threads."""


def _loaded_libavutil() -> list[str]:
    """Paths of the libavutil that PyAV loaded (its bundled copy or the system's)."""
    maps = Path("/proc/self/maps")
    if maps.exists():
        found = {line.split()[-1] for line in maps.read_text().splitlines() if "libavutil" in line}
        if found:
            return sorted(found)
    name = ctypes.util.find_library("avutil")
    return [name] if name else []


def _limit_libav_threads() -> None:
    """Make libav's "one thread per core" default mean one thread in this process.

    Setting `thread_count` covers codec contexts only: PyAV encodes G.722 through a
    filter graph that re-chunks frames, and that graph takes the core count from libavutil,
    which PyAV gives no setting for. `av_cpu_force_count` is libavutil's own override (as
    ffmpeg's -cpucount). Without a loadable libavutil nothing changes.
    """
    for path in _loaded_libavutil():
        try:
            ctypes.CDLL(path).av_cpu_force_count(ctypes.c_int(_CODEC_THREADS))
        except (OSError, AttributeError):
            continue


_limit_libav_threads()


def _frame_pcm(frame: Any) -> bytes:
    """Mono int16 PCM bytes of a decoded frame (s16 as g722 gives; float converted)."""
    samples: int = frame.samples
    if frame.format.name == "s16":
        with memoryview(frame.planes[0]) as view:
            return view[: samples * SAMPLE_BYTES].tobytes()
    data: NDArray[Any] = frame.to_ndarray().reshape(-1)[:samples]
    if data.dtype.kind == "f":
        data = np.clip(np.rint(data * 32768.0), -32768, 32767)
    return data.astype(SAMPLE_DTYPE).tobytes()


class _AvEncoder:
    """Shared PyAV encoder plumbing: exact-size int16 frames in, one payload out."""

    __slots__ = ("_context", "_pts", "bit_rate", "codec_name", "frame_samples", "sample_rate")

    def __init__(self, codec_name: str, sample_rate: int, ptime_ms: int, bit_rate: int) -> None:
        self.codec_name = codec_name
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples(sample_rate, ptime_ms)
        self.bit_rate = bit_rate
        self._pts = 0
        self._context = self._open()

    def _options(self) -> dict[str, str]:
        raise NotImplementedError

    def _open(self) -> Any:
        try:
            context: Any = av.CodecContext.create(self.codec_name, "w")
            context.thread_count = _CODEC_THREADS
            context.sample_rate = self.sample_rate
            context.layout = "mono"
            context.format = "s16"
            context.bit_rate = self.bit_rate
            context.options = self._options()
            context.open()
        except (av.FFmpegError, ValueError) as exc:
            raise CodecError(f"cannot open {self.codec_name} encoder: {exc}") from exc
        return context

    def encode(self, pcm: bytes) -> bytes:
        """The payload of one frame of `frame_samples` int16 samples."""
        if len(pcm) != self.frame_samples * SAMPLE_BYTES:
            raise CodecError(
                f"{self.codec_name} encodes frames of {self.frame_samples * SAMPLE_BYTES} bytes,"
                f" got {len(pcm)}"
            )
        samples = np.frombuffer(pcm, dtype=SAMPLE_DTYPE).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._pts
        self._pts += self.frame_samples
        try:
            packets = self._context.encode(frame)
        except av.FFmpegError as exc:
            raise CodecError(f"{self.codec_name} encode failed: {exc}") from exc
        if len(packets) == 1:
            return bytes(packets[0])
        return b"".join(bytes(packet) for packet in packets)

    def reset(self) -> None:
        """Start a new stream: fresh codec state."""
        self._pts = 0
        self._context = self._open()


class G722Encoder(_AvEncoder):
    """G.722 at 64 kbit/s: 16000 Hz audio in, 160 bytes out per 20 ms."""

    __slots__ = ()

    def __init__(self, ptime_ms: int = 20) -> None:
        super().__init__("g722", G722_SAMPLE_RATE, ptime_ms, G722_BIT_RATE)

    def _options(self) -> dict[str, str]:
        return {"frame_size": str(self.frame_samples)}


class _AvDecoder:
    """Shared PyAV decoder plumbing: payload in, int16 PCM at the codec's rate out."""

    __slots__ = ("_context", "codec_name", "sample_rate")

    def __init__(self, codec_name: str, sample_rate: int) -> None:
        self.codec_name = codec_name
        self.sample_rate = sample_rate
        self._context = self._open()

    def _open(self) -> Any:
        try:
            context: Any = av.CodecContext.create(self.codec_name, "r")
            context.thread_count = _CODEC_THREADS
            context.sample_rate = self.sample_rate
            context.layout = "mono"
            context.open()
        except (av.FFmpegError, ValueError) as exc:
            raise CodecError(f"cannot open {self.codec_name} decoder: {exc}") from exc
        return context

    def _decode_packet(self, packet: Any) -> bytes:
        try:
            frames = self._context.decode(packet)
        except av.FFmpegError as exc:
            raise CodecError(f"{self.codec_name} decode failed: {exc}") from exc
        if len(frames) == 1:
            return _frame_pcm(frames[0])
        return b"".join(_frame_pcm(frame) for frame in frames)

    def decode(self, payload: bytes) -> bytes:
        """PCM of one payload, of whatever duration it carries (b"" for an empty payload)."""
        # An empty packet would put libavcodec into drain mode and end the stream.
        if not payload:
            return b""
        return self._decode_packet(av.Packet(payload))

    def reset(self) -> None:
        """Start a new stream: fresh codec state."""
        self._context = self._open()


class G722Decoder(_AvDecoder):
    """G.722 at 64 kbit/s; concealment fades out the last good frame (no PLC in G.722)."""

    __slots__ = ("_concealer",)

    def __init__(self) -> None:
        super().__init__("g722", G722_SAMPLE_RATE)
        self._concealer = FadeConcealer(frame_samples(G722_SAMPLE_RATE))

    def decode(self, payload: bytes) -> bytes:
        """PCM of one payload (two samples per byte)."""
        pcm = super().decode(payload)
        self._concealer.remember(pcm)
        return pcm

    def conceal(self, samples: int) -> bytes:
        """`samples` samples in place of lost audio: the last frame reversed and faded out."""
        return self._concealer.conceal(samples)

    def reset(self) -> None:
        super().reset()
        self._concealer.reset()
