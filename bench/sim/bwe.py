"""Bandwidth estimation runs: simulcast publisher -> node (real cores) -> paced, estimated
downlink -> subscriber returning transport-cc feedback (gcc) or REMB (remb-aiortc).

Node side, per viewer (`NodeViewer`, what the node shell will do): the down-tracks' sinks
queue into a `sfu.core.pacer.Pacer`; each paced packet gets a transport-wide sequence number
and is reported to the estimator (`on_packet_sent`) as it goes onto the downlink; subscriber
RTCP reaches the estimator through the `bench.sim.hooks.Estimator` hook of `SimNode`; after
each feedback and every 100 ms the `Allocator` divides the estimate, sets `allocated_rank`,
and the layer is re-chosen with `choose_layer` (a new layer costs a key frame request);
probe clusters go from the estimator to the pacer.

Subscriber side (`ViewerSide`): gcc -> `sfu.core.twcc.FeedbackGenerator` (the node's own
receive-side generator) records every arrival, padding included; remb-aiortc ->
`aiortc.rate.RemoteBitrateEstimator` over abs-send-time, its value sent back as REMB.
`none` -> the null estimator: the viewer always gets the top layer.

The transport sequence number and send time travel beside the packet through the link (as an
RTP header extension would), so the subscriber model and the media bytes stay unchanged.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import metrics as m
from bench.sim.engine import Engine
from bench.sim.node import TICK, SimNode
from bench.sim.publisher import Publisher, PublisherConfig
from bench.sim.run import (
    OPUS_CODEC,
    VP8_CODEC,
    ConfigError,
    SimConfig,
    check_temporal_layers,
    link_config,
)
from bench.sim.subscriber import Subscriber, SubscriberConfig
from sfu.core import bwe
from sfu.core.allocator import TEMPORAL_SHARES, Allocator, offered_tids
from sfu.core.downlink import ALLOCATED_FLOOR, pacing_target
from sfu.core.downtrack import MAX_TEMPORAL, DownTrack
from sfu.core.layers import choose_layer
from sfu.core.pacer import Pacer
from sfu.core.receiver import TrackInfo
from sfu.core.twcc import FeedbackGenerator
from sfu.wire import rtcp
from sfu.wire.twcc import TransportFeedback

ESTIMATORS = ("none", "gcc", "remb-aiortc")
DEFAULT_LAYERS = (150_000.0, 500_000.0, 1_500_000.0)
RIDS = ("q", "h", "f")
SAMPLE = 0.1
AUDIO_BPS = 40_000.0  # the synthetic Opus stream with headers, for "feasible" layer sums

# (packet or None for padding, transport seq, send time, size on the wire)
Item = tuple[bytes | None, int, float, int]


class _Port:
    """The node's downlink to one viewer: link + engine, with per-packet send logs."""

    def __init__(self, engine: Engine, link: Any, deliver: Callable[[Item, float], None]) -> None:
        self._engine = engine
        self._link = link
        self._deliver = deliver
        self._armed: float | None = None
        self.send_times: list[float] = []
        self.send_sizes: list[int] = []
        self.queue_delay: list[tuple[float, float]] = []  # (send time, queue+tx delay)
        self.refused = 0

    def send(self, item: Item, size: int, now: float) -> None:
        self.send_times.append(now)
        self.send_sizes.append(size)
        if self._link.send(item, size, now):
            self.queue_delay.append((now, self._link.stats.queue_delays[-1]))
        else:
            self.refused += 1
        t = self._link.get_timer()
        if t is not None and (self._armed is None or t < self._armed):
            self._armed = t
            self._engine.schedule(t, self._fire)

    def _fire(self, now: float) -> None:
        self._armed = None
        for t, item in self._link.poll(now):
            self._deliver(item, t)
        t = self._link.get_timer()
        if t is not None and (self._armed is None or t < self._armed):
            self._armed = t
            self._engine.schedule(t, self._fire)


