"""Durable commerce stores and ``open_store(url)``, which picks one from a URL.

URLs:

- ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (SQLAlchemy's
  convention: what follows ``sqlite:///`` is the path). The default,
  ``default_store_url(data_dir)``, is ``sqlite:///<data_dir>/commerce.db``.
- ``redis://[:password@]host:port/db`` or ``rediss://...`` (TLS).
"""

from __future__ import annotations

from pathlib import Path

from signalling.store.base import CommerceStore, DuplicateProduct, StoreError, UnknownProduct

__all__ = [
    "CommerceStore",
    "DuplicateProduct",
    "StoreError",
    "UnknownProduct",
    "default_store_url",
    "open_store",
    "store_from_url",
]


def default_store_url(data_dir: str | Path = ".sfu") -> str:
    return "sqlite:///" + str(Path(data_dir) / "commerce.db")


def store_from_url(url: str) -> CommerceStore:
    """Build (but do not open) the store a URL names; ValueError for an unknown scheme."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path or path == ":memory:":
            # An in-memory database would acknowledge orders it then forgets.
            raise ValueError("a sqlite store needs a file path: sqlite:///path/to/commerce.db")
        from signalling.store.sqlite import SqliteStore

        return SqliteStore(path)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from signalling.store.redis import RedisStore

        return RedisStore(url)
    raise ValueError(f"unsupported store URL {url!r}: use sqlite:///path or redis://host:port/db")


async def open_store(url: str | None = None, *, data_dir: str | Path = ".sfu") -> CommerceStore:
    """Build and open the store for ``url`` (default: SQLite in ``data_dir``)."""
    store = store_from_url(url or default_store_url(data_dir))
    await store.open()
    return store
