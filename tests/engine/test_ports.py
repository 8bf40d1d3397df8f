"""PortAllocator: even/odd pairs, sequential with wrap-around, skip taken ports, fail fast."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator

import pytest

from callbridge.engine.errors import ENDPOINT_ERROR, EngineError
from callbridge.engine.ports import PortAllocationError, PortAllocator, PortPair
from tests.conftest import free_port_range

HOST = "127.0.0.1"


def occupied(port: int) -> bool:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((HOST, port))
    except OSError as error:
        assert error.errno == errno.EADDRINUSE
        return True
    finally:
        probe.close()
    return False


@pytest.fixture
def two_pairs() -> Iterator[PortAllocator]:
    start, end = free_port_range(2)
    yield PortAllocator(start, end)


def test_pairs_are_even_odd_bound_to_the_host_and_sequential(two_pairs: PortAllocator) -> None:
    first = two_pairs.allocate(HOST)
    second = two_pairs.allocate(HOST)
    try:
        assert first.rtp_port == two_pairs.start
        assert second.rtp_port == two_pairs.start + 2
        for pair in (first, second):
            assert pair.rtp_port % 2 == 0 and pair.rtcp_port == pair.rtp_port + 1
            assert pair.rtp_socket.getsockname() == (HOST, pair.rtp_port)
            assert pair.rtcp_socket.getsockname() == (HOST, pair.rtcp_port)
            assert pair.rtp_socket.getblocking() is False
            assert pair.rtcp_socket.type == socket.SOCK_DGRAM
            assert occupied(pair.rtp_port) and occupied(pair.rtcp_port)
        assert two_pairs.in_use == 2
    finally:
        first.close()
        second.close()
    assert two_pairs.in_use == 0


def test_exhaustion_gives_the_rtpbridge_message_and_release_frees_a_pair(
    two_pairs: PortAllocator,
) -> None:
    first = two_pairs.allocate(HOST)
    second = two_pairs.allocate(HOST)
    with pytest.raises(PortAllocationError) as caught:
        two_pairs.allocate(HOST)
    expected = f"No available port pairs in range {two_pairs.start}-{two_pairs.end}"
    assert caught.value.message == expected
    assert isinstance(caught.value, EngineError) and caught.value.code == ENDPOINT_ERROR
    first.close()
    assert first.released and not occupied(first.rtp_port)
    third = two_pairs.allocate(HOST)
    assert third.rtp_port == first.rtp_port
    second.close()
    third.close()


def test_counter_wraps_around_and_reuses_released_ports_last(two_pairs: PortAllocator) -> None:
    first = two_pairs.allocate(HOST)
    first.close()
    second = two_pairs.allocate(HOST)  # the next pair, not the one just released
    assert second.rtp_port == two_pairs.start + 2
    third = two_pairs.allocate(HOST)  # wrapped around to the start
    assert third.rtp_port == two_pairs.start
    second.close()
    third.close()


@pytest.mark.parametrize("taken_offset", [0, 1])
def test_a_pair_with_a_port_taken_elsewhere_is_skipped(
    two_pairs: PortAllocator, taken_offset: int
) -> None:
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind((HOST, two_pairs.start + taken_offset))
    try:
        pair = two_pairs.allocate(HOST)
        assert pair.rtp_port == two_pairs.start + 2
        assert two_pairs.in_use == 1
        with pytest.raises(PortAllocationError, match="No available port pairs"):
            two_pairs.allocate(HOST)
        pair.close()
    finally:
        stranger.close()
    assert not occupied(two_pairs.start) and not occupied(two_pairs.start + 1)


def test_release_and_close_are_idempotent(two_pairs: PortAllocator) -> None:
    pair = two_pairs.allocate(HOST)
    pair.close()
    pair.close()
    pair.release()
    assert two_pairs.in_use == 0
    assert "released" in repr(pair)


def test_an_address_that_is_not_local_fails_fast() -> None:
    allocator = PortAllocator(*free_port_range(2))
    with pytest.raises(PortAllocationError, match=r"cannot bind UDP 192\.0\.2\.1") as caught:
        allocator.allocate("192.0.2.1")  # TEST-NET-1, never a local address
    assert isinstance(caught.value.__cause__, OSError)
    assert allocator.in_use == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root may bind ports below 1024")
def test_a_permission_error_fails_fast_instead_of_skipping() -> None:
    allocator = PortAllocator(1000, 1003)
    with pytest.raises(PortAllocationError, match="cannot bind UDP") as caught:
        allocator.allocate(HOST)
    assert caught.value.__cause__ is not None
    assert getattr(caught.value.__cause__, "errno", None) in (errno.EACCES, errno.EPERM)


def test_ipv6_pairs_when_available() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    allocator = PortAllocator(*free_port_range(1))
    try:
        pair = allocator.allocate("::1")
    except PortAllocationError:
        pytest.skip("::1 not configured")
    assert pair.rtp_socket.family == socket.AF_INET6
    assert pair.rtp_socket.getsockname()[:2] == ("::1", pair.rtp_port)
    pair.close()


def test_an_even_end_leaves_its_last_port_out() -> None:
    start, _ = free_port_range(2)
    allocator = PortAllocator(start, start + 2)
    assert allocator.pair_count == 1
    pair = allocator.allocate(HOST)
    with pytest.raises(PortAllocationError):
        allocator.allocate(HOST)
    pair.close()


@pytest.mark.parametrize(
    ("start", "end"), [(30001, 30010), (30000, 30000), (0, 10), (65534, 65536)]
)
def test_bad_ranges_are_rejected(start: int, end: int) -> None:
    with pytest.raises(ValueError):
        PortAllocator(start, end)


def test_pair_repr_and_allocator_repr(two_pairs: PortAllocator) -> None:
    pair: PortPair = two_pairs.allocate(HOST)
    assert "in use" in repr(pair) and "1/2 in use" in repr(two_pairs)
    pair.close()
