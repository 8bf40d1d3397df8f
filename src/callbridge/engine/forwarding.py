"""The native forwarding plane: passthrough RTP that is received and sent without Python.

Python's floor per packet (an event-loop callback and a system call each way) is above what a
relay should spend in all, so the RTP sockets of plain RTP endpoints are read by the `_forward`
extension instead of asyncio: one epoll set per event loop, `recvmmsg` batches, the header
rewrite (payload type, SSRC, sequence number, timestamp offset) and `sendmmsg`, with the GIL
released around the system calls. The engine programs it with rules, per socket: a *sender*
rule (this endpoint sends passthrough packets; its sequence number and counters live in the
plane) and a *receiver* rule (packets from the latched source with the known SSRC and a mapped
payload type are accounted as RFC 3550 says and rewritten to the destinations). Everything
else (RTCP, RFC 4733 events, other sources, sequence jumps, endpoints that decode, record or use
SRTP) is handed up in arrival order to the endpoint's ordinary Python path.

Whenever Python needs an endpoint's state (a packet handed up, a send of its own, an RTCP
report, stats, a routing change, the housekeeping second) the transport takes its rules back
(`NativeLink.release`), so the Python state is exact again, and asks to be armed again
on the next loop iteration (`rearm_soon`). Without the extension, or with `CALLBRIDGE_NATIVE=0`
or `native_forwarding = false`, every packet takes the Python path; both paths run the same tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final

from callbridge.media.native import load_native
from callbridge.media.rtp_stream import RtpStream

__all__ = ["NATIVE_FORWARDING", "ForwardingPlane", "NativeLink", "NativeRelease", "Receiver"]

logger = logging.getLogger(__name__)

Receiver = Callable[[bytes, tuple[Any, ...]], None]
"""Takes a datagram the plane hands up and its source address, as asyncio would give them."""


_native: Any = load_native("callbridge.engine._forward")
NATIVE_FORWARDING: Final = _native is not None
"""True when the extension is built and not disabled by ``CALLBRIDGE_NATIVE=0``."""


class ForwardingPlane:
    """The plane of the running event loop; `native` is the extension's `Plane` (its rules)."""

    def __init__(self) -> None:
        if _native is None:
            raise RuntimeError("the native forwarding plane is not built or is disabled")
        self._loop = asyncio.get_running_loop()
        self._receivers: dict[int, Receiver] = {}
        self._due: dict[int, Callable[[bool], None]] = {}
        self.native: Final[Any] = _native.Plane(self._hand_up)
        self._loop.add_reader(self.native.fileno(), self.native.run)
        self._closed = False

    def add(self, descriptor: int, receiver: Receiver) -> None:
        """Read this UDP socket from now on; `receiver` gets what is not forwarded natively."""
        self.native.add(descriptor)
        self._receivers[descriptor] = receiver

    def remove(self, descriptor: int) -> None:
        """Forget the socket and its rules (before it is closed)."""
        self.native.remove(descriptor)
        self._receivers.pop(descriptor, None)
        self._due.pop(descriptor, None)

    def rearm_soon(self, descriptor: int, rearm: Callable[[bool], None]) -> None:
        """Call `rearm(False)` (the sender rule) on the next loop iteration, once however often
        it was asked for, then `rearm(True)` (the receiver rule): a receiver rule needs its
        destinations' sender rules armed first."""
        if self._closed:
            return
        if not self._due:
            self._loop.call_soon(self._rearm_due)
        self._due[descriptor] = rearm

    def _rearm_due(self) -> None:
        due, self._due = self._due, {}
        for receiving in (False, True):
            for rearm in due.values():
                try:
                    rearm(receiving)
                except Exception:
                    logger.exception("arming the forwarding plane failed; the route stays slow")

    def _hand_up(self, descriptor: int, data: bytes, address: tuple[Any, ...]) -> None:
        receiver = self._receivers.get(descriptor)
        if receiver is not None:
            receiver(data, address)

    def close(self) -> None:
        """Stop reading (the sockets belong to their transports); idempotent."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self.native.fileno())
        self.native.close()


NativeRelease = Callable[[int, tuple[int, float] | None, float | None], None]
"""on_release(routed, timeline, last_received): what the plane did while it held the rules:
packets it sent for us, (RTP timestamp, time) of the last one when the sender rule came back
(None otherwise), and when it last took one in for us (None: it held no receiver rule)."""


class NativeLink:
    """One RTP socket in the plane: its two rules, and handing its stream's state over and back.

    While a rule is armed part of the stream's state (sequence number and send counters, or
    reception statistics) lives in the plane; `release` brings it back exactly, `touch` does so
    for what Python is about to use and asks for `on_rearm` on the next loop iteration.
    """

    def __init__(self, plane: ForwardingPlane, descriptor: int, stream: RtpStream) -> None:
        self.plane: Final = plane
        self.descriptor: Final = descriptor
        self._stream = stream
        self.sending = self.receiving = False
        """Which rules the plane holds now."""
        self.wanted = False
        """Set by the owner while a rule could apply: a touch then asks for `on_rearm`."""
        self.on_release: NativeRelease | None = None
        self.on_rearm: Callable[[bool], None] | None = None
        """Arms the sender rule (False) or the receiver rule (True) where they apply."""
        self._errors = 0
        self._packets_at_arm = 0

    @property
    def armed(self) -> bool:
        return self.sending or self.receiving

    @property
    def errors(self) -> int:
        """Socket errors the plane saw on this socket: failed sends, ICMP errors on receive."""
        self._errors += self.plane.native.take_errors(self.descriptor)
        return self._errors

    def touch(self, *, sending: bool = True, receiving: bool = True) -> None:
        """Python is about to use the sending or the receiving half of the state."""
        if self.sending or self.receiving:
            self.release(sending=sending, receiving=receiving)
        if self.wanted and self.on_rearm is not None:
            self.plane.rearm_soon(self.descriptor, self.on_rearm)

    def progress(self) -> None:
        """Report what the rules did so far (`on_release` with the routed packets and the last
        arrival) without taking them back: the once-a-second look of housekeeping."""
        if not (self.sending or self.receiving) or self.on_release is None:
            return
        routed, last_received = self.plane.native.progress(self.descriptor)
        if routed or last_received is not None:
            self.on_release(routed, None, last_received)

    def release(self, *, sending: bool = True, receiving: bool = True) -> None:
        """Take the rules back; the stream's state is exact again."""
        native = self.plane.native
        sent = native.disarm_sender(self.descriptor) if sending and self.sending else None
        taken = native.disarm_receiver(self.descriptor) if receiving and self.receiving else None
        self.sending = self.sending and not sending
        self.receiving = self.receiving and not receiving
        routed, timeline = 0, None
        if sent is not None:
            sequence, packets, sent_bytes, last_timestamp, last_time, routed = sent
            self._stream.import_send_state(sequence, packets, sent_bytes, last_timestamp)
            # `progress` may have taken the routed count already: the packet count says
            # whether the plane sent anything since it was armed
            timeline = (last_timestamp, last_time) if packets > self._packets_at_arm else None
        last_received = None
        if taken is not None:
            *reception, packets, received_bytes, last_received = taken
            self._stream.import_receive_state(
                tuple(reception), packets, received_bytes, last_received
            )
        if (sent or taken) and self.on_release is not None:
            self.on_release(routed, timeline, last_received)

    def arm_sending(self, offset: int, last_time: float) -> bool:
        """Let the plane send passthrough packets as the stream, with this timestamp offset."""
        if self.sending:
            return True
        state = self._stream.export_send_state()
        if state is None:
            return False
        destination, ssrc, sequence, packets, sent_bytes, last_timestamp = state
        if last_timestamp is None:
            return False
        self._packets_at_arm = packets
        self.sending = bool(
            self.plane.native.arm_sender(
                self.descriptor,
                destination,
                ssrc,
                sequence,
                packets,
                sent_bytes,
                offset & 0xFFFFFFFF,
                last_timestamp & 0xFFFFFFFF,
                last_time,
            )
        )
        return self.sending

    def arm_receiving(self, destinations: list[tuple[NativeLink, bytes]]) -> bool:
        """Let the plane take the peer's packets in and rewrite them to `destinations` ((link,
        128-byte payload type map, 0xFF for none)), whose sender rules must be armed. False
        while a packet still has to teach Python something (the source, SSRC, probation)."""
        if self.receiving:
            return True
        if any(link.plane is not self.plane for link, _ in destinations):
            return False
        state = self._stream.export_receive_state()
        if state is None:
            return False
        source, remote_ssrc, clock_rate, reception, packets, received_bytes, last = state
        self.receiving = bool(
            self.plane.native.arm_receiver(
                self.descriptor,
                source,
                remote_ssrc,
                float(clock_rate),
                *reception,
                packets,
                received_bytes,
                last,
                [(link.descriptor, types) for link, types in destinations],
            )
        )
        return self.receiving

    def close(self) -> None:
        """Forget the socket (before it is closed); the state is released first."""
        self.wanted = False
        self.release()
        self._errors += self.plane.native.take_errors(self.descriptor)
        self.plane.remove(self.descriptor)