class NodeViewer:
    """Estimator + allocator + pacer for one viewer, wired as the node shell will wire them."""

    def __init__(self, engine: Engine, node: SimNode, name: str, estimator: bwe.Estimator,
                 port: _Port, pacing_factor: float = 1.0, temporal_steps: bool = False) -> None:
        self.engine = engine
        self.node = node
        self.name = name
        self.estimator = estimator
        self.allocator = Allocator(temporal_steps=temporal_steps)
        start = estimator.target_bitrate or 300_000.0
        self.pacer = Pacer(target_bitrate=start, factor=pacing_factor)
        self.port = port
        self.tseq = 0
        self._pacer_at: float | None = None
        self.downtracks: list[DownTrack] = []
        self.series: dict[str, list[Any]] = {"t": [], "target": [], "allocated_rank": [],
                                             "rank": [], "pacer_queue_ms": [], "state": [],
                                             "temporal": []}
        self.switch_times: list[float] = []
        self._switches = 0
        self.temporal_times: list[float] = []  # TID ceiling changes in force
        self._temporal_switches = 0

    # sinks of the down-tracks
    def sink(self, kind: str) -> Callable[[bytes, float], None]:
        def enqueue(data: bytes, now: float) -> None:
            self.pacer.enqueue(data, len(data), kind, now)
            self._arm_pacer(now)
        return enqueue

    def _arm_pacer(self, now: float) -> None:
        t = self.pacer.get_timer()
        if t is not None and (self._pacer_at is None or t < self._pacer_at):
            self._pacer_at = t
            self.engine.schedule(t, self._pace)

    def _pace(self, now: float) -> None:
        self._pacer_at = None
        for p in self.pacer.handle_timer(now):
            seq = self.tseq & 0xFFFF
            self.tseq += 1
            self.estimator.on_packet_sent(seq, p.size, now, p.probe_cluster)
            self.port.send((p.packet, seq, now, p.size), p.size, now)
        self._arm_pacer(now)

    # RTCP from the viewer (through SimNode's estimator hook)
    def on_rtcp(self, packet: rtcp.RtcpPacket, now: float) -> None:
        est = self.estimator
        if isinstance(packet, TransportFeedback):
            est.on_feedback(packet, now)
        elif isinstance(packet, rtcp.Remb):
            est.on_remb(packet.bitrate, now)
        elif isinstance(packet, rtcp.ReceiverReport):
            for block in packet.reports:
                est.on_loss_report(block.fraction_lost / 256, now)
        else:
            return
        self.reallocate(now)

    def reallocate(self, now: float) -> None:
        est = self.estimator
        t = est.get_timer()
        if t is not None and t <= now:
            est.handle_timer(now)
        target = est.target_bitrate
        alloc = self.allocator.update(target, now)
        est.set_desired_bitrate(alloc.probe_goal, now)
        est.set_send_rate(alloc.allocated, now)
        for cluster in est.pop_probes():
            self.pacer.start_probe(cluster, now)
        pad = est.padding_rate()  # REMB: padding lets the viewer's estimate grow
        self.pacer.set_padding_rate(pad)
        if target is not None:
            self.pacer.set_target(max(pacing_target(target, alloc), pad))
        else:  # no ceiling (REMB before congestion): the media is not held back
            self.pacer.set_target(max(ALLOCATED_FLOOR * alloc.allocated, pad))
        for dt in alloc.changed:
            self._apply(dt, now)
        self._arm_pacer(now)

    def _apply(self, dt: DownTrack, now: float) -> None:
        """What Node.reselect does, plus pausing: a rank of -1 stops the video."""
        if dt.receiver is None:
            return
        if dt.allocated_rank == -1:
            dt.paused = True
            return
        if dt.paused:
            dt.resume()  # restart on a key frame
        layer = choose_layer(dt, dt.receiver, now)
        if dt.request_layer(layer):
            self.node.request_keyframe(layer, now)
        dt.shed_for_lower_layer(now)  # as sfu.net.downlink does

    def tick(self, now: float) -> None:
        self.reallocate(now)
        for track in self.downtracks:  # what Node._check_layers does: follow a layer that stops
            if track.kind == "video" and track.receiver is not None \
                    and track.receiver.simulcast and not track.paused:
                self._apply(track, now)
        s = self.series
        s["t"].append(now)
        s["target"].append(self.estimator.target_bitrate)
        s["state"].append(self.estimator.state)
        s["pacer_queue_ms"].append(self.pacer.expected_queue_time() * 1000)
        video = [dt for dt in self.downtracks if dt.kind == "video"]
        dt = video[0] if video else None
        s["allocated_rank"].append(None if dt is None else dt.allocated_rank)
        rank = None
        if dt is not None and dt.current is not None and dt.receiver is not None:
            rank = -1 if dt.paused else dt.receiver.ranked().index(dt.current)
        s["rank"].append(rank)
        s["temporal"].append(None if dt is None else dt.temporal)
        if dt is not None and dt.temporal_switches != self._temporal_switches:
            self.temporal_times.extend([now] * (dt.temporal_switches - self._temporal_switches))
            self._temporal_switches = dt.temporal_switches
        if dt is not None and dt.switches != self._switches:
            self.switch_times.extend([now] * (dt.switches - self._switches))
            self.node.estimator.layer_switches += dt.switches - self._switches
            self._switches = dt.switches


