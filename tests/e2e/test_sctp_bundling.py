"""The node's bundling SCTP (sfu.net.sctp) with a real, stock aiortc peer over WHEP.

The client is an aiortc RTCPeerConnection (stock RTCSctpTransport: it never bundles and
SACKs every packet) playing a room with only a datachannel. The node side of the channel is
driven directly from the test (same event loop) to send large volumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiortc import RTCDataChannel

from bench.clients.whip import WhepSession, _exchange, new_peer_connection
from sfu.net.sctp import BundlingSctpTransport

Mint = Callable[..., str]
OPEN_TIMEOUT = 15.0
PREFIX = "t:"  # our messages; the node also sends hello/snapshot on the same channel


class Link:
    """A WHEP datachannel session: the client's channel and the node's side of it."""

    def __init__(self, session: WhepSession, client: RTCDataChannel, node: RTCDataChannel,
                 peer: Any) -> None:
        self.session = session
        self.client = client
        self.node = node
        self.peer = peer
        self.received: list[str | bytes] = []
        client.on("message", self._on_message)

    def _on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes) or message.startswith(PREFIX):
            self.received.append(message)


@contextlib.asynccontextmanager
async def _link(node: Any, mint: Mint, room: str, **params: Any) -> AsyncIterator[Link]:
    pc = new_peer_connection()
    channel = pc.createDataChannel("events", **params)
    opened = asyncio.Event()
    channel.on("open", opened.set)
    token = mint(room, "viewer", ["subscribe"])
    session = WhepSession(pc=pc, location="", token=token)
    try:
        session.location = await _exchange(pc, node.http_url, "whep", room, token)
        await asyncio.wait_for(opened.wait(), OPEN_TIMEOUT)
        peer = next(p for p in node.peers.values() if p.kind == "whep")
        for _ in range(500):
            if peer.channels:
                break
            await asyncio.sleep(0.01)
        link = Link(session, channel, peer.channels[0], peer)
        yield link
    finally:
        await session.close()


async def _until(predicate: Callable[[], bool], timeout: float) -> None:  # noqa: ASYNC109
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)


async def _send_paced(channel: RTCDataChannel, messages: list[str] | list[bytes],
                      high_water: int = 64 * 1024) -> None:
    """Write everything, waiting on bufferedAmount as signalling.fanout.Outbox does."""
    low = asyncio.Event()
    channel.bufferedAmountLowThreshold = high_water // 4
    channel.on("bufferedamountlow", low.set)
    try:
        for m in messages:
            while channel.bufferedAmount >= high_water:
                low.clear()
                await asyncio.wait_for(low.wait(), 10)
            channel.send(m)
    finally:
        channel.remove_listener("bufferedamountlow", low.set)


async def test_node_uses_the_bundling_transport(node: Any, mint: Mint) -> None:
    async with _link(node, mint, "sctp-a") as link:
        assert isinstance(link.peer._sctp, BundlingSctpTransport)


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
async def test_thousands_of_messages_arrive_complete(
    node: Any, mint: Mint, ordered: bool
) -> None:
    async with _link(node, mint, "sctp-b", ordered=ordered) as link:
        assert link.node.ordered is ordered
        expected = [f"{PREFIX}{i}:" + "m" * (i % 200) for i in range(5000)]
        await _send_paced(link.node, expected)
        await _until(lambda: len(link.received) >= len(expected), 60)
        if ordered:
            assert link.received == expected
        else:
            assert sorted(map(str, link.received)) == sorted(expected)
        sctp = link.peer._sctp
        assert sctp.packets_sent < sctp.data_chunks_sent  # it did bundle


async def test_a_paced_burst_of_20000_all_arrive_in_order(node: Any, mint: Mint) -> None:
    async with _link(node, mint, "sctp-c") as link:
        expected = [f'{PREFIX}{{"seq":{i},"type":"product.card"}}' for i in range(20_000)]
        await _send_paced(link.node, expected, high_water=32 * 1024)
        await _until(lambda: len(link.received) >= len(expected), 120)
        assert link.received == expected


async def test_large_fragmented_messages_both_ways(node: Any, mint: Mint) -> None:
    async with _link(node, mint, "sctp-d") as link:
        big = [bytes([i]) * 60_000 for i in range(20)] + [b"z" * 1161, b"q" * 1160]
        await _send_paced(link.node, big)
        await _until(lambda: len(link.received) >= len(big), 60)
        assert link.received == big
        # Inbound: a 15 KB ping (13 fragments) is reassembled and answered.
        pongs: list[dict[str, Any]] = []

        def on_message(raw: str | bytes) -> None:
            if isinstance(raw, str) and '"clock.pong"' in raw:
                pongs.append(json.loads(raw))

        link.client.on("message", on_message)
        for i in range(5):
            link.client.send(json.dumps({"v": 1, "type": "clock.ping", "id": i,
                                         "pad": "p" * 15_000}))
        await _until(lambda: len(pongs) >= 5, 30)
        assert [p["id"] for p in pongs] == list(range(5))


async def test_client_requests_get_every_reply_in_order(node: Any, mint: Mint) -> None:
    """Thousands of client -> node messages (the node's delayed SACKs), each answered."""
    async with _link(node, mint, "sctp-e") as link:
        pongs: list[int] = []

        def on_message(raw: str | bytes) -> None:
            if isinstance(raw, str) and '"clock.pong"' in raw:
                pongs.append(json.loads(raw)["id"])

        link.client.on("message", on_message)
        pings = [json.dumps({"v": 1, "type": "clock.ping", "id": i}) for i in range(3000)]
        await _send_paced(link.client, pings, high_water=16 * 1024)
        await _until(lambda: len(pongs) >= 3000, 60)
        assert pongs == list(range(3000))
