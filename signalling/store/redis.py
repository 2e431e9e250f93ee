"""Redis implementation of ``CommerceStore``: for several nodes selling from one stock.

Atomicity: ``place_order`` is ONE Lua script (EVALSHA, falling back to loading the script
when the server does not know it), and Redis runs a script with nothing interleaved. The
script mirrors ``domain.orders.decide`` step for step: stored result for the idempotency key
-> sale exists/room/product -> window against the caller's ``now`` -> stock -> DECRBY +
order hash + order lists + idempotency record. Shape validation happens in Python first.

Durability: Redis acknowledges a write only as durably as its persistence settings allow.
The guarantee of ``CommerceStore`` (an acknowledged order survives kill -9 of the node or of
Redis) holds only with::

    appendonly yes
    appendfsync always

With ``appendfsync always`` Redis fsyncs the AOF before it sends the script's reply, so an
answered order is on disk. ``open()`` checks both settings with CONFIG GET and refuses to
run without them (``require_durable=False`` to override, e.g. for a demo); if CONFIG is
disabled on a managed server it logs a warning instead. Replicas are not a substitute:
replication is asynchronous, a failover can lose acknowledged writes.

Keys (all under ``prefix``, default ``cs:``; a single Redis, not Cluster: the script
touches keys of different products, sales and rooms)::

    product:<id>            hash   product fields
    stock:<product_id>      int    items left
    room:<room>:products    set    product ids
    sale:<id>               hash   room, product_id, starts_at, ends_at
    room:<room>:sales       set    sale ids
    idem:<viewer>           hash   idempotency_key -> JSON result (every decided attempt)
    order:<order_id>        hash   confirmed order
    orders / orders:sale:<sale_id> / orders:room:<room>   lists of order ids, oldest first
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from signalling.domain.catalog import Product
from signalling.domain.orders import Order, OrderRequest, OrderResult, invalid, validate_request
from signalling.domain.sale import Sale
from signalling.store.base import CommerceStore, DuplicateProduct, StoreError, UnknownProduct

log = logging.getLogger(__name__)

_PLACE_ORDER: Final = """
local key = ARGV[1]
local prev = redis.call('HGET', KEYS[1], key)
if prev then return prev end
local now = tonumber(ARGV[2])
local qty = tonumber(ARGV[6])
local function record(status, order_id, remaining)
  local r = {idempotency_key = key, status = status, quantity = qty}
  if order_id then r['order_id'] = order_id end
  if remaining then r['remaining'] = remaining end
  local encoded = cjson.encode(r)
  redis.call('HSET', KEYS[1], key, encoded)
  return encoded
end
local sale = redis.call('HMGET', KEYS[2], 'room', 'product_id', 'starts_at', 'ends_at')
if (not sale[1]) or sale[1] ~= ARGV[4] or sale[2] ~= ARGV[5] then
  return record('invalid')
end
if now < tonumber(sale[3]) then return record('sale_not_open') end
if now >= tonumber(sale[4]) then return record('sale_ended') end
local stock = tonumber(redis.call('GET', KEYS[3]) or '0')
if stock < qty then return record('sold_out', nil, stock) end
local remaining = redis.call('DECRBY', KEYS[3], qty)
redis.call('HSET', KEYS[4], 'order_id', ARGV[7], 'viewer', ARGV[8], 'room', ARGV[4],
  'sale_id', ARGV[3], 'product_id', ARGV[5], 'quantity', qty, 'idempotency_key', key,
  'created_at', ARGV[2])
redis.call('RPUSH', KEYS[5], ARGV[7])
redis.call('RPUSH', KEYS[6], ARGV[7])
redis.call('RPUSH', KEYS[7], ARGV[7])
return record('confirmed', ARGV[7], remaining)
"""

# Product and stock appear together or not at all, and an existing stock is never reset.
_CREATE_PRODUCT: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('SET', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[3])
return 1
"""

