"""STUN messages (RFC 8489) as ICE uses them: parse, check credentials, build responses.

Only what an ICE-lite agent needs: the header, attributes as raw values, MESSAGE-INTEGRITY
(HMAC-SHA1 with the short-term password), FINGERPRINT (CRC-32 xor 0x5354554E) and
XOR-MAPPED-ADDRESS. Sizes are bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from callbridge.media.errors import MediaError

__all__ = [
    "BINDING_REQUEST",
    "BINDING_SUCCESS",
    "FINGERPRINT",
    "ICE_CONTROLLED",
    "ICE_CONTROLLING",
    "MAGIC_COOKIE",
    "MESSAGE_INTEGRITY",
    "PRIORITY",
    "USERNAME",
    "USE_CANDIDATE",
    "XOR_MAPPED_ADDRESS",
    "StunError",
    "StunMessage",
    "build_stun",
    "looks_like_stun",
    "parse_stun",
    "xor_address",
]

MAGIC_COOKIE: Final = 0x2112A442
BINDING_REQUEST: Final = 0x0001
BINDING_SUCCESS: Final = 0x0101
USERNAME: Final = 0x0006
MESSAGE_INTEGRITY: Final = 0x0008
XOR_MAPPED_ADDRESS: Final = 0x0020
PRIORITY: Final = 0x0024
USE_CANDIDATE: Final = 0x0025
FINGERPRINT: Final = 0x8028
ICE_CONTROLLED: Final = 0x8029
ICE_CONTROLLING: Final = 0x802A

_HEADER: Final = struct.Struct("!HHI12s")
_ATTRIBUTE: Final = struct.Struct("!HH")
_FINGERPRINT_XOR: Final = 0x5354554E
_INTEGRITY_SIZE: Final = 20
_MAX_ATTRIBUTES: Final = 32


class StunError(MediaError, ValueError):
    """Not a well-formed STUN message."""


@dataclass(frozen=True, slots=True)
class StunMessage:
    """One parsed message; `attributes` keeps the first value of each type.

    `integrity_at` is the offset of the MESSAGE-INTEGRITY attribute (None without one), which
    `check_integrity` needs to recompute the HMAC over the bytes before it.
    """

    message_type: int
    transaction_id: bytes
    attributes: dict[int, bytes]
    integrity_at: int | None

    def check_integrity(self, data: bytes, key: bytes) -> bool:
        """True when MESSAGE-INTEGRITY matches `key` (the short-term password)."""
        offset = self.integrity_at
        if offset is None:
            return False
        expected = _integrity(data[:offset], key, offset + 4 + _INTEGRITY_SIZE)
        return hmac.compare_digest(expected, self.attributes[MESSAGE_INTEGRITY])


def looks_like_stun(data: bytes) -> bool:
    """The RFC 7983 demux test: first byte 0-3, a full header, the magic cookie."""
    return len(data) >= 20 and data[0] < 4 and data[4:8] == b"\x21\x12\xa4\x42"


def parse_stun(data: bytes) -> StunMessage:
    """Parse one datagram; StunError when the header, lengths or FINGERPRINT are wrong."""
    if len(data) < _HEADER.size:
        raise StunError("shorter than a STUN header")
    message_type, length, cookie, transaction_id = _HEADER.unpack_from(data)
    if message_type & 0xC000 or cookie != MAGIC_COOKIE or length % 4:
        raise StunError("not a STUN header")
    if _HEADER.size + length != len(data):
        raise StunError("STUN length does not match the datagram")
    attributes: dict[int, bytes] = {}
    integrity_at: int | None = None
    offset = _HEADER.size
    while offset < len(data):
        if len(attributes) >= _MAX_ATTRIBUTES or offset + 4 > len(data):
            raise StunError("too many or truncated STUN attributes")
        kind, size = _ATTRIBUTE.unpack_from(data, offset)
        start = offset + 4
        end = start + size
        if end > len(data):
            raise StunError("STUN attribute runs past the end")
        value = data[start:end]
        if kind == FINGERPRINT:
            if size != 4 or end != len(data):
                raise StunError("FINGERPRINT is not the last 4-byte attribute")
            if struct.unpack("!I", value)[0] != _fingerprint(data[:offset], end):
                raise StunError("wrong STUN FINGERPRINT")
        elif integrity_at is None:
            if kind == MESSAGE_INTEGRITY:
                if size != _INTEGRITY_SIZE:
                    raise StunError("MESSAGE-INTEGRITY is not 20 bytes")
                integrity_at = offset
            attributes.setdefault(kind, value)
        offset = end + (-size % 4)
    return StunMessage(message_type, transaction_id, attributes, integrity_at)


def build_stun(
    message_type: int,
    transaction_id: bytes,
    attributes: Iterable[tuple[int, bytes]],
    *,
    integrity_key: bytes | None = None,
) -> bytes:
    """A message with `attributes` (padded), then MESSAGE-INTEGRITY when a key is given, then
    FINGERPRINT."""
    if len(transaction_id) != 12:
        raise StunError("a transaction id is 12 bytes")
    body = bytearray()
    for kind, value in attributes:
        body += _ATTRIBUTE.pack(kind, len(value)) + value + b"\0" * (-len(value) % 4)
    header_at = _HEADER.size
    if integrity_key is not None:
        head = _HEADER.pack(message_type, 0, MAGIC_COOKIE, transaction_id) + body
        length = len(body) + 4 + _INTEGRITY_SIZE
        body += _ATTRIBUTE.pack(MESSAGE_INTEGRITY, _INTEGRITY_SIZE)
        body += _integrity(bytes(head), integrity_key, header_at + length)
    message = bytearray(_HEADER.pack(message_type, len(body) + 8, MAGIC_COOKIE, transaction_id))
    message += body
    check = _fingerprint(bytes(message), len(message) + 8)
    message += _ATTRIBUTE.pack(FINGERPRINT, 4) + struct.pack("!I", check)
    return bytes(message)


def xor_address(host: str, port: int, transaction_id: bytes) -> bytes:
    """The XOR-MAPPED-ADDRESS value for (host, port): family, xored port and address."""
    address = ipaddress.ip_address(host)
    cookie = struct.pack("!I", MAGIC_COOKIE)
    mask = cookie if address.version == 4 else cookie + transaction_id
    raw = bytes(a ^ b for a, b in zip(address.packed, mask, strict=True))
    family = 1 if address.version == 4 else 2
    return struct.pack("!BBH", 0, family, port ^ (MAGIC_COOKIE >> 16)) + raw


def _with_length(prefix: bytes, total: int) -> bytes:
    """`prefix` with the header's length field set as if the message were `total` bytes."""
    return prefix[:2] + struct.pack("!H", total - _HEADER.size) + prefix[4:]


def _integrity(prefix: bytes, key: bytes, total: int) -> bytes:
    return hmac.new(key, _with_length(prefix, total), hashlib.sha1).digest()


def _fingerprint(prefix: bytes, total: int) -> int:
    return (zlib.crc32(_with_length(prefix, total)) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF
