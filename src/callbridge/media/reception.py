"""Reception statistics of one remote RTP source (RFC 3550 A.1, A.3, A.8): what fills our RTCP
report blocks and the stats event. No clock is read: every time is passed in, in seconds.
"""

from __future__ import annotations

from typing import Final

from callbridge.media.rtcp import ReportBlock, RtcpError, SenderReport, compact_ntp

__all__ = ["ReceptionState", "ReceptionStats"]

ReceptionState = tuple[int, int, int, float, float | None, int]
"""What accounting a valid source's in-order packets changes: (max_sequence, cycles, received,
jitter, previous_arrival, previous_timestamp); see `ReceptionStats.export_state`."""

_MAX_DROPOUT: Final = 3000
_MAX_MISORDER: Final = 100


class ReceptionStats:
    """What we know about one remote RTP source, for our report blocks and the stats event.

    Sequence tracking and loss follow RFC 3550 A.1/A.3: a source is counted only after
    `min_sequential` in-order packets (probation); a jump of more than 3000 ahead or 100 behind
    is ignored unless the next packet confirms it, which restarts the counts (the sender reset).
    Jitter follows A.8 in RTP timestamp units. Arrival times are seconds on a monotonic clock;
    SR arrival and report times may be on any clock as long as they use the same one.
    """

    __slots__ = (
        "_bad_sequence",
        "_base_sequence",
        "_cycles",
        "_expected_prior",
        "_last_sr",
        "_last_sr_arrival",
        "_max_sequence",
        "_previous_arrival",
        "_previous_timestamp",
        "_probation",
        "_received_prior",
        "clock_rate",
        "jitter",
        "min_sequential",
        "received",
        "ssrc",
    )

    def __init__(self, ssrc: int, clock_rate: int, *, min_sequential: int = 2) -> None:
        if clock_rate <= 0 or min_sequential < 1:
            raise RtcpError("clock_rate and min_sequential must be positive")
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.min_sequential = min_sequential
        self.received = 0
        """Packets counted since the source became valid (includes duplicates, as in A.3)."""
        self.jitter = 0.0
        """Interarrival jitter estimate, RTP timestamp units."""
        self._probation = min_sequential
        self._max_sequence = -1
        self._base_sequence = 0
        self._bad_sequence = -1
        self._cycles = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._previous_arrival: float | None = None
        self._previous_timestamp = 0
        self._last_sr = 0
        self._last_sr_arrival = 0.0

    @property
    def valid(self) -> bool:
        """True once the source has passed probation."""
        return self._probation == 0

    @property
    def extended_highest_sequence(self) -> int:
        """Highest sequence number received, with the wrap count in the upper bits."""
        return self._cycles + self._max_sequence if self.valid else 0

    @property
    def expected(self) -> int:
        """Packets expected since the source became valid."""
        return self._cycles + self._max_sequence - self._base_sequence + 1 if self.valid else 0

    @property
    def cumulative_lost(self) -> int:
        """Expected minus received; negative when duplicates outnumber losses (unclamped)."""
        return self.expected - self.received

    @property
    def jitter_ms(self) -> float:
        """Interarrival jitter in milliseconds."""
        return self.jitter * 1000.0 / self.clock_rate

    def _restart(self, sequence: int) -> None:
        self._base_sequence = sequence
        self._max_sequence = sequence
        self._bad_sequence = -1
        self._cycles = 0
        self.received = 0
        self._received_prior = 0
        self._expected_prior = 0
        self._previous_arrival = None

    def on_rtp(
        self, sequence: int, timestamp: int, arrival: float, update_jitter: bool = True
    ) -> bool:
        """Account one RTP packet; False when it is not counted (probation, unconfirmed jump).

        Pass update_jitter=False for packets whose timestamp does not track the audio clock
        (RFC 4733 events keep one timestamp for a whole digit).
        """
        if self._probation:
            if sequence == (self._max_sequence + 1) & 0xFFFF:
                self._probation -= 1
                self._max_sequence = sequence
                if self._probation:
                    return False
                self._restart(sequence)
            else:
                self._probation = self.min_sequential - 1
                self._max_sequence = sequence
                if self._probation:
                    return False
                self._restart(sequence)
        else:
            step = (sequence - self._max_sequence) & 0xFFFF
            if step < _MAX_DROPOUT:
                if sequence < self._max_sequence:
                    self._cycles += 0x10000
                self._max_sequence = sequence
            elif step <= 0x10000 - _MAX_MISORDER:
                if sequence != self._bad_sequence:
                    self._bad_sequence = (sequence + 1) & 0xFFFF
                    return False
                self._restart(sequence)
        self.received += 1
        if update_jitter:  # A.8, inline: this runs for every packet
            previous = self._previous_arrival
            self._previous_arrival = arrival
            if previous is not None:
                elapsed = (arrival - previous) * self.clock_rate
                advanced = ((timestamp - self._previous_timestamp + 0x80000000) & 0xFFFFFFFF) - (
                    0x80000000
                )
                self.jitter += (abs(elapsed - advanced) - self.jitter) / 16.0
            self._previous_timestamp = timestamp
        return True

    def export_state(self) -> ReceptionState | None:
        """The state another accountant (the native forwarding plane) continues from; None
        during probation. It must leave sequence jumps to `on_rtp` (they restart the counts)."""
        if self._probation:
            return None
        return (
            self._max_sequence,
            self._cycles,
            self.received,
            self.jitter,
            self._previous_arrival,
            self._previous_timestamp,
        )

    def import_state(self, state: ReceptionState) -> None:
        """Continue from what `export_state` gave out, as the other accountant left it."""
        (
            self._max_sequence,
            self._cycles,
            self.received,
            self.jitter,
            self._previous_arrival,
            self._previous_timestamp,
        ) = state

    def on_sender_report(self, report: SenderReport, arrival: float) -> None:
        """Remember the peer's SR so our next report block carries LSR and DLSR."""
        self._last_sr = compact_ntp(report.ntp_timestamp)
        self._last_sr_arrival = arrival

    def report_block(self, now: float) -> ReportBlock:
        """Our report block about this source; starts a new fraction-lost interval (A.3)."""
        expected = self.expected
        expected_interval = expected - self._expected_prior
        received_interval = self.received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self.received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min((lost_interval << 8) // expected_interval, 0xFF)
        cumulative = min(max(expected - self.received, -0x800000), 0x7FFFFF)
        delay = 0
        if self._last_sr:
            delay = min(max(int((now - self._last_sr_arrival) * 65536), 0), 0xFFFFFFFF)
        return ReportBlock(
            self.ssrc,
            fraction,
            cumulative,
            self.extended_highest_sequence & 0xFFFFFFFF,
            min(int(self.jitter), 0xFFFFFFFF),
            self._last_sr,
            delay,
        )
