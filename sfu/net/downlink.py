"""The node side of one viewer's downlink estimate: feedback in, layers and probes out.

`ViewerDownlink` is what a viewer `Peer` holds (`peer.bwe`) when the viewer negotiated
transport-cc, or abs-send-time with goog-remb (a REMB viewer, such as aiortc: its video is
stamped with abs-send-time, when it really leaves when paced; its REMB is the estimate; and
while the allocator wants more, the pacer pads on the RTX stream so its receive-side
estimate can grow; see `sfu.core.bwe.remb`). The sans-I/O parts live in `sfu.core.downlink.Downlink`; this shell:

* feeds it the viewer's RTCP (transport-cc, REMB, report blocks) and the node's tick;
* applies each allocation: video whose rank became -1 is paused with its own flag
  (`DownTrack.allocator_paused`), resumed video restarts on a key frame, and any other change
  goes through `Node.reselect` (layer switch on the next key frame of the new layer);
* numbers what leaves outside `DownTrack.forward` (RTX: `stamp`);
* paces the viewer's video once its estimate is trusted (`pace`, from the forward loop): the
  packet, already rewritten and numbered, waits in a `Pacer` (factor 1.0 x the estimate, see
  docs/benchmarks.md) and goes out in 5 ms bursts, so a key frame of a newly chosen layer
  is spread over the estimate instead of landing on the viewer's bottleneck at once. Its
  transport-wide number is reported to the estimator with the time it really left. Audio
  and retransmissions are never delayed (they do not come here); a pacer that is idle sends
  what its budget allows at once, so a lone packet is not held back;
* sends probe clusters through the same pacer: queued media fills a cluster first, the rest
  is padding-only packets on a video RTX stream of the viewer. A viewer without RTX is not
  probed, and its video is never paused (it keeps the lowest layer): without probes nothing
  would resume it.

Every viewer's pacer shares the node's one pacing timer (`sfu.net.pacing.PaceScheduler`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sfu.core.allocator import Allocator
from sfu.core.bwe import NORMAL, OVERUSING, UNDERUSING, create
from sfu.core.downlink import (
    PADDING_BYTES,
    SRTP_OVERHEAD,
    Downlink,
    pacing_target,
    padding_packet,
)
from sfu.core.downtrack import DownTrack
from sfu.core.pacer import SFU_FACTOR, PacedPacket, Pacer
from sfu.net.pacing import PaceScheduler
from sfu.wire import abs_send_time
from sfu.wire.rtp import RtpError, parse_header
from sfu.wire.twcc import TransportFeedback, pack_transport_seq, transport_seq_offset

if TYPE_CHECKING:
    from sfu.net.peer import Peer

log = logging.getLogger("sfu.bwe")

PROBE_PACKET = 12 + 8 + PADDING_BYTES  # header + one-element extension block + padding
OBSERVE_INTERVAL = 1.0  # seconds between samples of the estimate histogram, per viewer
REALLOCATE_INTERVAL = 0.02  # urgent (downward) feedback-driven allocations at most this often
# what a paced packet gets written when it leaves
NOTHING_TO_STAMP, STAMP_TRANSPORT_SEQ, STAMP_ABS_SEND_TIME = 0, 1, 2


class ViewerDownlink:
    def __init__(self, peer: Peer, ext_id: int, estimator: str = "gcc", *,
                 probing: bool = True, pacing: bool = True,
                 scheduler: PaceScheduler | None = None, temporal_steps: bool = False) -> None:
        self.peer = peer
        self.core = Downlink(create(estimator), ext_id,
                             allocator=Allocator(temporal_steps=temporal_steps))
        # ext_id 0: a REMB viewer (no transport-cc); its video carries abs-send-time
        self.remb = ext_id == 0
        self.abs_id = 0
        self.probing = probing
        self.pace_media = pacing  # allowed to pace (setting); `pacing`: pacing now
        self.pacing = False
        # Until media is paced the pacer carries probes only, at the clusters' own rates.
        self._pacer = Pacer(target_bitrate=1.0, factor=SFU_FACTOR,
                            padding_size=PROBE_PACKET + SRTP_OVERHEAD)
        self._scheduler = scheduler if scheduler is not None else PaceScheduler()
        self._next_observe = 0.0
        self._allocated_at = 0.0
        self.closed = False

    # --- membership ------------------------------------------------------------------------

    def add_track(self, dt: DownTrack, abs_send_time_id: int | None = None) -> None:
        """Allocate `dt` on this viewer's estimate; number it (transport-cc), or for a REMB
        viewer stamp abs-send-time on it when its section negotiated the extension."""
        if not self.remb:
            dt.downlink = self.core
            dt.number_at_send = self.pacing and dt.kind == "video"
        elif dt.kind == "video" and abs_send_time_id:
            dt.downlink = self.core
            dt.abs_send_time_id = abs_send_time_id
            if not self.abs_id:
                self.abs_id = abs_send_time_id
        self.core.add_track(dt, priority=1 if dt.kind == "video" else 0)

    def remove_track(self, dt: DownTrack) -> None:
        self.core.remove_track(dt)
        dt.downlink = None
        dt.abs_send_time_id = 0
        dt.number_at_send = False

    def _number_at_send(self) -> None:
        """Pacing starts: the video of a numbered viewer gets its transport-wide seq when
        the pacer sends it, not when forward rewrites it."""
        if self.remb:
            return
        for slot in self.peer.slots:
            dt = slot.downtrack
            if dt.kind == "video" and dt.downlink is self.core:
                dt.number_at_send = True

    # --- inputs ----------------------------------------------------------------------------

    def on_feedback(self, feedback: TransportFeedback, now: float) -> None:
        self.peer.node.metrics.bwe["feedback"] += 1
        core = self.core
        core.on_feedback(feedback, now)
        # Reallocate at once when the estimate no longer covers what is allocated (down
        # moves are urgent); anything else waits for the node tick (100 ms): allocating on
        # every feedback costs more CPU than it buys.
        last, est = core.last, core.estimate
        if est is not None and (last is None or est < last.allocated) and (
                now - self._allocated_at >= REALLOCATE_INTERVAL):
            self.reallocate(now)

    def on_remb(self, bitrate: float, now: float, ssrcs: Iterable[int] = ()) -> None:
        """A REMB from the viewer. It caps the streams it lists: audio it does not list
        (aiortc estimates per video receiver) is added back, at the allocator's audio rate,
        since the allocator serves audio out of the same estimate."""
        listed = set(ssrcs)
        if listed:
            alloc = self.core.allocator
            unlisted = sum(1 for slot in self.peer.slots if slot.downtrack.kind == "audio"
                           and slot.downtrack.ssrc not in listed)
            bitrate += unlisted * alloc.audio_default
        core = self.core
        core.on_remb(bitrate, now)
        # Congestion (the REMB now caps below what is allocated) moves the viewer down at once.
        last, est = core.last, core.estimate
        if est is not None and last is not None and est < last.allocated and (
                now - self._allocated_at >= REALLOCATE_INTERVAL):
            self.reallocate(now)

    def on_report(self, fraction_lost: float, rtt: float | None, now: float) -> None:
        if rtt is not None:
            self.core.on_rtt(rtt, now)
        self.core.on_loss(fraction_lost, now)

    def tick(self, now: float) -> None:
        self.reallocate(now)
        est = self.core.estimate
        if est is not None and now >= self._next_observe:
            self._next_observe = now + OBSERVE_INTERVAL
            self.peer.node.metrics.bwe_estimate.observe(est)

    # --- allocation ------------------------------------------------------------------------

    def reallocate(self, now: float) -> None:
        if self.closed or self.peer.state != "connected":
            return
        core = self.core
        before = core.state
        alloc = core.update(now)
        self._allocated_at = now
        m = self.peer.node.metrics
        if core.state != before:
            m.bwe["congested" if core.state == OVERUSING else "uncongested"] += 1
        for dt in alloc.changed if alloc is not None else ():
            self._apply(dt, now)
        est = core.estimate
        pacer = self._pacer
        pad = 0.0
        if self.probing and self.remb and self._probe_stream() is not None:
            pad = core.estimator.padding_rate()  # a REMB viewer's estimate grows on padding
        if pad != pacer.padding_rate:
            pacer.set_padding_rate(pad)
            self._arm_pacer()
        if est is not None and self.pace_media:
            if not self.pacing:
                self.pacing = True
                self._number_at_send()
            pacer.set_target(max(pacing_target(est, core.last), pad))
        elif pad:
            pacer.set_target(pad)
        probes = core.pop_probes()
        if probes and self.probing and self._probe_stream() is not None:
            for cluster in probes:
                self._pacer.start_probe(cluster, now)
                m.bwe["probe_clusters"] += 1
            self._arm_pacer()

    def _apply(self, dt: DownTrack, now: float) -> None:
        node = self.peer.node
        m = node.metrics
        rank = dt.allocated_rank
        if rank is not None and rank < 0 and not (self.probing and self._probe_stream()):
            # Nothing could lift a pause (no probing: the estimate only grows with what is
            # sent), so such a viewer keeps the lowest layer instead (choose_layer clamps).
            m.bwe["pause_avoided"] += 1
            node.reselect(dt, now)
            return
        if rank is not None and rank < 0:
            if not dt.allocator_paused:
                dt.set_allocator_paused(True, now)
                m.bwe["video_paused"] += 1
            return
        if dt.allocator_paused:
            dt.set_allocator_paused(False, now)
            m.bwe["video_resumed"] += 1
            node.reselect(dt, now)
            layer = dt.pending or dt.current
            if layer is not None and not dt.paused:
                node.request_keyframe(layer, now)
            return
        m.bwe["allocation_changes"] += 1
        node.reselect(dt, now)
        if rank is not None and dt.shed_for_lower_layer(now):
            m.bwe["layer_shed"] += 1

    # --- numbering outside the forward loop ------------------------------------------------

    def stamp(self, packet: bytes, now: float) -> bytes:
        """`packet` (an RTX copy of a numbered packet) with a transport-wide seq of its own;
        for a REMB viewer, with its abs-send-time set to now."""
        if self.remb:
            if self.abs_id and abs_send_time.read(packet, self.abs_id) is not None:
                return abs_send_time.stamp(packet, now)
            return packet
        try:
            hdr = parse_header(packet)
        except RtpError:
            return packet
        core = self.core
        at = transport_seq_offset(packet, hdr, core.ext_id)
        if at is None:
            return packet
        seq = core.next_seq()
        out = b"".join((packet[:at], pack_transport_seq(seq), packet[at + 2:]))
        core.on_sent(seq, len(out), now)
        return out

    # --- probes ----------------------------------------------------------------------------

    def _probe_stream(self) -> DownTrack | None:
        """A forwarding video down-track with a negotiated RTX stream (probes go on it)."""
        for slot in self.peer.slots:
            dt = slot.downtrack
            r = dt.responder
            if (dt.kind == "video" and r is not None and r.rtx is not None
                    and dt.receiver is not None and not dt.paused):
                return dt
        return None

    # --- pacing ----------------------------------------------------------------------------

    def pace(self, dt: DownTrack, packet: bytes, now: float) -> None:
        """Send `packet` (video `dt.forward` just built) through the pacer. A numbered
        viewer's packet gets its transport-wide seq when it leaves (`dt.number_at_send`), a
        REMB viewer's its abs-send-time."""
        core = self.core
        pacer = self._pacer
        size = len(packet) + SRTP_OVERHEAD
        mark = NOTHING_TO_STAMP
        if dt.downlink is core:
            mark = STAMP_ABS_SEND_TIME if self.remb else (
                STAMP_TRANSPORT_SEQ if dt.number_at_send else NOTHING_TO_STAMP)
        if pacer.try_send(size, now):
            # An idle pacer with budget: it leaves now.
            peer = self.peer
            tx = peer._tx
            if tx is not None and peer.addr is not None:
                if mark == STAMP_TRANSPORT_SEQ:
                    packet = self._number(packet, size, now, None)
                peer.node.send_datagram(tx.protect(packet), peer.addr, "video")
            return
        pacer.enqueue((packet, mark), size, "video", now)
        if self._scheduler.due(self) is None:
            self.run_pacer(now)  # idle: what the budget allows goes at once
        elif pacer.queued_bytes > 0:
            self.peer.node.metrics.bwe["paced_waits"] += 1

    def _number(self, packet: bytes, size: int, now: float, cluster: int | None) -> bytes:
        """`packet` with the next transport-wide seq in its leading element, recorded as
        sent now."""
        at = _leading_element_value(packet)
        if at < 0:
            return packet
        core = self.core
        seq = core.next_seq()
        core.sent.append((seq, size, now, cluster))
        return b"".join((packet[:at], pack_transport_seq(seq), packet[at + 2:]))

    def _arm_pacer(self) -> None:
        if not self.closed:
            self._scheduler.arm(self, self._pacer.get_timer())

    def run_pacer(self, now: float) -> None:
        """The pacer's burst at `now`: queued video, probe padding (`PaceScheduler` calls)."""
        if self.closed:
            return
        pacer = self._pacer
        dropped = pacer.dropped
        out = pacer.handle_timer(now)
        if out:
            self._send_paced(out, now)
        if pacer.dropped != dropped:  # waited longer than the pacer's max_queue_delay
            self.peer.node.metrics.bwe["paced_dropped"] += pacer.dropped - dropped
        self._arm_pacer()

    def _send_paced(self, out: list[PacedPacket], now: float) -> None:
        peer = self.peer
        tx = peer._tx
        addr = peer.addr
        if tx is None or addr is None:
            return
        core = self.core
        node = peer.node
        m = node.metrics
        dt: DownTrack | None = None
        rtx = None
        for p in out:
            item = p.packet
            if item is not None:
                packet, mark = item
                if mark == STAMP_TRANSPORT_SEQ:
                    packet = self._number(packet, p.size, now, p.probe_cluster)
                elif mark == STAMP_ABS_SEND_TIME:
                    packet = abs_send_time.stamp(packet, now)
                node.send_datagram(tx.protect(packet), addr, "video")
                continue
            if dt is None:
                dt = self._probe_stream()
                if dt is None:
                    continue  # nothing to pad on (media in this burst still goes)
                rtx = dt.responder.rtx  # type: ignore[union-attr]
                ts = dt.stats.last_rtp_timestamp or 0  # the last media timestamp, as libwebrtc
            assert rtx is not None
            rtx_seq = dt.responder.next_rtx_seq()  # type: ignore[union-attr]
            if rtx_seq is None:
                continue
            if self.remb:
                if not self.abs_id:
                    continue
                pkt = padding_packet(ssrc=rtx.ssrc, payload_type=rtx.payload_type, seq=rtx_seq,
                                     timestamp=ts, ext_id=self.abs_id, abs_send_time=now)
            else:
                seq = core.next_seq()
                pkt = padding_packet(ssrc=rtx.ssrc, payload_type=rtx.payload_type, seq=rtx_seq,
                                     timestamp=ts, ext_id=core.ext_id, transport_seq=seq)
                core.on_sent(seq, len(pkt), now, p.probe_cluster)
            node.send_datagram(tx.protect(pkt), addr, "probe")
            m.bwe["probe_packets"] += 1
            m.bwe["probe_bytes"] += len(pkt)

    def pacer_stats(self) -> dict[str, float]:
        p = self._pacer
        return {"pacing_rate": p.pacing_rate if self.pacing else 0.0,
                "queued_bytes": p.queued_bytes, "dropped": p.dropped,
                "padding_bytes": p.padding_bytes}

    def close(self) -> None:
        self.closed = True
        self._scheduler.cancel(self)


