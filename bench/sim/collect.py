"""Turn a finished run's logs into the report dict: per-stream metrics, aggregates, series."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bench import metrics as m

if TYPE_CHECKING:
    from bench.sim.run import SimConfig, _Built, _Port

SCHEMA_VERSION = 1


def _round(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_round(v) for v in value]
    return value


def _link_stats(link: Any, port: _Port) -> dict[str, Any]:
    """Counters from bench.link's stats plus what the port saw; queuing delay in ms."""
    stats = getattr(link, "stats", None)
    delays: Sequence[float] | None = None
    source = "transit-minus-propagation"
    for name in ("queueing_delays", "queuing_delays", "queue_delays", "delays"):
        value = getattr(stats, name, None)
        if isinstance(value, (list, tuple)) and (not value or isinstance(value[0], float)):
            delays, source = value, f"link.stats.{name}"
            break
    if delays is None:
        delays = port.excess
    sent = len(port.sent_times)
    delivered = sum(port.delivered_mask)
    return {
        "sent": sent,
        "delivered": delivered,
        "dropped_queue": getattr(stats, "dropped_queue", None),
        "dropped_loss": getattr(stats, "dropped_loss", None),
        "loss": m.loss_fraction(sent, delivered),
        "queuing_delay_ms": m.latency_summary(list(delays)),
        "queuing_delay_source": source,
    }


def _link_loss_series(port: _Port, bin_size: float, duration: float) -> list[float | None]:
    ones = [1.0] * len(port.sent_times)
    sent = m.bin_sum(port.sent_times, ones, bin_size, duration)
    lost = m.bin_sum(port.sent_times, [1.0 - d for d in port.delivered_mask], bin_size, duration)
    return m.ratio_series(lost, sent)


def _residual(sent_times: Sequence[float], first: int | None, received: set[int],
              bin_size: float, duration: float) -> tuple[int, int, list[float]]:
    """(sent since first received, received unique, per-bin never-received counts by send time)."""
    if first is None:
        return 0, 0, [0.0] * max(1, math.ceil(duration / bin_size - 1e-9))
    idx = range(first, len(sent_times))
    times = [sent_times[i] for i in idx]
    missing = [0.0 if i in received else 1.0 for i in idx]
    return len(idx), sum(1 for i in received if i >= first), m.bin_sum(times, missing, bin_size,
                                                                          duration)


