"""``python -m bench cluster-load``: viewers of ONE show a loopback cluster holds, against one node.

Starts redis-server and N ``python -m sfu serve`` processes on 127.0.0.1, every one with the
cluster registry (``--cluster-redis-url``, ``--node-id``, ``--public-url``) and the cascade
(``--cascade-port``) on. The scenario is ``bench load``'s (:func:`bench.load.run_load`): one
raw publisher (pre-encoded VP8 ~1 Mbit/s + Opus) joins the room through the first node, which
becomes its origin, and the non-decoding raw subscribers join through every node's WHEP URL
in turn (:func:`viewer_node`); the other nodes serve them locally as edges relaying the room
from the origin over QUIC. Pass = p99 added latency < 50 ms and loss < 0.5 %, as for
``load``; ``--search`` is the same doubling + bisection over the number of viewers, bounded
in steps and in time.

``--compare`` runs the search on a one-node cluster, then on the N-node cluster, in the same
invocation, and prints the ratio. Each node's CPU (/proc/<pid>/stat) is reported.

All processes are children of this one, stopped by PID in a ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import runner
from bench.cascade import OriginProcess
from bench.forwarding import API_KEY, API_SECRET, parse_metrics
from bench.load import (
    LATENCY_P99_LIMIT_MS,
    LOSS_LIMIT_PERCENT,
    LoadError,
    NodeRef,
    Options,
    Scenario,
    Target,
    result_line,
    run_load,
    search_max,
)
from bench.ports import free_port

MEMBERS_TIMEOUT = 15.0
REDIS_START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
MAX_NODES = 5


# --- pure parts ------------------------------------------------------------------------------


def viewer_node(index: int, nodes: int) -> int:
    """The node (0-based) viewer ``index`` of the room joins through: round robin."""
    if nodes < 1:
        raise ValueError("need at least one node")
    return index % nodes


def spread(viewers: int, nodes: int) -> list[int]:
    """How many of ``viewers`` join through each node (the counts :func:`viewer_node` gives)."""
    counts = [0] * nodes
    for i in range(viewers):
        counts[viewer_node(i, nodes)] += 1
    return counts


def fit_node_cost(points: list[tuple[int, float]]) -> dict[str, float] | None:
    """Least-squares ``cpu_percent = fixed + per_viewer x viewers`` over one node's runs (pure).

    ``points`` are (viewers, cpu_percent) of the same node over several runs. None with fewer
    than two distinct viewer counts or a non-positive slope (nothing to extrapolate from).
    """
    if len({v for v, _ in points}) < 2:
        return None
    n = len(points)
    mx = sum(v for v, _ in points) / n
    my = sum(c for _, c in points) / n
    sxx = sum((v - mx) ** 2 for v, _ in points)
    slope = sum((v - mx) * (c - my) for v, c in points) / sxx
    if slope <= 0:
        return None
    fixed = max(0.0, my - slope * mx)
    return {"fixed_percent": round(fixed, 2), "percent_per_viewer": round(slope, 4),
            "viewers_at_one_core": int((100 - fixed) / slope) if fixed < 100 else 0}


def projection(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Viewers each node would hold on a core of its own, from its CPU over the runs (pure).

    Per node, :func:`fit_node_cost` over every run that has that node's viewers and CPU; the
    total adds the nodes up. CPU only: latency, the network and the clients are left out.
    """
    points: dict[str, list[tuple[int, float]]] = {}
    for r in runs:
        for node_id, row in (r.get("nodes") or {}).items():
            if row.get("viewers") is not None and row.get("cpu_percent") is not None:
                points.setdefault(node_id, []).append((int(row["viewers"]),
                                                       float(row["cpu_percent"])))
    fits = {node_id: fit_node_cost(p) for node_id, p in points.items()}
    per_node = {k: f for k, f in fits.items() if f is not None}
    total = (sum(int(f["viewers_at_one_core"]) for f in per_node.values())
             if per_node and len(per_node) == len(fits) else None)
    return {"per_node": per_node, "viewers_at_one_core_per_node_total": total}


def ratio(cluster: int, single: int) -> float | None:
    return round(cluster / single, 2) if single > 0 else None


# --- processes -------------------------------------------------------------------------------


