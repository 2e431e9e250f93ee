"""SQLite implementation of ``CommerceStore``: the embedded default for a single node.

Durability: WAL journal with ``synchronous=FULL``, so a COMMIT has reached the disk (fsync
of the WAL) before ``place_order`` returns.

Atomicity: each write runs inside ``BEGIN IMMEDIATE``, which takes SQLite's write lock at
the start, so the read of the sale and stock, ``domain.orders.decide``, the guarded
decrement ``UPDATE stock SET remaining = remaining - ? WHERE product_id = ? AND
remaining >= ?`` and the INSERT of the order row (``UNIQUE (viewer, idempotency_key)``)
see no concurrent writer, from this process or any other process sharing the file.

Threading: the sqlite3 connection lives on ONE dedicated worker thread
(``signalling.store.sqlite_thread.SqliteThread``) and every statement runs there, so the
event loop never blocks on disk and no two threads ever touch the connection.

Group commit: an fsync costs milliseconds, so concurrent ``place_order`` calls queue up
while the previous transaction commits, and the next transaction decides the whole queue,
each order inside its own SAVEPOINT, then commits once. Nobody is answered before the
COMMIT that holds their order, so the guarantees are unchanged while throughput in a flash
sale scales with the batch instead of with fsyncs per second.

Schema versions are ``PRAGMA user_version``; ``_MIGRATIONS[i]`` upgrades version i to i+1.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import uuid
from pathlib import Path
from typing import Final

from signalling.domain.catalog import Product
from signalling.domain.orders import (
    Order,
    OrderRequest,
    OrderResult,
    decide,
    invalid,
    validate_request,
    with_order_id,
)
from signalling.domain.sale import Sale
from signalling.store.base import CommerceStore, DuplicateProduct, StoreError, UnknownProduct
from signalling.store.sqlite_thread import SqliteThread

_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE products (
            id TEXT PRIMARY KEY,
            room TEXT NOT NULL,
            name TEXT NOT NULL,
            price_cents INTEGER NOT NULL,
            currency TEXT NOT NULL,
            image_url TEXT NOT NULL,
            initial_stock INTEGER NOT NULL
        ) STRICT""",
        "CREATE INDEX products_room ON products (room, id)",
        # The CHECK is a second line of defence: even a buggy statement cannot oversell.
        """CREATE TABLE stock (
            product_id TEXT PRIMARY KEY REFERENCES products (id),
            remaining INTEGER NOT NULL CHECK (remaining >= 0)
        ) STRICT""",
        """CREATE TABLE sales (
            id TEXT PRIMARY KEY,
            room TEXT NOT NULL,
            product_id TEXT NOT NULL REFERENCES products (id),
            starts_at REAL NOT NULL,
            ends_at REAL NOT NULL
        ) STRICT""",
        "CREATE INDEX sales_room ON sales (room, starts_at)",
        # Every decided attempt is a row (that is what makes a key's answer permanent);
        # confirmed ones carry an order_id.
        """CREATE TABLE orders (
            seq INTEGER PRIMARY KEY,
            viewer TEXT NOT NULL,
            idempotency_key TEXT NOT NULL,
            status TEXT NOT NULL,
            order_id TEXT UNIQUE,
            room TEXT NOT NULL,
            sale_id TEXT NOT NULL,
            product_id TEXT NOT NULL,
            quantity INTEGER NOT NULL,
            remaining INTEGER,
            created_at REAL NOT NULL,
            UNIQUE (viewer, idempotency_key)
        ) STRICT""",
        "CREATE INDEX orders_sale ON orders (sale_id, status)",
        "CREATE INDEX orders_room ON orders (room, status)",
    ),
)
SCHEMA_VERSION: Final = len(_MIGRATIONS)

_ORDER_COLUMNS: Final = (
    "order_id, viewer, room, sale_id, product_id, quantity, idempotency_key, created_at"
)

_Pending = tuple[OrderRequest, float, "asyncio.Future[OrderResult]"]


def new_order_id() -> str:
    return "o_" + uuid.uuid4().hex


