"""G.711 µ-law (PCMU) and A-law (PCMA) by numpy lookup tables.

The tables are built at import from the companding formulas of the G.711 reference (the input is
reduced to 14 bits for µ-law and 13 bits for A-law by an arithmetic shift, as the reference
does), so every 16-bit sample maps to the same byte as in the reference. Encoding is one table
lookup per sample over a 64 Ki-entry table, decoding one over a 256-entry table: no Python loop.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

from callbridge.media.pcm import SAMPLE_DTYPE, Buffer

_ALL_SAMPLES: Final = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.int16)
_ALL_BYTES: Final = np.arange(256, dtype=np.int32)
_UINT16_DTYPE: Final = np.dtype("<u2")


def _exponent(magnitude: NDArray[np.int32]) -> NDArray[np.int32]:
    """Bit length of each non-negative magnitude (0 for 0)."""
    return np.frexp(magnitude.astype(np.float64))[1].astype(np.int32)


def _build_ulaw_encode() -> NDArray[np.uint8]:
    value = _ALL_SAMPLES.astype(np.int32) >> 2  # 14-bit input of the reference
    mask = np.where(value < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(value), 8159) + 33  # clip, then add the bias (0x84 >> 2)
    segment = np.maximum(_exponent(magnitude) - 6, 0)
    mantissa = (magnitude >> (np.minimum(segment, 7) + 1)) & 0x0F
    code = np.where(segment >= 8, 0x7F, (segment << 4) | mantissa)
    return (code ^ mask).astype(np.uint8)


def _build_ulaw_decode() -> NDArray[np.int16]:
    code = ~_ALL_BYTES & 0xFF
    magnitude = (((code & 0x0F) << 3) + 0x84) << ((code & 0x70) >> 4)
    return np.where(code & 0x80, 0x84 - magnitude, magnitude - 0x84).astype(SAMPLE_DTYPE)


def _build_alaw_encode() -> NDArray[np.uint8]:
    value = _ALL_SAMPLES.astype(np.int32) >> 3  # 13-bit input of the reference
    negative = value < 0
    mask = np.where(negative, 0x55, 0xD5)
    magnitude = np.where(negative, -value - 1, value)
    segment = np.maximum(_exponent(magnitude) - 5, 0)
    mantissa = np.where(segment < 2, magnitude >> 1, magnitude >> np.maximum(segment, 1)) & 0x0F
    code = np.where(segment >= 8, 0x7F, (segment << 4) | mantissa)
    return (code ^ mask).astype(np.uint8)


def _build_alaw_decode() -> NDArray[np.int16]:
    code = _ALL_BYTES ^ 0x55
    segment = (code & 0x70) >> 4
    step = (code & 0x0F) << 4
    magnitude = np.where(segment == 0, step + 8, (step + 0x108) << np.maximum(segment - 1, 0))
    return np.where(code & 0x80, magnitude, -magnitude).astype(SAMPLE_DTYPE)


ULAW_ENCODE_TABLE: Final = _build_ulaw_encode()
"""µ-law byte of every 16-bit sample, indexed by the sample's bits as an unsigned integer."""
ULAW_DECODE_TABLE: Final = _build_ulaw_decode()
"""16-bit sample of every µ-law byte."""
ALAW_ENCODE_TABLE: Final = _build_alaw_encode()
"""A-law byte of every 16-bit sample, indexed by the sample's bits as an unsigned integer."""
ALAW_DECODE_TABLE: Final = _build_alaw_decode()
"""16-bit sample of every A-law byte."""

_ULAW_TO_ALAW: Final = ALAW_ENCODE_TABLE[ULAW_DECODE_TABLE.view(_UINT16_DTYPE)].tobytes()
_ALAW_TO_ULAW: Final = ULAW_ENCODE_TABLE[ALAW_DECODE_TABLE.view(_UINT16_DTYPE)].tobytes()


def ulaw_encode(pcm: Buffer) -> bytes:
    """µ-law bytes (one per sample) of 16-bit little-endian PCM (ValueError if odd length)."""
    return ULAW_ENCODE_TABLE.take(np.frombuffer(pcm, dtype=_UINT16_DTYPE)).tobytes()


def ulaw_decode(payload: Buffer) -> bytes:
    """16-bit little-endian PCM (two bytes per sample) of µ-law bytes."""
    return ULAW_DECODE_TABLE.take(np.frombuffer(payload, dtype=np.uint8)).tobytes()


def alaw_encode(pcm: Buffer) -> bytes:
    """A-law bytes (one per sample) of 16-bit little-endian PCM (ValueError if odd length)."""
    return ALAW_ENCODE_TABLE.take(np.frombuffer(pcm, dtype=_UINT16_DTYPE)).tobytes()


def alaw_decode(payload: Buffer) -> bytes:
    """16-bit little-endian PCM (two bytes per sample) of A-law bytes."""
    return ALAW_DECODE_TABLE.take(np.frombuffer(payload, dtype=np.uint8)).tobytes()


def ulaw_to_alaw(payload: bytes) -> bytes:
    """Transcode µ-law to A-law byte by byte (as decode then encode would, without the PCM)."""
    return payload.translate(_ULAW_TO_ALAW)


def alaw_to_ulaw(payload: bytes) -> bytes:
    """Transcode A-law to µ-law byte by byte (as decode then encode would, without the PCM)."""
    return payload.translate(_ALAW_TO_ULAW)
