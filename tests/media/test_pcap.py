"""The pcap writer: frame layout, checksums, addresses, and a real reader (tshark)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from callbridge.media.pcap import (
    FRAME_OVERHEAD,
    GLOBAL_HEADER,
    MAX_DATAGRAM,
    RTCP_PORT,
    RTP_PORT,
    leg_address,
    pcap_record,
)
from callbridge.media.rtp import build_rtp
from tests.engine.recording_support import TSHARK, tshark_rtp


def _ones_complement_sum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def test_global_header_is_classic_libpcap_ethernet() -> None:
    magic, major, minor, _, _, snaplen, linktype = struct.unpack("<IHHiIII", GLOBAL_HEADER)
    assert (magic, major, minor, linktype) == (0xA1B2C3D4, 2, 4, 1)
    assert snaplen >= MAX_DATAGRAM + 42


def test_record_layout_and_checksum() -> None:
    datagram = build_rtp(0, 7, 160, 0x1234, bytes([0xAA]) * 160)
    record = pcap_record(datagram, 1700000000.25, leg_address(0))
    assert len(record) == FRAME_OVERHEAD + len(datagram)
    seconds, microseconds, captured, original = struct.unpack_from("<IIII", record)
    assert (seconds, microseconds) == (1700000000, 250000)
    assert captured == original == len(record) - 16
    frame = record[16:]
    assert frame[:12] == bytes(12) and frame[12:14] == b"\x08\x00"
    ip = frame[14:34]
    assert ip[0] == 0x45 and ip[6] == 0x40 and ip[8] == 64 and ip[9] == 17
    assert _ones_complement_sum(ip) == 0xFFFF
    assert ip[12:16] == bytes((10, 1, 0, 1)) and ip[16:20] == bytes((10, 255, 0, 1))
    source_port, destination_port, length, checksum = struct.unpack_from("!HHHH", frame, 34)
    assert (source_port, destination_port, checksum) == (RTP_PORT, RTP_PORT, 0)
    assert length == 8 + len(datagram)
    assert frame[42:] == datagram
    assert frame[54:] == bytes([0xAA]) * 160


def test_rtcp_and_reverse_direction() -> None:
    record = pcap_record(b"\x81\xc8" + bytes(26), 0.0, leg_address(3), rtcp=True, reverse=True)
    frame = record[16:]
    assert frame[26:30] == bytes((10, 255, 0, 1)) and frame[30:34] == bytes((10, 1, 0, 4))
    assert struct.unpack_from("!HH", frame, 34) == (RTCP_PORT, RTCP_PORT)
    assert _ones_complement_sum(frame[14:34]) == 0xFFFF


def test_leg_addresses() -> None:
    assert leg_address(0) == bytes((10, 1, 0, 1))
    assert leg_address(253) == bytes((10, 1, 0, 254))
    assert leg_address(254) == bytes((10, 2, 0, 1))
    with pytest.raises(ValueError):
        leg_address(254 * 254)
    with pytest.raises(ValueError):
        leg_address(-1)


def test_oversized_datagram_is_refused() -> None:
    with pytest.raises(ValueError):
        pcap_record(bytes(MAX_DATAGRAM + 1), 0.0, leg_address(0))


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
def test_tshark_reads_one_rtp_stream(tmp_path: Path) -> None:
    path = tmp_path / "stream.pcap"
    records = [
        pcap_record(
            build_rtp(0, 100 + index, index * 160, 0xCAFE, bytes([0xAA]) * 160),
            1700000000 + index * 0.02,
            leg_address(0),
        )
        for index in range(50)
    ]
    path.write_bytes(GLOBAL_HEADER + b"".join(records))
    packets = tshark_rtp(path)
    assert [sequence for sequence, _, _ in packets] == list(range(100, 150))
    assert {ssrc for _, ssrc, _ in packets} == {"0x0000cafe"}
