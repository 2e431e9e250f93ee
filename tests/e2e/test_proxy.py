"""The real-time UDP impairment proxy in front of a real UDP echo server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from typing import cast

import pytest

from bench.link import LinkConfig
from bench.loss import Bernoulli, parse_loss
from bench.proxy import ImpairmentProxy, rewrite_candidates
from bench.traces import constant

pytestmark = pytest.mark.timeout(15)

_seq = struct.Struct("!I")


class Echo(asyncio.DatagramProtocol):
    """Echoes every datagram; records when each arrived."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.arrivals: list[tuple[float, int]] = []  # (loop time, size)
        self.echo = True
        self.expect = 0  # resolve ``all_in`` once this many datagrams have arrived
        self.all_in: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.arrivals.append((asyncio.get_running_loop().time(), len(data)))
        if self.expect and len(self.arrivals) >= self.expect and not self.all_in.done():
            self.all_in.set_result(None)
        if self.echo and self.transport is not None:
            self.transport.sendto(data, addr)


class Client(asyncio.DatagramProtocol):
    """Sends numbered probes; resolves the future of each echo that comes back."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: dict[int, asyncio.Future[float]] = {}
        self.received: set[int] = set()  # every echo that came back, late or not

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        seq = _seq.unpack_from(data)[0]
        self.received.add(seq)
        fut = self.waiting.get(seq)
        if fut is not None and not fut.done():
            fut.set_result(asyncio.get_running_loop().time())

    def send(self, seq: int, size: int = 100) -> asyncio.Future[float]:
        assert self.transport is not None
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[seq] = fut
        self.transport.sendto(_seq.pack(seq) + bytes(size - _seq.size))
        return fut


async def probe(client: Client, n: int, window: int, patience: float) -> list[float | None]:
    """n echo probes, at most ``window`` outstanding; each gets ``patience`` seconds.
    Returns each probe's RTT, or None if its echo did not come back in time."""
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(window)
    rtts: list[float | None] = [None] * n

    async def one(seq: int) -> None:
        async with sem:
            sent = loop.time()
            try:
                rtts[seq] = await asyncio.wait_for(client.send(seq), patience) - sent
            except TimeoutError:
                pass

    await asyncio.gather(*(one(i) for i in range(n)))
    return rtts


@pytest.fixture
async def echo() -> AsyncIterator[tuple[Echo, tuple[str, int]]]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    try:
        yield proto, transport.get_extra_info("sockname")[:2]
    finally:
        transport.close()


async def connect(addr: tuple[str, int]) -> tuple[asyncio.DatagramTransport, Client]:
    loop = asyncio.get_running_loop()
    return await loop.create_datagram_endpoint(Client, remote_addr=addr)


async def test_bernoulli_loss_both_ways(echo: tuple[Echo, tuple[str, int]]) -> None:
    _, target = echo
    up = LinkConfig(loss=Bernoulli(0.2), seed=1)
    down = LinkConfig(loss=parse_loss("bernoulli:20%", 2), seed=2)
    async with ImpairmentProxy(target, up, down) as proxy:
        assert proxy.address is not None
        transport, client = await connect(proxy.address)
        try:
            await probe(client, 2000, window=200, patience=0.25)
            up_s, down_s = proxy.uplink_stats, proxy.downlink_stats
            # Echoes later than the probe's patience (a loaded machine) still count: what
            # is under test is the proxy's loss, not the loop's latency.
            for _ in range(100):
                if len(client.received) >= down_s.forwarded:
                    break
                await asyncio.sleep(0.02)
        finally:
            transport.close()
        assert len(client.received) == down_s.forwarded  # nothing lost but the proxy's drops
        back = len(client.received) / 2000
        assert back == pytest.approx(0.64, abs=0.05)
        assert up_s.received == 2000
        assert up_s.dropped_loss == pytest.approx(400, rel=0.15)
        assert up_s.forwarded == 2000 - up_s.dropped_loss
        assert down_s.received == up_s.forwarded
        assert down_s.forwarded == down_s.received - down_s.dropped_loss


async def test_delay_each_way(echo: tuple[Echo, tuple[str, int]]) -> None:
    _, target = echo
    cfg = LinkConfig(delay=0.05)
    async with ImpairmentProxy(target, cfg, cfg) as proxy:
        assert proxy.address is not None
        transport, client = await connect(proxy.address)
        try:
            rtts = await probe(client, 30, window=10, patience=2.0)
        finally:
            transport.close()
    got = [r for r in rtts if r is not None]
    assert len(got) == 30
    assert min(got) >= 0.100
    assert max(got) < 0.5


async def test_capacity_bounds_the_received_rate(echo: tuple[Echo, tuple[str, int]]) -> None:
    server, target = echo
    server.echo = False
    n, size = 125, 1000
    up = LinkConfig(capacity=constant(1e6), queue_ms=5000)
    async with ImpairmentProxy(target, up, None) as proxy:
        assert proxy.address is not None
        transport, client = await connect(proxy.address)
        try:
            server.expect = n
            for i in range(n):  # a 1 Mbit burst, far faster than the link
                client.send(i, size)
            sent_at = asyncio.get_running_loop().time()
            await asyncio.wait_for(server.all_in, 5.0)
        finally:
            transport.close()
    assert proxy.uplink_stats.received == n and proxy.uplink_stats.dropped_queue == 0
    first, last = server.arrivals[0][0], server.arrivals[-1][0]
    wire_bits = (n - 1) * (size + proxy.overhead) * 8
    rate = wire_bits / (last - first)
    assert rate <= 1e6 * 1.02  # never faster than the link
    assert rate >= 0.8e6  # and the link is used
    assert last - sent_at >= n * (size + proxy.overhead) * 8 / 1e6 - 0.01


async def test_non_loopback_target_is_refused() -> None:
    for host in ("10.0.0.1", "8.8.8.8", "example.com", "::2"):
        with pytest.raises(ValueError):
            ImpairmentProxy((host, 9), None, None)
    ImpairmentProxy(("127.0.0.2", 9), None, None)
    ImpairmentProxy(("::1", 9), None, None)


def test_rewrite_candidates() -> None:
    sdp = "\r\n".join(
        [
            "v=0",
            "o=- 1 1 IN IP4 127.0.0.1",
            "s=-",
            "t=0 0",
            "a=ice-lite",
            "m=audio 40000 UDP/TLS/RTP/SAVPF 111",
            "c=IN IP4 127.0.0.1",
            "a=mid:0",
            "a=candidate:1 1 udp 2130706430 127.0.0.1 40000 typ host",
            "a=candidate:2 1 udp 2130706429 10.1.2.3 40000 typ host",
            "a=candidate:3 1 tcp 1518280447 127.0.0.1 9 typ host tcptype passive",
            "a=end-of-candidates",
            "m=video 0 UDP/TLS/RTP/SAVPF 96",
            "c=IN IP4 0.0.0.0",
            "a=mid:1",
            "",
        ]
    )
    out = rewrite_candidates(sdp, ("127.0.0.1", 5555))
    lines = out.split("\r\n")
    assert "m=audio 5555 UDP/TLS/RTP/SAVPF 111" in lines
    assert lines.count("c=IN IP4 127.0.0.1") == 1
    cands = [x for x in lines if x.startswith("a=candidate:")]
    assert cands == ["a=candidate:1 1 udp 2130706430 127.0.0.1 5555 typ host"]
    assert "m=video 0 UDP/TLS/RTP/SAVPF 96" in lines and "c=IN IP4 0.0.0.0" in lines
    assert out.endswith("\r\n") and "o=- 1 1 IN IP4 127.0.0.1" in lines
