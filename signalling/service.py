"""The commerce service: the node's datachannel commerce messages, rooms' sale state, orders.

One ``CommerceService`` per node (``Node.start`` opens it with the store named by
``Settings.store_url``, default ``sqlite:///<data_dir>/commerce.db``; ``Node.stop`` closes
it). It is the asyncio shell around ``signalling.domain`` and ``signalling.store``:

- every datachannel of a participant (WHEP player or room client) becomes a
  ``ViewerSession`` when it opens; it is sent a ``snapshot`` (card, active sale, stock, the
  viewer's cart) and from then on every room message;
- room messages (``product.card``, ``sale.*``, ``stock.updated``) carry the room's ``seq``,
  which increases by one per room message; direct replies (``order.result``,
  ``cart.updated``, ``error``, ``clock.pong``) carry none; a ``snapshot`` carries the seq of
  the last room message it includes;
- ``stock.updated`` is coalesced per product to at most one per ``STOCK_INTERVAL``;
- with a Redis store, room messages go through ``signalling.bus.RoomBus``: the seq is one
  Redis counter per room and every node, this one included, delivers the messages to its
  viewers from the Redis feed, so an admin action on any node reaches viewers on all nodes
  in one order;
- writes go through a paced, bounded ``fanout.Outbox`` per channel;
- viewer input is validated by ``messages.decode_client_message`` and rate limited per
  session (token buckets); ``admin.*`` needs the token's ``admin`` grant;
- orders go to ``CommerceStore.place_order`` (atomic, idempotent, durable) and the result
  is sent only after the store returned, i.e. after the order is on disk.

The operator HTTP API (``signalling.http``) calls the same ``admin_*`` methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

import msgspec
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from signalling import convert
from signalling import messages as m
from signalling.bus import RoomBus
from signalling.domain.cart import Cart, CartError
from signalling.domain.catalog import CatalogError, Product, is_valid_id
from signalling.domain.ratelimit import TokenBucket
from signalling.domain.sale import Sale, SaleTransitionError, sale_state
from signalling.domain.sale import start as start_sale
from signalling.domain.sale import stop as stop_sale
from signalling.fanout import FanoutStats, Outbox
from signalling.store import CommerceStore, DuplicateProduct, StoreError, UnknownProduct, open_store

if TYPE_CHECKING:
    from sfu.net.peer import Peer
    from sfu.node import Node

log = logging.getLogger("signalling.service")

PRESENCE_INTERVAL: Final = 1.0  # seconds between a node's viewer/cart count reports
PRESENCE_TTL: Final = 3.0  # a node's counts stop counting this long after its last report
STOCK_INTERVAL: Final = 0.2  # at most 5 stock.updated per second per product
CART_RATE: Final = (10.0, 10.0)  # cart events per second, burst
ORDER_RATE: Final = (5.0, 10.0)  # orders per second, burst (a retry per attempt)
MESSAGE_RATE: Final = (50.0, 100.0)  # any message (pings included), per second, burst
ERROR_RATE: Final = (5.0, 20.0)  # error replies we send back, per second, burst
MAX_CARTS: Final = 100_000  # carts kept per room (by identity, across reconnects)
# Room messages as they come back from the cross-node feed (signalling.bus).
_ROOM_MESSAGE: Final = msgspec.json.Decoder(
    m.ProductCard | m.SaleScheduled | m.SaleStarted | m.SaleEnded | m.StockUpdated
)
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class AdminError(Exception):
    """An operator command that cannot be done; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason


def _type_of(msg: m.Message) -> str:
    return str(type(msg).__struct_config__.tag)


def _text(msg: m.Message) -> str:
    return m.encode(msg).decode()


class CommerceStats:
    """Commerce counters (the fan-out ones live in ``FanoutStats``)."""

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()  # by type (or "invalid")
        self.errors: Counter[str] = Counter()  # error replies by code
        self.orders: Counter[str] = Counter()  # by status ("failed": store error)
        # cross-node feed: published, deduplicated, publish_failed, delivered, stale,
        # presence_failed
        self.feed: Counter[str] = Counter()
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0

    def observe_latency(self, seconds: float) -> None:
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.latency_buckets[i] += 1
                break
        else:
            self.latency_buckets[-1] += 1
        self.latency_sum += seconds
        self.latency_count += 1


# --- sessions and rooms -----------------------------------------------------------------------


