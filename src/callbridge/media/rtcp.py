"""RTCP packets (RFC 3550 section 6): parse compound packets; build SR, RR, SDES CNAME and BYE.

`parse_rtcp` raises `RtcpError` for a compound packet that is malformed anywhere (the caller
counts and drops it). APP and the feedback/XR types are skipped. The first packet is not required
to be an SR or RR (reduced-size RTCP, RFC 5506, is accepted). Input must already be decrypted
(the SRTCP trailer removed).

`round_trip_time` derives the RTT from a peer's report block about our stream; it reads no
clock: every time is passed in, in seconds. The per-source reception figures that fill our
report blocks are in `reception`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Final

import msgspec

from callbridge.media.errors import MediaError

__all__ = [
    "NTP_UNIX_OFFSET",
    "RTCP_APP",
    "RTCP_BYE",
    "RTCP_RR",
    "RTCP_SDES",
    "RTCP_SR",
    "Goodbye",
    "ReceiverReport",
    "ReportBlock",
    "RtcpError",
    "RtcpPacket",
    "SenderReport",
    "SourceDescription",
    "build_goodbye",
    "build_receiver_report",
    "build_sender_report",
    "build_source_description",
    "compact_ntp",
    "ntp_timestamp",
    "parse_rtcp",
    "round_trip_time",
]

RTCP_SR: Final = 200
RTCP_RR: Final = 201
RTCP_SDES: Final = 202
RTCP_BYE: Final = 203
RTCP_APP: Final = 204

SDES_CNAME: Final = 1
NTP_UNIX_OFFSET: Final = 2_208_988_800
"""Seconds from the NTP epoch (1900) to the Unix epoch (1970)."""

_HEADER: Final = struct.Struct("!BBH")
_SSRC: Final = struct.Struct("!I")
_SENDER_INFO: Final = struct.Struct("!IQIII")  # ssrc, ntp, rtp timestamp, packets, octets
_REPORT_BLOCK: Final = struct.Struct("!IIIIII")
_REPORT_BLOCK_SIZE: Final = 24


class RtcpError(MediaError, ValueError):
    """A malformed RTCP compound packet, or fields that do not fit an RTCP packet."""


class ReportBlock(msgspec.Struct, frozen=True, gc=False):
    """One reception report (RFC 3550 section 6.4.1) about the source `ssrc`.

    `fraction_lost` is 0..255 (lost/expected × 256 over the last interval); `cumulative_lost` is
    signed 24-bit (duplicates can make it negative); `jitter` is in RTP timestamp units;
    `last_sr` is the middle 32 bits of the last SR's NTP timestamp and `delay_since_last_sr`
    the time since it arrived, in 1/65536 s (both 0 when no SR was received).
    """

    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    extended_highest_sequence: int
    jitter: int
    last_sr: int
    delay_since_last_sr: int


class SenderReport(msgspec.Struct, frozen=True, gc=False):
    """SR: sender info (`ntp_timestamp` is the full 64-bit NTP value) and report blocks."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()


class ReceiverReport(msgspec.Struct, frozen=True, gc=False):
    """RR: report blocks from a participant that is not sending."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()


class SourceDescription(msgspec.Struct, frozen=True, gc=False):
    """SDES: the CNAME of each chunk's source (None when a chunk carries no CNAME)."""

    chunks: tuple[tuple[int, str | None], ...]


class Goodbye(msgspec.Struct, frozen=True, gc=False):
    """BYE: the sources that leave and the optional reason text."""

    ssrcs: tuple[int, ...]
    reason: str | None = None


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Goodbye


def parse_rtcp(data: bytes | bytearray | memoryview) -> list[RtcpPacket]:
    """Parse a compound RTCP packet into its SR, RR, SDES and BYE parts, in order.

    Raises RtcpError when the compound is empty, a packet is not version 2, a length field or
    padding count points outside the packet, or a body is too short for its counts.
    """
    view = memoryview(data)
    size = len(view)
    if size < 4:
        raise RtcpError(f"RTCP packet too short: {size} bytes")
    packets: list[RtcpPacket] = []
    offset = 0
    while offset < size:
        if size - offset < 4:
            raise RtcpError("trailing bytes after the last RTCP packet")
        first, packet_type, words = _HEADER.unpack_from(view, offset)
        if first >> 6 != 2:
            raise RtcpError(f"RTCP version {first >> 6}, expected 2")
        end = offset + 4 * (words + 1)
        if end > size:
            raise RtcpError("RTCP length field beyond the end of the datagram")
        body_end = end
        if first & 0x20:
            padding = view[end - 1]
            if padding == 0 or padding > end - offset - 4:
                raise RtcpError(f"bad RTCP padding count {padding}")
            body_end -= padding
        count = first & 0x1F
        body = view[offset + 4 : body_end]
        if packet_type == RTCP_SR:
            packets.append(_parse_sender_report(body, count))
        elif packet_type == RTCP_RR:
            packets.append(_parse_receiver_report(body, count))
        elif packet_type == RTCP_SDES:
            packets.append(_parse_source_description(body, count))
        elif packet_type == RTCP_BYE:
            packets.append(_parse_goodbye(body, count))
        offset = end
    return packets


