"""The worker-thread SQLite connection both SQLite stores run on (real files)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from signalling.store.base import StoreError
from signalling.store.sqlite_thread import SqliteThread


def _schema(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")


async def test_statements_run_on_one_worker_thread_and_commit_to_disk(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.db"
    th = SqliteThread(path, busy_timeout_s=1.0, name="test-store")
    await th.open(_schema)
    try:
        await th.transact(lambda db: db.execute("INSERT INTO t VALUES ('a', 1)"))
        names = {await th.run(lambda: threading.current_thread().name) for _ in range(3)}
        assert len(names) == 1 and names.pop().startswith("test-store")
        assert await th.run(lambda: th.db().execute("PRAGMA journal_mode").fetchone()[0]) == "wal"
    finally:
        await th.close()
    # committed means on disk: a fresh connection sees the row
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT v FROM t WHERE k = 'a'").fetchone() == (1,)


async def test_a_failing_write_rolls_back_all_of_it(tmp_path: Path) -> None:
    th = SqliteThread(tmp_path / "x.db", busy_timeout_s=1.0, name="test-store")
    await th.open(_schema)
    try:
        def half(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO t VALUES ('a', 1)")
            raise ValueError("after the first statement")

        with pytest.raises(ValueError):
            await th.transact(half)
        assert await th.run(lambda: th.db().execute("SELECT count(*) FROM t").fetchone()) == (0,)
        # and the connection is usable afterwards (no transaction left open)
        await th.transact(lambda db: db.execute("INSERT INTO t VALUES ('b', 2)"))
    finally:
        await th.close()


async def test_use_before_open_or_after_close_is_a_clear_error(tmp_path: Path) -> None:
    th = SqliteThread(tmp_path / "x.db", busy_timeout_s=1.0, name="test-store")
    with pytest.raises(StoreError, match="test-store is not open"):
        await th.run(lambda: None)
    await th.open(_schema)
    await th.close()
    await th.close()  # idempotent
    with pytest.raises(StoreError, match="test-store is not open"):
        await th.transact(_schema)


async def test_a_failing_setup_leaves_it_closed_and_the_schema_unwritten(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    th = SqliteThread(path, busy_timeout_s=1.0, name="test-store")

    def bad(db: sqlite3.Connection) -> None:
        _schema(db)
        raise StoreError("schema version 9, newer than this code's 1")

    with pytest.raises(StoreError, match="newer"):
        await th.open(bad)
    assert not th.is_open
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT name FROM sqlite_master WHERE name = 't'").fetchone() is None
