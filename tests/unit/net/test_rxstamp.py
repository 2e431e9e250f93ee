"""RxStamp: the kernel receive timestamp of the datagram just read, on the loop's clock."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator

import pytest

from sfu.net.rxstamp import RxStamp

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIOCGSTAMP is Linux")


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    try:
        yield rx, tx
    finally:
        rx.close()
        tx.close()


def _wait_for_kernel_stamping(
    rx: socket.socket, tx: socket.socket, stamp: RxStamp, attempts: int = 500
) -> None:
    """Linux turns receive stamping on through a deferred static key (a work item), so the
    first datagrams after SIOCGSTAMP may still be stamped when read rather than when they
    arrived; on a loaded machine that lasts a while. Send probes until one carries its
    arrival time (bounded: at most `attempts` probes of 1 ms each)."""
    for _ in range(attempts):
        tx.sendto(b"probe", rx.getsockname())
        queued_at = time.time()
        while time.time() - queued_at < 0.001:
            pass
        rx.recvfrom(100)
        if stamp.arrival(1000.0) <= 1000.0 - 0.001:
            return
    pytest.fail(f"the kernel never stamped a datagram on arrival in {attempts} probes")


def test_queued_datagrams_are_stamped_when_they_arrived(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    rx, tx = pair
    stamp = RxStamp(rx)  # turns stamping on before anything arrives
    assert stamp.enabled
    _wait_for_kernel_stamping(rx, tx, stamp)
    tx.sendto(b"first", rx.getsockname())
    tx.sendto(b"second", rx.getsockname())
    # Both wait in the socket buffer, as behind a busy event loop, for 10 ms of wall time (a
    # bounded spin: the property under test is the kernel's stamp, not a delay). Loopback
    # delivery may stamp a little after sendto() returns (softirq), hence only 5 ms below.
    queued_at = time.time()
    while time.time() - queued_at < 0.010:
        pass
    now = 1000.0  # the loop's clock when the datagrams are finally read
    rx.recvfrom(100)
    first = stamp.arrival(now)
    rx.recvfrom(100)
    second = stamp.arrival(now)
    # Each is moved back by how long it waited: at least 5 ms, and far less than a second.
    # (Their order is not asserted: sent microseconds apart, they are read microseconds apart
    # too, and each age is taken at its own read.)
    for arrival in (first, second):
        assert now - 1.0 < arrival <= now - 0.005


def test_falls_back_to_now_without_a_stamp() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        stamp = RxStamp(sock)
        assert stamp.arrival(123.0) == 123.0  # nothing read yet
    finally:
        sock.close()