def _leading_element_value(packet: bytes) -> int:
    """Offset of the value of the first element of the extension block (where forward puts
    the transport-wide seq), -1 if the packet has no extension block."""
    if not packet[0] & 0x10:
        return -1
    off = 12 + 4 * (packet[0] & 0x0F)
    profile = (packet[off] << 8) | packet[off + 1]
    return off + 5 if profile == 0xBEDE else off + 6


def bitrate_gauge(peers: Iterable[Peer]) -> dict[tuple[str, ...], float]:
    """Summed over viewers with an estimate: available (the estimates), allocated, desired."""
    out: dict[tuple[str, ...], float] = {("available",): 0.0, ("allocated",): 0.0,
                                         ("desired",): 0.0}
    for peer in peers:
        bwe = peer.bwe
        alloc = bwe.core.last if bwe is not None else None
        if alloc is None or alloc.available is None:
            continue
        out[("available",)] += alloc.available
        out[("allocated",)] += alloc.allocated
        out[("desired",)] += alloc.desired
    return out


def state_gauge(peers: Iterable[Peer]) -> dict[tuple[str, ...], float]:
    """Viewers by estimator state (`overusing` = congested) and `no_feedback` yet."""
    out: dict[tuple[str, ...], float] = {(s,): 0.0 for s in (NORMAL, OVERUSING, UNDERUSING,
                                                               "no_feedback")}
    for peer in peers:
        bwe = peer.bwe
        if bwe is None:
            continue
        key = bwe.core.state if bwe.core.feedback_seen else "no_feedback"
        out[(key,)] = out.get((key,), 0.0) + 1
    return out
