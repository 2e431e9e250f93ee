"""RemotePublisher: the origin's tracks, published on an edge node as local Receivers.

An edge's viewers must not notice that the host is on another node: the remote publisher
creates, in the local Room, one Receiver per relayed track (one per simulcast layer), named
and described as on the origin, and feeds them the relayed packets through the same steps a
local publisher's packets take (Receiver.on_rtp, layer switches, sfu.net.peer.fan_out to
the down-tracks), so each viewer gets its own History, NACK answers and bandwidth
estimation from the edge.

It stands where a publishing Peer stands (Receiver.upstream): the node's keyframe path
(Node._send_pli, throttled per layer by the edge Receiver's KeyframeRequester) and the
viewers' NACKs for packets the edge never had (Peer._on_viewer_nack, deduplicated by the
layer's UpstreamNackAggregator) call `send_rtcp`, which turns them into control messages to
the origin. Gaps in the relayed stream itself are found by each layer's NackGenerator and
asked for once per edge (again once per RTT while the answer is missing, like any NACK).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sfu.core.receiver import Receiver, TrackInfo
from sfu.net.peer import fan_out
from sfu.sdp import Codec, Extmap
from sfu.wire import rtcp
from sfu.wire.cascade import REPAIR, TrackSpec
from sfu.wire.rtp import RtpError, parse_header

if TYPE_CHECKING:
    from sfu.node import Node

log = logging.getLogger("sfu.cascade")

NACK_CHUNK = 200
# The shortest wait before a relayed packet is asked for again. The measured RTT between
# nodes of one site is well under a millisecond, but the answer also waits for the origin's
# event loop; asking again sooner than this mostly duplicates an answer still on its way.
MIN_REPAIR_RTT = 0.03


class RemotePublisher:
    """The tracks of one room relayed from its origin, as this edge publishes them."""

    local = False
    on_layers: Callable[[Receiver], None] | None = None  # dynacast stays on the origin

    def __init__(self, node: Node, room: str, send: Callable[[dict[str, Any]], object]) -> None:
        self.node = node
        self.room_name = room
        self.send = send  # a control message to the origin
        self.rtcp_ssrc = secrets.randbits(32) | 1
        self.state = "connected"
        self.tracks: dict[str, tuple[TrackSpec, Receiver]] = {}
        self.channels: dict[int, Receiver] = {}
        self._channel_of: dict[int, int] = {}  # id(Receiver) -> channel
        # When handle_timer must next run (NACKs due); `arm` is the shell's timer.
        self.timer_at: float | None = None
        self.arm: Callable[[float], None] | None = None
        self.rtt = 0.1

    # --- tracks ------------------------------------------------------------------------------

    def on_tracks(self, specs: list[TrackSpec], now: float) -> None:
        """The origin's current track list: publish what is new, unpublish what went."""
        wanted = {s.track_id: s for s in specs}
        removed = [tid for tid, (spec, _) in self.tracks.items()
                   if tid not in wanted or wanted[tid] != spec]
        added = [s for s in specs if s.track_id not in self.tracks or s.track_id in removed]
        if not removed and not added:
            return
        room = self.node.room(self.room_name)
        version = room.version
        for tid in removed:
            self._unpublish(tid, now)
        for spec in added:
            if spec.track_id in room.receivers:
                # The track is already published here: this node is (through some path) the
                # origin itself. Relaying it back would replace the real publisher's track.
                self.node.metrics.cascade["track_conflict"] += 1
                log.warning("cascade: relayed track already published here, ignored",
                            extra={"room": self.room_name, "track": spec.track_id})
                continue
            primary = self._build(spec)
            self.tracks[spec.track_id] = (spec, primary)
            for slot in room.add_receiver(primary, now):
                self.node._slot_bound(slot, now)
            room.participants[spec.participant] = "publisher"
        if room.version != version:
            self.node._tracks_changed(room)
        self._forget_room_if_empty()

    def close(self, now: float) -> None:
        """The origin is gone (or the room unsubscribed): viewers see the tracks leave."""
        self.state = "closed"
        self.timer_at = None
        if not self.tracks:
            return
        room = self.node.room(self.room_name)
        version = room.version
        for tid in list(self.tracks):
            self._unpublish(tid, now)
        if room.version != version:
            self.node._tracks_changed(room)
        self._forget_room_if_empty()

    def _unpublish(self, track_id: str, now: float) -> None:
        spec, primary = self.tracks.pop(track_id)
        room = self.node.room(self.room_name)
        if room.receivers.get(track_id) is primary:
            for slot in room.remove_receiver(track_id, now):
                self.node._slot_bound(slot, now)
        for layer in primary.layers:
            ch = self._channel_of.pop(id(layer), None)
            if ch is not None and self.channels.get(ch) is layer:
                del self.channels[ch]
        if not any(s.participant == spec.participant for s, _ in self.tracks.values()):
            room.participants.pop(spec.participant, None)

    def _forget_room_if_empty(self) -> None:
        room = self.node.rooms.get(self.room_name)
        if room is not None and room.empty and not self.node.room_listeners.get(room.name):
            self.node.rooms.pop(room.name, None)

    def _build(self, spec: TrackSpec) -> Receiver:
        c = spec.codec
        codec = Codec(payload_type=c["payload_type"], name=c["name"],
                      clock_rate=c["clock_rate"], channels=c["channels"],
                      fmtp=dict(c["fmtp"]), rtcp_fb=list(c["rtcp_fb"]))
        info = TrackInfo(track_id=spec.track_id, kind=spec.kind, participant=spec.participant,
                         stream_id=spec.stream_id, codec=codec,
                         extmaps=[Extmap(i, uri) for i, uri in spec.extmaps],
                         source=spec.source)
        layers = sorted(spec.layers, key=lambda la: la.layer)
        primary = Receiver(info, layer=layers[0].layer, rid=layers[0].rid)
        primary.upstream = self
        # Every relayed stream is repairable from the origin's relay history.
        primary.enable_nack(None)
        for la in layers[1:]:
            primary.add_layer(Receiver(info, layer=la.layer, rid=la.rid))
        for la, receiver in zip(layers, primary.layers, strict=True):
            receiver.upstream = self
            if receiver.nack is not None:
                receiver.nack.set_rtt(self.rtt)
            self.channels[la.channel] = receiver
            self._channel_of[id(receiver)] = la.channel
        return primary

    # --- media -------------------------------------------------------------------------------

    def on_media(self, kind: int, channel: int, plain: bytes, now: float) -> None:
        """One relayed RTP packet (the hot path on an edge)."""
        m = self.node.metrics
        receiver = self.channels.get(channel)
        if receiver is None:
            m.drop("cascade_unknown_channel")  # a track removed while packets were in flight
            return
        try:
            hdr = parse_header(plain)
        except RtpError:
            m.drop("cascade_datagram_malformed")
            return
        if hdr.payload_type != receiver.payload_type:
            m.drop("unknown_payload_type")
            return
        if receiver.ssrc != hdr.ssrc:
            receiver.ssrc = hdr.ssrc  # learnt from the first packet (or a restarted stream)
        gen = receiver.nack
        late = gen is not None and gen.is_missing(hdr.seq)
        if kind == REPAIR and not late:
            m.cascade["repair_unneeded"] += 1  # a copy this edge already had
            return
        key = receiver.accept(plain, hdr, now, late=late)
        if late:
            m.cascade["repaired"] += 1
        if gen is not None:
            at = gen.get_timer()
            if at is not None and (self.timer_at is None or at < self.timer_at):
                self._arm(at)
        relay = receiver.relay
        if relay is not None:  # this edge is itself an origin for further edges
            relay(plain, hdr, late, now)
        fan_out(self.node, receiver, plain, hdr, key, now)

    def on_sender_report(self, message: dict[str, Any], now: float) -> None:
        receiver = self.channels.get(message["ch"])
        if receiver is None:
            return
        ssrc = receiver.ssrc if receiver.ssrc is not None else 0
        sr = rtcp.SenderReport(ssrc=ssrc, ntp_timestamp=message["ntp"],
                               rtp_timestamp=message["rtp"] & 0xFFFFFFFF,
                               packet_count=message["packets"] & 0xFFFFFFFF,
                               octet_count=message["octets"] & 0xFFFFFFFF, reports=[])
        receiver.on_sender_report(sr.ntp_timestamp, sr.rtp_timestamp, now)
        self.node.forward_sender_report(receiver, sr, now)

    def set_rtt(self, rtt: float) -> None:
        """The link's RTT (from ping/pong): paces repeated NACKs for the same packet."""
        rtt = max(MIN_REPAIR_RTT, rtt)
        self.rtt = rtt
        for receiver in self.channels.values():
            if receiver.nack is not None:
                receiver.nack.set_rtt(rtt)
            if receiver.upstream_nacks is not None:
                receiver.upstream_nacks.set_rtt(rtt)

    # --- upstream requests ---------------------------------------------------------------

    def send_rtcp(self, packets: list[rtcp.RtcpPacket]) -> None:
        """What the node would send a publisher, sent to the origin instead."""
        if self.state == "closed":
            return
        m = self.node.metrics
        for p in packets:
            if isinstance(p, rtcp.Pli):
                ch = self._channel_by_ssrc(p.media_ssrc)
                if ch is not None:
                    self.send({"t": "keyframe", "ch": ch})
                    m.cascade["keyframe_sent"] += 1
            elif isinstance(p, rtcp.Nack):
                ch = self._channel_by_ssrc(p.media_ssrc)
                seqs = list(p.lost)
                if ch is not None and seqs:
                    self._send_nack(ch, seqs)

    def _send_nack(self, ch: int, seqs: list[int]) -> None:
        m = self.node.metrics
        for i in range(0, len(seqs), NACK_CHUNK):
            self.send({"t": "nack", "ch": ch, "seqs": seqs[i:i + NACK_CHUNK]})
            m.cascade["nack_sent"] += 1
        m.cascade["nacked_packets"] += len(seqs)

    def _channel_by_ssrc(self, ssrc: int) -> int | None:
        for ch, receiver in self.channels.items():
            if receiver.ssrc == ssrc:
                return ch
        return None

    def _arm(self, at: float) -> None:
        self.timer_at = at
        if self.arm is not None:
            self.arm(at)

    def handle_timer(self, now: float) -> None:
        """Ask the origin for the relayed packets still missing (see NackGenerator); a
        keyframe, through the layer's throttle, for those recovery gave up on."""
        self.timer_at = None
        if self.state == "closed":
            return
        earliest: float | None = None
        for ch, receiver in list(self.channels.items()):
            gen = receiver.nack
            if gen is None:
                continue
            seqs = gen.handle_timer(now)
            if seqs:
                self._send_nack(ch, seqs)
            if gen.take_keyframe_request():
                self.node.metrics.recovery["gave_up"] += 1
                self.node.request_keyframe(receiver, now)
            at = gen.get_timer()
            if at is not None and (earliest is None or at < earliest):
                earliest = at
        if earliest is not None:
            self._arm(max(earliest, now + 0.001))
