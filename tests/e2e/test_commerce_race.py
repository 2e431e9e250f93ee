"""500 viewers race 2,000 ``order.place`` over real datachannels for a stock of 100.

Exactly 100 orders are confirmed, every other one gets ``sold_out``, a retry with the same
idempotency key gets the same answer, and the store agrees (stock + sold = initial stock).
Run against the default SQLite store and against a real redis-server (AOF, fsync always).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.commerce_clients import api, close_viewers, connect_viewers, setup_sale
from tests.integration.conftest import RedisServer

VIEWERS = 500
ORDERS_PER_VIEWER = 4
STOCK = 100
ROOM = "race"


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield ""  # the node's default: sqlite:///<data_dir>/commerce.db
        return
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
async def commerce_node(node_settings: Any, store_url: str) -> AsyncIterator[Any]:
    from sfu.node import Node

    n = Node(dataclasses.replace(node_settings, store_url=store_url))
    await asyncio.wait_for(n.start(), 15)
    try:
        yield n
    finally:
        await asyncio.wait_for(n.stop(), 30)


async def test_race_exactly_stock_confirmed(
    commerce_node: Any, mint: Callable[..., str]
) -> None:
    node = commerce_node
    admin = mint(ROOM, "host", ["admin"])
    await setup_sale(node.http_url, ROOM, admin, product="drop", sale="flash", stock=STOCK)
    viewers = await connect_viewers(
        node.http_url, ROOM, [f"v{i}" for i in range(VIEWERS)],
        lambda name: mint(ROOM, name, ["subscribe"]),
    )
    try:
        keys = [f"k{k}" for k in range(ORDERS_PER_VIEWER)]
        for v in viewers:
            for key in keys:
                v.order(key, "drop", "flash")
        await asyncio.gather(*(
            v.wait_for(lambda v: all(k in v.results for k in keys), 60) for v in viewers
        ))
        first = {(v.name, k): v.results[k][0] for v in viewers for k in keys}
        statuses = Counter(r["status"] for r in first.values())
        assert statuses == {"confirmed": STOCK, "sold_out": VIEWERS * ORDERS_PER_VIEWER - STOCK}
        order_ids = {r["order_id"] for r in first.values() if r["status"] == "confirmed"}
        assert len(order_ids) == STOCK and None not in order_ids
        for r in first.values():
            if r["status"] == "sold_out":
                assert r["remaining"] == 0 and r["order_id"] is None, r

        # Retries with the same keys: the same answer, never a second decrement.
        for v in viewers:
            for key in keys:
                v.order(key, "drop", "flash")
        await asyncio.gather(*(
            v.wait_for(lambda v: all(len(v.results[k]) >= 2 for k in keys), 60)
            for v in viewers
        ))
        for v in viewers:
            for key in keys:
                again = v.results[key][1]
                assert again == first[(v.name, key)], (v.name, key, again)

        status, orders = await api(node.http_url, "GET", f"/api/rooms/{ROOM}/orders", admin)
        assert status == 200
        assert orders["count"] == STOCK and orders["quantity"] == STOCK
        assert {o["order_id"] for o in orders["orders"]} == order_ids
        status, products = await api(node.http_url, "GET", f"/api/rooms/{ROOM}/products", admin)
        assert status == 200
        assert products["products"][0]["stock"] + orders["quantity"] == STOCK
        assert products["products"][0]["stock"] == 0

        # Stock went out as coalesced room messages with increasing seq.
        watcher = viewers[0]
        await watcher.wait_for(
            lambda v: any(m["type"] == "stock.updated" and m["stock"] == 0 for m in v.inbox), 10
        )
        seqs = [m["seq"] for m in watcher.inbox if m.get("seq") is not None]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
        assert len(watcher.of_type("stock.updated")) <= 20  # coalesced, not one per order
    finally:
        await close_viewers(viewers)
