"""RFC 4733 telephone-events: the 4-byte payload, DTMF detection, and the injection packet train.

Payload layout: event (8 bits) | E R volume (1+1+6 bits) | duration (16 bits, RTP clock units).
Events 0..15 are the digits `0-9 * # A-D`; 16 is flash (a valid event, never reported as a digit).
"""

from __future__ import annotations

import math
import struct
from collections import deque
from typing import Final

import msgspec

from callbridge.media.errors import MediaError

__all__ = [
    "DIGITS",
    "DTMF_TIMEOUT_SECONDS",
    "FLASH_EVENT",
    "DtmfDetector",
    "DtmfDigit",
    "DtmfPacket",
    "TelephoneEvent",
    "TelephoneEventError",
    "build_telephone_event",
    "digit_to_event",
    "dtmf_packets",
    "event_to_digit",
    "parse_telephone_event",
]

DIGITS: Final = "0123456789*#ABCD"
FLASH_EVENT: Final = 16
DTMF_TIMEOUT_SECONDS: Final = 3.0
"""A digit whose end packet never comes is reported after this much silence from it."""
END_REPEATS: Final = 3
MAX_DURATION_FIELD: Final = 0xFFFF

_PAYLOAD: Final = struct.Struct("!BBH")
_EVENT_OF_DIGIT: Final = {digit: event for event, digit in enumerate(DIGITS)}
_NOTHING: Final[tuple[DtmfDigit, ...]] = ()


class TelephoneEventError(MediaError, ValueError):
    """A payload shorter than 4 bytes, or fields/arguments out of range."""


class TelephoneEvent(msgspec.Struct, frozen=True, gc=False):
    """One event report; `duration` is in RTP clock units since the event's timestamp."""

    event: int
    end: bool
    volume: int
    duration: int
    reserved: bool = False


class DtmfDigit(msgspec.Struct, frozen=True, gc=False):
    """A detected digit, its length in ms, and the RTP timestamp at which it started."""

    digit: str
    duration_ms: int
    rtp_timestamp: int


class DtmfPacket(msgspec.Struct, frozen=True, gc=False):
    """One packet of an injected digit; send one every ptime at base timestamp + offset."""

    payload: bytes
    marker: bool
    end: bool
    timestamp_offset: int = 0


def parse_telephone_event(payload: bytes | bytearray | memoryview) -> TelephoneEvent:
    """Decode the first 4 bytes of an RFC 4733 payload; TelephoneEventError if shorter."""
    if len(payload) < 4:
        raise TelephoneEventError(f"telephone-event payload is {len(payload)} bytes, need 4")
    event, flags, duration = _PAYLOAD.unpack_from(payload)
    return TelephoneEvent(event, flags > 0x7F, flags & 0x3F, duration, bool(flags & 0x40))


def build_telephone_event(
    event: int, end: bool, volume: int, duration: int, reserved: bool = False
) -> bytes:
    """Encode one event report."""
    if not 0 <= event <= 0xFF or not 0 <= volume <= 63 or not 0 <= duration <= 0xFFFF:
        raise TelephoneEventError("event 0..255, volume 0..63, duration 0..65535")
    return _PAYLOAD.pack(event, (0x80 if end else 0) | (0x40 if reserved else 0) | volume, duration)


def digit_to_event(digit: str) -> int:
    """Event code of a DTMF digit; `a-d` are accepted as `A-D`."""
    event = _EVENT_OF_DIGIT.get(digit.upper()) if len(digit) == 1 else None
    if event is None:
        raise TelephoneEventError(f"digit must be exactly one character of 0-9*#A-D: {digit!r}")
    return event


def event_to_digit(event: int) -> str | None:
    """The digit of event 0..15; None for flash and every other event."""
    return DIGITS[event] if 0 <= event < len(DIGITS) else None