class BweHook:
    """`bench.sim.hooks.Estimator` for SimNode: routes subscriber RTCP to the viewer's cores."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.layer_switches = 0  # updated by the viewers' ticks
        self.viewers: dict[str, NodeViewer] = {}


    def on_feedback(self, subscriber: str, packet: rtcp.RtcpPacket, now: float) -> None:
        viewer = self.viewers.get(subscriber)
        if viewer is not None:
            viewer.on_rtcp(packet, now)

    def target_bitrate(self, subscriber: str, now: float) -> float | None:
        viewer = self.viewers.get(subscriber)
        return None if viewer is None else viewer.estimator.target_bitrate


class ViewerSide:
    """The subscriber's transport: feedback generation, then the media to the app model."""

    def __init__(self, engine: Engine, mode: str, sub: Subscriber, video_ssrc: int,
                 send_rtcp: Callable[[bytes, float], None]) -> None:
        self.engine = engine
        self.mode = mode
        self.sub = sub
        self.video_ssrc = video_ssrc
        self.send_rtcp = send_rtcp
        self.twcc: FeedbackGenerator | None = None
        self.rbe: Any = None
        self._armed: float | None = None
        self.padding_bytes = 0
        self.padding_times: list[float] = []
        if mode == "gcc":
            self.twcc = FeedbackGenerator(sender_ssrc=sub.rtcp_ssrc, media_ssrc=video_ssrc)
        elif mode == "remb-aiortc":
            from aiortc.rate import RemoteBitrateEstimator

            self.rbe = RemoteBitrateEstimator()

    def on_item(self, item: Item, now: float) -> None:
        packet, seq, sent, size = item
        if self.twcc is not None:
            self.twcc.record(seq, now)
            t = self.twcc.get_timer()
            if t is not None and (self._armed is None or t < self._armed):
                self._armed = t
                self.engine.schedule(t, self._feedback)
        elif self.rbe is not None:  # padding counts for the receive-side estimate too
            abs_send = int(sent * (1 << 18)) & 0xFFFFFF
            out = self.rbe.add(int(now * 1000), abs_send, size, self.video_ssrc)
            if out is not None:
                remb = rtcp.Remb(sender_ssrc=self.sub.rtcp_ssrc, bitrate=int(out[0]),
                                 ssrcs=[self.video_ssrc])
                self.send_rtcp(rtcp.serialize_compound([remb]), now)
        if packet is None:
            self.padding_times.append(now)
            return
        self.sub.on_packet(packet, now)

    def _feedback(self, now: float) -> None:
        self._armed = None
        assert self.twcc is not None
        msgs = self.twcc.handle_timer(now)
        if msgs:
            self.send_rtcp(rtcp.serialize_compound(msgs), now)
        t = self.twcc.get_timer()
        if t is not None:
            self._armed = t
            self.engine.schedule(t, self._feedback)


@dataclass(slots=True)
class BweRun:
    config: SimConfig
    estimator: str
    layers: tuple[float, ...]
    engine: Engine
    node: SimNode
    publishers: list[Publisher]
    viewers: list[NodeViewer]
    sides: list[ViewerSide]
    subscribers: list[Subscriber]
    ports: list[_Port]
    capacity: Any
    extra: dict[str, Any] = field(default_factory=dict)