def _parse_report_blocks(body: memoryview, offset: int, count: int) -> tuple[ReportBlock, ...]:
    if len(body) < offset + count * _REPORT_BLOCK_SIZE:
        raise RtcpError(f"RTCP report too short for {count} report blocks")
    blocks = []
    for index in range(count):
        ssrc, loss, highest, jitter, last_sr, delay = _REPORT_BLOCK.unpack_from(
            body, offset + index * _REPORT_BLOCK_SIZE
        )
        cumulative = loss & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 0x1000000
        blocks.append(ReportBlock(ssrc, loss >> 24, cumulative, highest, jitter, last_sr, delay))
    return tuple(blocks)


def _parse_sender_report(body: memoryview, count: int) -> SenderReport:
    if len(body) < _SENDER_INFO.size:
        raise RtcpError("RTCP SR too short for the sender info")
    ssrc, ntp, rtp_timestamp, packets, octets = _SENDER_INFO.unpack_from(body)
    reports = _parse_report_blocks(body, _SENDER_INFO.size, count)
    return SenderReport(ssrc, ntp, rtp_timestamp, packets, octets, reports)


def _parse_receiver_report(body: memoryview, count: int) -> ReceiverReport:
    if len(body) < 4:
        raise RtcpError("RTCP RR too short for the SSRC")
    (ssrc,) = _SSRC.unpack_from(body)
    return ReceiverReport(ssrc, _parse_report_blocks(body, 4, count))


def _parse_source_description(body: memoryview, count: int) -> SourceDescription:
    chunks: list[tuple[int, str | None]] = []
    offset = 0
    size = len(body)
    for _ in range(count):
        if size - offset < 4:
            raise RtcpError("RTCP SDES truncated before a chunk's SSRC")
        (ssrc,) = _SSRC.unpack_from(body, offset)
        offset += 4
        cname: str | None = None
        while offset < size:
            item_type = body[offset]
            if item_type == 0:
                offset += 1
                break
            if size - offset < 2 or size - offset - 2 < body[offset + 1]:
                raise RtcpError("RTCP SDES item longer than the packet")
            length = body[offset + 1]
            if item_type == SDES_CNAME:
                cname = bytes(body[offset + 2 : offset + 2 + length]).decode("utf-8", "replace")
            offset += 2 + length
        offset = (offset + 3) & ~3
        chunks.append((ssrc, cname))
    return SourceDescription(tuple(chunks))


def _parse_goodbye(body: memoryview, count: int) -> Goodbye:
    size = len(body)
    if size < 4 * count:
        raise RtcpError(f"RTCP BYE too short for {count} SSRCs")
    ssrcs = struct.unpack_from(f"!{count}I", body)
    reason = None
    offset = 4 * count
    if offset < size:
        length = body[offset]
        if length > size - offset - 1:
            raise RtcpError("RTCP BYE reason longer than the packet")
        reason = bytes(body[offset + 1 : offset + 1 + length]).decode("utf-8", "replace")
    return Goodbye(ssrcs, reason)