class ViewerSession:
    """One open commerce datachannel of one participant."""

    def __init__(self, service: CommerceService, room: RoomCommerce, peer: Peer, channel: Any):
        self.service = service
        self.room = room
        self.peer = peer
        self.channel = channel
        self.identity = peer.participant
        self.admin = "admin" in peer.grants
        self.outbox = Outbox(channel, service.fanout, resync=self.snapshot_text)
        self.cart_bucket = TokenBucket(*CART_RATE)
        self.order_bucket = TokenBucket(*ORDER_RATE)
        self.message_bucket = TokenBucket(*MESSAGE_RATE)
        self.error_bucket = TokenBucket(*ERROR_RATE)
        self.ready = False  # the snapshot went out; room messages follow

    @property
    def cart(self) -> Cart:
        return self.room.cart(self.identity)

    def reply(self, msg: m.Message) -> None:
        """A direct reply (never dropped for room traffic, no room seq)."""
        self.outbox.push(_type_of(msg), _text(msg), droppable=False)

    def error(self, code: str, reason: str) -> None:
        self.service.stats.errors[code] += 1
        if self.error_bucket.allow(time.time()):
            self.reply(m.Error(code=code, reason=reason[:500]))

    def snapshot_text(self) -> str | None:
        if self.outbox.closed:
            return None
        return _text(self.room.snapshot(self))


