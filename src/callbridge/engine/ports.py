"""UDP port pairs for plain RTP endpoints: even port for RTP, the odd one above it for RTCP.

Pairs are taken from `rtp_port_range` sequentially with wrap-around (as rtpbridge does), so a port
that was just released is the last one to be reused and late packets of a finished call rarely
reach a new one. Both sockets are bound to `media_ip` even when rtcp-mux is negotiated, because
the SDP offer is written before the peer says whether it supports rtcp-mux.

A pair whose bind fails with EADDRINUSE (another process, or a socket of ours still closing) is
skipped; any other bind error (EACCES for a port below 1024, EADDRNOTAVAIL for a `media_ip` that
is not local) would fail the same way for every pair, so it is raised at once.
"""

from __future__ import annotations

import errno
import socket
from typing import Final

from callbridge.engine.errors import ENDPOINT_ERROR, EngineError

__all__ = ["PortAllocationError", "PortAllocator", "PortPair"]

_SKIPPED_ERRORS: Final = frozenset({errno.EADDRINUSE})


class PortAllocationError(EngineError):
    """No pair could be bound: the range is exhausted, or binding is not permitted.

    An `EngineError` with code ENDPOINT_ERROR, which is what rtpbridge answers for port
    exhaustion; `message` is the human text ("No available port pairs in range A-B").
    """

    def __init__(self, message: str) -> None:
        super().__init__(ENDPOINT_ERROR, message)


class PortPair:
    """Two bound, non-blocking UDP sockets: `rtp_socket` on an even port, `rtcp_socket` on +1.

    The owner hands the sockets to the event loop (which then owns and closes them) and calls
    `release()` once they are closed, so that the allocator may hand the ports out again.
    `close()` is for an owner that never handed the sockets over.
    """

    __slots__ = ("_allocator", "rtcp_socket", "rtp_port", "rtp_socket")

    def __init__(
        self,
        allocator: PortAllocator,
        rtp_port: int,
        rtp_socket: socket.socket,
        rtcp_socket: socket.socket,
    ) -> None:
        self._allocator: PortAllocator | None = allocator
        self.rtp_port = rtp_port
        self.rtp_socket = rtp_socket
        self.rtcp_socket = rtcp_socket

    @property
    def rtcp_port(self) -> int:
        """The odd port of the pair."""
        return self.rtp_port + 1

    @property
    def released(self) -> bool:
        """True once the ports have been given back to the allocator."""
        return self._allocator is None

    def release(self) -> None:
        """Give the ports back to the allocator; idempotent. The sockets must be closed by then."""
        allocator, self._allocator = self._allocator, None
        if allocator is not None:
            allocator._release(self.rtp_port)

    def close(self) -> None:
        """Close both sockets and release the ports; idempotent."""
        self.rtp_socket.close()
        self.rtcp_socket.close()
        self.release()

    def __repr__(self) -> str:
        state = "released" if self.released else "in use"
        return f"PortPair({self.rtp_port}/{self.rtcp_port}, {state})"


class PortAllocator:
    """Hands out even/odd port pairs from the inclusive range `start`..`end`.

    A range whose end is even ignores its last port (it has no odd partner). Single-threaded:
    the engine calls it from its event loop only.
    """

    def __init__(self, start: int, end: int) -> None:
        if start % 2:
            raise ValueError(f"port range start {start} must be even")
        if not 0 < start < end <= 65535:
            raise ValueError(f"bad port range {start}-{end}: need 0 < start < end <= 65535")
        self.start = start
        self.end = end
        self.pair_count = (end - start + 1) // 2
        self._next_index = 0
        self._in_use: set[int] = set()

    @property
    def in_use(self) -> int:
        """Pairs handed out and not yet released."""
        return len(self._in_use)

    def allocate(self, host: str) -> PortPair:
        """Bind the next free pair on `host` (an IPv4 or IPv6 literal).

        Raises PortAllocationError when every pair is in use or fails to bind with EADDRINUSE,
        or at once when binding fails for any other reason (permission, address not local).
        """
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for _ in range(self.pair_count):
            index = self._next_index
            self._next_index = (index + 1) % self.pair_count
            port = self.start + 2 * index
            if port in self._in_use:
                continue
            sockets = _bind_pair(family, host, port)
            if sockets is None:
                continue
            self._in_use.add(port)
            return PortPair(self, port, *sockets)
        raise PortAllocationError(f"No available port pairs in range {self.start}-{self.end}")

    def _release(self, port: int) -> None:
        self._in_use.discard(port)

    def __repr__(self) -> str:
        return f"PortAllocator({self.start}-{self.end}, {self.in_use}/{self.pair_count} in use)"


def _bind_pair(family: int, host: str, port: int) -> tuple[socket.socket, socket.socket] | None:
    """Both sockets of a pair, or None when one of the ports is taken."""
    bound: list[socket.socket] = []
    try:
        for candidate in (port, port + 1):
            udp_socket = socket.socket(family, socket.SOCK_DGRAM)
            bound.append(udp_socket)
            udp_socket.setblocking(False)
            udp_socket.bind((host, candidate))
    except OSError as error:
        for udp_socket in bound:
            udp_socket.close()
        if error.errno in _SKIPPED_ERRORS:
            return None
        raise PortAllocationError(
            f"cannot bind UDP {host} port {candidate}: {error.strerror or error}"
        ) from error
    return bound[0], bound[1]
