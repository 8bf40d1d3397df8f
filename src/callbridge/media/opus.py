"""Opus through libopus itself (ctypes), at the PCM rate the session needs.

libopus encodes and decodes at 8000, 12000, 16000, 24000 or 48000 Hz internally, so a leg
whose partners are telephones runs Opus at 8000 Hz and nothing is resampled in Python. On the
wire Opus always has a 48 kHz RTP clock (RFC 7587): 960 timestamp units per 20 ms whatever the
PCM rate here. Packets from a sender at any rate or channel count decode at this rate, mono.

The library is the system's libopus (Debian's libopus0), else the copy PyAV's wheel bundles.
One encoder per outbound stream, one decoder per inbound stream; calls release the GIL.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from pathlib import Path
from typing import Final

from callbridge.media.errors import CodecError
from callbridge.media.pcm import SAMPLE_BYTES, fit_frame, frame_samples

OPUS_RATES: Final = (8000, 12000, 16000, 24000, 48000)
"""PCM rates libopus works at, Hz."""
OPUS_FULL_BAND: Final = 48000
"""The rate of an Opus sender that may send full band: what its partners should carry."""
OPUS_BIT_RATE: Final = 24000
"""Default target bitrate in bit/s (VBR around it); see docs/performance.md."""
OPUS_COMPLEXITY: Final = 5
"""Default encoder complexity 0-10; see docs/performance.md for the cost of each."""
OPUS_FRAME_DURATIONS_MS: Final = (10, 20, 40, 60)
"""Opus frame durations an encoder can be created for (whole milliseconds only)."""

_APPLICATION_VOIP: Final = 2048
_SET_BITRATE: Final = 4002
_SET_COMPLEXITY: Final = 4010
_SET_INBAND_FEC: Final = 4012
_SET_PACKET_LOSS_PERC: Final = 4014
_SET_DTX: Final = 4016
_RESET_STATE: Final = 4028
_MAX_PACKET_BYTES: Final = 1500
_MAX_PACKET_MS: Final = 120
_CONCEAL_STEP_MS: Final = 20


def _candidates() -> list[str]:
    """Library paths to try: the system's first, then PyAV's bundled copy."""
    found = ctypes.util.find_library("opus")
    paths = [found] if found else []
    try:
        import av
    except ImportError:
        return paths
    package = Path(av.__file__).parent
    for folder in (package.parent / "av.libs", package):
        paths.extend(str(path) for path in sorted(folder.glob("libopus*.so*")))
    return paths


@functools.cache
def libopus() -> ctypes.CDLL:
    """The loaded libopus with its function signatures; CodecError if there is none."""
    for path in _candidates():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        _declare(library)
        return library
    raise CodecError("libopus not found: install libopus0 (or PyAV's wheel, which bundles it)")


def _declare(library: ctypes.CDLL) -> None:
    pointer, integer, error = ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)
    library.opus_encoder_create.argtypes = [ctypes.c_int32, integer, integer, error]
    library.opus_encoder_create.restype = pointer
    library.opus_decoder_create.argtypes = [ctypes.c_int32, integer, error]
    library.opus_decoder_create.restype = pointer
    library.opus_encode.argtypes = [pointer, ctypes.c_char_p, integer, pointer, ctypes.c_int32]
    library.opus_encode.restype = ctypes.c_int32
    library.opus_decode.argtypes = [pointer, ctypes.c_char_p, ctypes.c_int32, pointer]
    library.opus_decode.argtypes += [integer, integer]
    library.opus_decode.restype = integer
    library.opus_encoder_destroy.argtypes = [pointer]
    library.opus_decoder_destroy.argtypes = [pointer]
    library.opus_strerror.argtypes = [integer]
    library.opus_strerror.restype = ctypes.c_char_p


def _message(code: int) -> str:
    text = libopus().opus_strerror(code)
    return text.decode() if text else f"error {code}"


def _check_rate(sample_rate: int) -> None:
    if sample_rate not in OPUS_RATES:
        raise CodecError(f"Opus works at {OPUS_RATES} Hz, not {sample_rate}")


class OpusEncoder:
    """Opus, mono, VOIP application, VBR around `bit_rate`, at `sample_rate` Hz PCM."""

    __slots__ = (
        "_handle",
        "_out",
        "bit_rate",
        "complexity",
        "dtx",
        "fec",
        "frame_samples",
        "sample_rate",
    )

    def __init__(
        self,
        ptime_ms: int = 20,
        complexity: int = OPUS_COMPLEXITY,
        *,
        sample_rate: int = 48000,
        bit_rate: int = OPUS_BIT_RATE,
        fec: bool = False,
        dtx: bool = False,
    ) -> None:
        """`fec`: in-band forward error correction (tuned for 10 % loss); `dtx`: discontinuous
        transmission (tiny packets in silence)."""
        _check_rate(sample_rate)
        if ptime_ms not in OPUS_FRAME_DURATIONS_MS:
            raise CodecError(f"Opus cannot encode {ptime_ms} ms frames")
        if not 0 <= complexity <= 10:
            raise CodecError(f"Opus complexity must be 0..10, got {complexity}")
        if not 6000 <= bit_rate <= 510000:
            raise CodecError(f"Opus bitrate must be 6000..510000 bit/s, got {bit_rate}")
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples(sample_rate, ptime_ms)
        self.complexity = complexity
        self.bit_rate = bit_rate
        self.fec = fec
        self.dtx = dtx
        self._out = ctypes.create_string_buffer(_MAX_PACKET_BYTES)
        self._handle: int | None = None
        self._open()

    def _open(self) -> None:
        library = libopus()
        error = ctypes.c_int(0)
        handle = library.opus_encoder_create(
            self.sample_rate, 1, _APPLICATION_VOIP, ctypes.byref(error)
        )
        if not handle or error.value:
            raise CodecError(f"cannot create Opus encoder: {_message(error.value)}")
        self._handle = handle
        settings = (
            (_SET_BITRATE, self.bit_rate),
            (_SET_COMPLEXITY, self.complexity),
            (_SET_INBAND_FEC, int(self.fec)),
            (_SET_PACKET_LOSS_PERC, 10 if self.fec else 0),
            (_SET_DTX, int(self.dtx)),
        )
        for request, value in settings:
            code = library.opus_encoder_ctl(ctypes.c_void_p(handle), request, ctypes.c_int(value))
            if code:
                raise CodecError(f"Opus encoder setting {request}={value}: {_message(code)}")

    def encode(self, pcm: bytes) -> bytes:
        """The payload of one frame of `frame_samples` int16 samples."""
        if len(pcm) != self.frame_samples * SAMPLE_BYTES:
            raise CodecError(
                f"Opus encodes frames of {self.frame_samples * SAMPLE_BYTES} bytes, got {len(pcm)}"
            )
        length = libopus().opus_encode(
            self._handle, pcm, self.frame_samples, self._out, _MAX_PACKET_BYTES
        )
        if length < 0:
            raise CodecError(f"Opus encode failed: {_message(length)}")
        return self._out.raw[:length]

    def reset(self) -> None:
        """Start a new stream: fresh codec state."""
        libopus().opus_encoder_ctl(ctypes.c_void_p(self._handle), _RESET_STATE)

    def __del__(self) -> None:
        if getattr(self, "_handle", None):
            libopus().opus_encoder_destroy(self._handle)
            self._handle = None


class OpusDecoder:
    """Opus of any frame duration up to 120 ms to mono int16 at `sample_rate` Hz; libopus's
    own packet-loss concealment fills lost packets."""

    __slots__ = ("_handle", "_out", "_out_samples", "sample_rate")

    def __init__(self, sample_rate: int = 48000) -> None:
        _check_rate(sample_rate)
        self.sample_rate = sample_rate
        self._out_samples = sample_rate * _MAX_PACKET_MS // 1000
        self._out = ctypes.create_string_buffer(self._out_samples * SAMPLE_BYTES)
        self._handle: int | None = None
        error = ctypes.c_int(0)
        handle = libopus().opus_decoder_create(sample_rate, 1, ctypes.byref(error))
        if not handle or error.value:
            raise CodecError(f"cannot create Opus decoder: {_message(error.value)}")
        self._handle = handle

    def _run(self, payload: bytes | None, samples: int) -> bytes:
        count = libopus().opus_decode(
            self._handle, payload, len(payload) if payload else 0, self._out, samples, 0
        )
        if count < 0:
            raise CodecError(f"Opus decode failed: {_message(count)}")
        return self._out.raw[: count * SAMPLE_BYTES]

    def decode(self, payload: bytes) -> bytes:
        """PCM of one payload, of whatever duration it carries (b"" for an empty payload)."""
        if not payload:
            return b""
        return self._run(payload, self._out_samples)

    def conceal(self, samples: int) -> bytes:
        """`samples` samples in place of lost audio, from libopus's packet-loss concealment.

        Concealed in steps of at most 20 ms (libopus takes multiples of 2.5 ms); the last step
        is padded or cut when `samples` is no such multiple.
        """
        step = frame_samples(self.sample_rate, _CONCEAL_STEP_MS)
        quantum = self.sample_rate // 400
        chunks: list[bytes] = []
        produced = 0
        while produced < samples:
            wanted = min(step, max(quantum, (samples - produced) // quantum * quantum))
            chunk = self._run(None, wanted)
            if not chunk:
                break
            chunks.append(chunk)
            produced += len(chunk) // SAMPLE_BYTES
        return fit_frame(b"".join(chunks), samples)

    def reset(self) -> None:
        """Start a new stream: fresh codec state."""
        libopus().opus_decoder_ctl(ctypes.c_void_p(self._handle), _RESET_STATE)

    def __del__(self) -> None:
        if getattr(self, "_handle", None):
            libopus().opus_decoder_destroy(self._handle)
            self._handle = None