class RoomCommerce:
    """Commerce state of one room: seq, pinned card, active sale, stock cache, viewers."""

    def __init__(self, service: CommerceService, name: str) -> None:
        self.service = service
        self.name = name
        self.seq = 0
        self.viewers: dict[int, ViewerSession] = {}  # id(channel) -> session
        self.card: Product | None = None
        self.card_pinned_at = 0.0
        self.card_rtp: int | None = None
        self.card_source: Any = None  # the host's video Receiver the card's RTP ts is from
        self.sale: Sale | None = None
        self.stock: dict[str, int] = {}
        self.products: set[str] = set()
        self._carts: OrderedDict[str, Cart] = OrderedDict()
        self._stock_sent_at: dict[str, float] = {}
        self._stock_timers: dict[str, asyncio.TimerHandle] = {}
        self._sale_timer: asyncio.TimerHandle | None = None
        self._loaded: asyncio.Future[None] | None = None
        # Feed messages that arrive while the room loads (bus mode): applied after it.
        self._buffer: list[tuple[int, str, str]] | None = None

    # --- loading ---------------------------------------------------------------------------

    async def load(self) -> None:
        """Read products, the active sale and stock from the store once (shared by callers)."""
        if self._loaded is None:
            self._loaded = asyncio.get_running_loop().create_future()
            try:
                await self._load()
            except BaseException as exc:
                fut, self._loaded = self._loaded, None
                fut.set_exception(exc)
                fut.exception()  # consumed here; concurrent waiters get it too
                raise
            self._loaded.set_result(None)
        await asyncio.shield(self._loaded)

    async def _load(self) -> None:
        store = self.service.store
        bus = self.service.bus
        if bus is not None:
            # The seq first: what the store says next is at least as new as that seq, and
            # later feed messages are kept until the state is read.
            self._buffer = []
            try:
                self.seq = max(self.seq, await bus.seq(self.name))
                card = await bus.card(self.name)
                if card is not None:
                    self._apply(_ROOM_MESSAGE.decode(card[1]))
            except BaseException:
                self._buffer = None
                raise
        try:
            products = await store.list_products(self.name)
            self.products = {p.id for p in products}
            for p in products:
                self.stock[p.id] = await store.stock(p.id)
            await self.refresh_sale(announce=False)
        finally:
            buffered, self._buffer = self._buffer, None
        for seq, type_, payload in buffered or ():
            self.deliver(seq, type_, payload)

    def cart(self, identity: str) -> Cart:
        cart = self._carts.get(identity)
        if cart is None:
            cart = self._carts[identity] = Cart()
            while len(self._carts) > MAX_CARTS:
                self._carts.popitem(last=False)
        else:
            self._carts.move_to_end(identity)
        return cart

    def open_carts(self) -> int:
        """How many identities have something in their cart (the studio's counter)."""
        return sum(1 for cart in self._carts.values() if cart.lines())

    # --- messages --------------------------------------------------------------------------

    def _card_message(self, seq: int | None, viewer: ViewerSession | None) -> m.ProductCard:
        assert self.card is not None
        return convert.product_card(
            self.card,
            stock=self.stock.get(self.card.id, self.card.initial_stock),
            pinned_at=self.card_pinned_at,
            pinned_at_rtp=self._rtp_for(viewer),
            seq=seq,
        )

    def _rtp_for(self, viewer: ViewerSession | None) -> int | None:
        """The card's RTP timestamp in the timeline this viewer receives the host video in
        (the node rewrites timestamps per subscriber); the host's own otherwise."""
        rtp = self.card_rtp
        if rtp is None or viewer is None or self.card_source is None:
            return rtp
        for slot in viewer.peer.slots:
            dt = slot.downtrack
            if dt.receiver is self.card_source and dt.munger.has_source:
                return int(dt.munger.translate_ts(rtp))
        return rtp

    def snapshot(self, viewer: ViewerSession) -> m.Snapshot:
        now = time.time()
        sale = self.sale
        product = sale.product_id if sale is not None else (self.card.id if self.card else None)
        return m.Snapshot(
            card=self._card_message(None, viewer) if self.card is not None else None,
            sale=convert.sale_info(sale, now) if sale is not None else None,
            stock=self.stock.get(product) if product is not None else None,
            cart=convert.cart_lines(viewer.cart),
            seq=self.seq,
        )

    def broadcast(
        self,
        build: Callable[[int | None], m.Message],
        coalesce: object = None,
        once: str | None = None,
    ) -> int | None:
        """Send one room message (built with the next seq) to every ready viewer.

        With the cross-node feed the message is published (the seq is Redis's) and
        delivered from the feed, on this node as on the others; None is returned then.
        ``once`` de-duplicates a message several nodes send for the same reason.
        """
        if self.service.bus is not None:
            self.service.spawn(self.publish(build(None), once=once))
            return None
        self.seq += 1
        msg = build(self.seq)
        type_, data = _type_of(msg), _text(msg)
        self.service.notify(self.name, type_, data)
        for viewer in list(self.viewers.values()):
            if viewer.ready:
                viewer.outbox.push(type_, data, coalesce=coalesce)
        return self.seq

    def broadcast_card(self) -> None:
        if self.service.bus is not None:
            self.service.spawn(self.publish(self._card_message(None, None)))
            return
        self.seq += 1
        seq = self.seq
        common = _text(self._card_message(seq, None))
        self.service.notify(self.name, "product.card", common)
        for viewer in list(self.viewers.values()):
            if not viewer.ready:
                continue
            personal = self._rtp_for(viewer)
            text = common if personal == self.card_rtp else _text(self._card_message(seq, viewer))
            viewer.outbox.push("product.card", text)

    async def publish(self, msg: m.Message, *, once: str | None = None) -> int:
        """Publish a room message (without seq) on the cross-node feed; its seq (0 if
        ``once`` was published already)."""
        bus = self.service.bus
        assert bus is not None
        feed = self.service.stats.feed
        try:
            seq = await bus.publish(self.name, _type_of(msg), _text(msg), once=once)
        except (RedisError, OSError) as exc:
            feed["publish_failed"] += 1
            log.warning("cannot publish %s to room %s: %r", _type_of(msg), self.name, exc)
            raise StoreError(f"cannot publish the room message: {exc}") from exc
        feed["published" if seq else "deduplicated"] += 1
        return seq

    def deliver(self, seq: int, type_: str, payload: str) -> None:
        """A room message from the feed: apply it to the room's state and send it to the
        ready viewers, unless this room's state already includes it."""
        if self._buffer is not None:
            self._buffer.append((seq, type_, payload))
            return
        feed = self.service.stats.feed
        if seq <= self.seq:
            feed["stale"] += 1  # already part of the state this node loaded
            return
        try:
            msg = _ROOM_MESSAGE.decode(payload)
        except msgspec.ValidationError:
            feed["malformed"] += 1
            return
        feed["delivered"] += 1
        self.seq = seq
        msg = self._apply(msg)
        msg = msgspec.structs.replace(msg, seq=seq)
        text = _text(msg)
        self.service.notify(self.name, type_, text)
        card_rtp = self.card_rtp
        for viewer in list(self.viewers.values()):
            if not viewer.ready:
                continue
            if isinstance(msg, m.ProductCard):
                personal = self._rtp_for(viewer)
                out = text if personal == card_rtp else _text(
                    msgspec.structs.replace(msg, pinned_at_rtp=personal))
                viewer.outbox.push(type_, out)
            elif isinstance(msg, m.StockUpdated):
                viewer.outbox.push(type_, text, coalesce=("stock", msg.product_id))
            else:
                viewer.outbox.push(type_, text)

    def _apply(self, msg: Any) -> Any:
        """Update this node's view of the room from a feed message; return the message as
        the viewers get it (a stock level never goes back up)."""
        if isinstance(msg, m.ProductCard):
            same = (self.card is not None and self.card.id == msg.product_id
                    and self.card_pinned_at == msg.pinned_at)
            if not same:
                # Pinned on another node: the host video here is the cascaded one.
                self.card_source = self.service.host_video(self.name, None)
            self.card = Product(
                id=msg.product_id, room=self.name, name=msg.name, price_cents=msg.price_cents,
                currency=msg.currency, image_url=msg.image_url, initial_stock=msg.stock,
            )
            self.card_pinned_at = msg.pinned_at
            self.card_rtp = msg.pinned_at_rtp
            self.products.add(msg.product_id)
        elif isinstance(msg, m.SaleScheduled | m.SaleStarted | m.SaleEnded):
            self.products.add(msg.product_id)
            if self._loaded is not None and self._loaded.done():
                self.service.spawn(self.refresh_sale(announce=False))
        if isinstance(msg, m.ProductCard | m.StockUpdated | m.SaleScheduled | m.SaleStarted
                      | m.SaleEnded):
            known = self.stock.get(msg.product_id)
            if known is not None and msg.stock > known:
                msg = msgspec.structs.replace(msg, stock=known)
            self.stock[msg.product_id] = msg.stock
        return msg

    # --- stock -----------------------------------------------------------------------------

    def stock_changed(self, product_id: str, stock: int, *, force: bool = False) -> None:
        """Record a new stock level; broadcast it coalesced (<= 1 per STOCK_INTERVAL)."""
        old = self.stock.get(product_id)
        # Orders only take stock, and their results can be observed out of order.
        if not force and old is not None and stock >= old:
            return
        self.stock[product_id] = stock
        loop = asyncio.get_running_loop()
        now = loop.time()
        last = self._stock_sent_at.get(product_id, -math.inf)
        if now - last >= STOCK_INTERVAL:
            self._flush_stock(product_id)
        elif product_id not in self._stock_timers:
            self._stock_timers[product_id] = loop.call_later(
                last + STOCK_INTERVAL - now, self._flush_stock, product_id
            )

    def _flush_stock(self, product_id: str) -> None:
        self._stock_timers.pop(product_id, None)
        self._stock_sent_at[product_id] = asyncio.get_running_loop().time()
        stock = self.stock[product_id]
        self.broadcast(
            lambda seq: m.StockUpdated(product_id=product_id, stock=stock, seq=seq),
            coalesce=("stock", product_id),
        )

    # --- sales -----------------------------------------------------------------------------

    async def refresh_sale(self, *, announce: bool = True) -> None:
        """Re-read the active sale, announce it, and arm the timer for its next transition."""
        store = self.service.store
        now = time.time()
        sale = await store.active_sale(self.name, now)
        if sale is None:
            # Nothing open or coming: show the sale that ended last, so a (re)joining viewer
            # sees "ended" rather than nothing.
            sales = await store.list_sales(self.name)
            sale = max(sales, key=lambda s: (s.ends_at, s.id)) if sales else None
        if sale is not None:
            self.stock[sale.product_id] = await store.stock(sale.product_id)
        self.sale = sale
        if announce and sale is not None:
            self.announce_sale(sale)
        self._arm_sale_timer()

    def announce_sale(self, sale: Sale, *, once: str | None = None) -> None:
        stock = self.stock.get(sale.product_id, 0)
        self.broadcast(
            lambda seq: convert.sale_event(sale, stock=stock, now=time.time(), seq=seq),
            once=once,
        )

    def _arm_sale_timer(self) -> None:
        if self._sale_timer is not None:
            self._sale_timer.cancel()
            self._sale_timer = None
        sale = self.sale
        if sale is None:
            return
        now = time.time()
        state = sale_state(sale, now)
        if state == "ended":
            return
        at = sale.starts_at if state == "scheduled" else sale.ends_at
        loop = asyncio.get_running_loop()
        self._sale_timer = loop.call_later(max(0.0, at - now), self._sale_transition, sale, at)

    def _sale_transition(self, sale: Sale, at: float) -> None:
        self._sale_timer = None
        if self.sale != sale:
            return
        now = time.time()
        if now < at:  # the loop clock and the wall clock disagree slightly: wait again
            loop = asyncio.get_running_loop()
            self._sale_timer = loop.call_later(at - now, self._sale_transition, sale, at)
            return
        # Every node with this room fires the same timer; the feed publishes one of them.
        self.announce_sale(sale, once=f"{self.name}:{sale.id}:{sale_state(sale, now)}:{at!r}")
        self.service.spawn(self.refresh_sale(announce=False))

    def close(self) -> None:
        if self._sale_timer is not None:
            self._sale_timer.cancel()
        for handle in self._stock_timers.values():
            handle.cancel()
        self._stock_timers.clear()
        for viewer in self.viewers.values():
            viewer.outbox.close()
        self.viewers.clear()


