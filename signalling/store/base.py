"""The durable commerce store contract: products, sales, stock and orders.

The service talks only to ``CommerceStore``; SQLite (embedded default, one node) and Redis
(several nodes sharing a sale) implement it, and one contract test suite runs against both.

Guarantees of ``place_order(request, now)``:

- **Atomic**: the sale-window check, the stock check, the decrement and the order record
  happen as one indivisible step, so no interleaving of concurrent orders, from any number
  of tasks, processes or nodes, sells more than the stock.
- **Idempotent**: the result is recorded under ``(request.viewer, request.idempotency_key)``
  in the same step; every later call with that pair returns the recorded result unchanged
  (same ``order_id``, same ``remaining``) and never decrements again. Requests whose shape
  is invalid (``domain.orders.validate_request``) get ``invalid`` without being recorded.
- **Durable**: when it returns, the decision is on disk (SQLite: WAL + synchronous=FULL;
  Redis: AOF with appendfsync always). An acknowledged order survives kill -9 of the node
  and of the database process.

``now`` is the server's Unix time in seconds (``time.time()`` in the service), read once
per request by the caller and used for the sale window; it is also the order's
``created_at``.

Store errors (I/O, lost connection) are raised as exceptions. The outcome of such a call is
unknown to the caller, so it must retry with the *same* idempotency key, never a new one.
"""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self

from signalling.domain.catalog import Product
from signalling.domain.orders import Order, OrderRequest, OrderResult
from signalling.domain.sale import Sale, sale_state


class StoreError(Exception):
    """The store cannot do what was asked (not an order outcome: those are results)."""


class DuplicateProduct(StoreError):
    pass


class UnknownProduct(StoreError):
    pass


class CommerceStore(abc.ABC):
    """Async interface; every method may be awaited concurrently from one event loop."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and create or migrate the schema. Call once before anything else."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and threads; safe to call twice."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- catalogue -------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_product(self, product: Product) -> None:
        """Store a new product and set its stock to ``initial_stock``.

        Raises ``DuplicateProduct`` if the id exists (stock is never silently reset)."""

    @abc.abstractmethod
    async def get_product(self, product_id: str) -> Product | None: ...

    @abc.abstractmethod
    async def list_products(self, room: str) -> list[Product]:
        """The room's products, ordered by id."""

    # --- sales -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def put_sale(self, sale: Sale) -> None:
        """Create or replace a sale (start/stop are replacements of the window).

        Raises ``UnknownProduct`` if the product does not exist in the sale's room."""

    @abc.abstractmethod
    async def get_sale(self, sale_id: str) -> Sale | None: ...

    @abc.abstractmethod
    async def list_sales(self, room: str) -> list[Sale]:
        """The room's sales, ordered by ``starts_at`` then id."""

    async def active_sale(self, room: str, now: float) -> Sale | None:
        """The sale viewers of ``room`` should see at ``now``: the open one that started
        last, else the scheduled one starting soonest, else None."""
        sales = await self.list_sales(room)
        open_ = [s for s in sales if sale_state(s, now) == "open"]
        if open_:
            return max(open_, key=lambda s: (s.starts_at, s.id))
        scheduled = [s for s in sales if sale_state(s, now) == "scheduled"]
        if scheduled:
            return min(scheduled, key=lambda s: (s.starts_at, s.id))
        return None

    # --- stock and orders ------------------------------------------------------------------

    @abc.abstractmethod
    async def stock(self, product_id: str) -> int:
        """Items left. Raises ``UnknownProduct`` for an unknown id."""

    @abc.abstractmethod
    async def place_order(self, request: OrderRequest, now: float) -> OrderResult:
        """Decide and record one order atomically, idempotently and durably (see module)."""

    @abc.abstractmethod
    async def list_orders(self, room: str | None = None, sale_id: str | None = None) -> list[Order]:
        """Confirmed orders, oldest first, optionally filtered by room and/or sale."""

    @abc.abstractmethod
    async def order_count(self, sale_id: str) -> int:
        """Number of confirmed orders for the sale (not the quantity sold)."""
