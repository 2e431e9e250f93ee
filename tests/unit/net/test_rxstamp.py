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


def test_queued_datagrams_are_stamped_when_they_arrived(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    rx, tx = pair
    stamp = RxStamp(rx)  # turns stamping on before anything arrives
    assert stamp.enabled
    tx.sendto(b"first", rx.getsockname())
    tx.sendto(b"second", rx.getsockname())
    # Both wait in the socket buffer, as behind a busy event loop, for at least 5 ms of wall
    # time (a bounded spin: the property under test is the kernel's stamp, not a delay).
    queued_at = time.time()
    while time.time() - queued_at < 0.005:
        pass
    now = 1000.0  # the loop's clock when the datagrams are finally read
    rx.recvfrom(100)
    first = stamp.arrival(now)
    rx.recvfrom(100)
    second = stamp.arrival(now)
    # Moved back by how long each waited: at least the 5 ms, and the first waited longest.
    assert first <= second <= now - 0.005
    assert now - first < 1.0


def test_falls_back_to_now_without_a_stamp() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        stamp = RxStamp(sock)
        assert stamp.arrival(123.0) == 123.0  # nothing read yet
    finally:
        sock.close()
