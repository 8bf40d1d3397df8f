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
(`RtpTransport.release_native`), so the Python state is exact again, and asks to be armed again
on the next loop iteration (`rearm_soon`). Without the extension, or with `CALLBRIDGE_NATIVE=0`
or `native_forwarding = false`, every packet takes the Python path; both paths run the same tests.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any, Final

__all__ = ["NATIVE_FORWARDING", "ForwardingPlane", "Receiver"]

logger = logging.getLogger(__name__)

Receiver = Callable[[bytes, tuple[Any, ...]], None]
"""Takes a datagram the plane hands up and its source address, as asyncio would give them."""


def _load_native() -> Any:
    if os.environ.get("CALLBRIDGE_NATIVE", "1") == "0":
        return None
    try:
        from callbridge.engine import _forward  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _forward


_native: Any = _load_native()
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

    def set_receiver(self, descriptor: int, receiver: Receiver) -> None:
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
