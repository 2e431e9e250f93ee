"""sfu.net.sctp.BundlingSctpTransport against aiortc's stock RTCSctpTransport, in process.

Two associations talk through a fake DTLS pair (one ordered delivery task per direction, an
optional drop filter), so the packets the bundling side writes can be inspected and lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiortc import RTCDataChannel, RTCSctpTransport
from aiortc.rtcdatachannel import RTCDataChannelParameters
from aiortc.rtcsctptransport import (
    SCTP_MAX_PACKET_LENGTH,
    DataChunk,
    RTCSctpCapabilities,
    SackChunk,
    parse_packet,
)

from sfu.net import sctp
from sfu.net.sctp import BundlingSctpTransport, make_sctp_transport


class FakeDtls:
    """The RTCDtlsTransport surface RTCSctpTransport uses; delivers to ``peer`` in order."""

    def __init__(self, role: str) -> None:
        self._role = role
        self.state = "connected"
        self.peer: FakeDtls | None = None
        self.receiver: Any = None
        self.sent: list[bytes] = []
        self.drop: Callable[[bytes], bool] = lambda data: False
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._task = asyncio.ensure_future(self._deliver())

    def _register_data_receiver(self, receiver: Any) -> None:
        self.receiver = receiver

    def _unregister_data_receiver(self, receiver: Any) -> None:
        self.receiver = None

    async def _send_data(self, data: bytes) -> None:
        if self.state != "connected":
            raise ConnectionError("closed")
        self.sent.append(data)
        if not self.drop(data):
            assert self.peer is not None
            self.peer._queue.put_nowait(data)

    async def _deliver(self) -> None:
        while True:
            data = await self._queue.get()
            if self.receiver is not None:
                await self.receiver._handle_data(data)

    def close(self) -> None:
        self.state = "closed"
        self._task.cancel()


Pair = tuple[RTCSctpTransport, FakeDtls, RTCSctpTransport, FakeDtls]


async def _associate(node_bundling: bool = True, client_bundling: bool = False) -> Pair:
    """A node (DTLS server) and a client, bundling or stock each, ESTABLISHED."""
    node_dtls, client_dtls = FakeDtls("server"), FakeDtls("client")
    node_dtls.peer, client_dtls.peer = client_dtls, node_dtls
    node = make_sctp_transport(node_dtls, bundling=node_bundling)  # type: ignore[arg-type]
    client = make_sctp_transport(client_dtls, bundling=client_bundling)  # type: ignore[arg-type]
    caps = RTCSctpCapabilities(maxMessageSize=262144)
    await asyncio.gather(node.start(caps, 5000), client.start(caps, 5000))
    for _ in range(200):
        if node.state == client.state == "connected":
            break
        await asyncio.sleep(0.01)
    assert node.state == client.state == "connected"
    return node, node_dtls, client, client_dtls


async def _channels(
    node: RTCSctpTransport, client: RTCSctpTransport, **params: Any
) -> tuple[RTCDataChannel, RTCDataChannel]:
    """The client opens a channel (DCEP); returns (node side, client side) once open."""
    opened: list[RTCDataChannel] = []
    node.on("datachannel", opened.append)
    ch = RTCDataChannel(client, RTCDataChannelParameters(label="events", **params))
    for _ in range(200):
        if opened and ch.readyState == "open":
            return opened[0], ch
        await asyncio.sleep(0.01)
    raise AssertionError("channel did not open")


async def _close(pair: Pair) -> None:
    node, node_dtls, client, client_dtls = pair
    for t in (node, client):
        await t.stop()
    node_dtls.close()
    client_dtls.close()


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def _chunks(packets: list[bytes]) -> list[list[Any]]:
    return [parse_packet(p)[3] for p in packets]


def test_this_aiortc_matches_the_override() -> None:
    assert sctp.check_aiortc() == []


async def test_flag_falls_back_to_the_stock_class(monkeypatch: pytest.MonkeyPatch) -> None:
    dtls = FakeDtls("server")
    try:
        assert type(make_sctp_transport(dtls)) is BundlingSctpTransport  # type: ignore[arg-type]
        monkeypatch.setenv("SFU_SCTP_BUNDLING", "0")
        assert type(make_sctp_transport(dtls)) is RTCSctpTransport  # type: ignore[arg-type]
        monkeypatch.setenv("SFU_SCTP_BUNDLING", "1")
        stock = make_sctp_transport(dtls, bundling=False)  # type: ignore[arg-type]
        assert type(stock) is RTCSctpTransport
    finally:
        dtls.close()


async def test_a_burst_goes_out_in_few_full_packets_in_order() -> None:
    pair = await _associate()
    node, node_dtls, client, _ = pair
    try:
        ours, theirs = await _channels(node, client)
        got: list[str] = []
        theirs.on("message", got.append)
        node_dtls.sent.clear()
        for i in range(200):
            ours.send(f"message {i:04d} " + "x" * 80)  # ~100 bytes: ~10 per packet
        await _until(lambda: len(got) == 200)
        assert got == [f"message {i:04d} " + "x" * 80 for i in range(200)]
        data_packets = [c for c in _chunks(node_dtls.sent) if any(isinstance(x, DataChunk) for x in c)]
        assert len(data_packets) <= 200 // 8  # stock aiortc: 200 packets
        assert all(len(p) <= SCTP_MAX_PACKET_LENGTH for p in node_dtls.sent)
        for chunks in _chunks(node_dtls.sent):  # control chunks (SACK) before DATA
            kinds = [isinstance(c, DataChunk) for c in chunks]
            assert kinds == sorted(kinds)
    finally:
        await _close(pair)


@pytest.mark.parametrize("size", [1160, 1161, 65536, 200_000])
async def test_fragmented_messages_both_ways(size: int) -> None:
    pair = await _associate()
    node, _, client, _ = pair
    try:
        ours, theirs = await _channels(node, client)
        to_client: list[bytes] = []
        to_node: list[bytes] = []
        theirs.on("message", to_client.append)
        ours.on("message", to_node.append)
        payloads = [bytes([i]) * size for i in range(3)]
        for p in payloads:
            ours.send(p)
            theirs.send(p)
        await _until(lambda: len(to_client) == 3 and len(to_node) == 3, timeout=30)
        assert to_client == payloads and to_node == payloads
    finally:
        await _close(pair)


async def test_unordered_unreliable_channel_without_loss() -> None:
    pair = await _associate()
    node, _, client, _ = pair
    try:
        ours, theirs = await _channels(node, client, ordered=False, maxRetransmits=0)
        assert not ours.ordered and ours.maxRetransmits == 0
        got: list[str] = []
        theirs.on("message", got.append)
        for i in range(2000):
            ours.send(str(i))
            if i % 100 == 99:
                await asyncio.sleep(0)
        await _until(lambda: len(got) == 2000)
        assert sorted(got, key=int) == [str(i) for i in range(2000)]
    finally:
        await _close(pair)


async def test_lost_bundled_packets_are_retransmitted() -> None:
    pair = await _associate()
    node, node_dtls, client, _ = pair
    try:
        ours, theirs = await _channels(node, client)
        got: list[str] = []
        theirs.on("message", got.append)
        sent_data = [0]

        def drop(packet: bytes) -> bool:  # lose the 3rd, 4th and 10th packet carrying DATA
            if any(isinstance(c, DataChunk) for c in parse_packet(packet)[3]):
                sent_data[0] += 1
                return sent_data[0] in (3, 4, 10)
            return False

        node_dtls.drop = drop
        expected = [f"{i}:" + "y" * 300 for i in range(400)]
        for i, m in enumerate(expected):
            ours.send(m)
            if i % 20 == 19:
                await asyncio.sleep(0.001)
        await _until(lambda: len(got) == 400, timeout=20)
        assert got == expected
        assert isinstance(node, BundlingSctpTransport)
        assert node.data_chunks_sent > 400  # some chunks went out twice
    finally:
        await _close(pair)


async def test_sack_is_delayed_then_sent_and_rides_with_replies() -> None:
    pair = await _associate()
    node, node_dtls, client, _ = pair
    assert isinstance(node, BundlingSctpTransport)
    try:
        ours, theirs = await _channels(node, client)
        await asyncio.sleep(0.3)  # let the DCEP exchange settle
        node_dtls.sent.clear()

        def sacks() -> list[list[Any]]:
            return [c for c in _chunks(node_dtls.sent) if any(isinstance(x, SackChunk) for x in c)]

        # One packet: no SACK at once, one within the 200 ms delay.
        theirs.send("one")
        await asyncio.sleep(0.05)
        assert sacks() == []
        await _until(lambda: len(sacks()) == 1, timeout=1)
        # Two packets: acknowledged at once.
        node_dtls.sent.clear()
        theirs.send("two")
        theirs.send("three")
        await asyncio.sleep(0.05)
        assert len(sacks()) == 1
        # A reply carries the pending SACK: one packet, SACK then DATA.
        node_dtls.sent.clear()
        ours.on("message", lambda m: ours.send("re:" + m))
        got: list[str] = []
        theirs.on("message", got.append)
        theirs.send("ping")
        await _until(lambda: got == ["re:ping"])
        await asyncio.sleep(0.3)
        packets = _chunks(node_dtls.sent)
        assert len(packets) == 1
        assert [type(c) for c in packets[0]] == [SackChunk, DataChunk]
    finally:
        await _close(pair)


async def test_a_gap_is_acknowledged_at_once() -> None:
    pair = await _associate()
    node, node_dtls, client, client_dtls = pair
    try:
        ours, theirs = await _channels(node, client)
        await asyncio.sleep(0.3)
        got: list[str] = []
        ours.on("message", got.append)
        dropped = [False]

        def drop_first_data(packet: bytes) -> bool:
            if not dropped[0] and any(isinstance(c, DataChunk) for c in parse_packet(packet)[3]):
                dropped[0] = True
                return True
            return False

        client_dtls.drop = drop_first_data
        node_dtls.sent.clear()
        theirs.send("lost")
        await asyncio.sleep(0.01)
        theirs.send("after the gap")
        await asyncio.sleep(0.05)
        sack = [c for cs in _chunks(node_dtls.sent) for c in cs if isinstance(c, SackChunk)]
        assert sack and sack[0].gaps  # immediate, with a gap block
        await _until(lambda: len(got) == 2, timeout=10)  # then retransmitted, in order
        assert got == ["lost", "after the gap"]
    finally:
        await _close(pair)


async def test_bundling_talks_to_bundling() -> None:
    pair = await _associate(node_bundling=True, client_bundling=True)
    node, _, client, _ = pair
    try:
        ours, theirs = await _channels(node, client)
        a: list[str] = []
        b: list[str] = []
        theirs.on("message", a.append)
        ours.on("message", b.append)
        for i in range(3000):
            ours.send(str(i))
            theirs.send(str(i))
            if i % 500 == 499:
                await asyncio.sleep(0)
        await _until(lambda: len(a) == 3000 and len(b) == 3000, timeout=20)
        assert a == b == [str(i) for i in range(3000)]
    finally:
        await _close(pair)
