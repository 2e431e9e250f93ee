"""One SQLite connection on one worker thread: the plumbing both SQLite stores share.

Every statement runs on a dedicated ``ThreadPoolExecutor(max_workers=1)`` thread, so the event
loop never blocks on disk and no two threads touch the connection. The connection is opened
with ``isolation_level=None`` (the stores issue BEGIN/COMMIT themselves), in WAL mode with
``synchronous=FULL``: a COMMIT has reached the disk before it returns.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from signalling.store.base import StoreError

T = TypeVar("T")


class SqliteThread:
    def __init__(self, path: str | Path, *, busy_timeout_s: float, name: str) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self.name = name  # in errors and the worker thread's name
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # only touched on the worker thread

    @property
    def is_open(self) -> bool:
        return self._executor is not None

    async def open(self, setup: Callable[[sqlite3.Connection], None]) -> None:
        """Connect and run ``setup`` (schema) in one write transaction on the worker thread;
        idempotent."""
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)
        try:
            await self.run(self._open_sync, setup)
        except BaseException:
            self._executor.shutdown(wait=True)
            self._executor = None
            raise

    def _open_sync(self, setup: Callable[[sqlite3.Connection], None]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=self.busy_timeout_s)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"cannot enable WAL on {self.path} (journal_mode={mode})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._conn = conn
            self.write(setup)
        except BaseException:
            self._conn = None
            conn.close()
            raise

    async def close(self) -> None:
        if self._executor is None:
            return
        executor = self._executor
        await self.run(self._close_sync)
        self._executor = None
        executor.shutdown(wait=True)

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on the worker thread."""
        if self._executor is None:
            raise StoreError(f"{self.name} is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    async def transact(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``write(fn)`` on the worker thread."""
        return await self.run(self.write, fn)

    def db(self) -> sqlite3.Connection:
        """The connection (worker thread only)."""
        if self._conn is None:
            raise StoreError(f"{self.name} is not open")
        return self._conn

    def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(db)`` in one BEGIN IMMEDIATE transaction (worker thread only): the write lock
        is taken before anything is read, so no other connection, thread or process sharing
        the file interleaves. Anything ``fn`` raises rolls the whole transaction back."""
        db = self.db()
        db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return result
