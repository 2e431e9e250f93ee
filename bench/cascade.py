"""``python -m bench cascade``: what one cascade hop adds in latency, and costs the origin.

Nodes run as subprocesses on 127.0.0.1: the origin (``python -m sfu serve --cascade-port``)
and E edges (``python -m bench.cascade_node``, subscribed to the room), so each one's CPU
(/proc/<pid>/stat) is its own. A RawPublisher replays pre-encoded VP8 (~1 Mbit/s, 30 fps)
plus Opus to the origin (bench.rawpeer).

1. Latency: one raw viewer on the origin and one on the first edge record the arrival time
   of every video packet (VP8 picture id, in order); the same packet's arrival at the edge
   viewer minus its arrival at the origin viewer is the hop (QUIC, the edge's Receiver,
   its down-track), reported as p50/p95/p99. A second raw viewer on the origin gives the
   measurement's own spread: the same difference between two viewers of one node.
2. Origin CPU per edge against per direct viewer: the origin's CPU over a window with no
   viewer and no edge, with V raw viewers, and with E edges (no viewer on them); the
   increments divided by V and by E.

Every phase is bounded; the nodes are stopped by PID in a ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiortc.rtcdtlstransport import RTCCertificate

from bench import runner
from bench.forwarding import (
    API_KEY,
    API_SECRET,
    NodeProcess,
    _connect_all,
    _percentiles,
    _token,
    machine_info,
    wait_first_video,
)
from bench.ports import free_udp_port
from bench.rawpeer import EncodedStream, RawPeer, RawPublisher, encode_stream

LINK_TIMEOUT = 15.0
SETTLE = 0.5


class OriginProcess(NodeProcess):
    """``python -m sfu serve`` with a cascade listener."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.cascade_port = free_udp_port()

    def serve_args(self, data_dir: Path) -> list[str]:
        """The `sfu serve` command line (subclasses add their settings)."""
        return [sys.executable, "-m", "sfu", "serve", "--host", "127.0.0.1",
                "--http-port", str(self.http_port), "--udp-port", str(self.udp_port),
                "--cascade-port", str(self.cascade_port), "--data-dir", str(data_dir),
                "--log-level", "warning"]

    def spawn(self) -> None:
        data_dir = self.workdir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, SFU_API_KEY=API_KEY, SFU_API_SECRET=API_SECRET)
        cmd = self.serve_args(data_dir)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)


class EdgeProcess(NodeProcess):
    """``python -m bench.cascade_node``: a node subscribed to one room on the origin."""

    def __init__(self, workdir: Path, origin: OriginProcess, room: str) -> None:
        super().__init__(workdir)
        self.origin = origin
        self.room = room

    def spawn(self) -> None:
        data_dir = self.workdir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, SFU_API_KEY=API_KEY, SFU_API_SECRET=API_SECRET)
        cmd = [sys.executable, "-m", "bench.cascade_node",
               "--http-port", str(self.http_port), "--udp-port", str(self.udp_port),
               "--cascade-port", str(free_udp_port()), "--data-dir", str(data_dir),
               "--origin", f"127.0.0.1:{self.origin.cascade_port}", "--room", self.room]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)


@dataclass
class Options:
    edges: int = 2
    viewers: int = 4
    duration: float = 8.0
    warmup: float = 2.0
    out: Path = Path("bench-results/cascade.json")


async def _window(node: NodeProcess, seconds: float) -> float:
    """The node's CPU seconds per second over a window."""
    c0, t0 = node.cpu_seconds(), time.monotonic()
    await asyncio.sleep(seconds)
    return (node.cpu_seconds() - c0) / (time.monotonic() - t0)


async def _until_edge_has_tracks(http: aiohttp.ClientSession, edge: NodeProcess) -> None:
    deadline = time.monotonic() + LINK_TIMEOUT
    while time.monotonic() < deadline:
        m = await edge.metrics(http)
        if m.get('sfu_tracks{kind="video"}', 0) >= 1:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"edge got no tracks in {LINK_TIMEOUT}s: {edge.log_tail()}")


def _hop_latency(origin_viewer: RawPeer, edge_viewer: RawPeer) -> list[float]:
    """Per packet: arrival at the edge viewer minus arrival at the origin viewer (ms)."""
    at_origin: dict[int, list[float]] = defaultdict(list)
    for pid, t in origin_viewer.arrivals:
        at_origin[pid].append(t)
    at_edge: dict[int, list[float]] = defaultdict(list)
    for pid, t in edge_viewer.arrivals:
        at_edge[pid].append(t)
    out: list[float] = []
    for pid, times in at_edge.items():
        ref = at_origin.get(pid)
        if ref and len(ref) == len(times):  # a complete frame at both: packets pair up
            out.extend((b - a) * 1000 for a, b in zip(ref, times, strict=True))
    return out