def build_bwe(config: SimConfig, estimator: str, layers: tuple[float, ...] = DEFAULT_LAYERS,
              pacing_factor: float = 1.0) -> BweRun:
    from bench.link import Link

    if estimator not in ESTIMATORS:
        raise ConfigError(f"--estimator: must be one of {', '.join(ESTIMATORS)}, "
                          f"got {estimator!r}")
    if len(layers) != 3 or any(b <= 0 for b in layers):
        raise ConfigError(f"--layers: need three positive bitrates, got {layers}")
    check_temporal_layers(config)
    base = Path(config.base_dir) if config.base_dir else Path.cwd()
    seed = config.seed
    down_cfgs = [link_config(config.down, seed * 1000 + 101 + 10 * i, "down-", base)
                 for i in range(config.subscribers)]
    engine = Engine()
    up_delay = config.up.delay_ms / 1000
    down_delay = config.down.delay_ms / 1000
    pubs: list[Publisher] = []

    def to_publisher(data: bytes, now: float) -> None:
        def deliver(t: float) -> None:
            for p in pubs:
                p.on_rtcp(data, t)
        engine.schedule(now + up_delay, deliver)

    hook = BweHook("gcc" if estimator == "gcc" else estimator)
    node = SimNode(upstream_rtcp=to_publisher, estimator=hook)

    def uplink(data: bytes, now: float) -> None:  # the uplink is not under test here
        engine.schedule(now + up_delay, lambda t: node.on_rtp(data, t))

    ssrcs = [0x1111_0010 + i for i in range(3)]
    for i, rate in enumerate(layers):
        cfg = PublisherConfig(video_bitrate=rate, fps=config.fps,
                              keyframe_interval=config.keyframe_interval,
                              keyframe_ratio=config.keyframe_ratio,
                              temporal_layers=config.temporal_layers,
                              audio=config.audio and i == 0, video_ssrc=ssrcs[i])
        pubs.append(Publisher(cfg, uplink, seed + i))
    info = TrackInfo(track_id="pub-video", kind="video", participant="pub", stream_id="pub",
                     codec=VP8_CODEC)
    node.publish_simulcast(info, ssrcs, list(RIDS), 0.0)
    if config.audio:
        node.publish(TrackInfo(track_id="pub-audio", kind="audio", participant="pub",
                               stream_id="pub", codec=OPUS_CODEC), pubs[0].config.audio_ssrc, 0.0)

    def to_node(data: bytes, now: float) -> None:
        engine.schedule(now + down_delay, lambda t: node.on_subscriber_rtcp(data, t))

    viewers, sides, subs, ports = [], [], [], []
    for i in range(config.subscribers):
        name = f"sub{i}"
        v_ssrc, a_ssrc = 0x2222_0000 + 2 * i, 0x2222_0001 + 2 * i
        sub = Subscriber(name, v_ssrc, a_ssrc, engine.schedule, to_node, SubscriberConfig())
        side = ViewerSide(engine, estimator, sub, v_ssrc, to_node)
        link: Link[Item] = Link(down_cfgs[i], start=0.0)
        port = _Port(engine, link, side.on_item)
        kind = {"gcc": "gcc", "remb-aiortc": "remb", "none": "null"}[estimator]
        viewer = NodeViewer(engine, node, name, bwe.create(kind), port, pacing_factor,
                            temporal_steps=config.temporal_steps)
        hook.viewers[name] = viewer
        viewers.append(viewer)
        sides.append(side)
        subs.append(sub)
        ports.append(port)

        def join(now: float, viewer: NodeViewer = viewer, v: int = v_ssrc, a: int = a_ssrc,
                 name: str = name) -> None:
            dt = node.subscribe(name, "video", v, VP8_CODEC, viewer.sink("video"), now)
            viewer.downtracks.append(dt)
            viewer.allocator.add_track(dt, priority=1)
            if config.audio:
                adt = node.subscribe(name, "audio", a, OPUS_CODEC, viewer.sink("audio"), now)
                viewer.downtracks.append(adt)
                viewer.allocator.add_track(adt)
            viewer.reallocate(now)
            engine.every(SAMPLE, viewer.tick, until=config.duration + config.drain)

        engine.schedule(config.join_at, join)

    frame = 1.0 / config.fps

    def next_frame(now: float) -> None:
        for p in pubs:
            p.video_frame(now)
        nxt = round((round(now / frame) + 1) * frame, 9)
        if nxt < config.duration:
            engine.schedule(nxt, next_frame)

    engine.schedule(0.0, next_frame)
    if config.audio:
        def next_audio(now: float) -> None:
            pubs[0].audio_packet(now)
            nxt = round(now + 0.020, 9)
            if nxt < config.duration:
                engine.schedule(nxt, next_audio)

        engine.schedule(0.0, next_audio)
    engine.every(TICK, node.tick, until=config.duration + config.drain)
    return BweRun(config, estimator, tuple(layers), engine, node, pubs, viewers, sides, subs,
                  ports, down_cfgs[0].capacity)


