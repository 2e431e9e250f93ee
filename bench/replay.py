"""``python -m bench replay``: real-time trace replay against a running (or spawned) node.

One :class:`~bench.rawpeer.RawPublisher` (the pre-encoded ~1 Mbit/s VP8 + Opus stream) and K
non-decoding subscribers on loopback. Their media crosses :class:`~bench.proxy.ImpairmentProxy`
instances: the publisher's uplink through one, every subscriber's downlink through another
(each client its own link, seeded ``seed + n``), configured from ``--up-trace/--down-trace``
(:func:`bench.traces.load_trace` specs), ``--up-loss/--down-loss`` (:func:`bench.loss.parse_loss`
specs) and ``--delay/--jitter/--queue-ms`` (both directions, one-way). The clients point at
the proxy by rewriting the candidates of the node's answer
(:func:`bench.proxy.rewrite_candidates`), as a real client would simply receive them.

Measured over the window, per subscriber: loss on the links (proxy link counters: before
recovery), residual loss (packets that never reached the subscriber: after recovery),
per-packet one-way latency (publisher send time of the VP8 picture id to arrival, same
process), received bitrate against the bottleneck capacity, in bins. With ``--recovery none``
(the default) the rawpeer subscribers send no NACK, so residual loss equals what the links
dropped (and anything the node dropped). With ``--recovery nack`` they offer RTX, NACK
video gaps (sfu.core.nack.NackGenerator, RTT assumed = 2 x --delay + --jitter + 5 ms),
unwrap the node's RTX, drop duplicates and send receiver reports: residual loss is then
what the node's retransmissions did not repair. The publisher never retransmits (loss on
its uplink stays unrepaired). Per frame: ``frames_incomplete`` (a frame with any packet
missing, a stand-in for a frozen/undecodable frame) and the frame latency (send to arrival
of its last packet).

Output: ``<out>/report.json`` (the bench report shape of docs/bench.md, fields that a
real-time run cannot fill are null), ``summary.md`` and the PNG plots of
:func:`bench.report.plot_run`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from bench import runner
from bench.link import LinkConfig
from bench.load import LoadError, Target, _seconds, node_target, token
from bench.loss import LossSpecError, parse_loss
from bench.rawpeer import MAX_ARRIVALS, RawPeer, RawPublisher, read_answer
from bench.traces import CapacityTrace, TraceError, load_trace

MAX_RECORDS = 1_000_000
CONNECT_TIMEOUT = 30.0


@dataclass
class ReplayOptions:
    url: str | None = None
    spawn: bool = False
    subscribers: int = 2
    duration: float = 30.0
    warmup: float = 2.0
    up_trace: str | None = None
    down_trace: str | None = None
    up_loss: str = "none"
    down_loss: str = "none"
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    queue_ms: float | None = None
    seed: int = 1
    recovery: str = "none"  # none | nack (subscribers NACK, RTX negotiated)
    bin_s: float = 1.0
    plots: bool = True
    out: Path = Path("bench-results/replay")


def link_config(trace: str | None, loss: str, opts: ReplayOptions, *, direction: str,
                seed: int) -> LinkConfig:
    """One direction's LinkConfig from the command-line specs (raises TraceError,
    LossSpecError)."""
    return LinkConfig(
        capacity=load_trace(trace, direction=direction) if trace else None,
        queue_ms=opts.queue_ms,
        delay=opts.delay_ms / 1000,
        jitter=opts.jitter_ms / 1000,
        loss=parse_loss(loss, seed),
        seed=seed,
    )


class _Publisher(RawPublisher):
    """Logs every frame (send time, picture id, packets, bytes) and audio packet."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.frame_log: list[tuple[float, int, int, int]] = []  # (t, pid, packets, bytes)
        self.audio_log: list[tuple[float, int]] = []

    def send_frame(self) -> None:
        pid = self.picture_id
        n0, b0 = self.sent["video"], self.sent_bytes["video"]
        super().send_frame()
        if len(self.frame_log) < MAX_RECORDS:
            self.frame_log.append((self.send_times[pid], pid, self.sent["video"] - n0,
                                   self.sent_bytes["video"] - b0))

    def send_audio(self) -> None:
        b0 = self.sent_bytes["audio"]
        super().send_audio()
        if len(self.audio_log) < MAX_RECORDS:
            self.audio_log.append((time.monotonic(), self.sent_bytes["audio"] - b0))


