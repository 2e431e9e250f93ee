"""The node in the middle: the real `sfu.core` Room, Receivers and DownTracks on virtual time.

This mirrors what `sfu.node.Node` and `sfu.net.peer.Peer` do around the cores, minus DTLS,
SRTP and sockets: parse each uplink packet with `sfu.wire.rtp.parse_header`, account it in its
Receiver, ask every DownTrack of that Receiver for the bytes to send, and put them on the
subscriber's downlink. Subscriber PLIs go through `Receiver.request_keyframe` (the node's
throttle) and the 100 ms tick releases deferred requests, exactly as `Node.tick` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.sim.hooks import Estimator, NoEstimator, NoRecovery, Recovery
from sfu.core.downtrack import DownTrack
from sfu.core.receiver import Receiver, TrackInfo
from sfu.core.room import Room, Slot
from sfu.sdp import Codec
from sfu.wire import rtcp
from sfu.wire.rtp import parse_header

TICK = 0.1  # sfu.node.TICK
NODE_RTCP_SSRC = 0x0DE0_0001

Sink = Callable[[bytes, float], None]


@dataclass(slots=True)
class NodeCounters:
    packets_in: int = 0
    packets_forwarded: int = 0
    bytes_forwarded: int = 0
    dropped_waiting_keyframe: int = 0
    keyframe_requests: int = 0  # asks (joins and subscriber PLIs)
    plis_upstream: int = 0  # PLIs that left for the publisher
    plis_suppressed: int = 0


class SimNode:
    """One room on one simulated node."""

    def __init__(self, upstream_rtcp: Sink, recovery: Recovery | None = None,
                 estimator: Estimator | None = None) -> None:
        self.room = Room("sim")
        self._upstream_rtcp = upstream_rtcp
        self._by_ssrc: dict[int, Receiver] = {}
        self._downtracks: dict[int, tuple[str, DownTrack]] = {}
        self._sinks: dict[str, Sink] = {}
        # Hooks for the loss-recovery and bandwidth-estimation work (null for now).
        self.recovery: Recovery = recovery or NoRecovery()
        self.recovery.bind(upstream_rtcp, self._keyframe_for_ssrc)
        self.estimator: Estimator = estimator or NoEstimator()
        self.counters = NodeCounters()

    # --- setup (what answer_offer/_apply do) --------------------------------------------------

    def publish(self, info: TrackInfo, ssrc: int, now: float) -> Receiver:
        receiver = Receiver(info)
        receiver.ssrc = ssrc
        self._by_ssrc[ssrc] = receiver
        for slot in self.room.add_receiver(receiver, now):
            self._slot_bound(slot, now)
        return receiver

    def publish_simulcast(self, info: TrackInfo, ssrcs: list[int], rids: list[str],
                          now: float) -> Receiver:
        """A simulcast track: one Receiver per layer (lowest first), the first the primary."""
        primary = Receiver(info, layer=0, rid=rids[0])
        primary.ssrc = ssrcs[0]
        self._by_ssrc[ssrcs[0]] = primary
        for i, (ssrc, rid) in enumerate(zip(ssrcs[1:], rids[1:], strict=True), start=1):
            layer = Receiver(info, layer=i, rid=rid)
            layer.ssrc = ssrc
            primary.add_layer(layer)
            self._by_ssrc[ssrc] = layer
        for slot in self.room.add_receiver(primary, now):
            self._slot_bound(slot, now)
        return primary

    def subscribe(self, subscriber: str, kind: str, ssrc: int, codec: Codec, sink: Sink,
                  now: float, seq_start: int = 1, ts_start: int = 0) -> DownTrack:
        dt = DownTrack(ssrc=ssrc, kind=kind, mid="0" if kind == "audio" else "1",
                       clock_rate=codec.clock_rate, seq_start=seq_start, ts_start=ts_start)
        dt.sink = sink
        self._sinks[subscriber] = sink
        self._downtracks[ssrc] = (subscriber, dt)
        slot = Slot(downtrack=dt, subscriber=subscriber, codecs=[codec], extmaps=[])
        # The simulated subscriber's DTLS is up from the start (Node._apply: peer connected).
        dt.resume()
        if self.room.add_slot(slot, now):
            self._slot_bound(slot, now)
        return dt

    def _slot_bound(self, slot: Slot, now: float) -> None:
        receiver = slot.downtrack.receiver
        if receiver is not None:
            self.request_keyframe(receiver, now)

    # --- media path (Peer.on_srtp without SRTP) -----------------------------------------------

    def on_rtp(self, data: bytes, now: float) -> None:
        hdr = parse_header(data)
        receiver = self._by_ssrc.get(hdr.ssrc)
        c = self.counters
        c.packets_in += 1
        if receiver is None:
            return
        key = receiver.on_rtp(data, hdr, now)
        if key and receiver.pending:
            receiver.promote_pending(now)  # simulcast: viewers waiting for this layer's key
        # Hook: the node's own NACK generator on the uplink.
        self.recovery.on_ingress(hdr, key, now)
        recovery = self.recovery
        for dt in receiver.downtracks:
            out = dt.forward(data, hdr, key, now)
            if out is None:
                if dt.awaiting_keyframe:
                    c.dropped_waiting_keyframe += 1
                continue
            packet = bytes(out)
            c.packets_forwarded += 1
            c.bytes_forwarded += len(packet)
            sink = dt.sink
            subscriber = self._downtracks[dt.ssrc][0]
            # Hooks: RED wraps audio before sending; History/FEC see what was sent.
            packet = recovery.prepare(subscriber, packet, now)
            sink(packet, now)
            for extra in recovery.on_forwarded(subscriber, packet, now, (hdr.ssrc, hdr.seq)):
                sink(extra, now)

    # --- RTCP from subscribers (Peer._on_rtcp) -------------------------------------------------

    def on_subscriber_rtcp(self, data: bytes, now: float) -> None:
        for p in rtcp.parse_compound(data):
            if isinstance(p, rtcp.Pli):
                entry = self._downtracks.get(p.media_ssrc)
                dt = None if entry is None else entry[1]
                if dt is not None and dt.current is not None:
                    # The layer the viewer waits for or gets, as Peer._on_rtcp does (not the
                    # track's primary: on simulcast that is the lowest layer).
                    self.request_keyframe(dt.pending or dt.current, now)
            else:
                # Hook: NACK -> responder (RTX), TWCC/REMB -> estimator.
                subscriber = self._subscriber_of(p)
                if subscriber is None:
                    continue
                self.estimator.on_feedback(subscriber, p, now)
                for extra in self.recovery.on_feedback(subscriber, p, now):
                    self._sinks[subscriber](extra, now)

    def _subscriber_of(self, p: rtcp.RtcpPacket) -> str | None:
        ssrc = getattr(p, "media_ssrc", None)
        if isinstance(p, rtcp.ReceiverReport) and p.reports:
            ssrc = p.reports[0].ssrc  # an RR names the reported streams in its blocks
        if isinstance(p, rtcp.Remb) and p.ssrcs:
            ssrc = p.ssrcs[0]  # a REMB names the streams it covers
        entry = self._downtracks.get(ssrc) if isinstance(ssrc, int) else None
        return entry[0] if entry is not None else None

    # --- keyframe requests (Node.request_keyframe / Node.tick) ---------------------------------

    def request_keyframe(self, receiver: Receiver, now: float) -> None:
        self.counters.keyframe_requests += 1
        if receiver.request_keyframe(now):
            self._send_pli(receiver, now)
        elif receiver.is_video:
            self.counters.plis_suppressed += 1

    def _send_pli(self, receiver: Receiver, now: float) -> None:
        if receiver.ssrc is None:
            return
        self.counters.plis_upstream += 1
        pli = rtcp.Pli(sender_ssrc=NODE_RTCP_SSRC, media_ssrc=receiver.ssrc)
        self._upstream_rtcp(rtcp.serialize_compound([pli]), now)

    def _keyframe_for_ssrc(self, ssrc: int, now: float) -> None:
        receiver = self._by_ssrc.get(ssrc)
        if receiver is not None:
            self.request_keyframe(receiver, now)

    def tick(self, now: float) -> None:
        self.recovery.poll(now)
        for receiver in self.room.receivers.values():
            t = receiver.keyframes.get_timer()
            if t is not None and t <= now and receiver.keyframes.handle_timer(now):
                self._send_pli(receiver, now)
