"""One contract, two stores: SQLite (real file) and Redis (real server, AOF + fsync always).

Time is a plain number passed as ``now``: the sale window is [1000, 2000) in these tests.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis

from signalling.domain.catalog import Product
from signalling.domain.orders import OrderRequest, OrderResult
from signalling.domain.sale import Sale, start, stop
from signalling.store import (
    CommerceStore,
    DuplicateProduct,
    StoreError,
    UnknownProduct,
    open_store,
    store_from_url,
)
from signalling.store.redis import RedisStore

ROOM = "room-1"
OPEN_AT = 1500.0


def product(pid: str = "p1", stock: int = 100, room: str = ROOM) -> Product:
    return Product(
        id=pid,
        room=room,
        name="Sneaker",
        price_cents=12999,
        currency="EUR",
        image_url="https://cdn.example/s.jpg",
        initial_stock=stock,
    )


def sale(sid: str = "s1", pid: str = "p1", room: str = ROOM) -> Sale:
    return Sale(id=sid, room=room, product_id=pid, starts_at=1000.0, ends_at=2000.0)


def order(viewer: str, key: str, qty: int = 1, sid: str = "s1", pid: str = "p1") -> OrderRequest:
    return OrderRequest(
        viewer=viewer, room=ROOM, sale_id=sid, product_id=pid, quantity=qty, idempotency_key=key
    )


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/commerce.db"
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[CommerceStore]:
    s = await open_store(store_url)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def selling(store: CommerceStore) -> CommerceStore:
    """A store with product p1 (stock 100) and sale s1 open over [1000, 2000)."""
    await store.create_product(product())
    await store.put_sale(sale())
    return store


async def test_products_round_trip_and_duplicates_never_reset_stock(store: CommerceStore) -> None:
    p = product()
    await store.create_product(p)
    await store.create_product(product("p2", stock=5))
    await store.create_product(product("p3", room="other"))
    assert await store.get_product("p1") == p
    assert await store.get_product("nope") is None
    assert [x.id for x in await store.list_products(ROOM)] == ["p1", "p2"]
    assert await store.stock("p2") == 5
    await store.place_order(order("v", "k"), OPEN_AT)  # no sale yet: recorded as invalid
    with pytest.raises(DuplicateProduct):
        await store.create_product(product("p2", stock=999))
    assert await store.stock("p2") == 5
    with pytest.raises(UnknownProduct):
        await store.stock("nope")


async def test_sales_round_trip_and_active_sale(store: CommerceStore) -> None:
    await store.create_product(product())
    with pytest.raises(UnknownProduct):
        await store.put_sale(sale(pid="nope"))
    with pytest.raises(UnknownProduct):
        await store.put_sale(sale(room="other"))  # product exists, but in another room
    early = Sale(id="s-early", room=ROOM, product_id="p1", starts_at=100.0, ends_at=200.0)
    later = Sale(id="s-later", room=ROOM, product_id="p1", starts_at=3000.0, ends_at=4000.0)
    for s in (sale(), early, later):
        await store.put_sale(s)
    assert await store.get_sale("s1") == sale()
    assert await store.get_sale("nope") is None
    assert [s.id for s in await store.list_sales(ROOM)] == ["s-early", "s1", "s-later"]
    assert (await store.active_sale(ROOM, 50.0)) == early  # soonest scheduled
    assert (await store.active_sale(ROOM, OPEN_AT)) == sale()  # the open one
    assert (await store.active_sale(ROOM, 2500.0)) == later
    assert await store.active_sale(ROOM, 5000.0) is None
    # Start/stop are replacements of the window, and the exact floats survive storage.
    stopped = stop(sale(), 1234.5678901234)
    await store.put_sale(stopped)
    assert await store.get_sale("s1") == stopped


async def test_confirmed_order_is_recorded_and_idempotent(selling: CommerceStore) -> None:
    first = await selling.place_order(order("alice", "k1", qty=3), OPEN_AT)
    assert first.status == "confirmed"
    assert first.order_id is not None
    assert (first.quantity, first.remaining) == (3, 97)
    # Retry, even much later, after the sale ended, with a different body: same answer.
    again = await selling.place_order(order("alice", "k1", qty=1), 9999.0)
    assert again == first
    assert await selling.stock("p1") == 97
    # The key is scoped per viewer: bob's "k1" is a different attempt.
    bob = await selling.place_order(order("bob", "k1", qty=1), OPEN_AT)
    assert bob.status == "confirmed" and bob.order_id != first.order_id
    orders = await selling.list_orders(sale_id="s1")
    assert [(o.viewer, o.quantity, o.order_id) for o in orders] == [
        ("alice", 3, first.order_id),
        ("bob", 1, bob.order_id),
    ]
    assert orders[0].created_at == OPEN_AT
    assert await selling.order_count("s1") == 2
    assert len(await selling.list_orders(room=ROOM)) == 2
    assert await selling.list_orders(room="other") == []
    assert len(await selling.list_orders()) == 2


async def test_sold_out_leaves_stock_and_tells_what_remains(store: CommerceStore) -> None:
    await store.create_product(product(stock=3))
    await store.put_sale(sale())
    assert (await store.place_order(order("a", "k1", qty=2), OPEN_AT)).status == "confirmed"
    refused = await store.place_order(order("b", "k1", qty=2), OPEN_AT)
    assert (refused.status, refused.remaining, refused.order_id) == ("sold_out", 1, None)
    assert (await store.place_order(order("b", "k2", qty=1), OPEN_AT)).remaining == 0
    assert (await store.place_order(order("c", "k1", qty=1), OPEN_AT)).status == "sold_out"
    assert await store.stock("p1") == 0
    assert await store.order_count("s1") == 2


async def test_sale_window_is_enforced_with_the_callers_now(selling: CommerceStore) -> None:
    early = await selling.place_order(order("a", "early"), 999.999)
    assert early.status == "sale_not_open"
    assert (await selling.place_order(order("a", "edge"), 1000.0)).status == "confirmed"
    assert (await selling.place_order(order("a", "late"), 2000.0)).status == "sale_ended"
    # A recorded refusal is the key's answer forever, even once the sale is open.
    assert await selling.place_order(order("a", "early"), OPEN_AT) == early
    # Stopping the sale is a new window; orders after it are refused.
    await selling.put_sale(stop(sale(), 1600.0))
    assert (await selling.place_order(order("b", "k"), 1600.0)).status == "sale_ended"
    assert await selling.stock("p1") == 99


async def test_manual_start_opens_a_scheduled_sale(store: CommerceStore) -> None:
    await store.create_product(product())
    scheduled = Sale(id="s1", room=ROOM, product_id="p1", starts_at=5000.0, ends_at=6000.0)
    await store.put_sale(scheduled)
    assert (await store.place_order(order("a", "k1"), 100.0)).status == "sale_not_open"
    await store.put_sale(start(scheduled, 100.0))
    assert (await store.place_order(order("a", "k2"), 100.0)).status == "confirmed"


async def test_invalid_requests(selling: CommerceStore) -> None:
    assert (await selling.place_order(order("a", "k1", sid="nope"), OPEN_AT)).status == "invalid"
    await selling.create_product(product("p2"))
    wrong_product = await selling.place_order(order("a", "k2", pid="p2"), OPEN_AT)
    assert wrong_product.status == "invalid"
    wrong_room = OrderRequest("a", "other", "s1", "p1", 1, "k3")
    assert (await selling.place_order(wrong_room, OPEN_AT)).status == "invalid"
    # A malformed request is refused without being recorded: the key stays usable.
    too_many = await selling.place_order(order("a", "k4", qty=11), OPEN_AT)
    assert too_many == OrderResult("k4", "invalid", 11)
    assert (await selling.place_order(order("a", "k4", qty=1), OPEN_AT)).status == "confirmed"
    bad_key = await selling.place_order(order("a", "bad key!"), OPEN_AT)
    assert bad_key.status == "invalid"
    assert await selling.stock("p1") == 99


async def test_flash_sale_2000_orders_500_viewers_never_oversell(selling: CommerceStore) -> None:
    rng = random.Random(7)
    attempts = [order(f"viewer-{v}", f"key-{k}") for v in range(500) for k in range(4)]
    # 2,000 requests: 1,600 distinct attempts plus 400 retries of some of them, shuffled.
    requests = attempts[:1600] + rng.sample(attempts[:1600], 400)
    rng.shuffle(requests)
    results = await asyncio.gather(*(selling.place_order(r, OPEN_AT) for r in requests))

    by_attempt: dict[tuple[str, str], set[OrderResult]] = {}
    for req, res in zip(requests, results, strict=True):
        by_attempt.setdefault((req.viewer, req.idempotency_key), set()).add(res)
    assert all(len(answers) == 1 for answers in by_attempt.values()), "a retry got a new answer"
    final = [next(iter(a)) for a in by_attempt.values()]
    statuses = [r.status for r in final]
    assert statuses.count("confirmed") == 100
    assert statuses.count("sold_out") == len(final) - 100
    confirmed_ids = {r.order_id for r in final if r.status == "confirmed"}
    assert len(confirmed_ids) == 100
    assert sorted(r.remaining or 0 for r in final if r.status == "confirmed") == list(range(100))

    orders = await selling.list_orders(sale_id="s1")
    assert {o.order_id for o in orders} == confirmed_ids
    assert await selling.stock("p1") + sum(o.quantity for o in orders) == 100
    assert await selling.order_count("s1") == 100


async def test_everything_survives_close_and_reopen(store_url: str) -> None:
    async with store_from_url(store_url) as s:
        await s.create_product(product())
        await s.put_sale(sale())
        result = await s.place_order(order("a", "k1", qty=2), OPEN_AT)
    async with store_from_url(store_url) as s:
        assert await s.get_sale("s1") == sale()
        assert await s.stock("p1") == 98
        assert await s.place_order(order("a", "k1", qty=2), OPEN_AT) == result
        assert [o.order_id for o in await s.list_orders()] == [result.order_id]


async def test_redis_store_refuses_a_server_that_would_lose_orders(redis_url: str) -> None:
    admin = redis.Redis.from_url(redis_url)
    admin.config_set("appendfsync", "everysec")
    admin.close()
    with pytest.raises(StoreError, match="appendfsync"):
        await RedisStore(redis_url).open()
    lenient = RedisStore(redis_url, require_durable=False)
    await lenient.open()
    await lenient.close()


def test_store_urls(tmp_path: Path) -> None:
    from signalling.store import default_store_url
    from signalling.store.sqlite import SqliteStore

    assert default_store_url(tmp_path) == f"sqlite:///{tmp_path}/commerce.db"
    s = store_from_url(default_store_url(tmp_path))
    assert isinstance(s, SqliteStore) and s.path == tmp_path / "commerce.db"
    rel = store_from_url("sqlite:///data/c.db")
    assert isinstance(rel, SqliteStore) and str(rel.path) == "data/c.db"
    assert isinstance(store_from_url("redis://localhost:6379/2"), RedisStore)
    for bad in ("sqlite:///", "sqlite:///:memory:", "postgres://x", "c.db"):
        with pytest.raises(ValueError):
            store_from_url(bad)