# --- the service ------------------------------------------------------------------------------


class CommerceService:
    """Commerce for one node: rooms, datachannel sessions, the store, metrics."""

    def __init__(self, node: Node, store: CommerceStore) -> None:
        self.node = node
        self.store = store
        self.rooms: dict[str, RoomCommerce] = {}
        self.fanout = FanoutStats()
        self.stats = CommerceStats()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        # The cross-node feed (signalling.bus), with a Redis store; set by open().
        self.bus: RoomBus | None = None
        # This node in the feed's presence counts (the cluster id once the cluster is up).
        self._member = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._presence: asyncio.Task[None] | None = None
        # Told every room message as broadcast: (room, type, JSON text). The recorder's
        # commerce timeline (sfu.recording) listens here.
        self.observers: list[Callable[[str, str, str], None]] = []
        node.metrics.registry.register(_Collector(self))

    @classmethod
    async def open(cls, node: Node) -> CommerceService:
        s = node.settings
        store = await open_store(s.store_url or None, data_dir=s.data_dir)
        service = cls(node, store)
        from signalling.store.redis import RedisStore

        if isinstance(store, RedisStore):
            bus = RoomBus(store.url, prefix=store.prefix, on_event=service._on_feed,
                          on_resync=service._resync)
            try:
                await bus.open()
            except BaseException:
                await bus.close()
                await store.close()
                raise
            service.bus = bus
            service._presence = asyncio.ensure_future(service._presence_loop())
        return service

    async def close(self) -> None:
        self._closing = True
        if self._presence is not None:
            self._presence.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._presence
        for room in self.rooms.values():
            room.close()
        # Orders already handed to the store finish (their answers may be on disk).
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        for task in tasks:
            task.cancel()
        if self.bus is not None:
            await self.bus.close()
        await self.store.close()

    def notify(self, room: str, type_: str, text: str) -> None:
        for observer in self.observers:
            observer(room, type_, text)

    @property
    def member(self) -> str:
        return getattr(self.node, "node_id", "") or self._member

    async def _presence_loop(self) -> None:
        while True:
            await asyncio.sleep(PRESENCE_INTERVAL)
            try:
                await self.report_presence()
            except (RedisError, OSError) as exc:
                self.stats.feed["presence_failed"] += 1
                log.warning("cannot report room presence: %r", exc)

    async def report_presence(self) -> None:
        """Write this node's viewers and open carts of every room it has state for."""
        bus = self.bus
        assert bus is not None
        for room in list(self.rooms.values()):
            await bus.report(room.name, self.member, len(room.viewers), room.open_carts(),
                             PRESENCE_TTL)

    def _on_feed(self, room_name: str, seq: int, type_: str, payload: str) -> None:
        room = self.rooms.get(room_name)
        if room is not None and room._loaded is not None:
            room.deliver(seq, type_, payload)
        # A room not loaded here reads its state (seq included) when it is first needed.

    def _resync(self) -> None:
        """The feed was lost for a while: re-read every room and send viewers a snapshot."""
        self.spawn(self._reload_rooms())

    async def _reload_rooms(self) -> None:
        for room in list(self.rooms.values()):
            if room._loaded is None or not room._loaded.done():
                continue
            room._loaded = None
            try:
                await room.load()
            except Exception as exc:
                log.warning("cannot reload room %s: %r", room.name, exc)
                continue
            for viewer in list(room.viewers.values()):
                if viewer.ready:
                    viewer.outbox.push("snapshot", _text(room.snapshot(viewer)), droppable=False)

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("commerce task failed", exc_info=task.exception())

    def room(self, name: str) -> RoomCommerce:
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = RoomCommerce(self, name)
        return room

    async def loaded_room(self, name: str) -> RoomCommerce:
        if not is_valid_id(name):
            raise AdminError(400, "invalid", "commerce rooms are 1-64 of A-Z a-z 0-9 . _ : -")
        room = self.room(name)
        await room.load()
        return room

    # --- datachannels ----------------------------------------------------------------------

    def channel_opened(self, peer: Peer, channel: Any) -> None:
        """A datachannel of ``peer`` is open: make a session and send it a snapshot."""
        if self._closing or not is_valid_id(peer.room.name):
            return
        room = self.room(peer.room.name)
        viewer = ViewerSession(self, room, peer, channel)
        room.viewers[id(channel)] = viewer
        channel.on("close", lambda: self._forget(viewer))
        self.spawn(self._welcome(viewer))

    async def _welcome(self, viewer: ViewerSession) -> None:
        try:
            await viewer.room.load()
        except Exception as exc:
            log.warning("cannot load room %s: %r", viewer.room.name, exc)
            viewer.error("unavailable", "commerce state unavailable; reconnect later")
            return
        if viewer.outbox.closed:
            self._forget(viewer)
            return
        # Synchronously: the snapshot carries room.seq and every later room message a
        # higher one.
        viewer.outbox.push("snapshot", _text(viewer.room.snapshot(viewer)), droppable=False)
        viewer.ready = True

    def _forget(self, viewer: ViewerSession) -> None:
        viewer.outbox.close()
        viewer.room.viewers.pop(id(viewer.channel), None)

    def peer_closed(self, peer: Peer) -> None:
        room = self.rooms.get(peer.room.name)
        if room is None:
            return
        for viewer in [v for v in room.viewers.values() if v.peer is peer]:
            self._forget(viewer)

    def _session(self, peer: Peer, channel: Any) -> ViewerSession | None:
        room = self.rooms.get(peer.room.name)
        return None if room is None else room.viewers.get(id(channel))

    def on_message(self, peer: Peer, channel: Any, raw: str | bytes) -> None:
        """One datachannel message (already under the size limit and a JSON object with a
        string ``type``); every problem is answered with an ``error`` on that channel."""
        viewer = self._session(peer, channel)
        if viewer is None:
            err = m.Error(code="unavailable", reason="no commerce session on this channel")
            with contextlib.suppress(Exception):
                channel.send(_text(err))
            return
        now = time.time()
        if not viewer.message_bucket.allow(now):
            self.stats.received["rate_limited"] += 1
            viewer.error("rate_limited", "too many messages; slow down")
            return
        try:
            msg = m.decode_client_message(raw)
        except m.MessageError as exc:
            self.stats.received["invalid"] += 1
            viewer.error(exc.code, exc.reason)
            return
        type_ = _type_of(msg)
        self.stats.received[type_] += 1
        if isinstance(msg, m.ClockPing):  # normally answered earlier, in sfu.net.datachannel
            pong = convert.clock_pong(msg, time.time())
            viewer.outbox.send_now("clock.pong", _text(pong))
        elif isinstance(msg, m.OrderPlace):
            self._order(viewer, msg, now)
        elif isinstance(msg, m.CartAdd | m.CartRemove):
            self._cart(viewer, msg, now)
        elif not viewer.admin:
            viewer.error("forbidden", f"{type_} needs a token with the admin grant")
        else:
            self.spawn(self._admin_message(viewer, msg))

    def _cart(self, viewer: ViewerSession, msg: m.CartAdd | m.CartRemove, now: float) -> None:
        if not viewer.cart_bucket.allow(now):
            viewer.error("rate_limited", "cart events are limited to 10 per second")
            return
        if msg.product_id not in viewer.room.products:
            viewer.error("unknown_product", f"no product {msg.product_id} in this room")
            return
        try:
            if isinstance(msg, m.CartAdd):
                viewer.cart.add(msg.product_id, msg.quantity)
            else:
                viewer.cart.remove(msg.product_id, msg.quantity)
        except CartError as exc:
            viewer.error(exc.code, exc.reason)
            return
        viewer.reply(convert.cart_updated(viewer.cart))

    def _order(self, viewer: ViewerSession, msg: m.OrderPlace, now: float) -> None:
        if not viewer.order_bucket.allow(now):
            self.stats.orders["rate_limited"] += 1
            viewer.reply(convert.rate_limited(msg))
            return
        self.spawn(self._place(viewer, msg))

    async def _place(self, viewer: ViewerSession, msg: m.OrderPlace) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        request = convert.order_request(msg, viewer=viewer.identity, room=viewer.room.name)
        try:
            result = await self.store.place_order(request, time.time())
        except Exception as exc:
            self.stats.orders["failed"] += 1
            log.warning("order failed", extra={"error": repr(exc), "room": viewer.room.name})
            viewer.error(
                "order_failed",
                f"order {msg.idempotency_key} not confirmed (store error); retry with the "
                "same idempotency_key",
            )
            return
        self.stats.observe_latency(loop.time() - started)
        self.stats.orders[result.status] += 1
        viewer.reply(convert.order_result(result))
        if result.remaining is not None and result.status in ("confirmed", "sold_out"):
            viewer.room.stock_changed(msg.product_id, result.remaining)

    async def _admin_message(self, viewer: ViewerSession, msg: m.Message) -> None:
        room = viewer.room.name
        try:
            if isinstance(msg, m.AdminPinCard):
                await self.admin_pin_card(
                    room, msg.product_id, pinned_at_rtp=msg.pinned_at_rtp, host=viewer.identity
                )
            elif isinstance(msg, m.AdminScheduleSale):
                await self.admin_schedule_sale(
                    room, msg.product_id, msg.starts_at, msg.ends_at, sale_id=msg.sale_id
                )
            elif isinstance(msg, m.AdminStartSale):
                await self.admin_start_sale(room, msg.sale_id)
            elif isinstance(msg, m.AdminStopSale):
                await self.admin_stop_sale(room, msg.sale_id)
        except AdminError as exc:
            viewer.error(exc.code, exc.reason)
        except StoreError as exc:
            viewer.error("unavailable", f"store error: {exc}")

    # --- operator commands (HTTP API and admin.* messages) ---------------------------------

    async def admin_create_product(self, room_name: str, product: Product) -> dict[str, Any]:
        room = await self.loaded_room(room_name)
        try:
            await self.store.create_product(product)
        except DuplicateProduct as exc:
            raise AdminError(409, "duplicate", f"product {product.id} exists") from exc
        room.products.add(product.id)
        room.stock[product.id] = product.initial_stock
        return product_json(product, product.initial_stock)

    async def admin_list_products(self, room_name: str) -> list[dict[str, Any]]:
        await self.loaded_room(room_name)
        products = await self.store.list_products(room_name)
        return [product_json(p, await self.store.stock(p.id)) for p in products]

    async def _product(self, room: RoomCommerce, product_id: str) -> Product:
        product = await self.store.get_product(product_id)
        if product is None or product.room != room.name:
            raise AdminError(404, "unknown_product", f"no product {product_id} in this room")
        return product

    async def admin_pin_card(
        self,
        room_name: str,
        product_id: str,
        *,
        pinned_at_rtp: int | None = None,
        host: str | None = None,
    ) -> dict[str, Any]:
        room = await self.loaded_room(room_name)
        product = await self._product(room, product_id)
        now = time.time()
        source = self.host_video(room_name, host)
        if pinned_at_rtp is None and source is not None:
            pinned_at_rtp = source.rtp_timestamp_at(self.node.now())
        room.card = product
        room.card_pinned_at = now
        room.card_rtp = pinned_at_rtp
        room.card_source = source
        room.stock[product.id] = await self.store.stock(product.id)
        if self.bus is not None:
            seq = await room.publish(room._card_message(None, None))
        else:
            room.broadcast_card()
            seq = room.seq
        return {
            "product_id": product.id,
            "pinned_at": now,
            "pinned_at_rtp": pinned_at_rtp,
            "seq": seq,
        }

    def host_video(self, room_name: str, host: str | None) -> Any:
        """The room's host video Receiver: the pinning participant's own video if they
        publish one, else the room's first video track."""
        media = self.node.rooms.get(room_name)
        if media is None:
            return None
        videos = [r for r in media.receivers.values() if r.info.kind == "video"]
        own = [r for r in videos if host is not None and r.info.participant == host]
        candidates = own or videos
        return candidates[0] if candidates else None

    async def admin_schedule_sale(
        self,
        room_name: str,
        product_id: str,
        starts_at: float,
        ends_at: float,
        *,
        sale_id: str | None = None,
    ) -> dict[str, Any]:
        room = await self.loaded_room(room_name)
        await self._product(room, product_id)
        if sale_id is None:
            sale_id = f"sale-{int(time.time() * 1000)}-{room.seq + 1}"
        else:
            existing = await self.store.get_sale(sale_id)
            if existing is not None and existing.room != room_name:
                raise AdminError(409, "conflict", f"sale {sale_id} belongs to another room")
        try:
            sale = Sale(sale_id, room_name, product_id, starts_at, ends_at)
        except CatalogError as exc:
            raise AdminError(400, "invalid", str(exc)) from exc
        try:
            await self.store.put_sale(sale)
        except UnknownProduct as exc:
            raise AdminError(404, "unknown_product", str(exc)) from exc
        await self._sale_changed(room, sale)
        return sale_json(sale, time.time())

    async def _sale_changed(self, room: RoomCommerce, sale: Sale) -> None:
        await room.refresh_sale(announce=False)
        stock = await self.store.stock(sale.product_id)
        room.stock[sale.product_id] = stock
        # Announce the changed sale even if another one stays the active one.
        room.announce_sale(sale)

    async def _sale(self, room: RoomCommerce, sale_id: str) -> Sale:
        sale = await self.store.get_sale(sale_id)
        if sale is None or sale.room != room.name:
            raise AdminError(404, "unknown_sale", f"no sale {sale_id} in this room")
        return sale

    async def admin_start_sale(self, room_name: str, sale_id: str) -> dict[str, Any]:
        room = await self.loaded_room(room_name)
        sale = await self._sale(room, sale_id)
        now = time.time()
        try:
            new = start_sale(sale, now)
        except SaleTransitionError as exc:
            raise AdminError(409, "conflict", str(exc)) from exc
        if new != sale:
            await self.store.put_sale(new)
            await self._sale_changed(room, new)
        return sale_json(new, now)

    async def admin_stop_sale(self, room_name: str, sale_id: str) -> dict[str, Any]:
        room = await self.loaded_room(room_name)
        sale = await self._sale(room, sale_id)
        now = time.time()
        try:
            new = stop_sale(sale, now)
        except SaleTransitionError as exc:
            raise AdminError(409, "conflict", str(exc)) from exc
        if new != sale:
            await self.store.put_sale(new)
            await self._sale_changed(room, new)
        return sale_json(new, now)

    async def admin_list_sales(self, room_name: str) -> list[dict[str, Any]]:
        await self.loaded_room(room_name)
        now = time.time()
        sales = await self.store.list_sales(room_name)
        return [sale_json(s, now) for s in sales]

    async def admin_list_orders(
        self, room_name: str, sale_id: str | None = None
    ) -> dict[str, Any]:
        await self.loaded_room(room_name)
        orders = await self.store.list_orders(room=room_name, sale_id=sale_id)
        return {
            "orders": [
                {
                    "order_id": o.order_id,
                    "viewer": o.viewer,
                    "sale_id": o.sale_id,
                    "product_id": o.product_id,
                    "quantity": o.quantity,
                    "idempotency_key": o.idempotency_key,
                    "created_at": o.created_at,
                }
                for o in orders
            ],
            "count": len(orders),
            "quantity": sum(o.quantity for o in orders),
        }

    async def admin_state(self, room_name: str) -> dict[str, Any]:
        room = await self.loaded_room(room_name)
        viewers, carts = len(room.viewers), room.open_carts()
        if self.bus is not None:
            # Every node's counts: this node's now, the others' as of their last report.
            try:
                others = await self.bus.totals(room.name, skip=self.member)
            except (RedisError, OSError) as exc:
                self.stats.feed["presence_failed"] += 1
                log.warning("cannot read room presence: %r", exc)
                others = (0, 0)
            viewers, carts = viewers + others[0], carts + others[1]
        now = time.time()
        return {
            "room": room.name,
            "seq": room.seq,
            "server_time": now,
            "viewers": viewers,
            "carts": carts,
            "card": None if room.card is None else room.card.id,
            "sale": None if room.sale is None else sale_json(room.sale, now),
            "stock": dict(room.stock),
        }