# --- metrics ------------------------------------------------------------------------------------


def _window_rate(times: list[float], sizes: list[int], t0: float, t1: float) -> float:
    lo, hi = bisect_left(times, t0), bisect_left(times, t1)
    return sum(sizes[lo:hi]) * 8 / max(1e-9, t1 - t0)


def _capacity_changes(capacity: Any, duration: float) -> list[tuple[float, float, float]]:
    """(time, old, new) of the step changes of a StepTrace within the run."""
    out: list[tuple[float, float, float]] = []
    if capacity is None or not hasattr(capacity, "segment_at"):
        return out
    t, prev = 0.0, capacity.rate_at(0.0)
    step = 0.05
    while t < duration:
        t += step
        r = capacity.rate_at(t)
        if r != prev:
            out.append((round(t - step, 3) if capacity.rate_at(t - step) == r else round(t, 3),
                        prev, r))
            prev = r
    return out


def feasible_rank(capacity: float, layers: tuple[float, ...], margin: float = 1.15,
                  headroom: float = 0.85) -> int:
    """The highest layer that fits a link of `capacity` with GCC's headroom and the margin."""
    best = -1
    for i, rate in enumerate(layers):
        if rate * margin + AUDIO_BPS <= capacity * headroom:
            best = i
    return best


def ladder(run: BweRun) -> tuple[float, ...]:
    """The rates the allocator can give (nominal): the simulcast layers, and with temporal
    layers each layer's TID steps as `Allocator.steps` offers them."""
    count = run.config.temporal_layers
    shares = TEMPORAL_SHARES.get(count)
    if shares is None or not run.config.temporal_steps:
        return run.layers
    return tuple(rate * shares[tid] for rank, rate in enumerate(run.layers)
                 for tid in offered_tids(rank, count))


