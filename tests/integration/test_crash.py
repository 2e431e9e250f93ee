"""Durability under kill -9: every order a client was told about survives the crash.

A child process (``crashload.py``) places orders in a loop and prints each acknowledged one;
the parent reads a bounded number of lines, SIGKILLs the child (and, in one test, the
redis-server), reopens the store and checks every printed order is there and that stock and
orders still add up to the initial stock.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from signalling.domain.catalog import Product
from signalling.domain.orders import OrderRequest
from signalling.domain.sale import Sale
from signalling.store import store_from_url
from tests.integration.conftest import RedisServer

SCRIPT = Path(__file__).with_name("crashload.py")
INITIAL_STOCK = 1_000_000
ACKS_BEFORE_KILL = 150
READ_TIMEOUT_S = 20.0


async def prepare(url: str) -> None:
    async with store_from_url(url) as store:
        await store.create_product(
            Product("p1", "r", "Mug", 900, "EUR", "", initial_stock=INITIAL_STOCK)
        )
        await store.put_sale(Sale("s1", "r", "p1", starts_at=0.0, ends_at=9_999_999_999.0))


def start_load(url: str, prefix: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), url, prefix],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    )


def read_acks(proc: subprocess.Popen[bytes], count: int) -> list[list[str]]:
    """Read ``count`` acknowledgement lines, failing (not hanging) if they do not come."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    deadline = time.monotonic() + READ_TIMEOUT_S
    try:
        while buf.count(b"\n") < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sel.select(remaining):
                got = buf.count(b"\n")
                pytest.fail(f"only {got} acknowledgements in {READ_TIMEOUT_S}s")
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                pytest.fail(f"load generator exited early:\n{err[-2000:]}")
            buf += chunk
    finally:
        sel.close()
    # Only complete lines count: a torn last line was never fully acknowledged to us.
    return [raw.decode().split() for raw in buf.split(b"\n")[:-1]]


def kill9(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


async def assert_acks_survived(url: str, acks: list[list[str]]) -> None:
    async with store_from_url(url) as store:
        orders = {o.order_id: o for o in await store.list_orders(sale_id="s1")}
        for order_id, viewer, key, quantity in acks:
            assert order_id in orders, f"acknowledged order {order_id} was lost"
            o = orders[order_id]
            assert (o.viewer, o.idempotency_key, o.quantity) == (viewer, key, int(quantity))
        assert await store.stock("p1") + sum(o.quantity for o in orders.values()) == INITIAL_STOCK
        assert await store.order_count("s1") == len(orders)
        # A client retrying after the crash gets its original order back, not a second one.
        order_id, viewer, key, quantity = acks[-1]
        retry = OrderRequest(viewer, "r", "s1", "p1", int(quantity), key)
        assert (await store.place_order(retry, time.time())).order_id == order_id
        assert len(await store.list_orders(sale_id="s1")) == len(orders)


async def test_sqlite_acknowledged_orders_survive_kill9_of_the_node(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/commerce.db"
    await prepare(url)
    proc = start_load(url, "v")
    try:
        acks = await asyncio.to_thread(read_acks, proc, ACKS_BEFORE_KILL)
    finally:
        kill9(proc)
    assert len(acks) >= ACKS_BEFORE_KILL
    await assert_acks_survived(url, acks)


async def test_redis_acknowledged_orders_survive_kill9_of_the_client(redis_url: str) -> None:
    await prepare(redis_url)
    proc = start_load(redis_url, "v")
    try:
        acks = await asyncio.to_thread(read_acks, proc, ACKS_BEFORE_KILL)
    finally:
        kill9(proc)
    await assert_acks_survived(redis_url, acks)


async def test_redis_acknowledged_orders_survive_kill9_of_redis(
    redis_server: RedisServer,
) -> None:
    await prepare(redis_server.url)
    proc = start_load(redis_server.url, "v")
    try:
        acks = await asyncio.to_thread(read_acks, proc, ACKS_BEFORE_KILL)
        # The server dies first, mid-load: no shutdown, no final AOF rewrite or fsync.
        redis_server.kill()
    finally:
        kill9(proc)
    redis_server.start()  # same port and --dir: recovers from the AOF alone (--save '')
    await assert_acks_survived(redis_server.url, acks)
