"""Node: one media node process. It owns the UDP media port, the HTTP front, rooms and peers.

Everything with a clock lives here: a 100 ms tick drives keyframe-request timers, receiver
reports and the removal of silent peers. The per-packet work is in Peer.on_srtp.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import secrets
import signal
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, web
from aiortc import RTCDataChannel
from aiortc.rtcdtlstransport import RTCCertificate

from sfu.config import PortUnavailable, Settings, advertised_ips
from sfu.core.downtrack import DownTrack
from sfu.core.layers import choose_layer, needed_layers
from sfu.core.receiver import Receiver
from sfu.core.room import Room, Slot
from sfu.metrics import NodeMetrics
from sfu.net import downlink, recovery_gauges
from sfu.net.pacing import PaceScheduler
from sfu.net.peer import Peer
from sfu.net.udp import UdpMux
from sfu.offer import Answered, answer_offer, create_peer, parse_offer
from sfu.sdp import SdpError
from sfu.wire import rtcp

if TYPE_CHECKING:
    from sfu.cascade import Cascade
    from sfu.cluster.agent import ClusterAgent

log = logging.getLogger("sfu.node")

TICK = 0.1
LAYER_CHECK_INTERVAL = TICK
SOCKET_BUFFER = 4 * 1024 * 1024
REPORT_INTERVAL = 1.0
CONNECT_TIMEOUT = 20.0  # from answer to the first valid STUN check and DTLS
DRAIN_POLL = 0.2  # how often a draining node checks whether its sessions have gone
HTTP_SHUTDOWN_TIMEOUT = 5.0  # seconds stop() lets in-flight HTTP requests finish


def _unbindable(what: str, host: str, port: int, flag: str, exc: OSError) -> PortUnavailable:
    """The start-up error for a port the OS refused, naming the flag and env to change it."""
    env = "SFU_" + flag.upper().replace("-", "_")
    return PortUnavailable(f"{what} port {host}:{port}: {exc.strerror} (another node on it? "
                           f"choose another with --{flag} / {env})")


class Node:
    """A running media node."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = NodeMetrics()
        self.pacing = PaceScheduler()  # one timer for every viewer's pacer
        self.certificate = RTCCertificate.generateCertificate()
        fp = next(f for f in self.certificate.getFingerprints() if f.algorithm == "sha-256")
        self.fingerprint = (fp.algorithm, fp.value)
        self.rooms: dict[str, Room] = {}
        self.peers: dict[str, Peer] = {}
        self.peers_by_ufrag: dict[str, Peer] = {}
        self.peers_by_addr: dict[tuple[str, int], Peer] = {}
        self.advertised_ips: list[str] = []
        self.udp_port = 0
        self.http_port = 0
        self._udp: UdpMux | None = None
        self.sock: socket.socket | None = None
        self._runner: web.AppRunner | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._next_report = 0.0
        self._next_layer_check = 0.0
        self._ssrcs: set[int] = set()
        self.started_at = time.time()
        self.draining = False
        self.ready = False  # start() finished: /healthz says ok
        self.on_datachannel_message: Any = None  # hook for the commerce layer
        # The commerce service (signalling.service.CommerceService), set by start().
        self.commerce: Any = None
        # The recordings (sfu.recording.recorder.RecorderManager), set by start().
        self.recorder: Any = None
        # The cluster layer (sfu.cluster.agent.ClusterAgent), set by start() when
        # settings.cluster_redis_url is set; None for a single node.
        self.cluster: ClusterAgent | None = None
        # The origin-to-edge relay; None when the cascade is off (a node that is not a
        # room's origin then redirects its viewers to the origin).
        self.cascade: Cascade | None = None
        # room name -> callbacks told when the room's set of tracks changes (room protocol)
        self.room_listeners: dict[str, set[Callable[[Room], None]]] = {}
        self._peer_networks = [ipaddress.ip_network(n, strict=False) for n in settings.peer_networks]
        self._register_gauges()

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def http_url(self) -> str:
        host = self.settings.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{host}:{self.http_port}"

    async def start(self) -> None:
        from sfu.http.app import build_app

        loop = asyncio.get_running_loop()
        s = self.settings
        # We own the socket so the hot path can call sendto on it directly: the transport's
        # sendto costs several microseconds of bookkeeping per packet (measured).
        family = socket.AF_INET6 if ":" in s.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        # No SO_REUSEADDR: on Linux it lets a second UDP socket bind the same port, and two
        # nodes would then split each other's media without a word (UDP has no TIME_WAIT,
        # so a restart rebinds at once without it).
        try:
            sock.bind((s.host, s.udp_port))
        except OSError as exc:
            sock.close()
            raise _unbindable("UDP media", s.host, s.udp_port, "udp-port", exc) from exc
        sock.setblocking(False)
        transport, protocol = await loop.create_datagram_endpoint(lambda: UdpMux(self), sock=sock)
        self._udp = protocol
        self.sock = sock
        self.udp_port = sock.getsockname()[1]
        self.advertised_ips = advertised_ips(s)
        from signalling.service import CommerceService

        self.commerce = await CommerceService.open(self)
        from sfu.recording.recorder import RecorderManager

        self.recorder = RecorderManager(self)
        self.recorder.start()
        app = build_app(self)
        # A bounded shutdown: stop() must not wait a minute for a lingering request.
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.host, s.http_port)
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            raise _unbindable("HTTP", s.host, s.http_port, "http-port", exc) from exc
        self.http_port = self._runner.addresses[0][1]
        if s.cascade_port and self.cascade is None:  # (tests may put a stand-in there)
            from sfu.cascade import Cascade

            self.cascade = Cascade(self)
            try:
                await self.cascade.start()
            except OSError as exc:
                self.cascade = None
                await self.stop()
                raise _unbindable("cascade", s.host, s.cascade_port, "cascade-port", exc) from exc
        if s.cluster_redis_url:
            from sfu.cluster.agent import ClusterAgent

            self.cluster = await ClusterAgent.start(self)
        self._tick_task = asyncio.ensure_future(self._tick_loop())
        self.ready = True
        log.info(
            "node started",
            extra={"http": self.http_url, "udp_port": self.udp_port, "ips": self.advertised_ips,
                   "cascade_port": s.cascade_port},
        )

    @property
    def node_id(self) -> str:
        """This node's cluster id ('' for a single node)."""
        return self.cluster.node_id if self.cluster is not None else ""

    async def stop(self) -> None:
        if self.cluster is not None:
            await self.cluster.stop()  # first: no client is sent here any more
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
        if self.recorder is not None:
            await self.recorder.close()  # finish the files while the rooms still exist
        if self.cascade is not None:
            await self.cascade.stop()  # edges hear "bye" and take the tracks down at once
        for peer in list(self.peers.values()):
            self.close_peer(peer, "node_stopped")
        self.pacing.close()
        await self._close_room_sockets()
        await asyncio.sleep(0)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()
        self.sock = None
        if self.commerce is not None:
            await self.commerce.close()

    # --- drain -------------------------------------------------------------------------------

    def active_sessions(self) -> int:
        """Peers plus room-protocol sockets that joined a room: what a drain waits for."""
        return len(self.peers) + sum(len(ls) for ls in self.room_listeners.values())

    def drain(self, reason: str = "shutdown") -> None:
        """Refuse new sessions (WHIP/WHEP answer 503, /healthz 503) and ask clients to move.

        Room-protocol sockets get ``{"v":1,"type":"drain","reason":...}`` through the
        ``send`` of the session that registered the room listener; datachannel peers get
        the same envelope on every open channel. Idempotent.
        """
        if self.draining:
            return
        self.draining = True
        log.info("draining", extra={"reason": reason, "sessions": self.active_sessions()})
        if self.cluster is not None:
            asyncio.ensure_future(self._leave_cluster())
        for listeners in list(self.room_listeners.values()):
            for listener in list(listeners):
                send = getattr(getattr(listener, "__self__", None), "send", None)
                if callable(send):
                    asyncio.ensure_future(send("drain", reason=reason))
        message = json.dumps({"v": 1, "type": "drain", "reason": reason}, separators=(",", ":"))
        for peer in list(self.peers.values()):
            for channel in list(peer.channels):
                if channel.readyState == "open":
                    with contextlib.suppress(Exception):  # a channel closing under us
                        channel.send(message)

    def move_room(self, room: str, url: str, node_id: str) -> int:
        """Tell the room's clients on this node to reconnect to ``url`` (the node that now
        serves the room): room sockets get ``redirect``, datachannels ``drain`` with reason
        ``moved``. Returns how many clients were told."""
        from sfu.cluster.agent import socket_url

        told = 0
        ws_url = socket_url(url, {"hops": "1"})
        for listener in list(self.room_listeners.get(room, ())):
            session = getattr(listener, "__self__", None)
            move = getattr(session, "move", None)
            if callable(move):
                asyncio.ensure_future(move(ws_url, url, node_id))
                told += 1
        message = json.dumps({"v": 1, "type": "drain", "reason": "moved"}, separators=(",", ":"))
        for peer in list(self.peers.values()):
            if peer.room.name != room or peer.kind == "ws":
                continue
            for channel in list(peer.channels):
                if channel.readyState == "open":
                    with contextlib.suppress(Exception):
                        channel.send(message)
                        told += 1
        return told

    async def _leave_cluster(self) -> None:
        assert self.cluster is not None
        try:
            await self.cluster.leave()
        except Exception as exc:  # the registry record then expires on its own
            log.warning("cannot leave the cluster", extra={"error": repr(exc)})

    async def _close_room_sockets(self) -> None:
        """Close joined room-protocol WebSockets (1001 going away) so the HTTP server stops
        at once instead of waiting for their handlers."""
        sockets: dict[int, web.WebSocketResponse] = {}
        for listeners in list(self.room_listeners.values()):
            for listener in list(listeners):
                ws = getattr(getattr(listener, "__self__", None), "ws", None)
                if isinstance(ws, web.WebSocketResponse) and not ws.closed:
                    sockets[id(ws)] = ws
        if sockets:
            closes = [ws.close(code=WSCloseCode.GOING_AWAY, message=b"node stopping")
                      for ws in sockets.values()]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*closes, return_exceptions=True), 5.0)

    async def drain_until_idle(
        self, limit: float, force: asyncio.Event | None = None
    ) -> bool:
        """Drain, then wait until every session has gone (True), ``limit`` seconds have
        passed or ``force`` is set (False)."""
        self.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while self.active_sessions():
            remaining = deadline - loop.time()
            if remaining <= 0 or (force is not None and force.is_set()):
                log.warning("drain ended with sessions left",
                            extra={"sessions": self.active_sessions(),
                                   "forced": force is not None and force.is_set()})
                return False
            wait = min(DRAIN_POLL, remaining)
            if force is None:
                await asyncio.sleep(wait)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(force.wait(), wait)
        log.info("drained: no sessions left")
        return True

    # --- sessions ----------------------------------------------------------------------------

    def room(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name)
        return room

    def new_ssrc(self) -> int:
        while True:
            ssrc = secrets.randbits(32)
            if ssrc and ssrc not in self._ssrcs:
                self._ssrcs.add(ssrc)
                return ssrc

    def open_session(
        self,
        *,
        kind: str,
        room_name: str,
        participant: str,
        offer_sdp: str,
        publish: bool,
        subscribe: bool,
        subscriptions: dict[str, str] | None = None,
        grants: frozenset[str] = frozenset(),
        layer_rank: int | None = None,
    ) -> Answered:
        """Answer an initial offer and register the new peer. Raises SdpError."""
        offer = parse_offer(offer_sdp)
        now = self.now()
        room = self.room(room_name)
        try:
            peer = create_peer(
                self, kind=kind, room=room, participant=participant, offer=offer, now=now
            )
            answered = answer_offer(
                self, peer, offer, allow_publish=publish, allow_subscribe=subscribe,
                subscriptions=subscriptions, now=now,
            )
        except SdpError:
            if room.empty:
                self.rooms.pop(room.name, None)
            raise
        peer.grants = frozenset(grants)
        self.peers[peer.id] = peer
        self.peers_by_ufrag[peer.local_ufrag] = peer
        self.metrics.sessions_total[kind] += 1
        if layer_rank is not None:
            for slot in answered.subscribed:
                slot.downtrack.preferred_rank = layer_rank
        self._apply(peer, answered, now)
        peer.on_channel = self._on_channel
        peer.start()
        log.info(
            "session opened",
            extra={"peer": peer.id, "kind": kind, "room": room_name, "participant": participant,
                   "tracks": len(answered.published), "slots": len(answered.subscribed)},
        )
        return answered

    def renegotiate(
        self,
        peer: Peer,
        offer_sdp: str,
        *,
        publish: bool,
        subscribe: bool,
        subscriptions: dict[str, str] | None = None,
    ) -> Answered:
        """Answer a new offer on an existing peer (tracks added or stopped)."""
        offer = parse_offer(offer_sdp)
        now = self.now()
        answered = answer_offer(
            self, peer, offer, allow_publish=publish, allow_subscribe=subscribe,
            subscriptions=subscriptions, now=now,
        )
        self._apply(peer, answered, now)
        return answered

    def _apply(self, peer: Peer, answered: Answered, now: float) -> None:
        room = peer.room
        version = room.version
        for receiver in answered.unpublished:
            for slot in room.remove_receiver(receiver.info.track_id, now):
                self._slot_bound(slot, now)
        for slot in answered.unsubscribed:
            room.remove_slot(slot)
            self._ssrcs.discard(slot.downtrack.ssrc)
        for receiver in answered.published:
            for slot in room.add_receiver(receiver, now):
                self._slot_bound(slot, now)
        for slot in answered.subscribed:
            if peer.state == "connected":
                slot.downtrack.resume()
            if room.add_slot(slot, now):
                self._slot_bound(slot, now)
        role = "publisher" if peer.receivers else "subscriber"
        if room.participants.get(peer.participant) != "publisher":
            room.participants[peer.participant] = role
        if room.version != version:
            self._tracks_changed(room)

    def _tracks_changed(self, room: Room) -> None:
        if self.cascade is not None:
            self.cascade.tracks_changed(room)
        for listener in list(self.room_listeners.get(room.name, ())):
            listener(room)

    def close_peer(self, peer: Peer, reason: str) -> None:
        if peer.state == "closed" and peer.id not in self.peers:
            return
        self.peers.pop(peer.id, None)
        self.peers_by_ufrag.pop(peer.local_ufrag, None)
        if peer.addr is not None and self.peers_by_addr.get(peer.addr) is peer:
            del self.peers_by_addr[peer.addr]
        room = peer.room
        now = self.now()
        version = room.version
        for receiver in peer.receivers:
            for slot in room.remove_receiver(receiver.info.track_id, now):
                self._slot_bound(slot, now)
        for slot in peer.slots:
            room.remove_slot(slot)
            self._ssrcs.discard(slot.downtrack.ssrc)
        if not any(p.room is room and p.participant == peer.participant for p in self.peers.values()):
            room.participants.pop(peer.participant, None)
        if room.version != version:
            self._tracks_changed(room)
        if room.empty and not self.room_listeners.get(room.name):
            self.rooms.pop(room.name, None)
        self.metrics.sessions_closed[reason] += 1
        if self.commerce is not None:
            self.commerce.peer_closed(peer)
        peer.close_reason = reason
        peer.state = "closed"
        asyncio.ensure_future(peer.close())
        log.info("session closed", extra={"peer": peer.id, "reason": reason})

    def _slot_bound(self, slot: Slot, now: float) -> None:
        # A new viewer of a video track needs a keyframe to start decoding, but only once it
        # can receive: a request before its DTLS is up would waste the throttle window.
        dt = slot.downtrack
        if dt.receiver is not None and not dt.paused:
            layer = choose_layer(dt, dt.receiver, now)
            dt.request_layer(layer)
            self.request_keyframe(layer, now)

    def peer_connected(self, peer: Peer) -> None:
        now = self.now()
        for slot in peer.slots:
            slot.downtrack.resume()
            self._slot_bound(slot, now)

    def reselect(self, dt: DownTrack, now: float) -> None:
        """Move a viewer to the layer the policy picks now (preference, size, bandwidth)."""
        if dt.receiver is None or dt.paused or dt.allocator_paused:
            return
        layer = choose_layer(dt, dt.receiver, now)
        if dt.request_layer(layer):
            self.metrics.layer_switch_requests += 1
            self.request_keyframe(layer, now)

    def set_layer_preference(
        self, peer: Peer, mid: str | None, *, rank: int | None = None,
        max_size: tuple[int, int] | None = None,
    ) -> int:
        """Apply a viewer's layer preference or render size to its video slots (or one mid)."""
        now = self.now()
        changed = 0
        for slot in peer.slots:
            dt = slot.downtrack
            if dt.kind != "video" or (mid is not None and dt.mid != mid):
                continue
            if rank is not None:
                dt.preferred_rank = rank
            if max_size is not None:
                dt.max_size = max_size
            self.reselect(dt, now)
            changed += 1
        return changed

    def peer_address(
        self, peer: Peer, old: tuple[str, int] | None, new: tuple[str, int]
    ) -> None:
        if old is not None and self.peers_by_addr.get(old) is peer:
            del self.peers_by_addr[old]
        other = self.peers_by_addr.get(new)
        if other is not None and other is not peer:
            # The 5-tuple moved to a new session (an ICE restart or a reused port).
            other.addr = None
        self.peers_by_addr[new] = peer

    def peer_address_allowed(self, ip: str) -> bool:
        if not self._peer_networks:
            return True
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in net for net in self._peer_networks)

    # --- media helpers -----------------------------------------------------------------------

    def now(self) -> float:
        return asyncio.get_event_loop().time()

    def send_datagram(self, data: bytes, addr: tuple[str, int], kind: str) -> None:
        sock = self.sock
        if sock is None:
            return
        try:
            sock.sendto(data, addr)
        except BlockingIOError:
            # Socket buffer full: a counted drop, as a router would do; never block the loop.
            self.metrics.drop("send_buffer_full")
            return
        except OSError:
            self.metrics.drop("send_error")
            return
        self.metrics.packets_out[kind] += 1
        self.metrics.bytes_out[kind] += len(data)

    def request_keyframe(self, receiver: Receiver, now: float) -> None:
        self.metrics.keyframe_requests["requested"] += 1
        if receiver.is_video and (receiver.upstream is None or receiver.ssrc is None):
            # Nothing to address a PLI to yet: an edge learns a relayed layer's SSRC from
            # its first packet, a node a publisher's from its first packet. Asking now
            # would start the throttle window for a request that never left; `tick` asks
            # once the SSRC is known, unless a key frame came first.
            if receiver.keyframe_wanted_at is None:
                receiver.keyframe_wanted_at = now
            self.metrics.keyframe_requests["unaddressed"] += 1
            return
        if receiver.request_keyframe(now):
            self._send_pli(receiver)
        else:
            self.metrics.keyframe_requests["suppressed"] += 1

    def _send_pli(self, receiver: Receiver) -> None:
        upstream: Peer | None = receiver.upstream
        if upstream is None or receiver.ssrc is None:
            return
        self.metrics.keyframe_requests["sent"] += 1
        upstream.send_rtcp([rtcp.Pli(sender_ssrc=upstream.rtcp_ssrc, media_ssrc=receiver.ssrc)])

    def forward_sender_report(
        self, receiver: Receiver, sr: rtcp.SenderReport, now: float
    ) -> None:
        if self.cascade is not None:
            self.cascade.on_sender_report(receiver, sr)
        for dt in receiver.downtracks:
            out = dt.sender_report(sr)
            if out is not None and dt.sink is not None:
                dt.stats.on_sender_report_sent(out.ntp_timestamp, now)
                dt.sink.send_rtcp([out])

    def _on_channel(self, peer: Peer, channel: RTCDataChannel) -> None:
        from sfu.net.datachannel import attach

        attach(self, peer, channel)

    # --- timers ------------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                self.tick(self.now())
            except Exception:
                log.exception("tick failed")

    def tick(self, now: float) -> None:
        timeout = self.settings.peer_timeout
        for peer in list(self.peers.values()):
            if peer.state == "connected" and now - peer.last_seen > timeout:
                self.close_peer(peer, "timeout")
            elif peer.state == "new" and now - peer.created_at > CONNECT_TIMEOUT:
                self.close_peer(peer, "connect_timeout")
        for room in self.rooms.values():
            for track in room.receivers.values():
                for receiver in track.layers:
                    wanted = receiver.keyframe_wanted_at
                    if (wanted is not None and receiver.ssrc is not None
                            and receiver.upstream is not None):
                        receiver.keyframe_wanted_at = None
                        last = receiver.last_keyframe_at
                        if last is None or last < wanted:
                            self.request_keyframe(receiver, now)
                    t = receiver.keyframes.get_timer()
                    if t is not None and t <= now and receiver.keyframes.handle_timer(now):
                        self._send_pli(receiver)
        for peer in list(self.peers.values()):
            if peer.bwe is not None and peer.state == "connected":
                peer.bwe.tick(now)  # estimator timer, allocation, probes
        if now >= self._next_layer_check:
            self._next_layer_check = now + LAYER_CHECK_INTERVAL
            self._check_layers(now)
        if now >= self._next_report:
            self._next_report = now + REPORT_INTERVAL
            self._send_receiver_reports(now)

    def _check_layers(self, now: float) -> None:
        """Follow layers that stop or return, and pause layers nobody needs (dynacast)."""
        for room in self.rooms.values():
            for track in room.receivers.values():
                viewers = [dt for la in track.layers for dt in la.downtracks]
                viewers += [dt for la in track.layers for dt in la.pending if dt not in viewers]
                for dt in viewers:
                    if track.simulcast:
                        self.reselect(dt, now)
                    if not (dt.paused or dt.allocator_paused) and (
                        dt.pending is not None or dt.awaiting_keyframe
                    ):
                        # Still waiting for a key frame: ask again. A publisher may ignore a
                        # request (libwebrtc throttles its own); the per-layer throttle here
                        # keeps this to one request per 500 ms.
                        self.request_keyframe(dt.pending or dt.current, now)
                if not track.simulcast:
                    continue
                needed = needed_layers(track, viewers) | {track.ranked()[0].layer}
                if self.cascade is not None and self.cascade.relayed(track):
                    needed = {la.layer for la in track.layers}
                changed = False
                for layer in track.layers:
                    paused = layer.layer not in needed
                    if paused != layer.paused:
                        layer.paused = paused
                        changed = True
                publisher: Peer | None = track.upstream
                if changed and publisher is not None and publisher.on_layers is not None:
                    publisher.on_layers(track)

    def _send_receiver_reports(self, now: float) -> None:
        for peer in self.peers.values():
            if peer.state != "connected" or not peer.receivers:
                continue
            blocks = [b for r in peer.receivers if (b := r.report_block(now)) is not None]
            packets: list[rtcp.RtcpPacket] = []
            if blocks:
                packets.append(rtcp.ReceiverReport(ssrc=peer.rtcp_ssrc, reports=blocks[:31]))
            cap = self.settings.publisher_max_bitrate
            video = [r.ssrc for r in peer.receivers if r.is_video and r.ssrc is not None]
            if cap and video:
                # The operator's ceiling on what a publisher sends: libwebrtc takes a REMB
                # as an upper bound on its send-side estimate (transport-cc or not), and a
                # simulcast encoder then drops its upper layers first.
                packets.append(rtcp.Remb(sender_ssrc=peer.rtcp_ssrc, bitrate=cap,
                                         ssrcs=video[:255]))
                self.metrics.bwe["publisher_remb"] += 1
            if packets:
                peer.send_rtcp(packets)

    # --- metrics -----------------------------------------------------------------------------

    def _register_gauges(self) -> None:
        m = self.metrics
        m.add_gauge("rooms", "Rooms with at least one participant", (), lambda: {(): len(self.rooms)})
        m.add_gauge(
            "participants", "Participants by role", ("role",), self._participants_by_role
        )
        m.add_gauge("sessions_active", "Peer connections by kind and state", ("kind", "state"),
                    self._sessions_by_kind)
        m.add_gauge("tracks", "Published tracks by kind", ("kind",), self._tracks_by_kind)
        m.add_gauge("simulcast_layers", "Simulcast layers by state (paused = dynacast)",
                    ("state",), self._layers_by_state)
        m.add_gauge("bwe_bitrate", "Viewers' downlink bits/s summed over viewers with an "
                    "estimate: available (estimate), allocated, desired", ("kind",),
                    lambda: downlink.bitrate_gauge(self.peers.values()))
        m.add_gauge("bwe_viewers", "Viewers with a downlink estimator, by state "
                    "(overusing = congested)", ("state",),
                    lambda: downlink.state_gauge(self.peers.values()))
        m.add_gauge("red_distance", "Audio viewers with RED, by redundant copies per packet",
                    ("distance",), lambda: recovery_gauges.red_distance_gauge(
                        self.peers.values()))
        m.add_gauge("fec_viewers", "Video viewers with red+ulpfec, by state (protecting = "
                    "sending FEC now)", ("state",),
                    lambda: recovery_gauges.fec_gauge(self.peers.values()))
        m.add_gauge("viewer_loss", "Viewers' loss fraction, mean over viewers: link (receiver "
                    "reports, before repair) and unrepaired (NACKs the node could not answer "
                    "/ packets sent)", ("kind", "stage"),
                    lambda: recovery_gauges.loss_gauge(self.peers.values()))

    def _participants_by_role(self) -> dict[tuple[str, ...], float]:
        out: dict[tuple[str, ...], float] = {("publisher",): 0, ("subscriber",): 0}
        for room in self.rooms.values():
            for role in room.participants.values():
                out[(role,)] = out.get((role,), 0) + 1
        return out

    def _sessions_by_kind(self) -> dict[tuple[str, ...], float]:
        out: dict[tuple[str, ...], float] = {}
        for peer in self.peers.values():
            key = (peer.kind, peer.state)
            out[key] = out.get(key, 0) + 1
        return out

    def _layers_by_state(self) -> dict[tuple[str, ...], float]:
        out: dict[tuple[str, ...], float] = {("active",): 0, ("paused",): 0}
        for room in self.rooms.values():
            for track in room.receivers.values():
                if track.simulcast:
                    for la in track.layers:
                        out[("paused",) if la.paused else ("active",)] += 1
        return out

    def _tracks_by_kind(self) -> dict[tuple[str, ...], float]:
        out: dict[tuple[str, ...], float] = {("audio",): 0, ("video",): 0}
        for room in self.rooms.values():
            for r in room.receivers.values():
                out[(r.info.kind,)] += 1
        return out


async def _serve(settings: Settings) -> None:
    node = Node(settings)
    await node.start()
    signalled = asyncio.Event()  # first SIGTERM/SIGINT: drain
    force = asyncio.Event()  # a second one: exit at once
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if signalled.is_set():
            log.warning("second signal: exiting now", extra={"signal": sig.name})
            force.set()
            return
        log.info("signal: draining (send it again to exit at once)",
                 extra={"signal": sig.name, "drain_timeout": settings.drain_timeout})
        signalled.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, on_signal, sig)
    await signalled.wait()
    await node.drain_until_idle(settings.drain_timeout, force)
    await node.stop()


def run_node(settings: Settings) -> None:
    """Run a node until SIGINT/SIGTERM (then drain, see Node.drain_until_idle), on uvloop."""
    try:
        import uvloop

        uvloop.run(_serve(settings))
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(_serve(settings))
