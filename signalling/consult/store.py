"""Durable consultation queues, in the same database as the commerce data.

``open_consult_store(url)`` takes the commerce store's URL (``sqlite:///path.db`` or
``redis://...``, see ``signalling.store``) and keeps the queues next to the orders: extra
tables in the same SQLite file, extra keys (prefix ``cq:``) in the same Redis database.

Every change is ``transact(queue, fn)``: load the queue's active state, run ``fn`` (an
operation of ``signalling.consult.domain.Queue``) on it, write back exactly the rows it
changed, all atomically:

- **SQLite**: one ``BEGIN IMMEDIATE`` transaction on the store's worker thread (the write
  lock is taken before the read, so no other connection, thread or process sharing the file
  interleaves), ``synchronous=FULL`` in WAL mode: committed means on disk.
- **Redis**: optimistic concurrency: ``WATCH`` the queue's version key, read, run ``fn``,
  then ``MULTI``/``EXEC`` the writes with ``INCR version``; a concurrent writer makes
  ``EXEC`` fail and the whole step is retried on fresh state. Durable with ``appendonly
  yes`` + ``appendfsync always`` (the same requirement as the commerce store).

Because ``fn`` runs on state read inside the transaction, two nodes or tasks can never give
the same customer to two advisors or two customers to one advisor.

SQLite schema (``CREATE TABLE IF NOT EXISTS``; the commerce schema's ``user_version`` is
left alone)::

    consult_requests (id PK, queue, customer, seq, created_at, slot_at, state, advisor,
                      assigned_at, started_at, ended_at)
    consult_advisors (queue, id, state, free_since, request, seen_at, PK (queue, id))
    consult_queues   (queue PK, next_seq)

Redis keys (``cq:<queue>:`` prefix)::

    version   int     bumped by every transaction (the WATCHed key)
    seq       int     next request sequence number
    active    hash    request id -> JSON of waiting/assigned/in_call requests
    advisors  hash    advisor id -> JSON
    req:<id>  string  JSON of every request, including finished ones
    customer:<c> string  the customer's latest request id
"""

from __future__ import annotations

import abc
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

from signalling.consult.domain import Advisor, ConsultRequest, Event, Queue
from signalling.store import StoreError, default_store_url
from signalling.store.sqlite_thread import SqliteThread

T = TypeVar("T")
REQUEST_COLUMNS: Final = (
    "id", "customer", "seq", "created_at", "slot_at", "state", "advisor", "assigned_at",
    "started_at", "ended_at",
)
ADVISOR_COLUMNS: Final = ("id", "state", "free_since", "request", "seen_at")
MAX_RETRIES: Final = 50

QueueConfig = dict[str, Any]  # reserve_ahead, slot_capacity: applied to every loaded Queue


class ConsultStore(abc.ABC):
    """Async store of consultation queues; methods may be awaited concurrently."""

    def __init__(self) -> None:
        self.config: QueueConfig = {}

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def transact(
        self, queue: str, fn: Callable[[Queue], T]
    ) -> tuple[T, list[Event], Queue]:
        """Run ``fn`` on the queue's state atomically; returns its result, the events and
        the queue state after it (committed). Exceptions from ``fn`` abort the change."""

    @abc.abstractmethod
    async def snapshot(self, queue: str) -> Queue:
        """The queue's active state (read only)."""

    @abc.abstractmethod
    async def get_request(self, queue: str, request_id: str) -> ConsultRequest | None: ...

    @abc.abstractmethod
    async def latest_for(self, queue: str, customer: str) -> ConsultRequest | None:
        """The customer's most recent request, finished or not."""

    def _new_queue(self) -> Queue:
        return Queue(**self.config)


