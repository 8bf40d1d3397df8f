"""RTP packets (RFC 3550 §5): parse, build, the in-place header rewrite, rtcp-mux demux, seq math.

Errors: `parse_rtp` raises `RtpError` for anything that is not a valid RTP packet (the caller
counts and drops it); `build_rtp` raises `RtpError` for out-of-range fields. The rewrite fast path
does no validation beyond masking the fields to their widths: the caller has parsed the packet.
"""

from __future__ import annotations

import struct
from typing import Final

import msgspec

from callbridge.media.errors import MediaError

__all__ = [
    "RTP_FIXED_HEADER",
    "RTP_HEADER_SIZE",
    "RTP_VERSION",
    "SEQUENCE_MODULUS",
    "RtpError",
    "RtpExtension",
    "RtpPacket",
    "build_rtp",
    "extend_sequence",
    "is_newer_sequence",
    "is_rtcp",
    "parse_rtp",
    "rewrite_rtp_header",
    "sequence_delta",
    "timestamp_delta",
    "with_rtp_header",
]

RTP_VERSION: Final = 2
RTP_HEADER_SIZE: Final = 12
"""Size of the fixed header, bytes."""
SEQUENCE_MODULUS: Final = 0x10000

# rtcp-mux demux (RFC 5761 §4): the second octet of an RTCP packet is its packet type, and RTCP
# types 192..223 are reserved so that they can never collide with an RTP PT (0..127) unless the
# RTP PT is 64..95 with the marker bit set, which RFC 5761 forbids. rtpbridge tests only 200..204
# (SR, RR, SDES, BYE, APP); 192..223 is a superset that also routes RTPFB/PSFB/XR (205..207) to
# the RTCP parser (which skips them) instead of treating them as audio.
_RTCP_TYPE_FIRST: Final = 192
_RTCP_TYPE_LAST: Final = 223

_FIXED_HEADER: Final = struct.Struct("!BBHII")
RTP_FIXED_HEADER: Final = _FIXED_HEADER
"""The 12-byte fixed header (first octet, second octet, sequence, timestamp, SSRC), for hot
paths that bind its `pack`/`unpack_from` once and do no validation beyond what they check."""
_REWRITTEN_FIELDS: Final = struct.Struct("!BHII")  # second octet, sequence, timestamp, ssrc
_EXTENSION_HEADER: Final = struct.Struct("!HH")  # profile, length in 32-bit words
_CSRC_LISTS: Final = tuple(struct.Struct(f"!{count}I") for count in range(16))
_unpack_fixed_header: Final = _FIXED_HEADER.unpack_from  # bound once: no lookup per packet
_pack_rewritten_fields: Final = _REWRITTEN_FIELDS.pack_into


class RtpError(MediaError, ValueError):
    """A datagram that is not a valid RTP packet, or fields that do not fit an RTP header."""


class RtpExtension(msgspec.Struct, frozen=True, gc=False):
    """The header extension (RFC 3550 §5.3.1): a 16-bit profile and data of 4-byte words."""

    profile: int
    data: bytes


class RtpPacket(msgspec.Struct, frozen=True, gc=False):
    """One parsed RTP packet.

    `payload` is a view into the datagram (no copy), with the padding already stripped; it keeps
    the datagram alive and reflects later changes when the datagram is a bytearray.
    `padding` is the number of padding bytes that were stripped (0 when the P bit was clear).
    """

    payload_type: int
    marker: bool
    sequence: int
    timestamp: int
    ssrc: int
    payload: memoryview
    csrcs: tuple[int, ...] = ()
    extension: RtpExtension | None = None
    padding: int = 0


def parse_rtp(data: bytes | bytearray | memoryview) -> RtpPacket:
    """Parse one RTP packet, skipping CSRCs and the extension and stripping padding.

    Raises RtpError when the datagram is shorter than its header, is not version 2, or its
    padding count is 0 or larger than what follows the header.
    """
    size = len(data)
    if size < RTP_HEADER_SIZE:
        raise RtpError(f"RTP packet too short: {size} bytes")
    first, second, sequence, timestamp, ssrc = _unpack_fixed_header(data)
    if first >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {first >> 6}, expected 2")
    offset = RTP_HEADER_SIZE
    csrcs: tuple[int, ...] = ()
    csrc_count = first & 0x0F
    if csrc_count:
        offset += 4 * csrc_count
        if size < offset:
            raise RtpError("RTP packet truncated in the CSRC list")
        csrcs = _CSRC_LISTS[csrc_count].unpack_from(data, RTP_HEADER_SIZE)
    extension = None
    if first & 0x10:
        if size < offset + 4:
            raise RtpError("RTP packet truncated in the header extension")
        profile, words = _EXTENSION_HEADER.unpack_from(data, offset)
        start = offset + 4
        offset = start + 4 * words
        if size < offset:
            raise RtpError("RTP header extension longer than the packet")
        extension = RtpExtension(profile, bytes(data[start:offset]))
    end = size
    padding = 0
    if first & 0x20:
        padding = data[-1]
        if padding == 0 or padding > size - offset:
            raise RtpError(f"bad RTP padding count {padding}")
        end -= padding
    return RtpPacket(
        second & 0x7F,
        second > 0x7F,
        sequence,
        timestamp,
        ssrc,
        memoryview(data)[offset:end],
        csrcs,
        extension,
        padding,
    )


