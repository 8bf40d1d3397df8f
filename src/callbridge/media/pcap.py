"""Classic libpcap files of RTP and RTCP datagrams, each wrapped in synthetic Ethernet/IPv4/UDP.

A recording carries no real addresses: leg `index` of a session is written as
`10.{index // 254 + 1}.0.{index % 254 + 1}` sending to `RECEIVER` (RTP to port 10000, RTCP to
10001), so `tshark -d udp.port==10000,rtp` decodes every leg as one RTP stream. Frames are
Ethernet with zero MAC addresses, IPv4 (IHL 5, DF, TTL 64, header checksum set), UDP with
checksum 0, then the datagram: the RTP payload starts at byte 54 of a frame's data. The file is
append-only (microsecond timestamps, little-endian magic `a1b2c3d4`), so it is readable up to
the last complete frame whenever writing stops.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = [
    "FRAME_OVERHEAD",
    "GLOBAL_HEADER",
    "MAX_DATAGRAM",
    "RECEIVER",
    "RTCP_PORT",
    "RTP_PORT",
    "leg_address",
    "pcap_record",
]

RTP_PORT: Final = 10000
RTCP_PORT: Final = 10001
RECEIVER: Final = "10.255.0.1"
"""The synthetic address every recorded datagram is sent to."""
_LINKTYPE_ETHERNET: Final = 1
MAX_DATAGRAM: Final = 65507
"""The largest UDP payload an IPv4 frame can carry, bytes."""
GLOBAL_HEADER: Final = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, MAX_DATAGRAM + 42, 1)
"""The 24-byte file header: version 2.4, snap length, link type Ethernet."""
FRAME_OVERHEAD: Final = 16 + 14 + 20 + 8
"""Bytes a record adds to its datagram: record header, Ethernet, IPv4, UDP."""

_RECORD_HEADER: Final = struct.Struct("<IIII")
_ETHERNET: Final = bytes(12) + b"\x08\x00"
_IPV4: Final = struct.Struct("!BBHHHBBH4s4s")
_UDP: Final = struct.Struct("!HHHH")
_IPV4_FIXED_SUM: Final = 0x4500 + 0x4000 + (64 << 8 | 17)
"""The one's-complement sum of the IPv4 header words that never change (version/IHL, DF flag,
TTL/protocol); addresses and the total length are added per frame."""


def _address_bytes(address: str) -> bytes:
    return bytes(int(part) for part in address.split("."))


_RECEIVER_BYTES: Final = _address_bytes(RECEIVER)


def leg_address(index: int) -> bytes:
    """The synthetic IPv4 source address of leg `index` (0-based), as 4 bytes."""
    if not 0 <= index < 254 * 254:
        raise ValueError(f"leg index {index} outside 0..{254 * 254 - 1}")
    return bytes((10, index // 254 + 1, 0, index % 254 + 1))


def _checksum(total_length: int, source: bytes, destination: bytes) -> int:
    total = _IPV4_FIXED_SUM + total_length
    for address in (source, destination):
        total += (address[0] << 8 | address[1]) + (address[2] << 8 | address[3])
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def pcap_record(
    datagram: bytes, unix_time: float, source: bytes, *, rtcp: bool = False, reverse: bool = False
) -> bytes:
    """One pcap record: `datagram` from leg address `source` (see `leg_address`) to `RECEIVER`,
    or the other way with `reverse`, stamped `unix_time` (seconds). RTCP uses port 10001.

    Raises ValueError for a datagram larger than `MAX_DATAGRAM`.
    """
    size = len(datagram)
    if size > MAX_DATAGRAM:
        raise ValueError(f"datagram of {size} bytes does not fit one IPv4 frame")
    port = RTCP_PORT if rtcp else RTP_PORT
    sender, receiver = (_RECEIVER_BYTES, source) if reverse else (source, _RECEIVER_BYTES)
    ip_length = 28 + size
    seconds = int(unix_time)
    microseconds = int((unix_time - seconds) * 1_000_000)
    frame_length = 14 + ip_length
    return b"".join(
        (
            _RECORD_HEADER.pack(seconds, microseconds, frame_length, frame_length),
            _ETHERNET,
            _IPV4.pack(
                0x45,
                0,
                ip_length,
                0,
                0x4000,
                64,
                17,
                _checksum(ip_length, sender, receiver),
                sender,
                receiver,
            ),
            _UDP.pack(port, port, 8 + size, 0),
            datagram,
        )
    )