class RedisProcess:
    """A throw-away redis-server on loopback (no persistence)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def spawn(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise LoadError("redis-server is not installed (apt-get install redis-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no",
             "--logfile", str(self.workdir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)

    async def wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LoadError(f"redis-server exited with {self.proc.returncode}")
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(b"PING\r\n")
                line = await asyncio.wait_for(reader.readline(), 1)
                writer.close()
                if line.startswith(b"+PONG"):
                    return
            await asyncio.sleep(0.05)
        raise LoadError(f"redis-server did not answer in {REDIS_START_TIMEOUT:g} s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)


class ClusterNode(OriginProcess):
    """``python -m sfu serve`` with the cluster registry and the cascade on."""

    def __init__(self, workdir: Path, node_id: str, redis_url: str) -> None:
        super().__init__(workdir)
        self.node_id = node_id
        self.redis_url = redis_url

    def serve_args(self, data_dir: Path) -> list[str]:
        return [*super().serve_args(data_dir), "--cluster-redis-url", self.redis_url,
                "--node-id", self.node_id, "--public-url", self.url, "--drain-timeout", "1"]

    def ref(self) -> NodeRef:
        return NodeRef(self.node_id, self.url, self.cpu_seconds)


async def _cluster_nodes(http: aiohttp.ClientSession, node: ClusterNode) -> float:
    with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
        async with http.get(node.url + "/metrics", timeout=aiohttp.ClientTimeout(total=2)) as r:
            return parse_metrics(await r.text()).get("sfu_cluster_nodes", -1.0)
    return -1.0


@contextlib.asynccontextmanager
async def local_cluster(http: aiohttp.ClientSession, count: int, workdir: Path
                        ) -> AsyncIterator[list[ClusterNode]]:
    """Redis and ``count`` nodes, every node knowing all of them; stopped by PID on exit."""
    redis = RedisProcess(workdir / "redis")
    nodes = [ClusterNode(workdir / f"n{i + 1}", f"n{i + 1}", redis.url) for i in range(count)]
    try:
        redis.spawn()
        await redis.wait_ready()
        for n in nodes:
            n.spawn()
        for n in nodes:
            try:
                await n.wait_ready(http)
            except (RuntimeError, TimeoutError) as exc:
                raise LoadError(f"node {n.node_id} did not start: "
                                f"{str(exc).splitlines()[0]}") from None
        deadline = time.monotonic() + MEMBERS_TIMEOUT
        while True:
            seen = [await _cluster_nodes(http, n) for n in nodes]
            if all(s == count for s in seen):
                break
            if time.monotonic() > deadline:
                raise LoadError(f"nodes report {seen} cluster members, expected {count}")
            await asyncio.sleep(0.1)
        yield nodes
    finally:
        for n in nodes:  # SIGTERM to all first: they drain in parallel
            if n.proc is not None and n.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(n.proc.pid, signal.SIGTERM)
        await asyncio.gather(*(asyncio.to_thread(n.stop) for n in nodes))
        redis.stop()


# --- runs ------------------------------------------------------------------------------------


@dataclass
class ClusterOptions:
    nodes: int = 3
    subscribers: int = 30  # viewers of the one room (without --search)
    duration: float = 6.0
    warmup: float = 2.0
    client_procs: int = 0
    search: bool = False
    compare: bool = False
    search_start: int = 10
    search_limit: int = 640
    search_max_steps: int = 7
    search_retries: int = 1
    max_seconds: float = 540.0
    out: Path = Path("bench-results/cluster-load.json")


async def _one_cluster(http: aiohttp.ClientSession, opts: ClusterOptions, count: int,
                       stream: Any, cert: Any, workdir: Path, budget: float
                       ) -> dict[str, Any]:
    print(f"cluster of {count} node(s): redis-server + {count} x python -m sfu serve "
          "(cascade on)")
    async with local_cluster(http, count, workdir) as nodes:
        refs = [n.ref() for n in nodes]
        urls = [n.url for n in nodes]

        def url_of(i: int) -> str:
            return urls[viewer_node(i, count)]

        target = Target("node", nodes[0].url, API_KEY, API_SECRET)
        row: dict[str, Any] = {
            "nodes": count,
            "pids": {n.node_id: n.pid for n in nodes},
            "origin": nodes[0].node_id,
        }
        if opts.search:
            sopts = Options(rooms=1, duration=opts.duration, warmup=opts.warmup,
                            client_procs=opts.client_procs, search_start=opts.search_start,
                            search_limit=opts.search_limit,
                            search_max_steps=opts.search_max_steps,
                            search_retries=opts.search_retries)
            s = await search_max(target, sopts, stream, cert, http, None, nodes=refs,
                                 viewer_url=url_of, time_budget=budget)
            row["search"] = s
            row["max_viewers"] = s["max_subscribers"]
            row["spread_at_max"] = spread(s["max_subscribers"], count)
            row["projection_one_core_per_node"] = projection(s["runs"])
        else:
            r = await run_load(target, Scenario(1, opts.subscribers, opts.duration,
                                                opts.warmup, opts.client_procs),
                               stream, cert, http, nodes=refs, viewer_url=url_of)
            print("  " + result_line(r))
            print("  " + node_line(r))
            row["result"] = r
            row["spread"] = spread(opts.subscribers, count)
    return row


def node_line(r: dict[str, Any]) -> str:
    parts = []
    for node_id, row in (r.get("nodes") or {}).items():
        parts.append(f"{node_id}: {row.get('viewers')} viewers, CPU {row.get('cpu_percent')}%,"
                     f" {row.get('forwarded_packets_per_second')} pkt/s to viewers, cascade "
                     f"out/in {row.get('cascade_packets_out_per_second')}/"
                     f"{row.get('cascade_packets_in_per_second')} pkt/s")
    return "; ".join(parts)


async def _run(opts: ClusterOptions) -> dict[str, Any]:
    from aiortc.rtcdtlstransport import RTCCertificate

    from bench.load import _stream, _stream_info

    started = time.monotonic()
    out: dict[str, Any] = {
        **runner.header(),
        "criteria": {"latency_p99_ms_below": LATENCY_P99_LIMIT_MS,
                     "loss_percent_below": LOSS_LIMIT_PERCENT},
        "viewer_placement": "round robin over the nodes' WHEP URLs; publisher on n1",
        "runs": [],
    }
    print("encoding the stream (VP8 640x360 30 fps ~1 Mbit/s + Opus)")
    stream = _stream()
    out["stream"] = _stream_info(stream)
    cert = RTCCertificate.generateCertificate()
    counts = [1, opts.nodes] if opts.compare else [opts.nodes]
    async with aiohttp.ClientSession() as http:
        with tempfile.TemporaryDirectory(prefix="bench-cluster-load-") as tmp:
            for i, count in enumerate(counts):
                left = opts.max_seconds - (time.monotonic() - started)
                budget = max(1.0, left / (len(counts) - i) - 30)  # 30 s: start and stop
                out["runs"].append(await _one_cluster(http, opts, count, stream, cert,
                                                      Path(tmp) / f"c{count}", budget))
    if opts.compare and opts.search:
        single, multi = out["runs"][0]["max_viewers"], out["runs"][1]["max_viewers"]
        out["ratio_cluster_to_single"] = ratio(multi, single)
    out["cpus"] = os.cpu_count()
    out["elapsed_seconds"] = round(time.monotonic() - started, 1)
    return out


def summary(results: dict[str, Any]) -> list[str]:
    lines = []
    for row in results["runs"]:
        if "search" in row:
            s = row["search"]
            at = s.get("at_max") or {}
            lat = at.get("latency_ms", {})
            lines.append(f"{row['nodes']} node(s): max {row['max_viewers']} viewers of one "
                         f"show (p99 {lat.get('p99')} ms, loss {at.get('loss_percent')} %, "
                         f"{at.get('us_per_forwarded_packet')} µs node CPU per packet to a "
                         f"viewer), first failing {s['first_failing']}, spread "
                         f"{row['spread_at_max']}")
            if at.get("nodes"):
                lines.append("  at max: " + node_line(at))
        proj = row.get("projection_one_core_per_node") or {}
        if proj.get("per_node"):
            fits = ", ".join(f"{k}: {f['fixed_percent']} % + {f['percent_per_viewer']} % per "
                             f"viewer -> {f['viewers_at_one_core']}"
                             for k, f in proj["per_node"].items())
            lines.append(f"  CPU fit per node (one core each): {fits}; total "
                         f"{proj['viewers_at_one_core_per_node_total']}")
    if results.get("ratio_cluster_to_single") is not None:
        lines.append(f"cluster / single: {results['ratio_cluster_to_single']} (the "
                     f"{results['runs'][-1]['nodes']} nodes, redis, the publisher and the "
                     f"viewers share this machine's {results['cpus']} cores)")
    return lines


def main(opts: ClusterOptions) -> int:
    try:
        results = runner.run(_run(opts))
    except LoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    runner.write_json(results, opts.out)
    print()
    for line in summary(results):
        print(line)
    print(f"wrote {opts.out} in {results['elapsed_seconds']} s")
    return 0