def product_json(p: Product, stock: int) -> dict[str, Any]:
    return {
        "id": p.id,
        "room": p.room,
        "name": p.name,
        "price_cents": p.price_cents,
        "currency": p.currency,
        "image_url": p.image_url,
        "initial_stock": p.initial_stock,
        "stock": stock,
    }


def sale_json(s: Sale, now: float) -> dict[str, Any]:
    return {
        "sale_id": s.id,
        "room": s.room,
        "product_id": s.product_id,
        "starts_at": s.starts_at,
        "ends_at": s.ends_at,
        "state": sale_state(s, now),
        "server_time": now,
    }


# --- metrics ------------------------------------------------------------------------------


class _Collector(Collector):
    def __init__(self, service: CommerceService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        s, f = self.service.stats, self.service.fanout

        def counter(name: str, help_text: str, label: str, values: Counter[str]) -> Metric:
            fam = CounterMetricFamily(f"sfu_commerce_{name}", help_text, labels=[label])
            for key, value in sorted(values.items()):
                fam.add_metric([key], value)
            return fam

        yield counter("messages_sent", "Commerce datachannel messages sent, by type", "type",
                      f.sent)
        yield counter("messages_received", "Commerce datachannel messages received, by type",
                      "type", s.received)
        yield counter("queue_drops", "Queued messages dropped, by reason", "reason", f.dropped)
        yield counter("coalesced", "Queued messages replaced by a newer one, by type", "type",
                      f.coalesced)
        yield counter("errors", "Error replies, by code", "code", s.errors)
        yield counter("orders", "Orders decided, by status", "status", s.orders)
        feed = Counter(s.feed)
        bus = self.service.bus
        if bus is not None:
            feed["malformed"] += bus.malformed
            feed["lost"] = bus.feed_errors
        yield counter("feed_events", "Cross-node room message feed (Redis): published, "
                      "deduplicated, publish_failed, delivered, stale, malformed, lost "
                      "(subscription reconnects), presence_failed", "event", feed)
        resyncs = CounterMetricFamily("sfu_commerce_resyncs", "Snapshots sent to slow viewers")
        resyncs.add_metric([], f.resyncs)
        yield resyncs
        sent_bytes = CounterMetricFamily("sfu_commerce_bytes_sent", "Commerce bytes sent")
        sent_bytes.add_metric([], f.bytes_sent)
        yield sent_bytes
        queued = GaugeMetricFamily("sfu_commerce_queued_messages", "Messages waiting in outboxes")
        queued.add_metric([], f.queued())
        yield queued
        viewers = GaugeMetricFamily("sfu_commerce_viewers", "Open commerce datachannels")
        viewers.add_metric([], sum(len(r.viewers) for r in self.service.rooms.values()))
        yield viewers
        buckets: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip(LATENCY_BUCKETS, s.latency_buckets, strict=False):
            total += count
            buckets.append((repr(bound), total))
        buckets.append(("+Inf", s.latency_count))
        hist = HistogramMetricFamily(
            "sfu_commerce_order_latency_seconds", "order.place to order.result (store decision)"
        )
        hist.add_metric([], buckets, s.latency_sum)
        yield hist
