"""The consultation service: queue operations over the store, call rooms, in-call offers,
metrics, and the tick that assigns booked slots when they come due.

One ``ConsultService`` per node, opened when the HTTP app starts (``signalling.consult.http``)
on the commerce store's URL. A queue is named by the room of the token its users hold (the
"lobby", e.g. ``consult``); the call of request ``r`` happens in room ``<queue>-<r>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final, TypeVar

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from signalling.consult.domain import (
    Assigned,
    CallEnded,
    CallStarted,
    ConsultRequest,
    Event,
    Queue,
    QueueError,
)
from signalling.consult.store import ConsultStore, open_consult_store

if TYPE_CHECKING:
    from sfu.node import Node

log = logging.getLogger("signalling.consult")
T = TypeVar("T")

TICK_INTERVAL: Final = 1.0
SEEN_WRITE_INTERVAL: Final = 5.0  # s: advisor heartbeats are written at most this often
OFFER_DURATION: Final = 3600.0  # s a pushed product stays buyable in the call
CALL_TOKEN_TTL: Final = 4 * 3600.0
WAIT_BUCKETS: Final = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
DURATION_BUCKETS: Final = (30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)
ADVISOR_GRANTS: Final = ("publish", "subscribe", "admin")
CUSTOMER_GRANTS: Final = ("publish", "subscribe")


class Histogram:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
        self.total += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = [
            (repr(b), c) for b, c in zip(self.bounds, self.counts, strict=True)
        ]
        out.append(("+Inf", self.total))
        return out


def call_room(queue: str, request_id: str) -> str:
    return f"{queue}-{request_id}"


def new_request_id() -> str:
    return "r" + secrets.token_hex(5)


class ConsultService:
    def __init__(
        self, node: Node, store: ConsultStore, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.node = node
        self.store = store
        self.clock = clock
        self.queues: dict[str, Queue] = {}  # last committed state seen by this node
        self.wait = Histogram(WAIT_BUCKETS)
        self.duration = Histogram(DURATION_BUCKETS)
        self.outcomes: Counter[str] = Counter()  # assigned / started / done / cancelled
        self._tick: asyncio.Task[None] | None = None
        node.metrics.registry.register(_Collector(self))

    @classmethod
    async def open(cls, node: Node, **config: Any) -> ConsultService:
        s = node.settings
        store = await open_consult_store(s.store_url or None, data_dir=s.data_dir, **config)
        service = cls(node, store)
        service._tick = asyncio.ensure_future(service._tick_loop())
        return service

    async def close(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick
        await self.store.close()

    # --- the store --------------------------------------------------------------------------

    async def run(self, queue: str, fn: Callable[[Queue], T]) -> T:
        result, events, state = await self.store.transact(queue, fn)
        self.queues[queue] = state
        for event in events:
            self._observe(queue, event)
        return result

    def _observe(self, queue: str, event: Event) -> None:
        if isinstance(event, Assigned):
            self.wait.observe(event.waited)
            self.outcomes["assigned"] += 1
            log.info("consult assigned", extra={"queue": queue, "request": event.request,
                                                "advisor": event.advisor})
        elif isinstance(event, CallStarted):
            self.outcomes["started"] += 1
        elif isinstance(event, CallEnded):
            self.outcomes[event.state] += 1
            if event.duration is not None:
                self.duration.observe(event.duration)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_INTERVAL)
            for queue in list(self.queues):
                try:
                    await self.tick(queue)
                except Exception as exc:  # the store may be down for a moment
                    log.warning("consult tick failed", extra={"queue": queue,
                                                              "error": repr(exc)})

    async def tick(self, queue: str) -> None:
        now = self.clock()

        def step(q: Queue) -> None:
            q.expire(now)
            q.assign(now)

        await self.run(queue, step)

    # --- customers --------------------------------------------------------------------------

    async def request(
        self, queue: str, customer: str, slot_at: float | None = None
    ) -> ConsultRequest:
        now = self.clock()
        rid = new_request_id()
        return await self.run(queue, lambda q: q.request(customer, rid, now, slot_at=slot_at))

    async def cancel(self, queue: str, request_id: str, customer: str) -> ConsultRequest:
        now = self.clock()
        return await self.run(queue, lambda q: q.cancel(request_id, now, by=customer))

    async def customer_view(self, queue: str, customer: str) -> dict[str, Any]:
        r = await self.store.latest_for(queue, customer)
        state = await self.store.snapshot(queue)
        self.queues[queue] = state
        return {"role": "customer", "identity": customer,
                "request": None if r is None else self.request_json(queue, r, state)}

    # --- advisors ---------------------------------------------------------------------------

    async def available(self, queue: str, advisor: str) -> dict[str, Any]:
        now = self.clock()
        await self.run(queue, lambda q: q.available(advisor, now))
        return await self.advisor_view(queue, advisor)

    async def away(self, queue: str, advisor: str) -> dict[str, Any]:
        now = self.clock()
        await self.run(queue, lambda q: q.away(advisor, now))
        return await self.advisor_view(queue, advisor)

    async def accept(self, queue: str, advisor: str, request_id: str) -> ConsultRequest:
        now = self.clock()
        return await self.run(queue, lambda q: q.accept(advisor, request_id, now))

    async def end(self, queue: str, identity: str, request_id: str) -> ConsultRequest:
        now = self.clock()
        return await self.run(queue, lambda q: q.end(request_id, now, by=identity))

    async def advisor_view(self, queue: str, advisor: str) -> dict[str, Any]:
        now = self.clock()
        state = await self.store.snapshot(queue)
        a = state.advisors.get(advisor)
        if a is not None and a.state != "offline" and now - a.seen_at >= SEEN_WRITE_INTERVAL:
            await self.run(queue, lambda q: q.seen(advisor, now))
            state = self.queues[queue]
            a = state.advisors.get(advisor)
        self.queues[queue] = state
        current = state.requests.get(a.request) if a is not None and a.request else None
        return {
            "role": "advisor",
            "identity": advisor,
            "state": "offline" if a is None else a.state,
            "current": None if current is None else self.request_json(queue, current, state),
            "queue": [self.request_json(queue, r, state) for r in state.waiting()],
            "advisors": {x.id: x.state for x in state.advisors.values()},
            "server_time": now,
        }

    # --- the call ---------------------------------------------------------------------------

    def request_json(self, queue: str, r: ConsultRequest, state: Queue) -> dict[str, Any]:
        now = self.clock()
        data = r.to_json()
        data["room"] = call_room(queue, r.id)
        data["position"] = state.position(r.id, now) if r.state == "waiting" else None
        data["due"] = r.due(now)
        start = r.created_at if r.slot_at is None else max(r.created_at, r.slot_at)
        data["waited"] = max(0.0, (r.assigned_at or now) - start) if r.due(now) else 0.0
        return data

    async def party(self, queue: str, request_id: str, identity: str) -> tuple[ConsultRequest, str]:
        """The request and the caller's role in it ("advisor" or "customer"); QueueError
        when the caller is neither or the call is over."""
        r = await self.store.get_request(queue, request_id)
        if r is None:
            raise QueueError(404, "unknown_request", f"no request {request_id}")
        if identity == r.advisor:
            role = "advisor"
        elif identity == r.customer:
            role = "customer"
        else:
            raise QueueError(403, "forbidden", "not your consultation")
        return r, role

    async def call_token(self, queue: str, request_id: str, identity: str) -> dict[str, Any]:
        from sfu.auth import mint_token

        r, role = await self.party(queue, request_id, identity)
        if r.state not in ("assigned", "in_call"):
            raise QueueError(409, "conflict", f"request is {r.state}")
        s = self.node.settings
        grants = ADVISOR_GRANTS if role == "advisor" else CUSTOMER_GRANTS
        room = call_room(queue, r.id)
        token = mint_token(
            api_key=s.api_key, api_secret=s.api_secret, room=room, identity=identity,
            grants=grants, ttl=CALL_TOKEN_TTL,
        )
        return {"room": room, "token": token, "identity": identity, "role": role,
                "grants": list(grants)}

    async def push_card(
        self, queue: str, request_id: str, advisor: str, product_id: str
    ) -> dict[str, Any]:
        """Offer a catalogue product (a product of the queue's room) in the call: a copy of
        it in the call room (id ``<product>.<request>``), a sale open for ``OFFER_DURATION``
        with the same id, and its card pinned."""
        from signalling.domain.catalog import CatalogError, Product, is_valid_id
        from signalling.service import AdminError

        r, role = await self.party(queue, request_id, advisor)
        if role != "advisor" or r.state != "in_call":
            raise QueueError(409, "conflict", "push cards during your own call")
        commerce = self.node.commerce
        if commerce is None:
            raise QueueError(503, "unavailable", "commerce service not running")
        source = await commerce.store.get_product(product_id)
        if source is None or source.room != queue:
            raise QueueError(404, "unknown_product", f"no product {product_id} in the catalogue")
        room = call_room(queue, r.id)
        offer_id = f"{product_id}.{r.id}"
        if not is_valid_id(offer_id):
            raise QueueError(400, "invalid", "product id too long for an in-call offer")
        existing = await commerce.store.get_product(offer_id)
        if existing is None:
            try:
                copy = Product(
                    id=offer_id, room=room, name=source.name, price_cents=source.price_cents,
                    currency=source.currency, image_url=source.image_url,
                    initial_stock=await commerce.store.stock(product_id),
                )
            except CatalogError as exc:
                raise QueueError(400, "invalid", str(exc)) from exc
            try:
                await commerce.admin_create_product(room, copy)
            except AdminError as exc:
                if exc.code != "duplicate":
                    raise QueueError(exc.status, exc.code, exc.reason) from exc
        now = self.clock()
        sale = await commerce.store.get_sale(offer_id)
        if sale is None or sale.ends_at <= now:
            await commerce.admin_schedule_sale(
                room, offer_id, now, now + OFFER_DURATION, sale_id=offer_id
            )
        pinned = await commerce.admin_pin_card(room, offer_id, host=advisor)
        return {"product_id": offer_id, "sale_id": offer_id, "room": room, **pinned}

    async def orders(self, queue: str, request_id: str, identity: str) -> dict[str, Any]:
        r, _ = await self.party(queue, request_id, identity)
        commerce = self.node.commerce
        if commerce is None:
            raise QueueError(503, "unavailable", "commerce service not running")
        result: dict[str, Any] = await commerce.admin_list_orders(call_room(queue, r.id))
        if identity == r.customer:
            result["orders"] = [o for o in result["orders"] if o["viewer"] == identity]
        return result

    async def catalogue(self, queue: str) -> list[dict[str, Any]]:
        commerce = self.node.commerce
        if commerce is None:
            raise QueueError(503, "unavailable", "commerce service not running")
        products: list[dict[str, Any]] = await commerce.admin_list_products(queue)
        return products


# --- metrics ------------------------------------------------------------------------------------


class _Collector(Collector):
    def __init__(self, service: ConsultService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        s = self.service
        length = GaugeMetricFamily(
            "sfu_consult_queue_length", "Customers waiting (due) per queue", labels=["queue"]
        )
        booked = GaugeMetricFamily(
            "sfu_consult_bookings", "Booked requests whose slot has not come", labels=["queue"]
        )
        calls = GaugeMetricFamily(
            "sfu_consult_calls_in_progress", "Consultations in a call", labels=["queue"]
        )
        advisors = GaugeMetricFamily(
            "sfu_consult_advisors", "Advisors by state", labels=["queue", "state"]
        )
        now = s.clock()
        for name, q in sorted(s.queues.items()):
            waiting = [r for r in q.requests.values() if r.state == "waiting"]
            length.add_metric([name], sum(1 for r in waiting if r.due(now)))
            booked.add_metric([name], sum(1 for r in waiting if not r.due(now)))
            calls.add_metric([name], sum(1 for r in q.requests.values() if r.state == "in_call"))
            states = Counter(a.state for a in q.advisors.values())
            for state in ("offline", "free", "busy"):
                advisors.add_metric([name, state], states.get(state, 0))
        yield length
        yield booked
        yield calls
        yield advisors
        outcomes = CounterMetricFamily(
            "sfu_consult_events", "Queue events on this node, by kind", labels=["kind"]
        )
        for kind, value in sorted(s.outcomes.items()):
            outcomes.add_metric([kind], value)
        yield outcomes
        wait = HistogramMetricFamily(
            "sfu_consult_wait_seconds", "From the request (or its booked slot) to an advisor"
        )
        wait.add_metric([], s.wait.buckets(), s.wait.sum)
        yield wait
        duration = HistogramMetricFamily(
            "sfu_consult_call_duration_seconds", "From accept to the end of the call"
        )
        duration.add_metric([], s.duration.buckets(), s.duration.sum)
        yield duration