def _header(packet_type: int, count: int, body_size: int) -> bytes:
    return _HEADER.pack(0x80 | count, packet_type, body_size // 4)


def _pack_report_blocks(reports: Sequence[ReportBlock]) -> bytes:
    if len(reports) > 31:
        raise RtcpError("at most 31 report blocks per packet")
    parts = []
    for block in reports:
        if not 0 <= block.fraction_lost <= 0xFF:
            raise RtcpError(f"fraction lost {block.fraction_lost} outside 0..255")
        if not -0x800000 <= block.cumulative_lost <= 0x7FFFFF:
            raise RtcpError(f"cumulative lost {block.cumulative_lost} outside 24 bits")
        try:
            parts.append(
                _REPORT_BLOCK.pack(
                    block.ssrc,
                    block.fraction_lost << 24 | block.cumulative_lost & 0xFFFFFF,
                    block.extended_highest_sequence,
                    block.jitter,
                    block.last_sr,
                    block.delay_since_last_sr,
                )
            )
        except struct.error as error:
            raise RtcpError(f"report block field out of range: {error}") from None
    return b"".join(parts)


def build_sender_report(
    ssrc: int,
    ntp_timestamp: int,
    rtp_timestamp: int,
    packet_count: int,
    octet_count: int,
    reports: Sequence[ReportBlock] = (),
    *,
    cname: str | None = None,
) -> bytes:
    """An SR (counts are modulo 2^32), followed by an SDES CNAME chunk when `cname` is given."""
    try:
        info = _SENDER_INFO.pack(
            ssrc,
            ntp_timestamp,
            rtp_timestamp & 0xFFFFFFFF,
            packet_count & 0xFFFFFFFF,
            octet_count & 0xFFFFFFFF,
        )
    except struct.error as error:
        raise RtcpError(f"sender report field out of range: {error}") from None
    body = info + _pack_report_blocks(reports)
    packet = _header(RTCP_SR, len(reports), len(body)) + body
    return packet if cname is None else packet + build_source_description(ssrc, cname)


def build_receiver_report(
    ssrc: int, reports: Sequence[ReportBlock] = (), *, cname: str | None = None
) -> bytes:
    """An RR, followed by an SDES CNAME chunk when `cname` is given."""
    if not 0 <= ssrc <= 0xFFFFFFFF:
        raise RtcpError(f"SSRC {ssrc} outside 32 bits")
    body = _SSRC.pack(ssrc) + _pack_report_blocks(reports)
    packet = _header(RTCP_RR, len(reports), len(body)) + body
    return packet if cname is None else packet + build_source_description(ssrc, cname)


def build_source_description(ssrc: int, cname: str) -> bytes:
    """An SDES packet with one chunk carrying the CNAME (at most 255 UTF-8 bytes)."""
    text = cname.encode()
    if len(text) > 0xFF:
        raise RtcpError("CNAME longer than 255 bytes")
    if not 0 <= ssrc <= 0xFFFFFFFF:
        raise RtcpError(f"SSRC {ssrc} outside 32 bits")
    chunk = _SSRC.pack(ssrc) + bytes((SDES_CNAME, len(text))) + text
    chunk += bytes(4 - len(chunk) % 4)  # the null item, then zeros to a 32-bit boundary
    return _header(RTCP_SDES, 1, len(chunk)) + chunk


def build_goodbye(ssrcs: Sequence[int], reason: str | None = None) -> bytes:
    """A BYE for up to 31 sources with an optional reason (at most 255 UTF-8 bytes)."""
    if len(ssrcs) > 31 or any(not 0 <= ssrc <= 0xFFFFFFFF for ssrc in ssrcs):
        raise RtcpError("a BYE lists at most 31 SSRCs of 32 bits")
    body = struct.pack(f"!{len(ssrcs)}I", *ssrcs)
    if reason is not None:
        text = reason.encode()
        if len(text) > 0xFF:
            raise RtcpError("BYE reason longer than 255 bytes")
        body += bytes((len(text),)) + text
        body += bytes(-len(body) % 4)
    return _header(RTCP_BYE, len(ssrcs), len(body)) + body


def ntp_timestamp(unix_seconds: float) -> int:
    """The 64-bit NTP timestamp (32.32 fixed point since 1900) of a Unix time in seconds."""
    whole = math.floor(unix_seconds)
    fraction = int((unix_seconds - whole) * 0x1_0000_0000)
    return ((whole + NTP_UNIX_OFFSET) << 32 | fraction) & 0xFFFF_FFFF_FFFF_FFFF


def compact_ntp(ntp: int) -> int:
    """The middle 32 bits of a 64-bit NTP timestamp (16.16 seconds): the LSR field's format."""
    return (ntp >> 16) & 0xFFFFFFFF


def round_trip_time(block: ReportBlock, arrival_unix: float) -> float | None:
    """RTT in seconds from a peer's report block about our stream (RFC 3550 section 6.4.1).

    `arrival_unix` is when the block arrived, on the clock that stamped our SRs. None when the
    peer has not seen an SR yet (LSR 0) or the result is outside 0..10 s (clock trouble).
    """
    if block.last_sr == 0:
        return None
    arrival = compact_ntp(ntp_timestamp(arrival_unix))
    delay = (arrival - block.last_sr - block.delay_since_last_sr) & 0xFFFFFFFF
    seconds = delay / 65536.0
    return seconds if seconds <= _MAX_ROUND_TRIP_SECONDS else None


_MAX_ROUND_TRIP_SECONDS: Final = 10.0