# --- SQLite -----------------------------------------------------------------------------------

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS consult_requests (
        id TEXT PRIMARY KEY,
        queue TEXT NOT NULL,
        customer TEXT NOT NULL,
        seq INTEGER NOT NULL,
        created_at REAL NOT NULL,
        slot_at REAL,
        state TEXT NOT NULL,
        advisor TEXT,
        assigned_at REAL,
        started_at REAL,
        ended_at REAL
    ) STRICT""",
    "CREATE INDEX IF NOT EXISTS consult_requests_state ON consult_requests (queue, state)",
    "CREATE INDEX IF NOT EXISTS consult_requests_customer ON consult_requests (queue, customer,"
    " seq)",
    # The second line of defence against double assignment, whatever the code does.
    "CREATE UNIQUE INDEX IF NOT EXISTS consult_one_per_advisor ON consult_requests"
    " (queue, advisor) WHERE state IN ('assigned', 'in_call')",
    "CREATE UNIQUE INDEX IF NOT EXISTS consult_one_per_customer ON consult_requests"
    " (queue, customer) WHERE state IN ('waiting', 'assigned', 'in_call')",
    """CREATE TABLE IF NOT EXISTS consult_advisors (
        queue TEXT NOT NULL,
        id TEXT NOT NULL,
        state TEXT NOT NULL,
        free_since REAL NOT NULL,
        request TEXT,
        seen_at REAL NOT NULL,
        PRIMARY KEY (queue, id)
    ) STRICT""",
    """CREATE TABLE IF NOT EXISTS consult_queues (
        queue TEXT PRIMARY KEY,
        next_seq INTEGER NOT NULL
    ) STRICT""",
)


class SqliteConsultStore(ConsultStore):
    def __init__(self, path: str | Path, *, busy_timeout_s: float = 10.0) -> None:
        super().__init__()
        self._thread = SqliteThread(path, busy_timeout_s=busy_timeout_s, name="consult-store")

    async def open(self) -> None:
        await self._thread.open(self._create_schema)

    @staticmethod
    def _create_schema(db: sqlite3.Connection) -> None:
        for statement in _SCHEMA:
            db.execute(statement)

    async def close(self) -> None:
        await self._thread.close()

    def _load(self, db: sqlite3.Connection, queue: str) -> Queue:
        q = self._new_queue()
        cols = ", ".join(REQUEST_COLUMNS)
        for row in db.execute(
            f"SELECT {cols} FROM consult_requests WHERE queue = ? AND state IN "
            "('waiting', 'assigned', 'in_call')",
            (queue,),
        ):
            r = ConsultRequest(**dict(zip(REQUEST_COLUMNS, row, strict=True)))
            q.requests[r.id] = r
        acols = ", ".join(ADVISOR_COLUMNS)
        for row in db.execute(
            f"SELECT {acols} FROM consult_advisors WHERE queue = ?", (queue,)
        ):
            a = Advisor(**dict(zip(ADVISOR_COLUMNS, row, strict=True)))
            q.advisors[a.id] = a
        seq = db.execute("SELECT next_seq FROM consult_queues WHERE queue = ?", (queue,)).fetchone()
        q.next_seq = seq[0] if seq else 1
        return q

    def _transact_sync(
        self, queue: str, fn: Callable[[Queue], T]
    ) -> tuple[T, list[Event], Queue]:
        def run(db: sqlite3.Connection) -> tuple[T, Queue]:
            q = self._load(db, queue)
            result = fn(q)
            for rid in q.dirty_requests:
                r = q.requests[rid]
                values = [getattr(r, c) for c in REQUEST_COLUMNS]
                db.execute(
                    f"INSERT OR REPLACE INTO consult_requests (queue, {', '.join(REQUEST_COLUMNS)})"
                    f" VALUES (?, {', '.join('?' * len(REQUEST_COLUMNS))})",
                    (queue, *values),
                )
            for aid in q.dirty_advisors:
                a = q.advisors[aid]
                db.execute(
                    f"INSERT OR REPLACE INTO consult_advisors (queue, {', '.join(ADVISOR_COLUMNS)})"
                    f" VALUES (?, {', '.join('?' * len(ADVISOR_COLUMNS))})",
                    (queue, *[getattr(a, c) for c in ADVISOR_COLUMNS]),
                )
            db.execute(
                "INSERT INTO consult_queues (queue, next_seq) VALUES (?, ?) "
                "ON CONFLICT (queue) DO UPDATE SET next_seq = excluded.next_seq",
                (queue, q.next_seq),
            )
            return result, q

        result, q = self._thread.write(run)
        events = list(q.events)
        for rid in [r for r, v in q.requests.items() if not v.active]:
            del q.requests[rid]
        q.dirty_requests.clear()
        q.dirty_advisors.clear()
        q.events.clear()
        return result, events, q

    async def transact(
        self, queue: str, fn: Callable[[Queue], T]
    ) -> tuple[T, list[Event], Queue]:
        try:
            return await self._thread.run(self._transact_sync, queue, fn)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc

    def _snapshot_sync(self, queue: str) -> Queue:
        return self._load(self._thread.db(), queue)

    async def snapshot(self, queue: str) -> Queue:
        return await self._thread.run(self._snapshot_sync, queue)

    def _one(self, where: str, args: tuple[object, ...]) -> ConsultRequest | None:
        row = self._thread.db().execute(
            f"SELECT {', '.join(REQUEST_COLUMNS)} FROM consult_requests WHERE {where}", args
        ).fetchone()
        return None if row is None else ConsultRequest(**dict(zip(REQUEST_COLUMNS, row, strict=True)))

    async def get_request(self, queue: str, request_id: str) -> ConsultRequest | None:
        return await self._thread.run(self._one, "queue = ? AND id = ?", (queue, request_id))

    async def latest_for(self, queue: str, customer: str) -> ConsultRequest | None:
        return await self._thread.run(
            self._one, "queue = ? AND customer = ? ORDER BY seq DESC LIMIT 1", (queue, customer)
        )


# --- Redis ------------------------------------------------------------------------------------


class RedisConsultStore(ConsultStore):
    def __init__(self, url: str, *, prefix: str = "cq:") -> None:
        super().__init__()
        self.url = url
        self.prefix = prefix
        self._redis: Any = None

    async def open(self) -> None:
        import redis.asyncio as aioredis

        if self._redis is None:
            self._redis = aioredis.Redis.from_url(self.url, decode_responses=True)
            try:
                await self._redis.ping()
            except Exception as exc:
                raise StoreError(f"redis: {exc}") from exc

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    def _k(self, queue: str, name: str) -> str:
        return f"{self.prefix}{queue}:{name}"

    async def _load(self, client: Any, queue: str) -> Queue:
        q = self._new_queue()
        active = await client.hgetall(self._k(queue, "active"))
        for raw in active.values():
            r = ConsultRequest.from_json(json.loads(raw))
            q.requests[r.id] = r
        for raw in (await client.hgetall(self._k(queue, "advisors"))).values():
            a = Advisor.from_json(json.loads(raw))
            q.advisors[a.id] = a
        seq = await client.get(self._k(queue, "seq"))
        q.next_seq = int(seq) if seq else 1
        return q

    async def transact(
        self, queue: str, fn: Callable[[Queue], T]
    ) -> tuple[T, list[Event], Queue]:
        from redis.exceptions import RedisError, WatchError

        if self._redis is None:
            raise StoreError("consult store is not open")
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for _ in range(MAX_RETRIES):
                    try:
                        await pipe.watch(self._k(queue, "version"))
                        q = await self._load(pipe, queue)
                        result = fn(q)  # QueueError propagates; the WATCH is reset below
                        pipe.multi()
                        for rid in q.dirty_requests:
                            r = q.requests[rid]
                            data = json.dumps(r.to_json())
                            if r.active:
                                pipe.hset(self._k(queue, "active"), rid, data)
                            else:
                                pipe.hdel(self._k(queue, "active"), rid)
                            pipe.set(self._k(queue, f"req:{rid}"), data)
                            pipe.set(self._k(queue, f"customer:{r.customer}"), rid)
                        for aid in q.dirty_advisors:
                            pipe.hset(
                                self._k(queue, "advisors"), aid,
                                json.dumps(q.advisors[aid].to_json()),
                            )
                        pipe.set(self._k(queue, "seq"), q.next_seq)
                        pipe.incr(self._k(queue, "version"))
                        await pipe.execute()
                    except WatchError:
                        continue
                    finally:
                        await pipe.reset()
                    events = list(q.events)
                    for rid in [r for r, v in q.requests.items() if not v.active]:
                        del q.requests[rid]
                    q.dirty_requests.clear()
                    q.dirty_advisors.clear()
                    q.events.clear()
                    return result, events, q
        except RedisError as exc:
            raise StoreError(f"redis: {exc}") from exc
        raise StoreError(f"queue {queue}: too much contention ({MAX_RETRIES} retries)")

    async def snapshot(self, queue: str) -> Queue:
        if self._redis is None:
            raise StoreError("consult store is not open")
        return await self._load(self._redis, queue)

    async def get_request(self, queue: str, request_id: str) -> ConsultRequest | None:
        raw = await self._redis.get(self._k(queue, f"req:{request_id}"))
        return None if raw is None else ConsultRequest.from_json(json.loads(raw))

    async def latest_for(self, queue: str, customer: str) -> ConsultRequest | None:
        rid = await self._redis.get(self._k(queue, f"customer:{customer}"))
        return None if rid is None else await self.get_request(queue, rid)


def consult_store_from_url(url: str) -> ConsultStore:
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path or path == ":memory:":
            raise ValueError("a sqlite store needs a file path: sqlite:///path/to/commerce.db")
        return SqliteConsultStore(path)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisConsultStore(url)
    raise ValueError(f"unsupported store URL {url!r}: use sqlite:///path or redis://host:port/db")


async def open_consult_store(
    url: str | None = None, *, data_dir: str | Path = ".sfu", **config: Any
) -> ConsultStore:
    """Open the queue store next to the commerce data named by ``url`` (default SQLite)."""
    store = consult_store_from_url(url or default_store_url(data_dir))
    store.config = dict(config)
    await store.open()
    return store
