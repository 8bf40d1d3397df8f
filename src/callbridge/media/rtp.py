"""RTP packets (RFC 3550 section 5): parse, build, rtcp-mux demux, sequence arithmetic.

Errors: `parse_rtp` raises `RtpError` for anything that is not a valid RTP packet (the caller
counts and drops it); `build_rtp` raises `RtpError` for out-of-range fields. The receive hot path,
`parse_rtp_datagram`, parses plain headers (version 2, no padding, extension or CSRCs: what
phones send) itself and leaves the rest to `parse_rtp`; senders pack plain headers with
`RTP_FIXED_HEADER`.
"""

from __future__ import annotations

import struct
from typing import Final

import msgspec

from callbridge.media.errors import MediaError

__all__ = [
    "RTP_FIXED_HEADER",
    "RTP_HEADER_SIZE",
    "RTP_MARKER",
    "RTP_PLAIN_FIRST_OCTET",
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
    "parse_rtp_datagram",
    "sequence_delta",
    "timestamp_delta",
]

RTP_VERSION: Final = 2
RTP_HEADER_SIZE: Final = 12
"""Size of the fixed header, bytes."""
SEQUENCE_MODULUS: Final = 0x10000

# rtcp-mux demux (RFC 5761 section 4): the second octet of an RTCP packet is its packet type,
# and RTCP types 192..223 are reserved so that they can never collide with an RTP PT (0..127)
# unless the RTP PT is 64..95 with the marker bit set, which RFC 5761 forbids. The whole range,
# not only SR..APP (200..204), so that feedback and XR packets (205..207) reach the RTCP parser
# (which skips them) instead of being taken for audio.
_RTCP_TYPE_FIRST: Final = 192
_RTCP_TYPE_LAST: Final = 223
RTP_PLAIN_FIRST_OCTET: Final = 0x80
"""The first octet of a plain header: version 2, no padding, no extension, no CSRCs."""
RTP_MARKER: Final = 0x80
"""The marker bit in the second octet, above the 7-bit payload type."""

RTP_FIXED_HEADER: Final = struct.Struct("!BBHII")
"""The 12-byte fixed header (first octet, second octet, sequence, timestamp, SSRC). A sender's
hot path binds its `pack` once and packs a plain header inline: a function call per packet
costs more than the packing."""
_EXTENSION_HEADER: Final = struct.Struct("!HH")  # profile, length in 32-bit words
_CSRC_LISTS: Final = tuple(struct.Struct(f"!{count}I") for count in range(16))
_unpack_fixed_header: Final = RTP_FIXED_HEADER.unpack_from  # bound once: no lookup per call
_pack_fixed_header: Final = RTP_FIXED_HEADER.pack


class RtpError(MediaError, ValueError):
    """A datagram that is not a valid RTP packet, or fields that do not fit an RTP header."""


class RtpExtension(msgspec.Struct, frozen=True, gc=False):
    """The header extension (RFC 3550 section 5.3.1): a 16-bit profile and data of 4-byte words."""

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


def parse_rtp_datagram(data: bytes | bytearray | memoryview) -> RtpPacket | None:
    """A datagram from an RTP port: its RTP packet, or None when it is RTCP (rtcp-mux demux).

    RTCP types are told apart whether or not rtcp-mux was negotiated: they cannot be valid RTP,
    and a peer may mux before our answer reached it. A plain header is parsed here, the rest by
    `parse_rtp`, which raises RtpError for what is neither RTP nor RTCP.
    """
    size = len(data)
    if size > 1 and _RTCP_TYPE_FIRST <= data[1] <= _RTCP_TYPE_LAST:
        return None
    if size >= RTP_HEADER_SIZE and data[0] == RTP_PLAIN_FIRST_OCTET:
        _, second, sequence, timestamp, ssrc = _unpack_fixed_header(data)
        return RtpPacket(
            second & 0x7F,
            second > 0x7F,
            sequence,
            timestamp,
            ssrc,
            memoryview(data)[RTP_HEADER_SIZE:],
        )
    return parse_rtp(data)


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
    second = payload_type | RTP_MARKER if marker else payload_type
    parts[0] = _pack_fixed_header(first, second, sequence, timestamp, ssrc)
    return b"".join(parts)


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
