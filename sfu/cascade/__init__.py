"""Cascading: relay a room's published tracks from its origin node to edge nodes over QUIC.

`Cascade` is attached to a node as `Node.cascade` when `cascade_port` is set (None when it
is 0). It listens for edges on that UDP port (sfu.cascade.origin) and can subscribe this node,
as an edge, to rooms on other nodes (sfu.cascade.edge). Which node is a room's origin is
decided elsewhere (the room directory); this package only relays.

Layout: sfu.wire.cascade (datagram header, control lines), auth (node-secret handshake),
feed (origin: channels, relay history), remote (edge: the origin's tracks as local
Receivers), backoff (reconnection delays), quic/origin/edge (the aioquic shells).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import TYPE_CHECKING

from sfu.cascade.auth import AUTH_TIMEOUT
from sfu.cascade.backoff import MAXIMUM as MAX_BACKOFF
from sfu.cascade.edge import EdgeLink
from sfu.cascade.feed import RoomFeed
from sfu.cascade.origin import EdgeSession, OriginListener
from sfu.cascade.quic import IDLE_TIMEOUT
from sfu.core.receiver import Receiver
from sfu.core.room import Room
from sfu.wire import rtcp

if TYPE_CHECKING:
    from sfu.node import Node

log = logging.getLogger("sfu.cascade")

__all__ = ["Cascade"]


class Cascade:
    """The node's cascade: origin for the rooms edges ask for, edge for rooms it asks for."""

    def __init__(self, node: Node, *, idle_timeout: float = IDLE_TIMEOUT,
                 auth_timeout: float = AUTH_TIMEOUT, max_backoff: float = MAX_BACKOFF) -> None:
        self.node = node
        self.node_id = secrets.token_hex(6)
        self.idle_timeout = idle_timeout
        self.auth_timeout = auth_timeout
        self.max_backoff = max_backoff
        self.listener = OriginListener(self)
        self.feeds: dict[str, RoomFeed] = {}
        self.edges: dict[str, list[EdgeSession]] = {}  # room -> authenticated edge sessions
        self.links: dict[str, EdgeLink] = {}  # room -> this node's link to its origin
        self._register_gauges()

    @property
    def port(self) -> int:
        return self.listener.port

    async def start(self) -> None:
        s = self.node.settings
        await self.listener.start(s.host, s.cascade_port)
        log.info("cascade listening", extra={"cascade_port": self.port})

    async def stop(self) -> None:
        for room in list(self.links):
            await self.unsubscribe(room)
        await self.listener.stop()
        for feed in self.feeds.values():
            feed.close()
        self.feeds.clear()
        self.edges.clear()

    # --- edge: the interface the room directory uses -------------------------------------

    async def subscribe(self, room: str, origin: tuple[str, int]) -> None:
        """Receive `room`'s published tracks from the origin's cascade listener at
        `origin` (host, cascade_port). Idempotent; a different origin replaces the link.
        Returns at once: the tracks appear in the local room when the link is up, and
        return by themselves after the link is lost and comes back. Raises ValueError for
        this node's own listener or a malformed origin."""
        host, port = origin[0], int(origin[1])
        if not room or not 0 < port < 65536:
            raise ValueError(f"cannot subscribe {room!r} to {origin!r}: need a room name "
                             "and an origin (host, cascade_port)")
        if port == self.port and host in self._own_hosts():
            raise ValueError(f"{host}:{port} is this node's own cascade listener")
        link = self.links.get(room)
        if link is not None:
            if link.origin == (host, port):
                return
            await self.unsubscribe(room)
        link = self.links[room] = EdgeLink(self, room, (host, port))
        link.start()

    async def unsubscribe(self, room: str) -> None:
        link = self.links.pop(room, None)
        if link is not None:
            await link.stop()

    def _own_hosts(self) -> set[str]:
        s = self.node.settings
        return {s.host, "127.0.0.1", "localhost", "::1", *self.node.advertised_ips}

    async def wait_linked(self, room: str, limit: float) -> bool:
        """True once this edge's link for `room` is authenticated (within `limit` seconds)."""
        link = self.links.get(room)
        if link is None:
            return False
        try:
            async with asyncio.timeout(limit):
                await link.linked.wait()
        except TimeoutError:
            return False
        return True

    # --- origin: called by the node and the edge sessions ---------------------------------

    def join_feed(self, room: str, session: EdgeSession) -> RoomFeed:
        feed = self.feeds.get(room)
        if feed is None:
            feed = self.feeds[room] = RoomFeed(room)
        feed.add_sink(session.send_datagram)
        self.edges.setdefault(room, []).append(session)
        specs = feed.sync(self.node.rooms.get(room))
        session.send_tracks([s.to_json() for s in specs])
        # A new edge's viewers will want a picture at once.
        now = self.node.now()
        for ch in feed.channels.values():
            if ch.receiver.is_video:
                self.node.request_keyframe(ch.receiver, now)
        return feed

    def leave_feed(self, session: EdgeSession) -> None:
        room = session.room
        if room is None:
            return
        sessions = self.edges.get(room, [])
        if session in sessions:
            sessions.remove(session)
        feed = self.feeds.get(room)
        if feed is not None:
            feed.remove_sink(session.send_datagram)
        if not sessions:
            self.edges.pop(room, None)
            if feed is not None:
                feed.close()
                del self.feeds[room]

    def tracks_changed(self, room: Room) -> None:
        """The node's hook: the room's set of tracks changed; tell its edges."""
        feed = self.feeds.get(room.name)
        if feed is None:
            return
        tracks = [s.to_json() for s in feed.sync(room)]
        for session in self.edges.get(room.name, ()):
            session.send_tracks(tracks)

    def on_sender_report(self, receiver: Receiver, sr: rtcp.SenderReport) -> None:
        """The node's hook: relay a publisher's SR so edges keep A/V sync."""
        if receiver.relay is None:
            return
        for room, feed in self.feeds.items():
            for ch in feed.channels.values():
                if ch.receiver is receiver:
                    message = {"t": "sr", "ch": ch.number, "ntp": sr.ntp_timestamp,
                               "rtp": sr.rtp_timestamp, "packets": sr.packet_count,
                               "octets": sr.octet_count}
                    for session in self.edges.get(room, ()):
                        session.send_message(message)
                    return

    def relayed(self, track: Receiver) -> bool:
        """Whether edges receive this track (then every layer stays on: dynacast on the
        origin cannot see the edges' viewers)."""
        return any(ch.receiver.primary is track.primary
                   for feed in self.feeds.values() for ch in feed.channels.values())

    # --- metrics -------------------------------------------------------------------------

    def _register_gauges(self) -> None:
        m = self.node.metrics
        m.add_gauge("cascade_links", "Cascade links up: edges connected to this origin "
                    "(role=origin), origins this edge is linked to (role=edge)", ("role",),
                    self._links_gauge)

    def _links_gauge(self) -> dict[tuple[str, ...], float]:
        return {
            ("origin",): sum(len(s) for s in self.edges.values()),
            ("edge",): sum(1 for link in self.links.values() if link.linked.is_set()),
        }