class _Subscriber(RawPeer):
    """Also logs (arrival time, bytes) of every SRTP media packet while recording."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.rx_log: list[tuple[float, int]] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        super().datagram_received(data, addr)
        if (self.recording and 127 < data[0] < 192 and not 192 <= data[1] <= 223
                and len(self.rx_log) < MAX_RECORDS):
            self.rx_log.append((time.monotonic(), len(data)))


async def _connect_via_proxy(peer: RawPeer, http: aiohttp.ClientSession, target: Target,
                             room: str, grant: str, proxies: list[Any],
                             make_proxy: Any) -> None:
    """WHIP/WHEP POST, then ICE/DTLS towards the proxy that ``make_proxy`` returns for the
    node's media address (candidates rewritten, as the client receives them)."""
    from bench.proxy import rewrite_candidates

    await peer.open()
    endpoint = "whip" if peer.publish else "whep"
    url = f"{target.url}/{endpoint}/{urllib.parse.quote(room, safe='')}"
    async with http.post(url, data=peer.offer().encode(), headers={
            "Content-Type": "application/sdp",
            "Authorization": f"Bearer {token(target, room, peer.name, grant)}"},
            timeout=aiohttp.ClientTimeout(total=15)) as resp:
        body = await resp.text()
        if resp.status != 201:
            raise LoadError(f"{endpoint} POST: HTTP {resp.status}: {body.strip()[:200]}")
        peer.location = urllib.parse.urljoin(url, resp.headers.get("Location", ""))
    host = urllib.parse.urlsplit(target.url).hostname or "127.0.0.1"
    node_addr = read_answer(body, host).address
    proxy = await make_proxy(node_addr)
    proxies.append(proxy)
    await peer.start_media(rewrite_candidates(body, proxy.address), host)


def _bins(duration: float, bin_s: float) -> int:
    return max(1, int(np.ceil(duration / bin_s)))


def _link_metrics(stats: Any) -> dict[str, Any]:
    from bench.metrics import latency_summary

    sent = stats.sent
    return {"sent": sent, "delivered": stats.delivered, "dropped_queue": stats.dropped_queue,
            "dropped_loss": stats.dropped_loss,
            "loss": (stats.dropped / sent) if sent else None,
            "queuing_delay_ms": latency_summary(stats.queue_delays),
            "queuing_delay_source": "bench.link.LinkStats.queue_delays (proxy, real time)"}


def _r(v: float | None, nd: int = 6) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), nd)