def build_rtp(
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: bytes | bytearray | memoryview,
    *,
    marker: bool = False,
    csrcs: tuple[int, ...] = (),
    extension: RtpExtension | None = None,
    padding: int = 0,
) -> bytes:
    """Serialize an RTP packet; `padding` is the total padding in bytes including the count byte."""
    if not 0 <= payload_type <= 0x7F:
        raise RtpError(f"payload type {payload_type} outside 0..127")
    if not 0 <= sequence <= 0xFFFF:
        raise RtpError(f"sequence {sequence} outside 0..65535")
    if not 0 <= timestamp <= 0xFFFFFFFF or not 0 <= ssrc <= 0xFFFFFFFF:
        raise RtpError("timestamp and SSRC must fit 32 bits")
    if len(csrcs) > 15 or any(not 0 <= csrc <= 0xFFFFFFFF for csrc in csrcs):
        raise RtpError("at most 15 CSRCs of 32 bits")
    if not 0 <= padding <= 0xFF:
        raise RtpError(f"padding {padding} outside 0..255")
    first = 0x80 | len(csrcs)
    parts: list[bytes | bytearray | memoryview] = [b""]
    if csrcs:
        parts.append(_CSRC_LISTS[len(csrcs)].pack(*csrcs))
    if extension is not None:
        words, remainder = divmod(len(extension.data), 4)
        if remainder or words > 0xFFFF or not 0 <= extension.profile <= 0xFFFF:
            raise RtpError("extension data must be whole 32-bit words and the profile 16 bits")
        first |= 0x10
        parts.append(_EXTENSION_HEADER.pack(extension.profile, words))
        parts.append(extension.data)
    parts.append(payload)
    if padding:
        first |= 0x20
        parts.append(bytes(padding - 1) + bytes((padding,)))
    second = payload_type | 0x80 if marker else payload_type
    parts[0] = _FIXED_HEADER.pack(first, second, sequence, timestamp, ssrc)
    return b"".join(parts)


def rewrite_rtp_header(
    buffer: bytearray | memoryview,
    payload_type: int,
    marker: bool,
    sequence: int,
    timestamp: int,
    ssrc: int,
) -> None:
    """Overwrite PT, marker, sequence, timestamp and SSRC of an RTP packet in place.

    The passthrough fast path: one `pack_into`, no parse. Version, CSRCs, extension, padding and
    payload are left as they are. Values are masked to their field widths, so counters may be
    passed unwrapped. Raises struct.error only if the buffer is shorter than 12 bytes.
    """
    _pack_rewritten_fields(
        buffer,
        1,
        (payload_type & 0x7F) | 0x80 if marker else payload_type & 0x7F,
        sequence & 0xFFFF,
        timestamp & 0xFFFFFFFF,
        ssrc & 0xFFFFFFFF,
    )


def with_rtp_header(
    data: bytes | bytearray | memoryview,
    payload_type: int,
    marker: bool,
    sequence: int,
    timestamp: int,
    ssrc: int,
) -> bytearray:
    """Copy a received RTP packet and rewrite its header fields (see `rewrite_rtp_header`)."""
    buffer = bytearray(data)
    _pack_rewritten_fields(
        buffer,
        1,
        (payload_type & 0x7F) | 0x80 if marker else payload_type & 0x7F,
        sequence & 0xFFFF,
        timestamp & 0xFFFFFFFF,
        ssrc & 0xFFFFFFFF,
    )
    return buffer


def is_rtcp(data: bytes | bytearray | memoryview) -> bool:
    """rtcp-mux demux: True when the second octet is an RTCP packet type (192..223, RFC 5761).

    Only the demux decision; the RTCP parser validates the rest.
    """
    return len(data) >= 2 and _RTCP_TYPE_FIRST <= data[1] <= _RTCP_TYPE_LAST


def sequence_delta(reference: int, sequence: int) -> int:
    """Signed distance from `reference` to `sequence` modulo 2^16, in -32768..32767.

    Positive means `sequence` is newer: sequence_delta(65535, 0) == 1.
    """
    return ((sequence - reference + 0x8000) & 0xFFFF) - 0x8000


def is_newer_sequence(sequence: int, reference: int) -> bool:
    """True when `sequence` comes after `reference` in 16-bit wrap-around order."""
    return ((sequence - reference + 0x8000) & 0xFFFF) > 0x8000


def extend_sequence(sequence: int, reference: int) -> int:
    """The extended (unwrapped) sequence number of a 16-bit `sequence` nearest to `reference`.

    `reference` is an extended sequence number (e.g. the highest seen so far); the result may
    be below 0 when a packet from before the first one arrives.
    """
    return reference + (((sequence - reference + 0x8000) & 0xFFFF) - 0x8000)


def timestamp_delta(reference: int, timestamp: int) -> int:
    """Signed distance between two 32-bit RTP timestamps, in clock units."""
    return ((timestamp - reference + 0x80000000) & 0xFFFFFFFF) - 0x80000000
