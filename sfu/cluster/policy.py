"""Cluster decisions without I/O: membership on a clock, request placement, lease sweeping.

Rules (docs/deploy.md#cluster):

- A node is alive while its heartbeat counter keeps changing: ``ClusterView`` stamps each new
  value with the local ``now`` it was read at, so liveness never compares two machines'
  clocks. A node whose counter has not moved for ``ttl`` seconds, or whose registry record
  is gone (Redis expired it), is dead.
- A room's origin is the node that holds its publisher. The first request for a room
  without a live origin makes the node that serves it the origin (``Serve.claim``); a full
  node sends that request to the least-filled node first, so rooms spread by load.
- A publisher always goes to the origin. A viewer is served where it asks if that node is
  the origin or relays the room over the cascade and has spare capacity; otherwise it is
  sent to the least-filled node that can serve it (without the cascade: the origin).
- ``exclude`` lists nodes a client saw fail: they are never chosen, even while their
  registry record has not expired yet. A publisher may take over a room whose origin it
  excludes; a viewer displaces only an origin that is dead, and otherwise waits where it
  is served.
- A node whose clients wait for a room it neither holds nor relays re-homes it on every
  heartbeat (``rehome``): it takes the room once the origin is dead, relays it once the
  cascade can, or else sends the clients to the origin.
- ``hops`` counts redirects already followed; at ``MAX_HOPS`` a node serves rather than
  sending a viewer on by load, so stale load figures cannot bounce a client around.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Final, Literal

from sfu.cluster.types import NodeInfo

HEARTBEAT_INTERVAL: Final = 1.0  # seconds between a node's registry writes
NODE_TTL: Final = 3.0  # seconds without a new heartbeat before a node counts as dead
LEASE_GRACE: Final = 3.0  # seconds a room may be absent locally before its claim is let go
MAX_HOPS: Final = 2

Role = Literal["publisher", "viewer"]


@dataclass(frozen=True)
class Serve:
    """Serve the request on this node."""

    claim: bool = False  # make this node the room's origin
    replace: str | None = None  # the dead or excluded origin the claim may displace
    cascade_from: NodeInfo | None = None  # relay the room from this origin first


@dataclass(frozen=True)
class Redirect:
    """Send the client to ``target``."""

    target: NodeInfo
    reason: Literal["origin", "load"]


Placement = Serve | Redirect


@dataclass
class _Seen:
    info: NodeInfo
    changed_at: float


class ClusterView:
    """The nodes this node believes alive, from periodic registry reads."""

    def __init__(self, self_id: str, ttl: float = NODE_TTL) -> None:
        self.self_id = self_id
        self.ttl = ttl
        self._nodes: dict[str, _Seen] = {}
        # Viewers sent to a node since its last heartbeat: a burst of joins spreads instead
        # of all going to the node that looked emptiest at the last read.
        self._assigned: Counter[str] = Counter()

    def observe(self, records: Iterable[NodeInfo], now: float) -> list[str]:
        """Apply one registry read; return the ids of nodes whose record has gone."""
        present: set[str] = set()
        for info in records:
            present.add(info.node_id)
            seen = self._nodes.get(info.node_id)
            if seen is None or seen.info.beat != info.beat:
                self._nodes[info.node_id] = _Seen(info, now)
                self._assigned.pop(info.node_id, None)
            else:
                seen.info = info
        gone = [nid for nid in self._nodes if nid not in present and nid != self.self_id]
        for nid in gone:
            self._forget(nid)
        return gone

    def expire(self, now: float) -> list[str]:
        """Forget nodes whose heartbeat has not moved for ``ttl``; return their ids."""
        dead = [
            nid for nid, seen in self._nodes.items()
            if nid != self.self_id and now - seen.changed_at >= self.ttl
        ]
        for nid in dead:
            self._forget(nid)
        return dead

    def _forget(self, node_id: str) -> None:
        del self._nodes[node_id]
        self._assigned.pop(node_id, None)

    def alive(self, now: float) -> list[NodeInfo]:
        """Nodes with a heartbeat younger than ``ttl``, with the viewers assigned since."""
        out = []
        for nid, seen in sorted(self._nodes.items()):
            if nid == self.self_id or now - seen.changed_at < self.ttl:
                extra = self._assigned.get(nid, 0)
                info = seen.info
                out.append(replace(info, viewers=info.viewers + extra) if extra else info)
        return out

    def is_alive(self, node_id: str, now: float) -> bool:
        seen = self._nodes.get(node_id)
        return seen is not None and (node_id == self.self_id or now - seen.changed_at < self.ttl)

    def note_assigned(self, node_id: str) -> None:
        self._assigned[node_id] += 1


def least_filled(nodes: Iterable[NodeInfo]) -> NodeInfo | None:
    """The node with the smallest share of its capacity in use, then the fewest viewers."""
    return min(nodes, key=lambda n: (n.fill, n.viewers, n.node_id), default=None)


def place(
    *,
    role: Role,
    me: NodeInfo,
    origin_id: str | None,
    alive: Iterable[NodeInfo],
    exclude: frozenset[str] = frozenset(),
    hops: int = 0,
) -> Placement:
    """Where a publisher or viewer request for a room with origin ``origin_id`` is served.

    ``me`` is this node with its current load; ``alive`` the other live nodes (``me`` may be
    among them and is replaced by ``me``). A node can relay rooms iff its ``cascade`` is set.
    """
    alive = list(alive)
    living = {n.node_id for n in alive} | {me.node_id}
    candidates = {n.node_id: n for n in alive if n.node_id not in exclude}
    candidates[me.node_id] = me
    origin = candidates.get(origin_id) if origin_id is not None else None
    # A recorded origin that is dead or excluded may be displaced; by a viewer only if dead.
    stale = origin_id if origin_id is not None and origin is None else None
    dead = origin_id if origin_id is not None and origin_id not in living else None

    may_redirect = hops < MAX_HOPS
    if role == "publisher":
        if origin is None:
            # A new origin: here, unless this node is full and another has room.
            target = None if me.spare or not may_redirect else least_filled(
                n for n in candidates.values() if n.spare)
            if target is None or target is me:
                return Serve(claim=True, replace=stale)
            return Redirect(target, "load")
        if origin is me:
            return Serve()
        return Redirect(origin, "origin")

    if origin is None:
        # No usable origin: the viewer waits on some node, which becomes the room's origin
        # unless a live origin (one the client excludes) still holds it.
        if me.spare or not may_redirect:
            return Serve(claim=True, replace=dead)
        target = least_filled(n for n in candidates.values() if n.spare)
        if target is None or target is me:
            return Serve(claim=True, replace=dead)
        return Redirect(target, "load")

    relays = [n for n in candidates.values() if n.spare and (n is origin or n.cascade is not None)]
    if origin is me:
        if me.spare or not may_redirect:
            return Serve()
        target = least_filled(n for n in relays if n is not me)
        return Serve() if target is None else Redirect(target, "load")

    if me.cascade is None or origin.cascade is None:
        return Redirect(origin, "origin")
    if me.spare or not may_redirect:
        return Serve(cascade_from=origin)
    target = least_filled(relays)
    if target is None:
        return Serve(cascade_from=origin)
    return Redirect(target, "origin" if target is origin else "load")


def rehome(*, me: NodeInfo, origin_id: str | None, alive: Iterable[NodeInfo]) -> Placement:
    """What to do with a room that has clients on this node although this node neither
    holds it nor relays it (its clients arrived while the origin was unreachable).

    ``Serve()``: it is this node's after all. ``Serve(claim=True)``: the origin is gone,
    take the room. ``Serve(cascade_from=...)``: relay it from the origin. ``Redirect``:
    send the room's clients to the origin.
    """
    if origin_id == me.node_id:
        return Serve()
    origin = next((n for n in alive if n.node_id == origin_id), None)
    if origin is None:
        return Serve(claim=True, replace=origin_id)
    if me.cascade is not None and origin.cascade is not None:
        return Serve(cascade_from=origin)
    return Redirect(origin, "origin")


class Leases:
    """Rooms this node holds a claim on (origin) or relays; let go once unused for a while.

    ``touch`` when a request is served for the room; ``sweep`` with the rooms that still
    have local state returns the ones absent for ``grace`` seconds (and forgets them).
    """

    def __init__(self, grace: float = LEASE_GRACE) -> None:
        self.grace = grace
        self._absent_since: dict[str, float | None] = {}

    def __contains__(self, room: str) -> bool:
        return room in self._absent_since

    def __len__(self) -> int:
        return len(self._absent_since)

    def rooms(self) -> list[str]:
        return sorted(self._absent_since)

    def touch(self, room: str) -> None:
        self._absent_since[room] = None

    def drop(self, room: str) -> None:
        self._absent_since.pop(room, None)

    def sweep(self, present: set[str], now: float) -> list[str]:
        lapsed = []
        for room, since in list(self._absent_since.items()):
            if room in present:
                self._absent_since[room] = None
            elif since is None:
                self._absent_since[room] = now
            elif now - since >= self.grace:
                lapsed.append(room)
                del self._absent_since[room]
        return lapsed
