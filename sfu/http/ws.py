"""The room protocol: a WebSocket (`GET /ws`) for interactive clients.

One WebSocket and one peer connection per participant. The client always offers; the node
answers. It publishes by offering sending sections and subscribes by offering receiving
sections mapped to track ids. The node tells every participant when the room's tracks change,
and the client renegotiates. Message reference: docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from sfu.auth import Claims, TokenError, verify_token
from sfu.core.receiver import Receiver
from sfu.core.room import Room
from sfu.sdp import SdpError

if TYPE_CHECKING:
    from sfu.net.peer import Peer
    from sfu.node import Node

log = logging.getLogger("sfu.ws")
PROTOCOL_VERSION = 1
JOIN_TIMEOUT = 10.0
MAX_MESSAGES_PER_SECOND = 20
TRACK_SOURCES = frozenset({"camera", "microphone", "screen", "screen_audio"})


class RoomSession:
    """One participant's WebSocket."""

    def __init__(
        self, node: Node, ws: web.WebSocketResponse, *,
        exclude: frozenset[str] = frozenset(), hops: int = 0,
    ) -> None:
        self.node = node
        self.ws = ws
        # Cluster placement hints from the socket URL (?exclude=<node id>,...&hops=n).
        self.exclude = exclude
        self.hops = hops
        self.claims: Claims | None = None
        self.peer: Peer | None = None
        self._window_start = 0.0
        self._window_count = 0

    async def send(self, type_: str, **fields: Any) -> None:
        if not self.ws.closed:
            await self.ws.send_str(json.dumps({"v": PROTOCOL_VERSION, "type": type_, **fields}))

    async def error(self, code: str, reason: str, ref: Any = None) -> None:
        self.node.metrics.drop(f"ws_{code}")
        await self.send("error", id=ref, code=code, reason=reason)

    def _rate_ok(self, now: float) -> bool:
        if now - self._window_start >= 1.0:
            self._window_start, self._window_count = now, 0
        self._window_count += 1
        return self._window_count <= MAX_MESSAGES_PER_SECOND

    async def handle(self, raw: str) -> None:
        if not self._rate_ok(self.node.now()):
            await self.error("rate_limited", f"more than {MAX_MESSAGES_PER_SECOND} messages/s")
            return
        try:
            msg = json.loads(raw)
        except ValueError:
            await self.error("malformed", "message is not JSON")
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            await self.error("malformed", "expected an object with a string 'type'")
            return
        kind, ref = msg["type"], msg.get("id")
        if kind == "ping":
            await self.send("pong", id=ref)
        elif kind == "join":
            await self._join(msg, ref)
        elif self.claims is None:
            await self.error("not_joined", "send 'join' with a token first", ref)
        elif kind == "offer":
            await self._offer(msg, ref)
        elif kind == "layer":
            await self._layer(msg, ref)
        elif kind == "leave":
            await self.ws.close()
        else:
            await self.error("unknown_type", f"unknown message type {kind!r}", ref)

    async def _join(self, msg: dict[str, Any], ref: Any) -> None:
        if self.claims is not None:
            await self.error("already_joined", "this socket has joined already", ref)
            return
        token = msg.get("token")
        s = self.node.settings
        try:
            if not isinstance(token, str):
                raise TokenError("missing token")
            claims = verify_token(token, api_key=s.api_key, api_secret=s.api_secret)
        except TokenError as exc:
            await self.error("unauthorized", exc.reason, ref)
            await self.ws.close()
            return
        if not (claims.allows("publish") or claims.allows("subscribe")):
            await self.error("forbidden", "token grants neither publish nor subscribe", ref)
            await self.ws.close()
            return
        cluster = self.node.cluster
        extra: dict[str, Any] = {}
        if cluster is not None:
            if await self._redirected(claims, ref):
                return
            extra = {"node": cluster.node_id, "nodes": cluster.node_urls()}
        self.claims = claims
        room = self.node.room(claims.room)
        self.node.room_listeners.setdefault(room.name, set()).add(self._on_tracks)
        await self.send(
            "joined", id=ref, room=room.name, participant=claims.identity,
            grants=sorted(claims.grants), tracks=room.tracks(), **extra,
        )

    async def _redirected(self, claims: Claims, ref: Any) -> bool:
        """In a cluster: tell the client to reconnect elsewhere if this node does not serve
        the room for it (a publisher goes to the room's origin), then close."""
        from sfu.cluster.agent import socket_url
        from sfu.cluster.policy import Redirect

        cluster = self.node.cluster
        assert cluster is not None
        placed = await cluster.place(
            claims.room, "publisher" if claims.allows("publish") else "viewer",
            exclude=self.exclude, hops=self.hops,
        )
        if not isinstance(placed, Redirect):
            return False
        cluster.count_redirect("ws", placed)
        query = {"hops": str(self.hops + 1)}
        if self.exclude:
            query["exclude"] = ",".join(sorted(self.exclude))
        target = placed.target
        await self.send(
            "redirect", id=ref, url=socket_url(target.url, query), node_url=target.url,
            node=target.node_id,
            reason=placed.reason,
        )
        await self.ws.close()
        return True

    async def move(self, url: str, node_url: str, node_id: str) -> None:
        """The room is served by another node now: redirect this client there and close."""
        await self.send("redirect", url=url, node_url=node_url, node=node_id, reason="origin")
        await self.ws.close()

    async def _offer(self, msg: dict[str, Any], ref: Any) -> None:
        assert self.claims is not None
        sdp = msg.get("sdp")
        subs = msg.get("subscriptions") or {}
        if not isinstance(sdp, str) or not isinstance(subs, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in subs.items()
        ):
            await self.error("malformed", "offer needs 'sdp' (string) and optional "
                             "'subscriptions' ({mid: track_id})", ref)
            return
        sources = msg.get("sources") or {}
        if not isinstance(sources, dict) or not all(
            isinstance(k, str) and v in TRACK_SOURCES for k, v in sources.items()
        ):
            await self.error("malformed", "'sources' must map mids to one of "
                             + ", ".join(sorted(TRACK_SOURCES)), ref)
            return
        c = self.claims
        try:
            if self.peer is None or self.peer.state == "closed":
                answered = self.node.open_session(
                    kind="ws", room_name=c.room, participant=c.identity, offer_sdp=sdp,
                    publish=c.allows("publish"), subscribe=c.allows("subscribe"),
                    subscriptions=subs, grants=c.grants,
                )
                self.peer = answered.peer
                self.peer.on_layers = self._on_layers
            else:
                answered = self.node.renegotiate(
                    self.peer, sdp, publish=c.allows("publish"), subscribe=c.allows("subscribe"),
                    subscriptions=subs,
                )
        except SdpError as exc:
            await self.error("bad_offer", str(exc), ref)
            return
        peer = answered.peer
        if self._label(peer, sources):
            self.node._tracks_changed(peer.room)
        await self.send(
            "answer", id=ref, sdp=answered.sdp, session=peer.id,
            published={mid: r.info.track_id for mid, r in peer.receivers_by_mid.items()},
            subscribed={
                s.downtrack.mid: (s.downtrack.receiver.info.track_id
                                  if s.downtrack.receiver is not None else None)
                for s in peer.slots
            },
        )

    @staticmethod
    def _label(peer: Peer, sources: dict[str, str]) -> bool:
        """Apply the offer's ``sources`` ({mid: "camera"|"screen"|...}) to the published
        tracks; True if a label changed (the room is told again, with the labels)."""
        changed = False
        for mid, source in sources.items():
            receiver = peer.receivers_by_mid.get(mid)
            if receiver is not None and receiver.info.source != source:
                receiver.info.source = source
                changed = True
        return changed

    async def _layer(self, msg: dict[str, Any], ref: Any) -> None:
        from sfu.http.app import layer_request

        if self.peer is None:
            await self.error("no_session", "send an offer first", ref)
            return
        mid = msg.get("mid")
        if mid is not None and not isinstance(mid, str):
            await self.error("malformed", "'mid' must be a string", ref)
            return
        try:
            rank, size = layer_request(msg)
        except ValueError as exc:
            await self.error("malformed", str(exc), ref)
            return
        applied = self.node.set_layer_preference(self.peer, mid, rank=rank, max_size=size)
        await self.send("layer", id=ref, applied=applied)

    def _on_layers(self, track: Receiver) -> None:
        """Dynacast: tell this publisher which simulcast layers anyone needs."""
        active = [la.rid or str(la.layer) for la in track.layers if not la.paused]
        paused = [la.rid or str(la.layer) for la in track.layers if la.paused]
        asyncio.ensure_future(
            self.send("layers", track_id=track.info.track_id, active=active, paused=paused)
        )

    def _on_tracks(self, room: Room) -> None:
        asyncio.ensure_future(self.send("tracks", room=room.name, tracks=room.tracks()))

    def close(self) -> None:
        if self.claims is not None:
            listeners = self.node.room_listeners.get(self.claims.room)
            if listeners is not None:
                listeners.discard(self._on_tracks)
                if not listeners:
                    del self.node.room_listeners[self.claims.room]
                    room = self.node.rooms.get(self.claims.room)
                    if room is not None and room.empty:
                        del self.node.rooms[self.claims.room]
        if self.peer is not None and self.peer.state != "closed":
            self.node.close_peer(self.peer, "left")