def collect(config: SimConfig, built: _Built) -> dict[str, Any]:
    pub = built.publisher
    bin_size = config.bin
    span = config.duration
    n_bins = max(1, math.ceil(span / bin_size - 1e-9))
    bin_times = [i * bin_size for i in range(n_bins)]

    up_stats = _link_stats(built.up_link, built.up)
    up_loss_series = _link_loss_series(built.up, bin_size, span)

    def bottleneck(t: float) -> float:
        rates = [c.rate_at(t) for c in (built.up_capacity, built.down_capacity) if c is not None]
        return min(rates)

    has_capacity = built.up_capacity is not None or built.down_capacity is not None
    capacity = m.capacity_series(bottleneck if has_capacity else None, bin_size, span)
    sent_bitrate = m.bitrate_series(pub.video.times + pub.audio.times,
                                    pub.video.sizes + pub.audio.sizes, bin_size, span)
    video_frames_sent = len(pub.frames.times)
    recovery = built.node.recovery
    estimator = built.node.estimator

    streams: dict[str, Any] = {}
    series_subs: dict[str, Any] = {}
    pooled_latency: list[float] = []
    pooled_frame_latency: list[float] = []
    agg: dict[str, list[float]] = {}

    for sub, port, link in zip(built.subscribers, built.downs, built.down_links, strict=True):
        down_stats = _link_stats(link, port)
        v, a, r = sub.video, sub.audio, sub.rendered
        v_first = min(v.indices) if v.indices else None
        a_first = min(a.indices) if a.indices else None
        v_sent, v_recv, v_missing = _residual(pub.video.times, v_first, set(v.indices),
                                              bin_size, span)
        a_sent, a_recv, a_missing = _residual(pub.audio.times, a_first, set(a.indices),
                                              bin_size, span)
        # Audio that could play: arrived (original or recovered) within 300 ms of sending.
        on_time = {i for i, lat in zip(a.indices, a.latencies, strict=True) if lat <= 0.3}
        a_on_time = len(on_time) / a_sent if a_sent else None
        # Frames count from the first one rendered (the join delay is its own metric), or
        # from the join when nothing ever rendered.
        f_first = r.frames[0] if r.frames else bisect_left(pub.frames.times, config.join_at)
        frames_since = video_frames_sent - f_first
        frames_rendered = len(set(r.frames))
        fr = m.freezes(r.times)
        no_video = m.time_without_video(config.join_at, r.times, span)
        latencies = v.latencies + a.latencies
        pooled_latency += latencies
        pooled_frame_latency += r.latencies
        arrivals = v.arrivals + a.arrivals
        sizes = v.sizes + a.sizes
        received_bitrate = m.bitrate_series(arrivals, sizes, bin_size, span)
        util = m.utilisation(received_bitrate, capacity, bin_size, config.convergence)
        before = m.combine_loss(up_stats["loss"], down_stats["loss"])
        residual = m.loss_fraction(v_sent + a_sent, v_recv + a_recv)
        frames_not_rendered = m.loss_fraction(frames_since, frames_rendered)
        join_ff = m.join_to_first_frame(config.join_at, r.times)
        active = max(1e-9, span - config.join_at)
        mean_rx = sum(sizes) * 8 / active if sizes else 0.0

        stream = {
            "video": {
                "packets_sent": v_sent,
                "packets_received": v_recv,
                "residual_loss": m.loss_fraction(v_sent, v_recv),
                "latency_ms": m.latency_summary(v.latencies),
                "frames_sent": frames_since,
                "frames_rendered": frames_rendered,
                "frames_not_rendered": frames_not_rendered,
                "frames_discarded_undecodable": sub.frames_discarded,
                "keyframes_rendered": r.keyframes,
                "frame_latency_ms": m.latency_summary(r.latencies),
                "freezes": fr.as_dict(),
                "time_without_video_s": no_video,
                "plis_sent": sub.plis_sent,
                "nacks_sent": sub.nacks_sent,
                "join_to_first_frame_s": join_ff,
            },
            "audio": {
                "packets_sent": a_sent,
                "packets_received": a_recv,
                "residual_loss": m.loss_fraction(a_sent, a_recv),
                "latency_ms": m.latency_summary(a.latencies),
                "played": sub.audio_played,
                "late": sub.audio_late,
                "playout_deadline_ms": sub.config.audio_deadline * 1000,
                "delivered_within_300ms": a_on_time,
            },
            "downlink": down_stats,
            "loss_before_recovery": before,
            "residual_loss": residual,
            "received_bitrate_bps": mean_rx,
            "utilisation": util,
        }
        streams[sub.name] = stream
        for key, value in (("residual_loss", residual), ("loss_before_recovery", before),
                           ("frames_not_rendered", frames_not_rendered),
                           ("freeze_count", float(fr.count)),
                           ("freeze_total_s", fr.total_duration),
                           ("time_without_video_s", no_video),
                           ("received_bitrate_bps", mean_rx),
                           ("join_to_first_frame_s", join_ff),
                           ("audio_delivered_within_300ms", a_on_time),
                           ("video_residual_loss", m.loss_fraction(v_sent, v_recv)),
                           ("video_latency_p95_ms", m.latency_summary(v.latencies)["p95"]),
                           ("nack_bytes", float(_sub_nack_bytes(sub))),
                           ("utilisation", util),
                           ("downlink_queuing_p95_ms", down_stats["queuing_delay_ms"]["p95"])):
            if value is not None:
                agg.setdefault(key, []).append(value)

        down_loss_series = _link_loss_series(port, bin_size, span)
        before_series = [
            None if u is None and d is None else m.combine_loss(u or 0.0, d or 0.0)
            for u, d in zip(up_loss_series, down_loss_series, strict=True)
        ]
        sent_counts = [0.0] * n_bins
        first_idx = {"v": v_first, "a": a_first}
        for key, times in (("v", pub.video.times), ("a", pub.audio.times)):
            first = first_idx[key]
            if first is None:
                continue
            rest = times[first:]
            for i, c in enumerate(m.bin_sum(rest, [1.0] * len(rest), bin_size, span)):
                sent_counts[i] += c
        missing = [x + y for x, y in zip(v_missing, a_missing, strict=True)]
        series_subs[sub.name] = {
            "received_bitrate_bps": received_bitrate,
            "latency_p50_ms": _ms(m.binned_percentile(arrivals, latencies, bin_size, span, 50)),
            "latency_p95_ms": _ms(m.binned_percentile(arrivals, latencies, bin_size, span, 95)),
            "frame_latency_p95_ms": _ms(m.binned_percentile(r.times, r.latencies, bin_size,
                                                            span, 95)),
            "rendered_fps": [c / bin_size for c in m.bin_sum(r.times, [1.0] * len(r.times),
                                                             bin_size, span)],
            "loss_before_recovery": before_series,
            "residual_loss": m.ratio_series(missing, sent_counts),
            "downlink_loss": down_loss_series,
            "layer_switches": [0] * n_bins,
            "freezes_s": [[a, d] for a, d in zip(fr.starts, fr.durations, strict=True)],
        }

    def mean(key: str) -> float | None:
        values = agg.get(key)
        return sum(values) / len(values) if values else None

    lat = m.latency_summary(pooled_latency)
    frame_lat = m.latency_summary(pooled_frame_latency)
    n = built.node.counters
    headline = {
        "recovery": recovery.name,
        "estimator": estimator.name,
        "latency_p50_ms": lat["p50"],
        "latency_p95_ms": lat["p95"],
        "latency_p99_ms": lat["p99"],
        "frame_latency_p95_ms": frame_lat["p95"],
        "freeze_count": mean("freeze_count"),
        "freeze_total_s": mean("freeze_total_s"),
        "time_without_video_s": mean("time_without_video_s"),
        "loss_before_recovery": mean("loss_before_recovery"),
        "residual_loss": mean("residual_loss"),
        "frames_not_rendered": mean("frames_not_rendered"),
        "received_bitrate_bps": mean("received_bitrate_bps"),
        "utilisation": mean("utilisation"),
        "queuing_delay_p95_ms": {
            "uplink": up_stats["queuing_delay_ms"]["p95"],
            "downlink": mean("downlink_queuing_p95_ms"),
        },
        "overhead_nack_rtx_fec": _overhead(recovery, n.bytes_forwarded,
                                           sum(_sub_nack_bytes(s) for s in built.subscribers)),
        "video_residual_loss": mean("video_residual_loss"),
        "video_latency_p95_ms": mean("video_latency_p95_ms"),
        "audio_delivered_within_300ms": mean("audio_delivered_within_300ms"),
        "layer_switches": estimator.layer_switches,
        "join_to_first_frame_s": mean("join_to_first_frame_s"),
        "cpu_per_forwarded_packet_us": None,
    }
    report = {
        "schema": SCHEMA_VERSION,
        "scenario": config.name,
        "seed": config.seed,
        "duration": config.duration,
        "config": config.public(),
        "metrics": {
            "aggregate": headline,
            "publisher": {
                "video_packets": len(pub.video.times),
                "audio_packets": len(pub.audio.times),
                "frames": video_frames_sent,
                "keyframes": pub.keyframes_sent,
                "forced_keyframes": pub.forced_keyframes,
                "plis_received": pub.plis_received,
                "sent_bitrate_bps": (sum(pub.video.sizes) + sum(pub.audio.sizes)) * 8
                / config.duration,
            },
            "uplink": up_stats,
            "node": {
                "packets_in": n.packets_in,
                "packets_forwarded": n.packets_forwarded,
                "dropped_waiting_keyframe": n.dropped_waiting_keyframe,
                "keyframe_requests": n.keyframe_requests,
                "plis_upstream": n.plis_upstream,
                "plis_suppressed": n.plis_suppressed,
                "recovery": {"name": recovery.name, "rtx_packets": recovery.rtx_packets,
                             "fec_packets": recovery.fec_packets,
                             "overhead_bytes": recovery.overhead_bytes},
                "cpu_per_forwarded_packet_us": None,
            },
            "subscribers": streams,
        },
        "series": {
            "bin_s": bin_size,
            "t": bin_times,
            "capacity_bps": capacity,
            "sent_bitrate_bps": sent_bitrate,
            "uplink_loss": up_loss_series,
            "subscribers": series_subs,
        },
    }
    return _round(report)


