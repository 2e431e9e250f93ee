"""kill -9 of the node in the middle of a sale: every acknowledged order survives.

The node runs as ``python -m sfu serve`` (default SQLite store in its data dir). Viewers
keep orders in flight over their datachannels; once enough ``order.result`` confirmations
arrived the node is SIGKILLed by PID, restarted on the same data dir, and the operator API
must list every confirmed order a viewer was told about, with stock + sold = initial stock.
A retry of an acknowledged key after the restart gets the same order back.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.fanout import NodeProcess
from tests.e2e.commerce_clients import Viewer, api, close_viewers, connect_viewers, setup_sale

ROOM = "crash"
VIEWERS = 60
ORDERS_PER_VIEWER = 10  # within the per-viewer burst, so no order is rate limited
IN_FLIGHT = 3  # orders each viewer keeps outstanding
KILL_AFTER = 150  # confirmed acknowledgements before the kill
STOCK = 100_000


@pytest.fixture
def node_proc(tmp_path: Path) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path / "node-data")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


async def test_kill_9_keeps_every_acknowledged_order(node_proc: NodeProcess) -> None:
    node = node_proc
    admin = node.token(ROOM, "host", ["admin"])
    await setup_sale(node.http_url, ROOM, admin, product="mug", sale="s1", stock=STOCK)
    viewers = await connect_viewers(
        node.http_url, ROOM, [f"b{i}" for i in range(VIEWERS)],
        lambda name: node.token(ROOM, name, ["subscribe"]),
    )
    acked: dict[str, tuple[str, str, int]] = {}  # order_id -> (viewer, key, quantity)
    enough = asyncio.Event()
    sent: dict[str, int] = {v.name: 0 for v in viewers}

    def place_next(v: Viewer) -> None:
        n = sent[v.name]
        if n < ORDERS_PER_VIEWER and not enough.is_set():
            sent[v.name] = n + 1
            v.order(f"k{n}", "mug", "s1", quantity=1 + n % 3)

    def watch(v: Viewer) -> None:
        original = v.peer.on_message
        assert original is not None

        def on_message(raw: str | bytes) -> None:
            original(raw)
            msg = json.loads(raw)
            if msg.get("type") == "order.result" and msg["status"] == "confirmed":
                acked[msg["order_id"]] = (v.name, msg["idempotency_key"], msg["quantity"])
                if len(acked) >= KILL_AFTER:
                    enough.set()
                place_next(v)

        v.peer.on_message = on_message

    try:
        for v in viewers:
            watch(v)
            for _ in range(IN_FLIGHT):
                place_next(v)
        await asyncio.wait_for(enough.wait(), 30)
        node.kill()  # SIGKILL with orders in flight
        in_flight = sum(sent.values()) - sum(len(v.results) for v in viewers)
        snapshot = dict(acked)
    finally:
        await close_viewers(viewers)
    assert in_flight > 0, "the kill should have caught orders in flight"

    node.start()  # same data dir, same credentials
    status, orders = await api(node.http_url, "GET", f"/api/rooms/{ROOM}/orders?sale_id=s1", admin)
    assert status == 200, orders
    stored = {o["order_id"]: o for o in orders["orders"]}
    missing = [oid for oid in snapshot if oid not in stored]
    assert not missing, f"{len(missing)} acknowledged orders lost: {missing[:5]}"
    for oid, (viewer, key, quantity) in snapshot.items():
        o = stored[oid]
        assert (o["viewer"], o["idempotency_key"], o["quantity"]) == (viewer, key, quantity)
    status, products = await api(node.http_url, "GET", f"/api/rooms/{ROOM}/products", admin)
    assert status == 200
    assert products["products"][0]["stock"] + orders["quantity"] == STOCK

    # Idempotency survives the crash: the same key from the same viewer -> the same order.
    oid, (viewer, key, quantity) = next(iter(snapshot.items()))
    [again] = await connect_viewers(
        node.http_url, ROOM, [viewer], lambda name: node.token(ROOM, name, ["subscribe"])
    )
    try:
        again.order(key, "mug", "s1", quantity=quantity)
        result: Any = await again.wait_for(lambda v: v.results.get(key), 10)
        assert result[0]["status"] == "confirmed" and result[0]["order_id"] == oid
    finally:
        await close_viewers([again])