_PRODUCT_FIELDS: Final = (
    "id",
    "room",
    "name",
    "price_cents",
    "currency",
    "image_url",
    "initial_stock",
)


class RedisStore(CommerceStore):
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "cs:",
        max_connections: int = 32,
        require_durable: bool = True,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.max_connections = max_connections
        self.require_durable = require_durable
        self._redis: aioredis.Redis | None = None
        self._place: Any = None
        self._create: Any = None

    def _k(self, *parts: str | bytes) -> str:
        # decode_responses=True: ids read back from Redis are str; bytes never occur.
        return self.prefix + ":".join(p if isinstance(p, str) else p.decode() for p in parts)

    def _r(self) -> aioredis.Redis:
        if self._redis is None:
            raise StoreError("store is not open")
        return self._redis

    async def open(self) -> None:
        if self._redis is not None:
            return
        # A bounded, blocking pool: a burst of 2,000 concurrent orders waits for one of
        # max_connections instead of opening 2,000 sockets.
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url, max_connections=self.max_connections, timeout=30, decode_responses=True
        )
        client = aioredis.Redis(connection_pool=pool)
        try:
            await client.ping()
            await self._check_durability(client)
        except BaseException:
            await client.aclose()
            await pool.aclose()
            raise
        self._redis = client
        self._place = client.register_script(_PLACE_ORDER)
        self._create = client.register_script(_CREATE_PRODUCT)

    async def _check_durability(self, client: aioredis.Redis) -> None:
        try:
            aof = await client.config_get("appendonly")
            fsync = await client.config_get("appendfsync")
        except ResponseError as exc:
            log.warning(
                "cannot verify Redis persistence (CONFIG GET failed: %s); acknowledged "
                "orders are durable only with appendonly yes + appendfsync always",
                exc,
            )
            return
        if aof.get("appendonly") != "yes" or fsync.get("appendfsync") != "always":
            message = (
                f"Redis at {self.url} runs with appendonly={aof.get('appendonly')} "
                f"appendfsync={fsync.get('appendfsync')}; orders need appendonly yes and "
                "appendfsync always to survive a crash"
            )
            if self.require_durable:
                raise StoreError(message)
            log.warning("%s", message)

    async def close(self) -> None:
        if self._redis is None:
            return
        client, self._redis = self._redis, None
        await client.aclose(close_connection_pool=True)

    # --- catalogue and sales ----------------------------------------------------------------

    async def create_product(self, product: Product) -> None:
        fields: list[str] = []
        for name in _PRODUCT_FIELDS:
            fields += [name, str(getattr(product, name))]
        created = await self._create(
            keys=[
                self._k("product", product.id),
                self._k("stock", product.id),
                self._k("room", product.room, "products"),
            ],
            args=[product.initial_stock, *fields],
        )
        if int(created) != 1:
            raise DuplicateProduct(f"product {product.id} exists")

    async def get_product(self, product_id: str) -> Product | None:
        data = await self._r().hgetall(self._k("product", product_id))
        return _product(data) if data else None

    async def list_products(self, room: str) -> list[Product]:
        r = self._r()
        ids = sorted(await r.smembers(self._k("room", room, "products")))
        async with r.pipeline(transaction=False) as pipe:
            for pid in ids:
                pipe.hgetall(self._k("product", pid))
            rows = await pipe.execute()
        return [_product(d) for d in rows if d]

    async def put_sale(self, sale: Sale) -> None:
        r = self._r()
        room = await r.hget(self._k("product", sale.product_id), "room")
        if room != sale.room:
            raise UnknownProduct(f"no product {sale.product_id} in room {sale.room}")
        async with r.pipeline(transaction=True) as pipe:
            pipe.hset(
                self._k("sale", sale.id),
                mapping={
                    "id": sale.id,
                    "room": sale.room,
                    "product_id": sale.product_id,
                    # repr round-trips a float exactly, so Lua compares the same number.
                    "starts_at": repr(float(sale.starts_at)),
                    "ends_at": repr(float(sale.ends_at)),
                },
            )
            pipe.sadd(self._k("room", sale.room, "sales"), sale.id)
            await pipe.execute()

    async def get_sale(self, sale_id: str) -> Sale | None:
        data = await self._r().hgetall(self._k("sale", sale_id))
        return _sale(data) if data else None

    async def list_sales(self, room: str) -> list[Sale]:
        r = self._r()
        ids = await r.smembers(self._k("room", room, "sales"))
        async with r.pipeline(transaction=False) as pipe:
            for sid in ids:
                pipe.hgetall(self._k("sale", sid))
            rows = await pipe.execute()
        return sorted((_sale(d) for d in rows if d), key=lambda s: (s.starts_at, s.id))

    # --- stock and orders -------------------------------------------------------------------

    async def stock(self, product_id: str) -> int:
        value = await self._r().get(self._k("stock", product_id))
        if value is None:
            raise UnknownProduct(f"no product {product_id}")
        return int(value)

    async def place_order(self, request: OrderRequest, now: float) -> OrderResult:
        if validate_request(request) is not None:
            return invalid(request)
        self._r()
        order_id = "o_" + uuid.uuid4().hex
        try:
            raw = await self._place(
                keys=[
                    self._k("idem", request.viewer),
                    self._k("sale", request.sale_id),
                    self._k("stock", request.product_id),
                    self._k("order", order_id),
                    self._k("orders"),
                    self._k("orders", "sale", request.sale_id),
                    self._k("orders", "room", request.room),
                ],
                args=[
                    request.idempotency_key,
                    repr(float(now)),
                    request.sale_id,
                    request.room,
                    request.product_id,
                    request.quantity,
                    order_id,
                    request.viewer,
                ],
            )
        except RedisError as exc:
            raise StoreError(f"place_order failed, outcome unknown: {exc}") from exc
        data = json.loads(raw)
        return OrderResult(
            idempotency_key=data["idempotency_key"],
            status=data["status"],
            quantity=int(data["quantity"]),
            order_id=data.get("order_id"),
            remaining=None if data.get("remaining") is None else int(data["remaining"]),
        )

    async def list_orders(self, room: str | None = None, sale_id: str | None = None) -> list[Order]:
        r = self._r()
        if sale_id is not None:
            ids = await r.lrange(self._k("orders", "sale", sale_id), 0, -1)
        elif room is not None:
            ids = await r.lrange(self._k("orders", "room", room), 0, -1)
        else:
            ids = await r.lrange(self._k("orders"), 0, -1)
        async with r.pipeline(transaction=False) as pipe:
            for oid in ids:
                pipe.hgetall(self._k("order", oid))
            rows = await pipe.execute()
        orders = [_order(d) for d in rows if d]
        if room is not None:
            orders = [o for o in orders if o.room == room]
        return orders

    async def order_count(self, sale_id: str) -> int:
        return int(await self._r().llen(self._k("orders", "sale", sale_id)))


def _product(d: Mapping[Any, Any]) -> Product:
    return Product(
        id=d["id"],
        room=d["room"],
        name=d["name"],
        price_cents=int(d["price_cents"]),
        currency=d["currency"],
        image_url=d["image_url"],
        initial_stock=int(d["initial_stock"]),
    )


def _sale(d: Mapping[Any, Any]) -> Sale:
    return Sale(
        id=d["id"],
        room=d["room"],
        product_id=d["product_id"],
        starts_at=float(d["starts_at"]),
        ends_at=float(d["ends_at"]),
    )


def _order(d: Mapping[Any, Any]) -> Order:
    return Order(
        order_id=d["order_id"],
        viewer=d["viewer"],
        room=d["room"],
        sale_id=d["sale_id"],
        product_id=d["product_id"],
        quantity=int(d["quantity"]),
        idempotency_key=d["idempotency_key"],
        created_at=float(d["created_at"]),
    )
