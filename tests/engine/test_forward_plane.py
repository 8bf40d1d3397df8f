"""The `_forward` extension on its own: real sockets, the rules as the engine arms them, and the
datagrams it must hand up instead of forwarding. The engine-level tests (test_forwarding.py)
check the same behaviour end to end on both paths."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from callbridge.engine import forwarding
from callbridge.media.reception import ReceptionStats
from callbridge.media.rtp import RtpExtension, build_rtp, parse_rtp

if not forwarding.NATIVE_FORWARDING:
    pytest.skip(
        "the _forward extension is not built (or CALLBRIDGE_NATIVE=0)", allow_module_level=True
    )

Plane: Any = forwarding._native.Plane
PEER_SSRC = 0xABC
OUR_SSRC = 0x1234
TABLE = bytes([0] + [0xFF] * 7 + [9] + [0xFF] * 119)  # PT 0 -> 0, PT 8 -> 9


class Rig:
    """Peer A -> our socket A -(plane)-> our socket B -> peer B, on one address family."""

    def __init__(self, host: str) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sockets = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(4)]
        for item in self.sockets:
            item.bind((host, 0))
            item.setblocking(False)
        self.peer_a, self.peer_b, self.ours_a, self.ours_b = self.sockets
        self.slow: list[tuple[int, bytes, tuple[Any, ...]]] = []
        self.plane = Plane(lambda fd, data, address: self.slow.append((fd, data, address)))
        self.plane.add(self.ours_a.fileno())
        self.plane.add(self.ours_b.fileno())

    def arm(self, *, received: int = 5, max_sequence: int = 10, cycles: int = 0) -> None:
        address = self.peer_b.getsockname()
        assert self.plane.arm_sender(
            self.ours_b.fileno(), address, OUR_SSRC, 100, 1, 160, 1000, 5, 0.0
        )
        source = self.peer_a.getsockname()
        assert self.plane.arm_receiver(
            self.ours_a.fileno(), source, PEER_SSRC, 8000.0, max_sequence, cycles, received,
            0.0, None, 0, received, received * 160, 0.0, [(self.ours_b.fileno(), TABLE)],
        )  # fmt: skip

    def send(self, data: bytes, sender: socket.socket | None = None) -> None:
        (sender or self.peer_a).sendto(data, self.ours_a.getsockname())

    def run(self) -> None:
        time.sleep(0.02)
        self.plane.run()

    def heard(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.peer_b.recv(70000))
            except BlockingIOError:
                return out

    def close(self) -> None:
        self.plane.close()
        for item in self.sockets:
            item.close()


@pytest.fixture(params=["127.0.0.1", "::1"])
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    try:
        made = Rig(request.param)
    except OSError:
        pytest.skip(f"{request.param} is not available here")
    yield made
    made.close()


def packet(sequence: int, timestamp: int, payload_type: int = 0, **options: Any) -> bytes:
    ssrc = options.pop("ssrc", PEER_SSRC)
    return build_rtp(payload_type, sequence, timestamp, ssrc, b"p" * 160, **options)


def test_rewrite_and_accounting(rig: Rig) -> None:
    rig.arm()
    for number in range(5):
        rig.send(packet(11 + number, 1600 + 160 * number, marker=number == 0))
    rig.send(packet(16, 2400, payload_type=8))
    rig.run()
    heard = [parse_rtp(data) for data in rig.heard()]
    assert not rig.slow
    assert [item.sequence for item in heard] == list(range(100, 106))
    assert [item.payload_type for item in heard] == [0] * 5 + [9]
    assert {item.ssrc for item in heard} == {OUR_SSRC}
    assert [item.timestamp for item in heard] == [2600 + 160 * n for n in range(6)]
    assert [item.marker for item in heard] == [True] + [False] * 5
    assert all(bytes(item.payload) == b"p" * 160 for item in heard)
    routed, last_received = rig.plane.progress(rig.ours_b.fileno())  # rules stay armed
    assert routed == 6 and last_received is None  # B has no receiver rule
    assert rig.plane.progress(rig.ours_a.fileno())[1] > 0
    sent = rig.plane.disarm_sender(rig.ours_b.fileno())
    assert sent[:4] == (106, 7, 160 * 7, 3400) and sent[5] == 0  # progress took the 6
    taken = rig.plane.disarm_receiver(rig.ours_a.fileno())
    max_sequence, cycles, received, _, previous, previous_timestamp, packets, size, _ = taken
    assert (max_sequence, cycles, received, previous_timestamp) == (16, 0, 11, 2400)
    assert (packets, size) == (11, 11 * 160) and previous is not None
    assert rig.plane.disarm_sender(rig.ours_b.fileno()) is None  # already disarmed


def test_what_needs_python_is_handed_up_in_order(rig: Rig) -> None:
    rig.arm()
    stranger = socket.socket(rig.peer_a.family, socket.SOCK_DGRAM)
    stranger.bind((rig.peer_a.getsockname()[0], 0))
    cases = [
        packet(11, 1600, ssrc=0x999),  # another SSRC
        packet(12, 1760, payload_type=101),  # not in the map (an event)
        packet(13, 1920, padding=4),  # padding: not a plain header
        packet(14, 2080, extension=RtpExtension(0xBEDE, b"\x00" * 4)),  # an extension
        bytes([0x81, 200]) + bytes(26),  # RTCP under rtcp-mux
        packet(5000, 2240),  # a sequence jump: probation decides
        b"\x80",  # too short
    ]
    for data in cases:
        rig.send(data)
    rig.send(packet(15, 2400), sender=stranger)  # another source address
    rig.run()
    assert [data for _, data, _ in rig.slow] == [*cases, packet(15, 2400)]
    assert rig.slow[0][2][:2] == rig.peer_a.getsockname()[:2]
    assert rig.slow[-1][2][:2] == stranger.getsockname()[:2]
    assert not rig.heard()
    stranger.close()


def test_an_unarmed_destination_sends_the_packet_up(rig: Rig) -> None:
    rig.arm()
    rig.plane.disarm_sender(rig.ours_b.fileno())
    rig.send(packet(11, 1600))
    rig.run()
    assert len(rig.slow) == 1 and not rig.heard()


def test_sequence_wrap_matches_the_python_accountant(rig: Rig) -> None:
    """Across a wrap the plane counts cycles as ReceptionStats does."""
    stats = ReceptionStats(PEER_SSRC, 8000)
    for number, sequence in enumerate((65525, 65526, 65527)):
        stats.on_rtp(sequence, 160 * number, number * 0.02)
    state = stats.export_state()
    assert state is not None
    rig.arm(max_sequence=state[0], cycles=state[1], received=state[2])
    sequences = [65528 + n for n in range(8)] + list(range(0, 10))
    for number, sequence in enumerate(sequences, start=3):
        rig.send(packet(sequence, 160 * number))
        stats.on_rtp(sequence, 160 * number, number * 0.02)
    rig.run()
    taken = rig.plane.disarm_receiver(rig.ours_a.fileno())
    expected = stats.export_state()
    assert expected is not None
    assert taken[:3] == expected[:3] == (9, 0x10000, 20)  # probation took the first one


def test_a_removed_destination_socket_number_reused_is_not_sent_to(rig: Rig) -> None:
    rig.arm()
    old = rig.ours_b.fileno()
    rig.plane.remove(old)
    rig.plane.add(old)  # the same number, as a new socket would get it
    assert rig.plane.arm_sender(old, rig.peer_b.getsockname(), 1, 1, 1, 1, 0, 0, 0.0)
    rig.send(packet(11, 1600))
    rig.run()
    assert len(rig.slow) == 1 and not rig.heard()


def test_bad_arguments_are_errors_not_crashes() -> None:
    plane = Plane(lambda fd, data, address: None)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        fd = udp.fileno()
        with pytest.raises(KeyError):
            plane.arm_sender(fd, ("127.0.0.1", 9), 1, 1, 1, 1, 0, 0, 0.0)
        plane.add(fd)
        with pytest.raises(ValueError):
            plane.add(fd)
        assert not plane.arm_sender(fd, ("host.example", 9), 1, 1, 1, 1, 0, 0, 0.0)
        with pytest.raises(TypeError):
            plane.arm_sender(fd, "127.0.0.1:9", 1, 1, 1, 1, 0, 0, 0.0)
        with pytest.raises(ValueError):
            plane.arm_receiver(
                fd, ("127.0.0.1", 9), 1, 8000.0, 1, 0, 1, 0.0, None, 0, 1, 1, 0.0, [(fd, b"x")]
            )
        too_many = [(fd, TABLE)] * 17
        assert not plane.arm_receiver(
            fd, ("127.0.0.1", 9), 1, 8000.0, 1, 0, 1, 0.0, None, 0, 1, 1, 0.0, too_many
        )
        assert not plane.arm_receiver(  # the destination's sender rule is not armed
            fd, ("127.0.0.1", 9), 1, 8000.0, 1, 0, 1, 0.0, None, 0, 1, 1, 0.0, [(fd, TABLE)]
        )
        with pytest.raises(ValueError):
            plane.add(-1)
        with pytest.raises(TypeError):
            Plane(42)
        plane.remove(fd)
        plane.remove(fd)  # idempotent
        assert plane.disarm_receiver(fd) is None
    plane.close()
    plane.run()  # a closed plane does nothing


def test_failed_sends_are_counted() -> None:
    rig = Rig("127.0.0.1")
    try:
        rig.arm()
        destination = rig.ours_b.fileno()
        rig.plane.disarm_sender(destination)
        assert rig.plane.arm_sender(destination, ("::1", 9), OUR_SSRC, 100, 1, 160, 0, 0, 0.0)
        rig.send(packet(11, 1600))  # an IPv6 target on an IPv4 socket: sendmmsg fails
        rig.run()
        assert rig.plane.take_errors(destination) == 1
        assert rig.plane.take_errors(destination) == 0
    finally:
        rig.close()
