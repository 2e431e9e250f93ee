"""Crash-test load generator: places orders forever and prints each acknowledgement.

Usage: python crashload.py STORE_URL VIEWER_PREFIX

Runs a few concurrent buyers against sale ``s1`` / product ``p1`` in room ``r`` (the parent
test creates them). After ``place_order`` returns a confirmation, and only then, it prints
``<order_id> <viewer> <key> <quantity>`` and flushes, so every printed line is an order the
store acknowledged. The parent kills this process with SIGKILL at an arbitrary moment.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time

from signalling.domain.orders import OrderRequest
from signalling.store import open_store

BUYERS = 4


async def buyer(store_url: str, prefix: str, n: int) -> None:
    store = await open_store(store_url)
    viewer = f"{prefix}-{n}"
    for i in itertools.count():
        quantity = 1 + i % 3
        key = f"k{i}"
        request = OrderRequest(viewer, "r", "s1", "p1", quantity, key)
        result = await store.place_order(request, time.time())
        if result.status == "confirmed":
            sys.stdout.write(f"{result.order_id} {viewer} {key} {quantity}\n")
            sys.stdout.flush()


async def main() -> None:
    url, prefix = sys.argv[1], sys.argv[2]
    await asyncio.gather(*(buyer(url, prefix, n) for n in range(BUYERS)))


if __name__ == "__main__":
    asyncio.run(main())
