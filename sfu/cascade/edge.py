"""An edge's link to a room's origin (asyncio shell): connect, authenticate, relay, retry.

While subscribed, an EdgeLink keeps one QUIC connection to the origin's cascade listener:
it runs the edge half of the handshake (sfu.cascade.auth), hands the origin's track lists,
sender reports and datagrams to a RemotePublisher (sfu.cascade.remote), pings to measure
the RTT and keep the link alive, and when the link is lost (closed, refused, idle timeout)
removes the remote tracks and tries again after a growing delay (sfu.cascade.backoff).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from aioquic.asyncio import connect

from sfu.cascade.auth import AuthError, EdgeHandshake, cert_binding
from sfu.cascade.backoff import Backoff
from sfu.cascade.quic import (
    CLOSE_AUTH,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL,
    LinkProtocol,
    configuration,
    peer_certificate_der,
)
from sfu.cascade.remote import RemotePublisher
from sfu.wire.cascade import ORIGIN_MESSAGES, CascadeWireError, parse_datagram, parse_track

if TYPE_CHECKING:
    from collections.abc import Callable

    from sfu.cascade import Cascade

log = logging.getLogger("sfu.cascade")

CONNECT_TIMEOUT = 5.0
PING_INTERVAL = 1.0
# How long the edge may hold an ACK. aioquic acknowledges 1 ms after a packet, which for a
# media stream is about one ACK per video frame plus one per audio packet, and each one
# costs the origin a decrypt and a pass through its loss recovery: about half of what an
# edge costs it (measured). 20 ms stays under the 25 ms max_ack_delay aioquic advertises,
# so the origin's loss timers allow for it, and datagrams are never retransmitted anyway.
ACK_DELAY = 0.02


class EdgeProtocol(LinkProtocol):
    accept = ORIGIN_MESSAGES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if hasattr(self._quic, "_ack_delay"):  # aioquic has no public setting for it
            self._quic._ack_delay = ACK_DELAY


class EdgeLink:
    """This edge's subscription to one room on one origin."""

    def __init__(self, cascade: Cascade, room: str, origin: tuple[str, int]) -> None:
        self.cascade = cascade
        self.node = cascade.node
        self.room = room
        self.origin = origin
        self.backoff = Backoff(maximum=cascade.max_backoff)
        self.linked = asyncio.Event()  # set while authenticated
        self.last_error = ""
        self.remote: RemotePublisher | None = None
        self.protocol: EdgeProtocol | None = None
        self.handshake: EdgeHandshake | None = None
        # A test hook: return True to drop a received datagram (a lossy relay leg).
        self.drop_datagram: Callable[[bytes], bool] | None = None
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # --- connection loop -----------------------------------------------------------------

    async def _run(self) -> None:
        host, port = self.origin
        try:
            while True:
                try:
                    await self._connect_once(host, port)
                except (ConnectionError, OSError, TimeoutError) as exc:
                    self.last_error = f"cannot reach origin {host}:{port}: {exc or type(exc)}"
                    self.node.metrics.cascade["connect_failed"] += 1
                    log.info("cascade: origin unreachable",
                             extra={"room": self.room, "error": self.last_error})
                except Exception as exc:  # never let one bad attempt end the subscription
                    self.last_error = f"link to {host}:{port} failed: {exc!r}"
                    self.node.metrics.cascade["connect_failed"] += 1
                    log.exception("cascade: link failed", extra={"room": self.room})
                delay = self.backoff.delay()
                self.node.metrics.cascade["reconnects"] += 1
                await asyncio.sleep(delay)
        finally:
            self._teardown()

    async def _connect_once(self, host: str, port: int) -> None:
        config = configuration(server=False, idle_timeout=self.cascade.idle_timeout)
        self._closed = asyncio.Event()
        async with contextlib.AsyncExitStack() as stack:
            protocol = await asyncio.wait_for(
                stack.enter_async_context(
                    connect(host, port, configuration=config, create_protocol=EdgeProtocol)),
                CONNECT_TIMEOUT)
            assert isinstance(protocol, EdgeProtocol)
            self._attach(protocol)
            pinger = asyncio.ensure_future(self._ping(protocol))
            guard = asyncio.get_running_loop().call_later(
                self.cascade.auth_timeout, self._auth_overdue, protocol)
            try:
                await self._closed.wait()
            finally:
                guard.cancel()
                pinger.cancel()
                if not protocol.closed:
                    protocol.send_message({"t": "bye"})
                    protocol.shut(CLOSE_NORMAL, "unsubscribed")
                self._teardown()

    def _attach(self, protocol: EdgeProtocol) -> None:
        self.protocol = protocol
        self.handshake = EdgeHandshake(self.node.settings.api_secret, self.room,
                                       self.cascade.node_id)
        self.remote = RemotePublisher(self.node, self.room, protocol.send_message)
        self.remote.arm = self._arm_timer
        protocol.on_message = self._on_message
        protocol.on_bad_message = self._on_bad_message
        protocol.on_datagram = self._on_datagram
        protocol.on_closed = self._on_closed
        protocol.send_message(self.handshake.hello())

    def _auth_overdue(self, protocol: EdgeProtocol) -> None:
        if not protocol.closed and not self.linked.is_set():
            self.last_error = "the origin did not complete authentication in time"
            log.error("cascade: origin authentication timed out", extra={"room": self.room})
            protocol.shut(CLOSE_AUTH, "auth_timeout")

    def _arm_timer(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.remote is not None:
            self.remote.handle_timer(self.node.now())

    def _teardown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.linked.is_set():
            self.linked.clear()
        if self.remote is not None:
            self.remote.close(self.node.now())
            self.remote = None
        self.protocol = None

    async def _ping(self, protocol: EdgeProtocol) -> None:
        while not protocol.closed:
            await asyncio.sleep(PING_INTERVAL)
            protocol.send_message({"t": "ping", "ts": time.monotonic()})

    # --- events --------------------------------------------------------------------------

    def _on_closed(self, reason: str) -> None:
        protocol = self.protocol
        if protocol is not None and protocol.close_code == CLOSE_AUTH:
            self.last_error = f"origin refused: {reason}"
            log.error("cascade: origin refused this edge",
                      extra={"room": self.room, "reason": reason})
        if self.linked.is_set():
            log.warning("cascade: origin link lost", extra={"room": self.room,
                                                           "reason": reason})
        self._closed.set()

    def _on_message(self, message: dict[str, Any]) -> None:
        protocol, handshake, remote = self.protocol, self.handshake, self.remote
        if protocol is None or handshake is None or remote is None:
            return
        t = message["t"]
        now = self.node.now()
        if t == "error":
            self.last_error = f"origin refused: {message['code']}: {message['message']}"
            log.error("cascade: origin refused this edge",
                      extra={"room": self.room, "code": message["code"],
                             "reason": message["message"]})
            return
        try:
            if not handshake.done:
                if t == "challenge":
                    binding = cert_binding(peer_certificate_der(protocol))
                    protocol.send_message(handshake.on_challenge(message, binding))
                elif t == "welcome":
                    handshake.on_welcome(message)
                    self.backoff.reset()
                    self.last_error = ""
                    self.linked.set()
                    log.info("cascade: linked to origin",
                             extra={"room": self.room, "origin": f"{self.origin}"})
                elif t == "bye":
                    protocol.shut(CLOSE_NORMAL, "origin said bye")
                else:
                    raise AuthError("protocol", f"{t!r} before authentication")
                return
        except AuthError as exc:
            self.node.metrics.cascade_auth_rejections["edge"] += 1
            self.last_error = f"origin rejected: {exc}"
            log.error("cascade: origin failed authentication",
                      extra={"room": self.room, "code": exc.code, "reason": str(exc)})
            protocol.shut(CLOSE_AUTH, exc.code)
            return
        if t == "tracks":
            remote.on_tracks([parse_track(x) for x in message["tracks"]], now)
        elif t == "sr":
            remote.on_sender_report(message, now)
        elif t == "pong":
            rtt = time.monotonic() - float(message["ts"])
            if 0 <= rtt < 10:
                remote.set_rtt(rtt)
        elif t == "bye":
            protocol.shut(CLOSE_NORMAL, "origin said bye")
        else:
            self._on_bad_message(CascadeWireError(f"unexpected {t!r}"))

    def _on_bad_message(self, exc: CascadeWireError) -> None:
        self.node.metrics.drop("cascade_control_malformed")
        log.info("cascade: malformed control message", extra={"error": str(exc)})
        handshake = self.handshake
        if self.protocol is not None and (handshake is None or not handshake.done):
            self.protocol.shut(CLOSE_PROTOCOL, "malformed handshake")

    def _on_datagram(self, data: bytes) -> None:
        m = self.node.metrics
        remote = self.remote
        if remote is None or not self.linked.is_set():
            m.drop("cascade_datagram_unexpected")
            return
        hook = self.drop_datagram
        if hook is not None and hook(data):
            return
        try:
            kind, channel, plain = parse_datagram(data)
        except CascadeWireError:
            m.drop("cascade_datagram_malformed")
            return
        m.cascade["packets_in"] += 1
        m.cascade["bytes_in"] += len(data)
        remote.on_media(kind, channel, plain, self.node.now())