def _ms(values: list[float | None]) -> list[float | None]:
    return [None if v is None else v * 1000 for v in values]


def _sub_nack_bytes(sub: Any) -> int:
    rec = getattr(sub, "recovery", None)
    return int(getattr(rec, "nack_bytes", 0))


def _overhead(recovery: Any, media_bytes: int, nack_bytes: int = 0) -> dict[str, float | int]:
    """Recovery bytes against the media bytes forwarded: RTX, FEC, RED (node to viewers) and
    NACK (viewers' RTCP plus the node's upstream NACKs)."""
    nack_total = nack_bytes + int(getattr(recovery, "nack_bytes_upstream", 0))
    total = recovery.overhead_bytes + nack_total
    return {
        "rtx_packets": recovery.rtx_packets,
        "fec_packets": recovery.fec_packets,
        "rtx_bytes": int(getattr(recovery, "rtx_bytes", 0)),
        "fec_bytes": int(getattr(recovery, "fec_bytes", 0)),
        "red_bytes": int(getattr(recovery, "red_bytes", 0)),
        "nack_bytes": nack_total,
        "upstream_nacks": int(getattr(recovery, "upstream_nacks", 0)),
        "overhead_bytes": total,
        "media_bytes": media_bytes,
        "ratio": total / media_bytes if media_bytes else 0.0,
    }
