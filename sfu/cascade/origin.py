"""The origin's QUIC listener and its side of each edge's link (asyncio shell).

One EdgeSession per accepted connection: it runs the origin half of the handshake
(sfu.cascade.auth) before anything else is accepted, then subscribes the edge to the room's
RoomFeed (sfu.cascade.feed), answers its NACKs from the relay history and passes its
keyframe requests to the host through the node's keyframe policy.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from aioquic.asyncio import serve
from aioquic.asyncio.server import QuicServer

from sfu.cascade.auth import AuthError, OriginHandshake, cert_binding
from sfu.cascade.feed import RoomFeed
from sfu.cascade.quic import (
    CLOSE_AUTH,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL,
    Certificate,
    LinkProtocol,
    configuration,
)
from sfu.wire.cascade import EDGE_MESSAGES, CascadeWireError

if TYPE_CHECKING:
    from sfu.cascade import Cascade

log = logging.getLogger("sfu.cascade")

MAX_BAD_MESSAGES = 16  # malformed control lines tolerated (counted) before closing


class OriginProtocol(LinkProtocol):
    accept = EDGE_MESSAGES


class EdgeSession:
    """The origin's view of one connected edge."""

    def __init__(self, cascade: Cascade, protocol: OriginProtocol, binding: bytes) -> None:
        self.cascade = cascade
        self.node = cascade.node
        self.protocol = protocol
        self.handshake = OriginHandshake(cascade.node.settings.api_secret, binding,
                                         self.node.now(), timeout=cascade.auth_timeout)
        self.feed: RoomFeed | None = None
        self.bad_messages = 0
        protocol.on_message = self.on_message
        protocol.on_bad_message = self.on_bad_message
        protocol.on_datagram = self.on_datagram
        protocol.on_closed = self.on_closed
        self._timer = asyncio.get_running_loop().call_later(
            cascade.auth_timeout, self._check_auth)

    @property
    def authenticated(self) -> bool:
        return self.handshake.done

    @property
    def room(self) -> str | None:
        return self.handshake.room

    def _check_auth(self) -> None:
        if self.handshake.done or self.protocol.closed:
            return
        now = self.node.now()
        if not self.handshake.expired(now):  # a timer may fire a hair early
            self._timer = asyncio.get_running_loop().call_later(
                max(0.001, self.handshake.deadline - now), self._check_auth)
            return
        self._reject(AuthError("auth_timeout", "no authentication within "
                               f"{self.cascade.auth_timeout:g} s"))

    # --- control -----------------------------------------------------------------------------

    def on_message(self, message: dict[str, Any]) -> None:
        t = message["t"]
        m = self.node.metrics
        try:
            if not self.handshake.done:
                if t == "hello":
                    self.protocol.send_message(self.handshake.on_hello(message))
                elif t == "auth":
                    self.protocol.send_message(self.handshake.on_auth(message))
                    self._welcome()
                else:
                    raise AuthError("protocol", f"{t!r} before authentication")
                return
        except AuthError as exc:
            self._reject(exc)
            return
        now = self.node.now()
        if t == "nack":
            self._on_nack(message["ch"], message["seqs"], now)
        elif t == "keyframe":
            m.cascade["keyframe_received"] += 1
            ch = self.feed.channels.get(message["ch"]) if self.feed is not None else None
            if ch is not None:
                self.node.request_keyframe(ch.receiver, now)
        elif t == "ping":
            self.protocol.send_message({"t": "pong", "ts": message["ts"]})
        elif t == "bye":
            self.protocol.shut(CLOSE_NORMAL, "bye")
        else:
            self.on_bad_message(CascadeWireError(f"{t!r} after authentication"))

    def on_bad_message(self, exc: CascadeWireError) -> None:
        self.node.metrics.drop("cascade_control_malformed")
        self.bad_messages += 1
        log.info("cascade: malformed control message", extra={"error": str(exc)})
        if not self.handshake.done:
            self._reject(AuthError("protocol", f"malformed handshake: {exc}"))
        elif self.bad_messages > MAX_BAD_MESSAGES:
            self.protocol.send_message({"t": "error", "code": "protocol",
                                        "message": "too many malformed messages"})
            self.protocol.shut(CLOSE_PROTOCOL, "too many malformed messages")

    def on_datagram(self, data: bytes) -> None:
        self.node.metrics.drop("cascade_datagram_unexpected")  # edges send media only here

    def _reject(self, exc: AuthError) -> None:
        m = self.node.metrics
        m.cascade_auth_rejections["origin"] += 1
        log.warning("cascade: edge refused", extra={
            "code": exc.code, "reason": str(exc), "room": self.handshake.room,
            "edge": self.handshake.edge_node})
        # The reason also travels in CONNECTION_CLOSE: stream data queued just before a
        # close may never leave.
        self.protocol.send_message({"t": "error", "code": exc.code, "message": str(exc)})
        self.protocol.shut(CLOSE_AUTH, f"{exc.code}: {exc}")

    def _welcome(self) -> None:
        self._timer.cancel()
        room = self.handshake.room
        assert room is not None
        log.info("cascade: edge linked", extra={"room": room, "edge": self.handshake.edge_node})
        self.feed = self.cascade.join_feed(room, self)

    def _on_nack(self, channel: int, seqs: list[int], now: float) -> None:
        m = self.node.metrics
        m.cascade["nack_received"] += 1
        ch = self.feed.channels.get(channel) if self.feed is not None else None
        if ch is None:
            m.cascade["nack_unknown_channel"] += 1
            return
        packets, missing = ch.repair(seqs, now)
        for data in packets:
            self.send_datagram(data)
        m.cascade["repair_sent"] += len(packets)
        m.cascade["repair_missing"] += missing

    # --- media -------------------------------------------------------------------------------

    def send_datagram(self, data: bytes) -> None:
        m = self.node.metrics
        if self.protocol.send_datagram(data):
            m.cascade["packets_out"] += 1
            m.cascade["bytes_out"] += len(data)
        else:
            m.drop("cascade_send_dropped")

    def send_tracks(self, tracks: list[dict[str, Any]]) -> None:
        self.protocol.send_message({"t": "tracks", "tracks": tracks})

    def send_message(self, message: dict[str, Any]) -> None:
        self.protocol.send_message(message)

    def close(self, reason: str = "origin stopping") -> None:
        self.protocol.send_message({"t": "bye"})
        self.protocol.shut(CLOSE_NORMAL, reason)

    def on_closed(self, reason: str) -> None:
        self._timer.cancel()
        self.cascade.leave_feed(self)
        log.info("cascade: edge link closed", extra={"room": self.handshake.room,
                                                      "reason": reason})


class OriginListener:
    """The QUIC server for edges (cascade_port)."""

    def __init__(self, cascade: Cascade) -> None:
        self.cascade = cascade
        self.certificate = Certificate()
        self.binding = cert_binding(self.certificate.der)
        self.sessions: set[EdgeSession] = set()
        self._server: QuicServer | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        config = configuration(server=True, idle_timeout=self.cascade.idle_timeout,
                               certificate=self.certificate)
        self._server = await serve(host, port, configuration=config,
                                   create_protocol=self._protocol)
        sock = self._server._transport.get_extra_info("sockname")  # type: ignore[union-attr]
        self.port = sock[1]

    def _protocol(self, *args: Any, **kwargs: Any) -> OriginProtocol:
        protocol = OriginProtocol(*args, **kwargs)
        session = EdgeSession(self.cascade, protocol, self.binding)
        self.sessions.add(session)
        closed = protocol.on_closed

        def on_closed(reason: str) -> None:
            self.sessions.discard(session)
            closed(reason)

        protocol.on_closed = on_closed
        return protocol

    async def stop(self) -> None:
        for session in list(self.sessions):
            session.close()
        await asyncio.sleep(0)
        if self._server is not None:
            self._server.close()
            self._server = None