class DtmfDetector:
    """Turns one source's telephone-event packets into digits, each reported exactly once.

    A digit completes on its first end packet; the redundant end copies (same event and RTP
    timestamp) are suppressed. Start packets and the marker bit are not needed. A packet for a
    different event or timestamp first completes the open digit, except the next segment of a
    long event (same event, timestamp advanced by 65535, RFC 4733 section 2.5.1.3), which
    extends it.
    A digit with no packet for `timeout` seconds (its end lost) completes on `poll` or on the
    next `feed`. Times are seconds on any monotonic clock, passed in by the caller.
    """

    __slots__ = (
        "_completed",
        "_earlier_duration",
        "_last_seen",
        "_open_event",
        "_segment_duration",
        "_segment_timestamp",
        "_start_timestamp",
        "clock_rate",
        "malformed",
        "timeout",
    )

    def __init__(self, clock_rate: int, *, timeout: float = DTMF_TIMEOUT_SECONDS) -> None:
        if clock_rate <= 0:
            raise TelephoneEventError(f"clock rate must be positive: {clock_rate}")
        self.clock_rate = clock_rate
        """The source's audio RTP clock (8000 for PCMU/G.722, 48000 for Opus), Hz."""
        self.timeout = timeout
        self.malformed = 0
        """Payloads shorter than 4 bytes, ignored."""
        self._open_event = -1
        self._start_timestamp = 0
        self._segment_timestamp = 0
        self._segment_duration = 0
        self._earlier_duration = 0
        self._last_seen = 0.0
        self._completed: deque[tuple[int, int]] = deque(maxlen=8)

    def _close(self) -> tuple[DtmfDigit, ...]:
        event = self._open_event
        self._open_event = -1
        self._completed.append((event, self._segment_timestamp))
        digit = event_to_digit(event)
        if digit is None:
            return _NOTHING
        duration = self._earlier_duration + self._segment_duration
        return (DtmfDigit(digit, duration * 1000 // self.clock_rate, self._start_timestamp),)

    def feed(
        self,
        payload: bytes | bytearray | memoryview,
        rtp_timestamp: int,
        now: float,
        marker: bool = False,
    ) -> tuple[DtmfDigit, ...]:
        """Account one telephone-event packet; returns the digits it completes (0, 1 or 2).

        `marker` is accepted for symmetry with the RTP header but not relied on.
        """
        if len(payload) < 4:
            self.malformed += 1
            return _NOTHING
        event, flags, duration = _PAYLOAD.unpack_from(payload)
        done = _NOTHING
        if self._open_event >= 0 and (
            event != self._open_event or rtp_timestamp != self._segment_timestamp
        ):
            advance = (rtp_timestamp - self._segment_timestamp) & 0xFFFFFFFF
            if event == self._open_event and advance == MAX_DURATION_FIELD:
                self._completed.append((event, self._segment_timestamp))
                self._earlier_duration += advance
                self._segment_timestamp = rtp_timestamp
                self._segment_duration = 0
            else:
                done = self._close()
        if self._open_event >= 0 and now - self._last_seen >= self.timeout:
            done = self._close()
        if (event, rtp_timestamp) in self._completed:
            return done
        if self._open_event < 0:
            self._open_event = event
            self._start_timestamp = self._segment_timestamp = rtp_timestamp
            self._earlier_duration = 0
            self._segment_duration = duration
        elif duration > self._segment_duration:
            self._segment_duration = duration
        self._last_seen = now
        if flags > 0x7F:
            return done + self._close()
        return done

    def poll(self, now: float) -> tuple[DtmfDigit, ...]:
        """Complete the open digit if it has seen no packet for `timeout` seconds."""
        if self._open_event >= 0 and now - self._last_seen >= self.timeout:
            return self._close()
        return _NOTHING

    def reset(self) -> None:
        """Forget everything (new SSRC): an open digit is dropped, not reported."""
        self._open_event = -1
        self._completed.clear()


def dtmf_packets(
    digit: str, duration_ms: int, volume: int, clock_rate: int, ptime_ms: int = 20
) -> list[DtmfPacket]:
    """The packet train that injects one digit (RFC 4733 section 2.5.1).

    ceil(duration/ptime) packets on one RTP timestamp, marker on the first, the duration field
    growing by one ptime each, the last one with the E bit and sent END_REPEATS times in all.
    A digit longer than 65535 clock units (over 1.36 s at 48 kHz) is split into segments whose
    timestamps advance by the previous segment's duration (RFC 4733 section 2.5.1.3); only the first
    packet of the digit has the marker.
    """
    event = digit_to_event(digit)
    if not 1 <= duration_ms <= 10_000:
        raise TelephoneEventError(f"duration_ms must be 1..10000: {duration_ms}")
    if not 0 <= volume <= 63:
        raise TelephoneEventError(f"volume must be 0..63: {volume}")
    step = ptime_ms * clock_rate // 1000
    if not 1 <= step <= MAX_DURATION_FIELD:
        raise TelephoneEventError("ptime × clock rate must be 1..65535 clock units")
    count = math.ceil(duration_ms / ptime_ms)
    total = duration_ms * clock_rate // 1000
    packets: list[DtmfPacket] = []
    segment_start = 0
    for index in range(1, count + 1):
        elapsed = total if index == count else min(index * step, total)
        if elapsed - segment_start > MAX_DURATION_FIELD:
            closing = _PAYLOAD.pack(event, volume, MAX_DURATION_FIELD)
            packets.append(DtmfPacket(closing, not packets, False, segment_start))
            segment_start += MAX_DURATION_FIELD
            if index < count:
                continue
        last = index == count
        payload = _PAYLOAD.pack(event, (0x80 if last else 0) | volume, elapsed - segment_start)
        packets.append(DtmfPacket(payload, not packets, last, segment_start))
    repeat = msgspec.structs.replace(packets[-1], marker=False)
    packets.extend([repeat] * (END_REPEATS - 1))
    return packets