def analyse(run: BweRun) -> dict[str, Any]:
    cfg = run.config
    span = cfg.duration
    conv = cfg.join_at + cfg.convergence
    cap = run.capacity
    viewer, sub, port = run.viewers[0], run.subscribers[0], run.ports[0]
    arrivals = sub.video.arrivals + sub.audio.arrivals
    sizes = sub.video.sizes + sub.audio.sizes
    order = sorted(range(len(arrivals)), key=arrivals.__getitem__)
    times = [arrivals[i] for i in order]
    sizes = [sizes[i] for i in order]
    media_bits = sum(s for t, s in zip(times, sizes, strict=True) if conv <= t < span) * 8
    cap_bits = 0.0
    feasible_bits = 0.0
    attainable_bits = 0.0
    steps = ladder(run)
    dt_ = 0.01
    t = conv
    while t < span:
        c = cap.rate_at(t) if cap is not None else math.inf
        cap_bits += c * dt_
        r = feasible_rank(c, steps, margin=1.0, headroom=1.0)
        feasible_bits += (steps[r] if r >= 0 else 0.0) * dt_ + AUDIO_BPS * dt_
        r = feasible_rank(c, steps)  # with the allocator's margin and GCC's headroom
        attainable_bits += (steps[r] if r >= 0 else 0.0) * dt_ + AUDIO_BPS * dt_
        t += dt_
    qd = [d for s, d in port.queue_delay if s >= conv]
    s = viewer.series
    est_ratio = [e / cap.rate_at(t) for t, e in zip(s["t"], s["target"], strict=True)
                 if e is not None and t >= conv and cap is not None and cap.rate_at(t) > 0]
    changes = _capacity_changes(cap, span)
    bounds = [cfg.join_at] + [c[0] for c in changes] + [span]
    steady_switches = 0
    steady_temporal = 0
    steady_time = 0.0
    for a, b in zip(bounds, bounds[1:], strict=False):
        lo = a + 5.0
        if b > lo:
            steady_time += b - lo
            steady_switches += sum(1 for x in viewer.switch_times if lo <= x < b)
            steady_temporal += sum(1 for x in viewer.temporal_times if lo <= x < b)
    send_t, send_s = port.send_times, port.send_sizes
    drops, ups = [], []
    for t0, old, new in changes:
        if new < old:
            est_under = next((t - t0 for t, e in zip(s["t"], s["target"], strict=True)
                              if t >= t0 and e is not None and e <= new), None)
            sent_under = None
            x = t0
            while x < t0 + 10:
                if _window_rate(send_t, send_s, x, x + 0.2) <= new:
                    sent_under = round(x - t0 + 0.2, 3)
                    break
                x += 0.05
            drops.append({"at": t0, "from": old, "to": new,
                          "estimate_under_s": est_under, "sending_under_s": sent_under})
        elif new > old:
            want = feasible_rank(new, run.layers)
            # the wanted layer at its full frame rate (or a higher layer)
            layer_up = next((t - t0 for t, r, tid in zip(s["t"], s["rank"], s["temporal"],
                                                          strict=True)
                             if t >= t0 and r is not None and (r > want or (
                                 r == want and tid == MAX_TEMPORAL))), None)
            est_up = next((t - t0 for t, e in zip(s["t"], s["target"], strict=True)
                           if t >= t0 and e is not None and e >= min(0.8 * new,
                                                                      old * 1.2)), None)
            ups.append({"at": t0, "from": old, "to": new, "target_rank": want,
                        "layer_up_s": layer_up, "estimate_up_s": est_up})
    fr = m.freezes(sub.rendered.times)
    lat = m.latency_summary([x for x, a in zip(sub.video.latencies, sub.video.arrivals,
                                                 strict=True) if a >= conv])
    est_stats = viewer.estimator.stats()
    return {
        "estimator": run.estimator,
        "layers_bps": list(run.layers),
        "utilisation": media_bits / cap_bits if cap_bits else None,
        "utilisation_of_feasible": media_bits / feasible_bits if feasible_bits else None,
        # what an allocator that knew the capacity and switched at once would get
        "oracle_utilisation": feasible_bits / cap_bits if cap_bits else None,
        "utilisation_of_attainable": media_bits / attainable_bits if attainable_bits else None,
        "estimate_over_capacity_median": m.percentile(est_ratio, 50) if est_ratio else None,
        "queuing_delay_ms": {"p50": _ms(m.percentile(qd, 50)), "p95": _ms(m.percentile(qd, 95)),
                             "max": _ms(max(qd) if qd else None)},
        "video_latency_ms": lat,
        "layer_switches": len(viewer.switch_times),
        "layer_switches_per_min_steady": steady_switches / steady_time * 60 if steady_time
        else None,
        "temporal_steps": len(viewer.temporal_times),
        "temporal_steps_per_min_steady": steady_temporal / steady_time * 60 if steady_time
        else None,
        "drops": drops,
        "step_ups": ups,
        "freezes": fr.count,
        "freeze_total_s": fr.total_duration,
        "rendered_frames": len(sub.rendered.times),
        "downlink_dropped": port.refused,
        "plis_sent": sub.plis_sent,
        "padding_bytes": viewer.pacer.padding_bytes,
        "pacer_dropped": viewer.pacer.dropped,
        "estimator_stats": est_stats,
        "audio_late": sub.audio_late,
        "audio_received": len(sub.audio.arrivals),
    }


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 2)


def series(run: BweRun, bin_size: float = 0.5) -> dict[str, Any]:
    cfg = run.config
    span = cfg.duration
    sub, port, viewer = run.subscribers[0], run.ports[0], run.viewers[0]
    arrivals = sub.video.arrivals + sub.audio.arrivals
    sizes = sub.video.sizes + sub.audio.sizes
    n = max(1, math.ceil(span / bin_size))
    cap = run.capacity
    qd_t = [t for t, _ in port.queue_delay]
    qd_v = [d for _, d in port.queue_delay]
    return {
        "bin_s": bin_size,
        "t": [i * bin_size for i in range(n)],
        "capacity_bps": [cap.mean_rate(i * bin_size, (i + 1) * bin_size) if cap is not None
                         else None for i in range(n)],
        "received_media_bps": m.bitrate_series(arrivals, sizes, bin_size, span),
        "sent_bps": m.bitrate_series(port.send_times, port.send_sizes, bin_size, span),
        "queuing_p95_ms": [None if v is None else v * 1000
                           for v in m.binned_percentile(qd_t, qd_v, bin_size, span, 95)],
        "estimate_t": viewer.series["t"],
        "estimate_bps": viewer.series["target"],
        "rank": viewer.series["rank"],
        "allocated_rank": viewer.series["allocated_rank"],
    }