def build_report(opts: ReplayOptions, pub: _Publisher, subs: list[_Subscriber],
                 w0: float, w1: float, up_stats: Any, down_stats: list[Any],
                 up_trace: CapacityTrace | None, down_trace: CapacityTrace | None,
                 up_start: float | None, down_starts: list[float | None],
                 audio_counts: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """The report dict from the raw logs of one window (pure)."""
    from bench.metrics import latency_summary, percentile

    duration = w1 - w0
    nb = _bins(duration, opts.bin_s)
    edges = [w0 + i * opts.bin_s for i in range(nb + 1)]

    def bin_of(t: float) -> int:
        return min(nb - 1, max(0, int((t - w0) / opts.bin_s)))

    frames = [f for f in pub.frame_log if w0 <= f[0] < w1]
    frame_pids = {pid: (t, n) for t, pid, n, _ in frames}
    sent_bits = [0.0] * nb
    for t, _pid, _n, b in frames:
        sent_bits[bin_of(t)] += b * 8
    for t, b in pub.audio_log:
        if w0 <= t < w1:
            sent_bits[bin_of(t)] += b * 8

    def cap(trace: CapacityTrace | None, start: float | None, t: float) -> float | None:
        if trace is None or start is None:
            return None
        return float(trace.rate_at(max(0.0, t - start)))

    capacity: list[float | None] = []
    for i in range(nb):
        mid = edges[i] + opts.bin_s / 2
        rates = [r for r in (cap(up_trace, up_start, mid),
                             *(cap(down_trace, s, mid) for s in down_starts[:1])) if r is not None]
        capacity.append(min(rates) if rates else None)

    up_loss = _link_metrics(up_stats) if up_stats is not None else None
    series_subs: dict[str, Any] = {}
    metrics_subs: dict[str, Any] = {}
    all_lat: list[float] = []
    all_frame_lat: list[float] = []
    agg_incomplete: list[float] = []
    agg_loss_before: list[float] = []
    agg_residual: list[float] = []
    agg_rx: list[float] = []
    agg_util: list[float] = []
    for i, s in enumerate(subs):
        lat_bins: list[list[float]] = [[] for _ in range(nb)]
        got: dict[int, int] = {}
        lat: list[float] = []
        last_at: dict[int, float] = {}
        for pid, t in s.arrivals:
            f = frame_pids.get(pid)
            if f is None:
                continue
            got[pid] = got.get(pid, 0) + 1
            last_at[pid] = max(last_at.get(pid, t), t)
            ms = (t - f[0]) * 1000
            lat.append(ms)
            lat_bins[bin_of(f[0])].append(ms)
        all_lat += lat
        exp_bins = [0] * nb
        got_bins = [0] * nb
        for pid, (t, n) in frame_pids.items():
            exp_bins[bin_of(t)] += n
            got_bins[bin_of(t)] += min(n, got.get(pid, 0))
        rx_bits = [0.0] * nb
        for t, b in s.rx_log:
            if w0 <= t < w1 + 1.0:
                rx_bits[bin_of(t)] += b * 8
        rx_bps = [b / opts.bin_s for b in rx_bits]
        v_sent = sum(exp_bins)
        v_got = sum(got_bins)
        incomplete = sum(1 for pid, (_t, n) in frame_pids.items() if got.get(pid, 0) < n)
        frame_lat = [last_at[pid] - t for pid, (t, n) in frame_pids.items()
                     if got.get(pid, 0) >= n]
        all_frame_lat += frame_lat
        if frame_pids:
            agg_incomplete.append(incomplete / len(frame_pids))
        rec = {"nacks_sent": s.nacks_sent, "nacked_seqs": s.nacked_seqs,
               "rtx_received": s.rtx_received, "rtx_bytes": s.rtx_bytes,
               "duplicates": s.duplicates, "plis_sent": s.plis_sent,
               # RTX bytes received (duplicates included) / media bytes received
               "rtx_overhead": _r(s.rtx_bytes / max(1, s.bytes["video"] + s.bytes["audio"]))}
        a_sent, a_got = audio_counts.get(s.name, (0, 0))
        residual = 1 - (v_got + a_got) / (v_sent + a_sent) if v_sent + a_sent else None
        down = _link_metrics(down_stats[i]) if i < len(down_stats) and down_stats[i] else None
        lb_parts = [x["loss"] for x in (up_loss, down) if x and x["loss"] is not None]
        before = 1 - float(np.prod([1 - x for x in lb_parts])) if lb_parts else 0.0
        util = [r / c for r, c in zip(rx_bps, capacity, strict=True) if c]
        rx_mean = sum(rx_bits) / duration
        agg_loss_before.append(before)
        if residual is not None:
            agg_residual.append(residual)
        agg_rx.append(rx_mean)
        if util:
            agg_util.append(float(np.mean(util)))
        metrics_subs[s.name] = {
            "video": {"packets_sent": v_sent, "packets_received": v_got,
                      "residual_loss": _r(1 - v_got / v_sent) if v_sent else None,
                      "latency_ms": latency_summary([x / 1000 for x in lat]),
                      "frames": len(frame_pids), "frames_incomplete": incomplete,
                      "frame_latency_ms": latency_summary(frame_lat)},
            "recovery": rec,
            "audio": {"packets_sent": a_sent, "packets_received": a_got,
                      "residual_loss": _r(1 - a_got / a_sent) if a_sent else None},
            "downlink": down,
            "loss_before_recovery": _r(before), "residual_loss": _r(residual),
            "received_bitrate_bps": _r(rx_mean, 1),
            "utilisation": _r(float(np.mean(util))) if util else None,
        }
        series_subs[s.name] = {
            "received_bitrate_bps": [_r(x, 1) for x in rx_bps],
            "latency_p50_ms": [_r(percentile(b, 50)) for b in lat_bins],
            "latency_p95_ms": [_r(percentile(b, 95)) for b in lat_bins],
            "frame_latency_p95_ms": [None] * nb,
            "loss_before_recovery": [None] * nb,
            "residual_loss": [_r(1 - g / e) if e else None
                              for g, e in zip(got_bins, exp_bins, strict=True)],
            "layer_switches": [0] * nb,
            "freezes_s": [],
        }
    lat_all = latency_summary([x / 1000 for x in all_lat])
    flat = latency_summary(all_frame_lat)
    tot = [m["recovery"] for m in metrics_subs.values()]
    aggregate = {
        "recovery": ("none (rawpeer clients: no NACK, no RTX/FEC)" if opts.recovery == "none"
                     else "nack (subscribers NACK; the node answers on RTX from its History)"),
        "estimator": "none",
        "nacks_sent": sum(r["nacks_sent"] for r in tot),
        "nacked_seqs": sum(r["nacked_seqs"] for r in tot),
        "rtx_received": sum(r["rtx_received"] for r in tot),
        "rtx_duplicates": sum(r["duplicates"] for r in tot),
        "plis_sent": sum(r["plis_sent"] for r in tot),
        "rtx_overhead": _r(float(np.mean([r["rtx_overhead"] for r in tot]))) if tot else None,
        "frames_incomplete": _r(float(np.mean(agg_incomplete))) if agg_incomplete else None,
        "latency_p50_ms": _r(lat_all["p50"]), "latency_p95_ms": _r(lat_all["p95"]),
        "latency_p99_ms": _r(lat_all["p99"]),
        "frame_latency_p95_ms": _r(flat["p95"]), "freeze_count": None, "freeze_total_s": None,
        "time_without_video_s": None, "frames_not_rendered": None,
        "loss_before_recovery": _r(float(np.mean(agg_loss_before))) if agg_loss_before else None,
        "residual_loss": _r(float(np.mean(agg_residual))) if agg_residual else None,
        "received_bitrate_bps": _r(float(np.mean(agg_rx)), 1) if agg_rx else None,
        "utilisation": _r(float(np.mean(agg_util))) if agg_util else None,
        "queuing_delay_p95_ms": {
            "uplink": (up_loss or {}).get("queuing_delay_ms", {}).get("p95"),
            "downlink": (metrics_subs[subs[0].name]["downlink"] or {}).get(
                "queuing_delay_ms", {}).get("p95") if subs else None},
        "layer_switches": 0, "join_to_first_frame_s": None,
        "cpu_per_forwarded_packet_us": None,
    }
    return {
        "schema": 1, "mode": "real-time replay (bench replay)",
        "scenario": "replay", "seed": opts.seed, "duration": round(duration, 3),
        "config": {
            "subscribers": len(subs), "bin": opts.bin_s, "duration": opts.duration,
            "recovery": opts.recovery,
            "up": {"trace": opts.up_trace, "loss": opts.up_loss, "delay_ms": opts.delay_ms,
                   "jitter_ms": opts.jitter_ms, "queue_ms": opts.queue_ms},
            "down": {"trace": opts.down_trace, "loss": opts.down_loss,
                     "delay_ms": opts.delay_ms, "jitter_ms": opts.jitter_ms,
                     "queue_ms": opts.queue_ms},
        },
        "metrics": {"aggregate": aggregate,
                    "publisher": {"video_packets": sum(f[2] for f in frames),
                                  "audio_packets": sum(1 for t, _ in pub.audio_log
                                                       if w0 <= t < w1),
                                  "frames": len(frames), "plis_received": pub.plis,
                                  "sent_bitrate_bps": _r(sum(sent_bits) / duration, 1)},
                    "uplink": up_loss, "subscribers": metrics_subs},
        "series": {"bin_s": opts.bin_s, "t": [round(e - w0, 3) for e in edges[:-1]],
                   "capacity_bps": capacity,
                   "sent_bitrate_bps": [_r(b / opts.bin_s, 1) for b in sent_bits],
                   "subscribers": series_subs},
    }


async def _replay(opts: ReplayOptions) -> dict[str, Any]:
    from aiortc.rtcdtlstransport import RTCCertificate

    from bench.load import _stream
    from bench.proxy import ImpairmentProxy

    try:
        up_cfg = link_config(opts.up_trace, opts.up_loss, opts, direction="uplink",
                             seed=opts.seed)
        down_cfg = link_config(opts.down_trace, opts.down_loss, opts, direction="downlink",
                               seed=opts.seed + 1000)
    except (TraceError, LossSpecError, OSError, ValueError) as exc:
        raise LoadError(str(exc)) from None
    proxies: list[ImpairmentProxy] = []
    up_proxy: list[ImpairmentProxy] = []
    down_proxy: list[ImpairmentProxy] = []

    async def make_up(addr: tuple[str, int]) -> ImpairmentProxy:
        p = ImpairmentProxy(addr, up_cfg, None)
        await p.start()
        up_proxy.append(p)
        return p

    async def make_down(addr: tuple[str, int]) -> ImpairmentProxy:
        if not down_proxy:
            p = ImpairmentProxy(addr, None, down_cfg)
            await p.start()
            down_proxy.append(p)
        return down_proxy[0]

    async with aiohttp.ClientSession() as http:
        with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
            async with node_target(http, opts.url, opts.spawn, Path(tmp)) as (target, _c, _p):
                print("encoding the stream (VP8 640x360 30 fps ~1 Mbit/s + Opus)")
                stream = _stream()
                cert = RTCCertificate.generateCertificate()
                room = f"replay-{int(time.time())}"
                pub = _Publisher(cert, stream, name="pub")
                rtt = (2 * opts.delay_ms + opts.jitter_ms + 5) / 1000
                subs = [_Subscriber(cert, publish=False, name=f"sub{i}",
                                    nack=opts.recovery == "nack", nack_rtt=rtt)
                        for i in range(opts.subscribers)]
                try:
                    await asyncio.wait_for(_connect_via_proxy(
                        pub, http, target, room, "publish", proxies, make_up), CONNECT_TIMEOUT)
                    pub.start(opts.warmup + opts.duration + CONNECT_TIMEOUT + 60)
                    for s in subs:
                        await asyncio.wait_for(_connect_via_proxy(
                            s, http, target, room, "subscribe", proxies, make_down),
                            CONNECT_TIMEOUT)
                    await asyncio.sleep(opts.warmup)
                    drain = 1.0 + (opts.delay_ms + opts.jitter_ms + (opts.queue_ms or 300)) / 1000
                    up_flow = next(iter(up_proxy[0].flows.values()))
                    down_flows = [down_proxy[0].flows.get(s.local or ("", 0)) for s in subs]
                    a0 = {s.name: s.packets["audio"] for s in subs}
                    pa0 = pub.sent["audio"]
                    for s in subs:
                        s.arrivals.clear()
                        s.recording = True
                    up_s0 = _snap(up_flow.up.link)
                    down_s0 = [_snap(f.down.link if f else None) for f in down_flows]
                    w0 = time.monotonic()
                    print(f"replaying {opts.duration:g} s to {len(subs)} subscriber(s)")
                    await asyncio.sleep(opts.duration)
                    pub.paused = True
                    w1 = time.monotonic()
                    pa1 = pub.sent["audio"]
                    await asyncio.sleep(drain)
                    for s in subs:
                        s.recording = False
                    up_stats = _diff(up_flow.up.link, up_s0)
                    down_stats = [_diff(f.down.link if f else None, d0)
                                  for f, d0 in zip(down_flows, down_s0, strict=True)]
                    audio = {s.name: (pa1 - pa0, s.packets["audio"] - a0[s.name]) for s in subs}
                    report = build_report(
                        opts, pub, subs, w0, w1, up_stats, down_stats,
                        up_cfg.capacity, down_cfg.capacity,
                        up_flow.up.link.start if up_flow.up.link is not None else None,
                        [f.down.link.start if f is not None and f.down.link is not None else None
                         for f in down_flows],
                        audio)
                    if any(len(s.arrivals) >= MAX_ARRIVALS for s in subs):
                        report["warning"] = "arrival log full: shorten --duration"
                finally:
                    for s in subs:
                        await s.close(http, token(target, room, s.name, "subscribe"))
                    await pub.close(http, token(target, room, pub.name, "publish"))
                    for p in up_proxy + down_proxy:
                        await p.stop()
    report["command"] = "python -m bench " + " ".join(sys.argv[1:])
    report["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return report


class _StatsSnap:
    """A copy of a LinkStats' counters and how many queue delays it had."""

    def __init__(self, stats: Any) -> None:
        self.sent, self.delivered = stats.sent, stats.delivered
        self.dropped_queue, self.dropped_loss = stats.dropped_queue, stats.dropped_loss
        self.n_delays = len(stats.queue_delays)
        self.queue_delays: list[float] = []

    @property
    def dropped(self) -> int:
        return self.dropped_queue + self.dropped_loss


def _snap(link: Any) -> _StatsSnap | None:
    return _StatsSnap(link.stats) if link is not None else None


def _diff(link: Any, before: _StatsSnap | None) -> _StatsSnap | None:
    if link is None or before is None:
        return None
    now = _StatsSnap(link.stats)
    for name in ("sent", "delivered", "dropped_queue", "dropped_loss"):
        setattr(now, name, getattr(now, name) - getattr(before, name))
    now.queue_delays = list(link.stats.queue_delays[before.n_delays:])
    return now


def write_outputs(report: dict[str, Any], out: Path, plots: bool) -> list[str]:
    """report.json, summary.md and (with bench.report) the PNGs. Returns what was written."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    written = ["report.json"]
    table = ""
    try:
        from bench import report as rep

        table = rep.markdown_table([{"scenario": "replay", **report["metrics"]["aggregate"]}])
        if plots:
            rep.plot_run(report, out)
            written += [p for p in rep.PLOTS if (out / p).exists()]
    except ImportError:
        written.append("(bench/report.py unavailable: JSON only)")
    cfg = report["config"]
    md = ["# Real-time replay", "", f"`{report.get('command', '')}`", "",
          f"{cfg['subscribers']} subscriber(s), {report['duration']:g} s window; uplink "
          f"{cfg['up']}, downlink {cfg['down']}.", "",
          (f"Recovery: {report['metrics']['aggregate']['recovery']}. Residual loss is what "
           "the links (and the node) dropped and recovery did not repair."), "", table]
    (out / "summary.md").write_text("\n".join(md) + "\n")
    written.append("summary.md")
    return written


def summary_line(report: dict[str, Any]) -> str:
    a = report["metrics"]["aggregate"]

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.2f}%"

    rx = a["received_bitrate_bps"]
    return (f"latency p50/p95/p99 {a['latency_p50_ms']}/{a['latency_p95_ms']}/"
            f"{a['latency_p99_ms']} ms; loss on the links {pct(a['loss_before_recovery'])}, "
            f"residual {pct(a['residual_loss'])} (recovery: {a['recovery'].split()[0]}); "
            f"frames incomplete {pct(a.get('frames_incomplete'))}, frame latency p95 "
            f"{a.get('frame_latency_p95_ms')} ms; NACKed seqs {a.get('nacked_seqs')}, RTX in "
            f"{a.get('rtx_received')} (overhead {pct(a.get('rtx_overhead'))}); received "
            f"{'n/a' if rx is None else f'{rx / 1e6:.3f}'} Mbit/s, utilisation "
            f"{pct(a['utilisation'])}")


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rp = sub.add_parser("replay", help="real-time trace replay through the impairment proxy "
                        "against a running or spawned node")
    where = rp.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running node (SFU_API_KEY / SFU_API_SECRET)")
    where.add_argument("--spawn", action="store_true", help="start a node subprocess")
    rp.add_argument("--subscribers", type=int, default=2, help="subscribers K (default 2)")
    rp.add_argument("--duration", type=_seconds, default=30.0, help="window, s (default 30)")
    rp.add_argument("--warmup", type=_seconds, default=2.0, help="warm-up, s (default 2)")
    rp.add_argument("--up-trace", help="publisher uplink capacity: const:2M, rfc8867, "
                    "a Mahimahi file or a JSON trace")
    rp.add_argument("--down-trace", help="subscriber downlink capacity (same syntax)")
    rp.add_argument("--up-loss", default="none", help="e.g. bernoulli:2%%, ge:loss=5%%,burst=3")
    rp.add_argument("--down-loss", default="none", help="same syntax, each subscriber")
    rp.add_argument("--delay", type=float, default=0.0, help="one-way delay, ms, both ways")
    rp.add_argument("--jitter", type=float, default=0.0, help="jitter, ms, both ways")
    rp.add_argument("--queue-ms", type=float, default=None,
                    help="bottleneck queue limit, ms (default 300 when a trace is set)")
    rp.add_argument("--seed", type=int, default=1)
    rp.add_argument("--recovery", choices=("none", "nack"), default="none",
                    help="subscribers NACK video gaps (RTX negotiated) or not (default none)")
    rp.add_argument("--bin", type=float, default=1.0, help="series bin, s (default 1)")
    rp.add_argument("--no-plots", action="store_true")
    rp.add_argument("--out", type=Path, default=Path("bench-results/replay"),
                    help="output directory (default bench-results/replay)")


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.subscribers <= 50:
        print("error: --subscribers must be in 1..50", file=sys.stderr)
        return 2
    for name in ("delay", "jitter"):
        if not 0 <= getattr(args, name) <= 10_000:
            print(f"error: --{name} must be in 0..10000 ms", file=sys.stderr)
            return 2
    if args.queue_ms is not None and not 0 <= args.queue_ms <= 10_000:
        print("error: --queue-ms must be in 0..10000", file=sys.stderr)
        return 2
    if not 0.1 <= args.bin <= 10:
        print("error: --bin must be in 0.1..10 s", file=sys.stderr)
        return 2
    opts = ReplayOptions(
        url=args.url, spawn=args.spawn, subscribers=args.subscribers, duration=args.duration,
        warmup=args.warmup, up_trace=args.up_trace, down_trace=args.down_trace,
        up_loss=args.up_loss, down_loss=args.down_loss, delay_ms=args.delay,
        jitter_ms=args.jitter, queue_ms=args.queue_ms, seed=args.seed, bin_s=args.bin,
        recovery=args.recovery,
        plots=not args.no_plots, out=args.out)
    try:
        report = runner.run(_replay(opts))
    except LoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    written = write_outputs(report, opts.out, opts.plots)
    print(summary_line(report))
    print(f"wrote {', '.join(written)} to {opts.out}")
    return 0