class SqliteStore(CommerceStore):
    def __init__(
        self, path: str | Path, *, busy_timeout_s: float = 10.0, max_batch: int = 512
    ) -> None:
        self.max_batch = max_batch
        self._thread = SqliteThread(path, busy_timeout_s=busy_timeout_s, name="sqlite-store")
        self._pending: list[_Pending] = []
        self._drainer: asyncio.Task[None] | None = None

    # --- plumbing ---------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._thread.path

    async def open(self) -> None:
        await self._thread.open(self._migrate)

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Upgrade the schema to SCHEMA_VERSION (inside the opening transaction)."""
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this code's "
                f"{SCHEMA_VERSION}"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[target - 1]:
                db.execute(statement)
            # PRAGMA does not take parameters; target is our own integer.
            db.execute(f"PRAGMA user_version = {target}")

    async def close(self) -> None:
        if not self._thread.is_open:
            return
        if self._drainer is not None:
            await asyncio.shield(self._drainer)
        await self._thread.close()

    # --- catalogue and sales ----------------------------------------------------------------

    async def create_product(self, product: Product) -> None:
        await self._thread.transact(functools.partial(self._create_product, product))

    @staticmethod
    def _create_product(product: Product, db: sqlite3.Connection) -> None:
        try:
            db.execute(
                "INSERT INTO products (id, room, name, price_cents, currency, image_url,"
                " initial_stock) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    product.id,
                    product.room,
                    product.name,
                    product.price_cents,
                    product.currency,
                    product.image_url,
                    product.initial_stock,
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise DuplicateProduct(f"product {product.id} exists") from exc
        db.execute(
            "INSERT INTO stock (product_id, remaining) VALUES (?, ?)",
            (product.id, product.initial_stock),
        )

    async def get_product(self, product_id: str) -> Product | None:
        rows = await self._thread.run(self._query, "SELECT * FROM products WHERE id = ?", (product_id,))
        return _product(rows[0]) if rows else None

    async def list_products(self, room: str) -> list[Product]:
        rows = await self._thread.run(
            self._query, "SELECT * FROM products WHERE room = ? ORDER BY id", (room,)
        )
        return [_product(r) for r in rows]

    def _query(self, sql: str, params: tuple[object, ...]) -> list[sqlite3.Row]:
        cur = self._thread.db().execute(sql, params)
        cur.row_factory = sqlite3.Row
        return cur.fetchall()

    async def put_sale(self, sale: Sale) -> None:
        await self._thread.transact(functools.partial(self._put_sale, sale))

    @staticmethod
    def _put_sale(sale: Sale, db: sqlite3.Connection) -> None:
        row = db.execute(
            "SELECT 1 FROM products WHERE id = ? AND room = ?", (sale.product_id, sale.room)
        ).fetchone()
        if row is None:
            raise UnknownProduct(f"no product {sale.product_id} in room {sale.room}")
        db.execute(
            "INSERT INTO sales (id, room, product_id, starts_at, ends_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET room = excluded.room,"
            " product_id = excluded.product_id, starts_at = excluded.starts_at,"
            " ends_at = excluded.ends_at",
            (sale.id, sale.room, sale.product_id, float(sale.starts_at), float(sale.ends_at)),
        )

    async def get_sale(self, sale_id: str) -> Sale | None:
        rows = await self._thread.run(self._query, "SELECT * FROM sales WHERE id = ?", (sale_id,))
        return _sale(rows[0]) if rows else None

    async def list_sales(self, room: str) -> list[Sale]:
        rows = await self._thread.run(
            self._query, "SELECT * FROM sales WHERE room = ? ORDER BY starts_at, id", (room,)
        )
        return [_sale(r) for r in rows]

    # --- stock and orders -------------------------------------------------------------------

    async def stock(self, product_id: str) -> int:
        rows = await self._thread.run(
            self._query, "SELECT remaining FROM stock WHERE product_id = ?", (product_id,)
        )
        if not rows:
            raise UnknownProduct(f"no product {product_id}")
        return int(rows[0][0])

    async def place_order(self, request: OrderRequest, now: float) -> OrderResult:
        if validate_request(request) is not None:
            return invalid(request)
        if not self._thread.is_open:
            raise StoreError("sqlite-store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[OrderResult] = loop.create_future()
        self._pending.append((request, now, future))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        # Shielded: a cancelled caller must not cancel the batch it rode in; its order may
        # still commit, which is why clients retry with the same key.
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                try:
                    outcomes = await self._thread.run(self._decide_batch, [(r, n) for r, n, _ in batch])
                except BaseException as exc:  # the whole transaction failed: nobody confirmed
                    for _, _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, _, fut), outcome in zip(batch, outcomes, strict=True):
                    if fut.done():
                        continue
                    if isinstance(outcome, BaseException):
                        fut.set_exception(outcome)
                    else:
                        fut.set_result(outcome)
        finally:
            self._drainer = None

    def _decide_batch(
        self, batch: list[tuple[OrderRequest, float]]
    ) -> list[OrderResult | Exception]:
        def run(db: sqlite3.Connection) -> list[OrderResult | Exception]:
            outcomes: list[OrderResult | Exception] = []
            for request, now in batch:
                # A savepoint per order: one failing order must not undo its batch-mates.
                db.execute("SAVEPOINT one_order")
                try:
                    outcomes.append(self._place_one(db, request, now))
                except Exception as exc:
                    db.execute("ROLLBACK TO one_order")
                    outcomes.append(exc)
                db.execute("RELEASE one_order")
            return outcomes

        return self._thread.write(run)

    @staticmethod
    def _place_one(db: sqlite3.Connection, request: OrderRequest, now: float) -> OrderResult:
        row = db.execute(
            "SELECT status, quantity, order_id, remaining FROM orders"
            " WHERE viewer = ? AND idempotency_key = ?",
            (request.viewer, request.idempotency_key),
        ).fetchone()
        if row is not None:
            return OrderResult(request.idempotency_key, row[0], row[1], row[2], row[3])
        srow = db.execute(
            "SELECT id, room, product_id, starts_at, ends_at FROM sales WHERE id = ?",
            (request.sale_id,),
        ).fetchone()
        sale = Sale(*srow) if srow is not None else None
        krow = db.execute(
            "SELECT remaining FROM stock WHERE product_id = ?", (request.product_id,)
        ).fetchone()
        stock = int(krow[0]) if krow is not None else 0
        result = decide(sale, stock, request, now)
        if result.status == "confirmed":
            cur = db.execute(
                "UPDATE stock SET remaining = remaining - ? WHERE product_id = ? AND remaining >= ?",
                (request.quantity, request.product_id, request.quantity),
            )
            if cur.rowcount != 1:
                # Unreachable while we hold the write lock; kept so a logic slip can only
                # ever refuse a sale, never oversell.
                raise StoreError("stock changed under the write lock")
            result = with_order_id(result, new_order_id())
        db.execute(
            "INSERT INTO orders (viewer, idempotency_key, status, order_id, room, sale_id,"
            " product_id, quantity, remaining, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                request.viewer,
                request.idempotency_key,
                result.status,
                result.order_id,
                request.room,
                request.sale_id,
                request.product_id,
                result.quantity,
                result.remaining,
                float(now),
            ),
        )
        return result

    async def list_orders(self, room: str | None = None, sale_id: str | None = None) -> list[Order]:
        sql = f"SELECT {_ORDER_COLUMNS} FROM orders WHERE status = 'confirmed'"
        params: list[object] = []
        if room is not None:
            sql += " AND room = ?"
            params.append(room)
        if sale_id is not None:
            sql += " AND sale_id = ?"
            params.append(sale_id)
        rows = await self._thread.run(self._query, sql + " ORDER BY seq", tuple(params))
        return [Order(*r) for r in rows]

    async def order_count(self, sale_id: str) -> int:
        rows = await self._thread.run(
            self._query,
            "SELECT COUNT(*) FROM orders WHERE sale_id = ? AND status = 'confirmed'",
            (sale_id,),
        )
        return int(rows[0][0])


def _product(row: sqlite3.Row) -> Product:
    return Product(
        id=row["id"],
        room=row["room"],
        name=row["name"],
        price_cents=row["price_cents"],
        currency=row["currency"],
        image_url=row["image_url"],
        initial_stock=row["initial_stock"],
    )


def _sale(row: sqlite3.Row) -> Sale:
    return Sale(
        id=row["id"],
        room=row["room"],
        product_id=row["product_id"],
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
    )
