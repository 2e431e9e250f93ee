"""Property: no interleaving of concurrent orders and retries oversells the SQLite store.

Hypothesis draws the stock, the orders (viewer, key, quantity, time), how they are grouped
into concurrent waves (``asyncio.gather``), how many times each call yields before it
reaches the store, and which of two store instances (two connections to the same file, like
two worker processes) serves it. Each example uses a fresh real database file.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signalling.domain.catalog import Product
from signalling.domain.orders import OrderRequest, OrderResult
from signalling.domain.sale import Sale
from signalling.store.sqlite import SqliteStore


@dataclass(frozen=True)
class Call:
    viewer: int
    key: int
    quantity: int
    now: float
    yields: int
    instance: int


calls = st.builds(
    Call,
    viewer=st.integers(0, 4),
    key=st.integers(0, 3),
    quantity=st.integers(1, 4),
    # Mostly inside the [100, 200) window; some before and after it.
    now=st.sampled_from([50.0, 150.0, 150.0, 150.0, 199.0, 250.0]),
    yields=st.integers(0, 3),
    instance=st.integers(0, 1),
)
waves = st.lists(st.lists(calls, min_size=1, max_size=12), min_size=1, max_size=5)


async def run_scenario(path: Path, stock: int, plan: list[list[Call]]) -> None:
    stores = [SqliteStore(path), SqliteStore(path)]
    for s in stores:
        await s.open()
    try:
        await stores[0].create_product(Product("p1", "r", "Hat", 100, "EUR", "", stock))
        await stores[0].put_sale(Sale("s1", "r", "p1", starts_at=100.0, ends_at=200.0))

        async def place(call: Call) -> tuple[tuple[str, str], OrderResult]:
            for _ in range(call.yields):
                await asyncio.sleep(0)  # reorders the calls, not a timing wait
            req = OrderRequest(f"v{call.viewer}", "r", "s1", "p1", call.quantity, f"k{call.key}")
            return (req.viewer, req.idempotency_key), await stores[call.instance].place_order(
                req, call.now
            )

        answers: dict[tuple[str, str], set[OrderResult]] = {}
        for wave in plan:
            for attempt, result in await asyncio.gather(*(place(c) for c in wave)):
                answers.setdefault(attempt, set()).add(result)

        assert all(len(a) == 1 for a in answers.values()), "a retry got a different result"
        confirmed = [r for a in answers.values() for r in a if r.status == "confirmed"]
        sold = sum(r.quantity for r in confirmed)
        assert sold <= stock
        remaining = await stores[1].stock("p1")
        assert remaining + sold == stock
        orders = await stores[1].list_orders(sale_id="s1")
        assert sorted(o.order_id for o in orders) == sorted(str(r.order_id) for r in confirmed)
        assert sum(o.quantity for o in orders) == sold
    finally:
        for s in stores:
            await s.close()


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stock=st.integers(0, 15), plan=waves)
def test_no_interleaving_oversells(tmp_path: Path, stock: int, plan: list[list[Call]]) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path) as d:
        asyncio.run(run_scenario(Path(d) / "commerce.db", stock, plan))