async def _run(opts: Options) -> dict[str, Any]:
    print(f"encoding the stream (VP8 640x360 30 fps ~1 Mbit/s + Opus), {machine_info()}")
    stream: EncodedStream = encode_stream()
    cert = RTCCertificate.generateCertificate()
    room = f"cascade-{secrets.token_hex(3)}"
    results: dict[str, Any] = {
        **runner.header(),
        "options": {"edges": opts.edges, "viewers": opts.viewers,
                    "duration": opts.duration, "warmup": opts.warmup},
        "stream": {"video_packets_per_second": round(stream.video_packets_per_second, 1),
                   "video_bitrate_bps": round(stream.video_bitrate)},
    }
    with tempfile.TemporaryDirectory(prefix="bench-cascade-") as tmp:
        origin = OriginProcess(Path(tmp) / "origin")
        edges = [EdgeProcess(Path(tmp) / f"edge{i}", origin, room) for i in range(opts.edges)]
        pub = RawPublisher(cert, stream, name="pub")
        viewers: list[RawPeer] = []
        async with aiohttp.ClientSession() as http:
            try:
                origin.spawn()
                await origin.wait_ready(http)
                await asyncio.wait_for(
                    pub.connect(http, origin.url, room, _token(room, "pub", "publish")), 30)
                pub.start(opts.warmup * 4 + opts.duration * 4 + LINK_TIMEOUT * 2 + 60)
                await asyncio.sleep(opts.warmup)
                print("origin alone (publisher, no viewer, no edge)")
                base = await _window(origin, opts.duration)

                print(f"origin with {opts.viewers} direct raw viewers")
                viewers = [RawPeer(cert, publish=False, audio=True, name=f"v{i}")
                           for i in range(opts.viewers)]
                await asyncio.wait_for(_connect_all(viewers, http, origin.url, room), 60)
                missing = await wait_first_video(viewers)
                await asyncio.sleep(opts.warmup)
                with_viewers = await _window(origin, opts.duration)
                await asyncio.gather(*(v.close(http, _token(room, v.name, "subscribe"))
                                       for v in viewers), return_exceptions=True)
                viewers = []
                await asyncio.sleep(1.0)

                print(f"origin with {opts.edges} edges (no viewer on them)")
                for e in edges:
                    e.spawn()
                for e in edges:
                    await e.wait_ready(http)
                    await _until_edge_has_tracks(http, e)
                await asyncio.sleep(opts.warmup)
                with_edges = await _window(origin, opts.duration)
                edge_cpu = [round(100 * (await _window(e, 2.0)), 1) for e in edges[:1]]

                print("hop latency: a raw viewer on the origin and one on the first edge")
                ov = RawPeer(cert, publish=False, audio=True, name="ov")
                ov2 = RawPeer(cert, publish=False, audio=True, name="ov2")
                ev = RawPeer(cert, publish=False, audio=True, name="ev")
                for peer, node in ((ov, origin), (ov2, origin), (ev, edges[0])):
                    await asyncio.wait_for(peer.connect(http, node.url, room,
                                                        _token(room, peer.name, "subscribe")),
                                           30)
                viewers = [ov, ov2, ev]
                missing += await wait_first_video(viewers)
                await asyncio.sleep(opts.warmup)
                for v in viewers:
                    v.recording = True
                await asyncio.sleep(opts.duration)
                for v in viewers:
                    v.recording = False
                await asyncio.sleep(SETTLE)
                hop = _hop_latency(ov, ev)
                results["same_node_spread_ms"] = _percentiles(
                    [abs(x) for x in _hop_latency(ov, ov2)], (50, 95, 99))
                om = await origin.metrics(http)
                em = await edges[0].metrics(http)
                results["origin_cpu_percent"] = {
                    "alone": round(100 * base, 2), "with_viewers": round(100 * with_viewers, 2),
                    "with_edges": round(100 * with_edges, 2)}
                results["origin_cpu_percent_per_direct_viewer"] = round(
                    100 * (with_viewers - base) / opts.viewers, 3)
                results["origin_cpu_percent_per_edge"] = round(
                    100 * (with_edges - base) / opts.edges, 3)
                results["edge_cpu_percent_no_viewer"] = edge_cpu
                results["hop_latency_ms"] = _percentiles(hop, (50, 95, 99))
                results["viewers_without_video"] = missing
                results["origin_cascade"] = {k: v for k, v in om.items()
                                             if k.startswith("sfu_cascade")}
                results["edge_cascade"] = {k: v for k, v in em.items()
                                           if k.startswith("sfu_cascade")
                                           or k.startswith("sfu_drops_total")}
            finally:
                await asyncio.gather(*(v.close(http, _token(room, v.name, "subscribe"))
                                       for v in viewers), return_exceptions=True)
                with contextlib.suppress(Exception):
                    await pub.close(http, _token(room, "pub", "publish"))
                for e in edges:
                    e.stop()
                origin.stop()
    return results


def main(opts: Options) -> int:
    results = asyncio.run(_run(opts))
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(results, indent=2) + "\n")
    hop = results.get("hop_latency_ms", {})
    print(f"hop latency ms: p50 {hop.get('p50')} p95 {hop.get('p95')} p99 {hop.get('p99')} "
          f"({hop.get('samples')} packets)")
    spread = results.get("same_node_spread_ms", {})
    print(f"two viewers of one node differ by ms: p50 {spread.get('p50')} "
          f"p95 {spread.get('p95')} p99 {spread.get('p99')}")
    print(f"origin CPU %: {results.get('origin_cpu_percent')}; per direct viewer "
          f"{results.get('origin_cpu_percent_per_direct_viewer')}, per edge "
          f"{results.get('origin_cpu_percent_per_edge')}")
    print(f"wrote {opts.out}")
    return 0
