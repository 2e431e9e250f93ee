"""Commerce test clients: datachannel viewers (bench.fanout.DataPeer) and the operator API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
from aiortc.rtcdtlstransport import RTCCertificate

from bench.fanout import DataPeer, close_many, connect_many

CERTIFICATE = RTCCertificate.generateCertificate()  # shared: key generation is not the test


class Viewer:
    """One datachannel viewer that parses what it receives and lets tests wait on it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.peer = DataPeer(CERTIFICATE, name=name)
        self.peer.on_message = self._on_message
        self.inbox: list[dict[str, Any]] = []
        self.results: dict[str, list[dict[str, Any]]] = {}  # idempotency key -> results
        self._changed = asyncio.Event()

    def _on_message(self, raw: str | bytes) -> None:
        msg = json.loads(raw)
        self.inbox.append(msg)
        if msg.get("type") == "order.result":
            self.results.setdefault(msg["idempotency_key"], []).append(msg)
        self._changed.set()

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [m for m in self.inbox if m.get("type") == type_]

    def send(self, msg: dict[str, Any] | str) -> None:
        self.peer.send(msg if isinstance(msg, str) else json.dumps(msg))

    def order(self, key: str, product_id: str, sale_id: str, quantity: int = 1) -> None:
        self.send({"v": 1, "type": "order.place", "idempotency_key": key,
                   "product_id": product_id, "sale_id": sale_id, "quantity": quantity})

    async def wait_for(
        self, predicate: Callable[[Viewer], Any], timeout: float = 10.0  # noqa: ASYNC109
    ) -> Any:
        """Wait (bounded) until ``predicate(self)`` is truthy; return its value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate(self)
            if value:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                tail = self.inbox[-5:]
                raise TimeoutError(f"{self.name}: condition not met in {timeout}s; last {tail}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    async def next_of(self, type_: str, after: int, timeout: float = 10.0) -> dict[str, Any]:  # noqa: ASYNC109
        """The first message of ``type_`` at inbox index >= ``after``."""

        def found(v: Viewer) -> dict[str, Any] | None:
            return next((m for m in v.inbox[after:] if m.get("type") == type_), None)

        result: dict[str, Any] = await self.wait_for(found, timeout)
        return result


async def connect_viewers(
    http_url: str, room: str, names: list[str], mint: Callable[[str], str], concurrency: int = 32
) -> list[Viewer]:
    """Connect one viewer per name and wait until each has its snapshot."""
    viewers = {n: Viewer(n) for n in names}
    by_index = list(viewers.values())
    await connect_many(
        lambda i: by_index[i].peer, len(by_index), http_url, room,
        lambda i: mint(by_index[i].name), concurrency=concurrency,
    )
    await asyncio.gather(*(v.wait_for(lambda v: v.of_type("snapshot"), 20) for v in by_index))
    return by_index


async def close_viewers(viewers: list[Viewer]) -> None:
    await close_many([v.peer for v in viewers])


async def api(
    http_url: str, method: str, path: str, token: str | None, body: Any = None,
    *, raw: bytes | None = None, content_type: str = "application/json",
) -> tuple[int, Any]:
    """One operator API call; returns (status, parsed JSON or the text reason)."""
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    timeout = aiohttp.ClientTimeout(total=15)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.request(method, http_url + path, data=data, headers=headers) as resp,
    ):
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text.strip()


async def setup_sale(
    http_url: str, room: str, admin: str, *, product: str, sale: str, stock: int,
    starts_in: float = -1.0, duration: float = 3600.0,
) -> None:
    import time

    status, body = await api(http_url, "POST", f"/api/rooms/{room}/products", admin, {
        "id": product, "name": f"Product {product}", "price_cents": 1999, "currency": "EUR",
        "image_url": "https://example.invalid/p.jpg", "stock": stock})
    assert status == 201, body
    now = time.time()
    status, body = await api(http_url, "POST", f"/api/rooms/{room}/sales", admin, {
        "product_id": product, "sale_id": sale, "starts_at": now + starts_in,
        "ends_at": now + starts_in + duration})
    assert status == 201, body
