"""One viewer's downlink: transport-wide numbering, bandwidth estimate and allocation.

The node keeps one `Downlink` per viewer peer (one transport) that negotiated transport-cc,
or, without it, abs-send-time and goog-remb (`ext_id` 0: nothing is numbered; the viewer's
REMB is the estimate and the feedback that starts the warm-up).
It ties together the pieces `bench/sim/bwe.py` wires in simulation:

* numbering: every packet sent to the viewer (media, RTX, probe padding) takes the next
  transport-wide sequence number (`next_seq`) and is reported to the estimator (`on_sent`);
  `DownTrack.forward` writes the number into the header extension block it builds anyway;
* feedback: transport-cc (and REMB, RR loss, RTT) from the viewer go to the estimator;
* allocation: `update(now)` runs the estimator's timer, divides its target across the
  viewer's down-tracks with an `Allocator` (audio first, then video by priority, video
  paused at rank -1 rather than audio starved), tells the estimator what it would spend
  (allocation probes) and collects probe clusters in `probes` for the shell to send.

Until the viewer's feedback has flowed for `warmup` seconds the estimate is not trusted
(`estimate` is None, no ceiling): a viewer that negotiated transport-cc but never reports
keeps its layers, and a new viewer is not held to the estimator's 300 kbit/s start value
while the initial probes (sent with its first packets) measure the path.

Sans-I/O: inputs carry `now`; applying the allocation (layer switches, key frame requests)
and sending probes is the shell's job (`sfu.net.downlink`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sfu.core.allocator import Allocation, Allocator
from sfu.core.bwe import NORMAL, Estimator, ProbeCluster
from sfu.core.downtrack import SRTP_OVERHEAD, DownTrack
from sfu.wire import rtp
from sfu.wire.abs_send_time import value
from sfu.wire.twcc import TransportFeedback

WARMUP = 1.0  # seconds of feedback before the estimate caps anything
PADDING_BYTES = 255  # RTP padding is at most 255 bytes per packet (one-octet count)
ALLOCATED_FLOOR = 1.1  # pace at least this x the allocation when it exceeds the estimate


class Downlink:
    """Estimator + allocator + transport-wide sequence numbers for one viewer transport."""

    def __init__(self, estimator: Estimator, ext_id: int, *,
                 allocator: Allocator | None = None, warmup: float = WARMUP) -> None:
        self.estimator = estimator
        self.ext_id = ext_id
        self.allocator = allocator or Allocator()
        # The next transport-wide seq, and what was sent since the estimator last heard:
        # (seq, size on the wire, send time, probe cluster). DownTrack.forward bumps `seq` and
        # appends to `sent` inline; `flush` hands the batch over before anything reads it.
        self.seq = 0
        self.sent: list[tuple[int, int, float, int | None]] = []
        self.feedback_seen = False
        self.warmup = warmup
        self.first_feedback: float | None = None
        self.trusted = False  # feedback has flowed for `warmup` seconds
        self.state = NORMAL
        self.state_changes: Counter[str] = Counter()  # transitions into each estimator state
        self.probes: list[ProbeCluster] = []
        self.last: Allocation | None = None
        self.packets_sent = 0

    # --- numbering -------------------------------------------------------------------------

    def next_seq(self) -> int:
        """The next transport-wide sequence number (16 bits)."""
        seq = self.seq
        self.seq = (seq + 1) & 0xFFFF
        return seq

    def on_sent(self, seq: int, size: int, now: float, cluster: int | None = None) -> None:
        """Packet `seq` of `size` RTP bytes (before SRTP) leaves for the viewer."""
        self.sent.append((seq, size + SRTP_OVERHEAD, now, cluster))

    def flush(self) -> None:
        """Give the estimator what was sent since the last flush (in send order)."""
        sent = self.sent
        if sent:
            self.packets_sent += len(sent)
            self.sent = []
            self.estimator.on_packets_sent(sent)

    # --- viewer reports --------------------------------------------------------------------

    def on_feedback(self, feedback: TransportFeedback, now: float) -> None:
        self.flush()
        self.feedback_seen = True
        if self.first_feedback is None:
            self.first_feedback = now
        self.estimator.on_feedback(feedback, now)

    def on_remb(self, bitrate: float, now: float) -> None:
        """The viewer's receive-side estimate; for a REMB viewer it is the feedback that
        starts the warm-up."""
        self.feedback_seen = True
        if self.first_feedback is None:
            self.first_feedback = now
        self.estimator.on_remb(bitrate, now)

    def on_loss(self, fraction: float, now: float) -> None:
        self.estimator.on_loss_report(fraction, now)

    def on_rtt(self, rtt: float, now: float) -> None:
        self.estimator.on_rtt(rtt, now)

    # --- membership ------------------------------------------------------------------------

    def add_track(self, dt: DownTrack, priority: int = 0) -> None:
        self.allocator.add_track(dt, priority)

    def remove_track(self, dt: DownTrack) -> None:
        self.allocator.remove_track(dt)

    # --- allocation ------------------------------------------------------------------------

    @property
    def estimate(self) -> float | None:
        """What the allocator may spend (bits/s), None for no ceiling."""
        return self.estimator.target_bitrate if self.trusted else None

    def update(self, now: float) -> Allocation | None:
        """Run the estimator's timer, allocate, queue probes. The shell applies `changed`.

        Before the estimate is trusted (see the module docstring) there is no ceiling and
        nothing to allocate: None (the estimator still runs, so its probes go out)."""
        self.flush()
        est = self.estimator
        t = est.get_timer()
        if t is not None and t <= now:
            est.handle_timer(now)
        first = self.first_feedback
        if not self.trusted and first is not None and now - first >= self.warmup:
            self.trusted = True
        alloc = None
        if self.trusted:
            alloc = self.allocator.update(self.estimate, now)
            est.set_desired_bitrate(alloc.probe_goal, now)
            est.set_send_rate(alloc.allocated, now)
            self.last = alloc
        self.probes.extend(est.pop_probes())
        state = est.state
        if state != self.state:
            self.state = state
            self.state_changes[state] += 1
        return alloc

    def pop_probes(self) -> list[ProbeCluster]:
        out, self.probes = self.probes, []
        return out

    def stats(self) -> dict[str, Any]:
        out = dict(self.estimator.stats())
        out.update(self.allocator.stats())
        out["estimate"] = self.estimate
        out["packets_sent"] = self.packets_sent
        out["state_changes"] = dict(self.state_changes)
        return out


def pacing_target(estimate: float, allocation: Allocation | None) -> float:
    """The rate the viewer's pacer spreads video at: the estimate, unless the allocation
    forwards more than it (then `ALLOCATED_FLOOR` x the allocation). An encoder follows its
    estimate; an SFU cannot go below a track's lowest layer (a single-layer track has no
    other), and a pacer slower than the media only builds a standing queue in front of the
    viewer. An estimate still climbing from its start value (a viewer without RTX is never
    probed) must not hold the picture back either."""
    if allocation is None or allocation.allocated <= estimate:
        return estimate
    return ALLOCATED_FLOOR * allocation.allocated


def padding_packet(*, ssrc: int, payload_type: int, seq: int, timestamp: int, ext_id: int,
                   transport_seq: int | None = None, abs_send_time: float | None = None,
                   padding: int = PADDING_BYTES) -> bytes:
    """A padding-only RTP packet (probe) carrying a transport-wide sequence number, or for a
    REMB viewer the abs-send-time `ext_id` (the send time, seconds).

    Sent on the viewer's RTX stream: a receiver drops it after counting it for the bandwidth
    estimate (RFC 4588 RTX streams may carry padding-only packets, as libwebrtc's do).
    """
    if not 1 <= padding <= 255:
        raise ValueError("RTP padding is 1..255 bytes")
    if transport_seq is not None:
        element = bytes(((transport_seq >> 8) & 0xFF, transport_seq & 0xFF))
    elif abs_send_time is not None:
        element = value(abs_send_time).to_bytes(3, "big")
    else:
        raise ValueError("a padding probe carries a transport seq or an abs-send-time")
    return rtp.build_packet(
        payload_type=payload_type, seq=seq & 0xFFFF, timestamp=timestamp & 0xFFFFFFFF,
        ssrc=ssrc, payload=b"", extensions=[(ext_id, element)], padding=padding,
    )