def simulate_bwe(config: SimConfig, estimator: str,
                 layers: tuple[float, ...] = DEFAULT_LAYERS) -> dict[str, Any]:
    run = build_bwe(config, estimator, layers)
    run.engine.run(config.duration + config.drain)
    return {"scenario": config.name, "config": config.public(), "metrics": analyse(run),
            "series": series(run)}


def plot(reports: list[dict[str, Any]], out: Path, title: str) -> None:
    """One figure: a column per report (estimator), rows: rates, layer, queuing delay."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = len(reports)
    fig, axes = plt.subplots(3, cols, figsize=(6.5 * cols, 8), sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1.2, 1.5]})
    for c, rep in enumerate(reports):
        s = rep["series"]
        mt = rep["metrics"]
        ax = axes[0][c]
        mbps = [None if v is None else v / 1e6 for v in s["capacity_bps"]]
        ax.step(s["t"], mbps, where="post", color="black", label="capacity")
        ax.plot(s["estimate_t"], [None if v is None else v / 1e6 for v in s["estimate_bps"]],
                color="tab:red", label="estimate")
        ax.plot(s["t"], [v / 1e6 for v in s["sent_bps"]], color="tab:gray", alpha=0.6,
                lw=0.8, label="sent (incl. padding)")
        ax.plot(s["t"], [v / 1e6 for v in s["received_media_bps"]], color="tab:blue",
                label="received media")
        top = max([v for v in mbps if v is not None] + [2.0])
        ax.set_ylim(0, min(top * 1.3, 12))
        ax.set_ylabel("Mbit/s")
        ax.set_title(f"{title}: {rep.get('label', mt['estimator'])}  "
                     f"util {fmt_pct(mt['utilisation'])}, "
                     f"q95 {mt['queuing_delay_ms']['p95']} ms", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
        ax = axes[1][c]
        ax.step(s["estimate_t"], s["rank"], where="post", label="forwarded layer")
        ax.step(s["estimate_t"], s["allocated_rank"], where="post", ls="--", alpha=0.7,
                label="allocated")
        ax.set_yticks([-1, 0, 1, 2], ["paused", "q", "h", "f"])
        ax.legend(fontsize=7, loc="upper right")
        ax = axes[2][c]
        ax.plot(s["t"], s["queuing_p95_ms"], color="tab:purple")
        ax.set_ylabel("queue p95 ms")
        ax.set_xlabel("s")
        ax.axhline(100, color="gray", ls=":", lw=0.8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def fmt_pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.0f}%"


def run_cli(config: SimConfig, estimator: str, layers: tuple[float, ...], out: Path,
            plots: bool, quiet: bool) -> int:
    report = simulate_bwe(config, estimator, layers)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    if plots:
        plot([report], out / "bwe.png", config.name)
    if not quiet:
        print(json.dumps({k: v for k, v in report["metrics"].items() if k != "estimator_stats"},
                         indent=1, default=float))
    return 0


def parse_layers(text: str) -> tuple[float, ...]:
    """`150k,500k,1.5M` -> (150000.0, 500000.0, 1500000.0); ConfigError otherwise."""
    units = {"k": 1e3, "m": 1e6}
    out = []
    for part in text.split(","):
        p = part.strip().lower()
        scale = units.get(p[-1:], 1.0)
        try:
            out.append(float(p[:-1] if p[-1:] in units else p) * scale)
        except ValueError:
            raise ConfigError(f"--layers: not a bitrate: {part!r}") from None
    if len(out) != 3 or any(b <= 0 for b in out) or sorted(out) != out:
        raise ConfigError(f"--layers: need three increasing positive bitrates, got {text!r}")
    return tuple(out)