async def ws_handler(request: web.Request) -> web.StreamResponse:
    from sfu.http.app import NODE_KEY

    node: Node = request.app[NODE_KEY]  # type: ignore[assignment]
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=node.settings.max_request_bytes)
    await ws.prepare(request)
    from sfu.cluster.agent import parse_exclude

    try:
        hops = max(0, int(request.query.get("hops", "0")))
    except ValueError:
        hops = 0
    session = RoomSession(
        node, ws, exclude=parse_exclude(request.query.getall("exclude", [])), hops=hops
    )
    node.metrics.sessions_total["ws_socket"] += 1
    try:
        while not ws.closed:
            timeout = JOIN_TIMEOUT if session.claims is None else None
            try:
                msg = await ws.receive(timeout=timeout)
            except TimeoutError:
                await session.error("join_timeout", f"no join within {JOIN_TIMEOUT:.0f} s")
                break
            if msg.type == WSMsgType.TEXT:
                await session.handle(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await session.error("malformed", "binary frames are not part of the protocol")
            elif msg.type == WSMsgType.ERROR:
                # e.g. a frame over max_msg_size: aiohttp closes with 1009
                node.metrics.drop("ws_error")
                break
            else:
                break
    finally:
        session.close()
        if not ws.closed:
            await ws.close()
    return ws


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ws", ws_handler)
