"""The asyncio shell of the cluster layer that a ``Node`` runs.

Every ``HEARTBEAT_INTERVAL`` it writes this node's record (load included) with a
``NODE_TTL`` expiry, reads the registry into a ``ClusterView``, releases the rooms of nodes
that died, re-takes its own claims if they were released while its heartbeat stalled,
re-homes rooms whose clients wait here without this node holding them, and lets go of
origin claims and cascade subscriptions of rooms that have had no local state for
``LEASE_GRACE``. ``place`` answers the HTTP and WebSocket fronts: serve
here (claiming the room or subscribing to its origin over the cascade first) or redirect.

When Redis cannot be reached the node keeps serving what reaches it: a placement that
cannot read the directory serves locally without a claim, and the failure is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from sfu.cluster.directory import RedisDirectory
from sfu.cluster.policy import (
    HEARTBEAT_INTERVAL,
    NODE_TTL,
    ClusterView,
    Leases,
    Placement,
    Redirect,
    Role,
    Serve,
    place,
    rehome,
)
from sfu.cluster.types import NodeInfo

if TYPE_CHECKING:
    from sfu.node import Node

log = logging.getLogger("sfu.cluster")


class ClusterUnavailable(RuntimeError):
    """The cluster Redis cannot be reached when the node starts."""


def default_node_id(http_port: int) -> str:
    return f"{socket.gethostname()}-{http_port}"[:64]


def redirect_url(base: str, path: str, query: dict[str, str]) -> str:
    """``base`` (another node's public URL) + this request's path and query."""
    qs = urllib.parse.urlencode(query)
    return f"{base}{path}" + (f"?{qs}" if qs else "")


def socket_url(base: str, query: dict[str, str]) -> str:
    """The room-protocol WebSocket URL of the node at ``base`` (http -> ws, https -> wss)."""
    url = redirect_url(base, "/ws", query)
    return "ws" + url[4:] if url.startswith("http") else url


def parse_exclude(values: list[str]) -> frozenset[str]:
    """``exclude=a&exclude=b`` or ``exclude=a,b``: node ids a client saw fail."""
    return frozenset(p.strip() for v in values for p in v.split(",") if p.strip())


class ClusterAgent:
    """Registry membership and placement for one node."""

    def __init__(self, node: Node, directory: RedisDirectory) -> None:
        self.node = node
        self.directory = directory
        s = node.settings
        self.node_id = s.node_id or default_node_id(node.http_port)
        ip = node.advertised_ips[0] if node.advertised_ips else "127.0.0.1"
        host = f"[{ip}]" if ":" in ip else ip
        self.url = s.public_url or f"http://{host}:{node.http_port}"
        self.view = ClusterView(self.node_id, NODE_TTL)
        self.origins = Leases()  # rooms this node claimed
        self.relayed = Leases()  # rooms this node receives over the cascade
        self.relay_from: dict[str, str] = {}  # relayed room -> the origin it comes from
        self.beat = 0
        self.heartbeat_failures = 0
        self.directory_errors = 0
        self.redirects: Counter[tuple[str, str]] = Counter()  # (kind, reason)
        self.released_dead: Counter[str] = Counter()  # rooms released of dead nodes
        self._task: asyncio.Task[None] | None = None
        self._left = False
        node.metrics.registry.register(_Collector(self))

    @classmethod
    async def start(cls, node: Node) -> ClusterAgent:
        url = node.settings.cluster_redis_url
        directory = RedisDirectory(url)
        try:
            await directory.open()
        except (RedisError, OSError) as exc:
            raise ClusterUnavailable(f"cannot reach the cluster Redis at {url}: {exc}") from exc
        if node.commerce is not None and getattr(node.commerce, "bus", None) is None:
            log.warning("cluster without a Redis commerce store: stock, orders and room "
                        "messages stay on each node (set --store redis://...)")
        agent = cls(node, directory)
        await agent.heartbeat()
        agent._task = asyncio.ensure_future(agent._loop())
        log.info("joined the cluster", extra={"node": agent.node_id, "url": agent.url,
                                              "nodes": len(agent.view.alive(node.now()))})
        return agent

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(RedisError, OSError):
            await self.leave()
        await self.directory.close()

    async def leave(self) -> None:
        """Deregister and release this node's rooms (drain and stop): nobody is sent here."""
        self._left = True
        await self.directory.deregister(self.node_id)
        await self.directory.release_node(self.node_id)

    # --- heartbeat -----------------------------------------------------------------------------

    def me(self) -> NodeInfo:
        peers = self.node.peers.values()
        cascade = None
        if self.node.cascade is not None and self.node.settings.cascade_port:
            ip = self.node.advertised_ips[0] if self.node.advertised_ips else "127.0.0.1"
            cascade = (ip, self.node.settings.cascade_port)
        return NodeInfo(
            node_id=self.node_id, url=self.url, cascade=cascade,
            viewers=sum(1 for p in peers if not p.receivers), sessions=len(peers),
            capacity=self.node.settings.node_capacity, beat=self.beat,
        )

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            try:
                await self.heartbeat()
            except (RedisError, OSError) as exc:
                self.heartbeat_failures += 1
                log.warning("cluster heartbeat failed", extra={"error": repr(exc)})
            except Exception:
                self.heartbeat_failures += 1
                log.exception("cluster heartbeat failed")

    async def heartbeat(self) -> None:
        if self._left:
            return
        self.beat += 1
        await self.directory.heartbeat(self.me(), NODE_TTL)
        records = await self.directory.nodes()
        now = self.node.now()
        dead = self.view.observe(records, now) + self.view.expire(now)
        for node_id in dead:
            rooms = await self.directory.release_node(node_id)
            self.released_dead[node_id] += len(rooms)
            log.warning("node left the cluster", extra={"node": node_id, "rooms": rooms})
        # A stalled loop can miss heartbeats long enough for the others to release this
        # node's rooms: take them back, or treat them as re-homed if another node has them.
        for room in await self.directory.reassert(self.origins.rooms(), self.node_id):
            self.origins.drop(room)
            log.warning("room taken over by another node", extra={"room": room})
        present = set(self.node.rooms)
        await self._rehome(present, now)
        for room in self.origins.sweep(present, now):
            await self.directory.release(room, self.node_id)
        for room in self.relayed.sweep(present, now):
            self.relay_from.pop(room, None)
            if self.node.cascade is not None:
                await self.node.cascade.unsubscribe(room)

    async def _rehome(self, present: set[str], now: float) -> None:
        """Rooms with clients here that this node does not hold: if it relays them from
        their live origin, nothing to do; otherwise (clients that arrived while the origin
        was unreachable, or an origin that died or changed) claim the room, relay it from
        the new origin, or send its clients there."""
        rooms = sorted(r for r in present if r not in self.origins)
        current = await self.directory.origins(rooms)
        for room in rooms:
            origin_id = current[room]
            if (room in self.relayed and origin_id is not None
                    and self.relay_from.get(room) == origin_id
                    and self.view.is_alive(origin_id, now)):
                continue
            try:
                await self._rehome_room(room, origin_id, now)
            except (RedisError, OSError):
                raise
            except Exception as exc:  # a cascade failure: try again next heartbeat
                log.warning("cannot re-home room", extra={"room": room, "error": repr(exc)})

    async def _rehome_room(self, room: str, origin_id: str | None, now: float) -> None:
        decided = rehome(me=self.me(), origin_id=origin_id, alive=self.view.alive(now))
        if isinstance(decided, Redirect):
            await self._stop_relay(room)
            target = decided.target
            moved = self.node.move_room(room, target.url, target.node_id)
            self.redirects[("moved", "origin")] += moved
            log.info("room moved to its origin",
                     extra={"room": room, "origin": target.node_id, "clients": moved})
        elif decided.cascade_from is not None and decided.cascade_from.cascade is not None:
            assert self.node.cascade is not None
            await self.node.cascade.subscribe(room, decided.cascade_from.cascade)
            self.relayed.touch(room)
            self.relay_from[room] = decided.cascade_from.node_id
            log.info("relaying room from its origin",
                     extra={"room": room, "origin": decided.cascade_from.node_id})
        elif not decided.claim:
            self.origins.touch(room)
        elif await self.directory.claim(room, self.node_id, replace=decided.replace) == self.node_id:
            await self._stop_relay(room)  # the old origin is gone; the host comes here now
            self.origins.touch(room)
        # else another node took the room just now: the next heartbeat follows it

    async def _stop_relay(self, room: str) -> None:
        if room in self.relayed:
            self.relayed.drop(room)
            self.relay_from.pop(room, None)
            if self.node.cascade is not None:
                await self.node.cascade.unsubscribe(room)

    # --- placement -----------------------------------------------------------------------------

    def node_urls(self) -> list[str]:
        """Public URLs of the live nodes, this one first (clients retry through them)."""
        others = [n.url for n in self.view.alive(self.node.now()) if n.node_id != self.node_id]
        return [self.url, *others]

    async def place(
        self, room: str, role: Role, *, exclude: frozenset[str] = frozenset(), hops: int = 0
    ) -> Placement:
        """Decide, claim or subscribe as needed, and return where ``room``'s client goes."""
        now = self.node.now()
        me = self.me()
        alive = self.view.alive(now)
        try:
            origin_id = await self.directory.origin(room)
            placed = place(role=role, me=me, origin_id=origin_id, alive=alive,
                           exclude=exclude, hops=hops)
            if isinstance(placed, Serve) and placed.claim:
                holder = await self.directory.claim(room, self.node_id, replace=placed.replace)
                if holder != self.node_id:  # another node won the race: decide again
                    placed = place(role=role, me=me, origin_id=holder,
                                   alive=alive, exclude=exclude, hops=hops)
                    if isinstance(placed, Serve):
                        placed = Serve(cascade_from=placed.cascade_from)
                else:
                    self.origins.touch(room)
        except (RedisError, OSError) as exc:
            self.directory_errors += 1
            log.warning("cluster directory unavailable: serving locally",
                        extra={"room": room, "error": repr(exc)})
            return Serve()
        if isinstance(placed, Serve):
            if placed.cascade_from is not None and placed.cascade_from.cascade is not None:
                cascade = self.node.cascade
                assert cascade is not None  # policy offers cascade only to relaying nodes
                try:
                    await cascade.subscribe(room, placed.cascade_from.cascade)
                except Exception as exc:
                    log.warning("cascade subscribe failed: redirecting to the origin",
                                extra={"room": room, "error": repr(exc)})
                    return Redirect(placed.cascade_from, "origin")
                self.relayed.touch(room)
                self.relay_from[room] = placed.cascade_from.node_id
            elif not placed.claim and room in self.origins:
                self.origins.touch(room)
        elif placed.reason == "load":
            self.view.note_assigned(placed.target.node_id)
        return placed

    def count_redirect(self, kind: str, redirect: Redirect) -> None:
        self.redirects[(kind, redirect.reason)] += 1


class _Collector(Collector):
    def __init__(self, agent: ClusterAgent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        a = self.agent
        nodes = GaugeMetricFamily("sfu_cluster_nodes", "Live cluster nodes this node knows "
                                  "(itself included)")
        nodes.add_metric([], len(a.view.alive(a.node.now())))
        yield nodes
        leases = GaugeMetricFamily("sfu_cluster_rooms", "Rooms this node is origin of or "
                                   "relays over the cascade", labels=["role"])
        leases.add_metric(["origin"], len(a.origins))
        leases.add_metric(["relay"], len(a.relayed))
        yield leases
        fails = CounterMetricFamily("sfu_cluster_heartbeat_failures",
                                    "Registry heartbeats that failed")
        fails.add_metric([], a.heartbeat_failures)
        yield fails
        errors = CounterMetricFamily("sfu_cluster_directory_errors",
                                     "Placements served locally because Redis failed")
        errors.add_metric([], a.directory_errors)
        yield errors
        redirects = CounterMetricFamily("sfu_cluster_redirects", "Clients sent to another "
                                        "node, by request kind and reason",
                                        labels=["kind", "reason"])
        for kind in ("whip", "whep", "ws"):
            for reason in ("origin", "load"):
                redirects.add_metric([kind, reason], a.redirects[(kind, reason)])
        redirects.add_metric(["moved", "origin"], a.redirects[("moved", "origin")])
        yield redirects
        released = CounterMetricFamily("sfu_cluster_released_rooms",
                                       "Origin claims of dead nodes released by this node")
        released.add_metric([], sum(a.released_dead.values()))
        yield released
