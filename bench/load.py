"""``python -m bench load`` and ``python -m bench compare --peer janus``: N rooms x M subscribers.

One :class:`~bench.rawpeer.RawPublisher` per room (pre-encoded VP8 ~1 Mbit/s + Opus, the
stream of ``bench forwarding``) runs in this process; the subscribers (non-decoding
:class:`~bench.rawpeer.RawPeer`) are spread over ``--client-procs`` worker processes
(multiprocessing, spawn), so one client process is not the ceiling; each process's CPU is
reported. A run: publishers connect, subscribers connect in batches, wait for video at every
subscriber, warm up, then a measured window with the publishers paused at both edges (so
nothing is in flight when counters are read):

- forwarded packets/s: the node's ``sfu_packets_out_total`` (video + audio) when /metrics
  answers, else what the subscribers received;
- node CPU per forwarded packet: only when the node was spawned here (/proc/<pid>/stat);
- added latency p50/p95/p99: subscriber receive time minus the publisher's send time of the
  frame (VP8 picture id). Both are ``time.monotonic`` (CLOCK_MONOTONIC, one clock for every
  process on the machine), so no clock sync is involved;
- loss: 1 - received / (sent x subscribers of the room).

``--search`` looks for the most subscribers one node worker holds with p99 added latency
< 50 ms and loss < 0.5 %: doubling, then bisection (:class:`Search`, pure), each step bounded.

``compare --peer janus`` runs the same scenario against Janus 1.1.2 (:mod:`bench.janus`) in a
network namespace of its own (:mod:`bench.netns`) in the same run, and prints both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import multiprocessing.connection
import os
import secrets
import sys
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from bench import runner

LATENCY_P99_LIMIT_MS = 50.0
LOSS_LIMIT_PERCENT = 0.5
CONNECT_BATCH = 10
CONNECT_TIMEOUT_PER_SUB = 0.5  # plus a base, for a whole run
CONNECT_TIMEOUT_BASE = 30.0
FIRST_VIDEO_TIMEOUT = 15.0
SETTLE = 0.3
WORKER_REPLY_TIMEOUT = 120.0
SUBS_PER_CLIENT_PROC = 150  # auto --client-procs: one process per this many subscribers
MAX_SUBSCRIBERS = 2000


class LoadError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


# --- what a client process connects to ------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The SFU under test, as a worker process needs it (picklable)."""

    kind: str  # "node" or "janus"
    url: str  # node: http://host:port; janus: http://host:port/janus
    api_key: str = ""
    api_secret: str = ""
    bind_host: str = "127.0.0.1"  # the clients' UDP sockets


@dataclass(frozen=True)
class RoomSpec:
    """One room's subscription point: ``name`` (node) or ``janus_room``/``feed`` (Janus)."""

    name: str
    janus_room: int = 0
    feed: int = 0


def token(target: Target, room: str, identity: str, grant: str) -> str:
    from sfu.auth import mint_token

    return mint_token(api_key=target.api_key, api_secret=target.api_secret, room=room,
                      identity=identity, grants=[grant], ttl=3600)


# --- the search (pure) -----------------------------------------------------------------------


@dataclass
class Search:
    """Doubling then bisection for the largest passing count.

    ``next()`` proposes a count (None: done); ``record(n, passed)`` feeds the outcome back.
    Assumes pass/fail is monotonic in n. Stops when the gap between the best pass and the
    first fail is at most ``max(resolution, rel_resolution * best)``, at ``limit``, or after
    ``max_steps`` measurements.
    """

    start: int = 10
    limit: int = 1000
    resolution: int = 5
    rel_resolution: float = 0.1
    max_steps: int = 12
    best: int = 0  # largest count that passed
    first_fail: int | None = None  # smallest count that failed
    steps: list[tuple[int, bool]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 1 <= self.start <= self.limit:
            raise ValueError("need 1 <= start <= limit")
        if self.resolution < 1 or self.max_steps < 1 or self.rel_resolution < 0:
            raise ValueError("resolution and max_steps must be >= 1, rel_resolution >= 0")

    def next(self) -> int | None:
        if len(self.steps) >= self.max_steps:
            return None
        if self.first_fail is None:
            if not self.steps:
                return self.start
            if self.best >= self.limit:
                return None
            return min(self.best * 2, self.limit)
        gap = self.first_fail - self.best
        if gap <= max(self.resolution, int(self.rel_resolution * self.best), 1):
            return None
        return (self.best + self.first_fail) // 2

    def record(self, n: int, passed: bool) -> None:
        self.steps.append((n, passed))
        if passed:
            self.best = max(self.best, n)
        elif self.first_fail is None or n < self.first_fail:
            self.first_fail = n

    @property
    def done(self) -> bool:
        return self.next() is None


def passes(result: dict[str, Any], *, p99_ms: float = LATENCY_P99_LIMIT_MS,
           loss_percent: float = LOSS_LIMIT_PERCENT) -> tuple[bool, str]:
    """Whether one load run meets the targets, and why not."""
    if result.get("error"):
        return False, str(result["error"])
    if result.get("connected", 0) < result.get("subscribers", 0):
        return False, f"{result['subscribers'] - result.get('connected', 0)} did not connect"
    p99 = result.get("latency_ms", {}).get("p99")
    if p99 is None:
        return False, "no latency samples"
    if p99 >= p99_ms:
        return False, f"p99 {p99:.1f} ms >= {p99_ms:g} ms"
    loss = result.get("loss_percent", 100.0)
    if loss >= loss_percent:
        return False, f"loss {loss:.3f} % >= {loss_percent:g} %"
    return True, "ok"


def percentiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    q = np.percentile(values, [50, 95, 99])
    return {"p50": round(float(q[0]), 3), "p95": round(float(q[1]), 3),
            "p99": round(float(q[2]), 3), "max": round(float(values.max()), 3),
            "samples": int(values.size)}


def auto_client_procs(subscribers: int, cpus: int | None = None) -> int:
    cpus = cpus or os.cpu_count() or 1
    return max(1, min(cpus, math.ceil(subscribers / SUBS_PER_CLIENT_PROC)))


def split(items: list[Any], parts: int) -> list[list[Any]]:
    """Round-robin ``items`` into ``parts`` lists (so every room spreads over the workers)."""
    out: list[list[Any]] = [[] for _ in range(max(1, parts))]
    for i, item in enumerate(items):
        out[i % len(out)].append(item)
    return out


# --- subscriber worker process ---------------------------------------------------------------


@dataclass
class _Sub:
    room: str
    peer: Any  # RawPeer
    url: str  # the node it joins through (WHEP)


async def _worker_async(conn: multiprocessing.connection.Connection, target: Target) -> None:
    from aiortc.rtcdtlstransport import RTCCertificate

    from bench.rawpeer import RawPeer

    loop = asyncio.get_running_loop()
    cert = RTCCertificate.generateCertificate()
    subs: list[_Sub] = []
    http = aiohttp.ClientSession()
    janus_session: Any = None
    try:
        while True:
            cmd, arg = await loop.run_in_executor(None, conn.recv)
            if cmd == "connect":
                specs: list[tuple[RoomSpec, str, str]] = arg  # room, name, node URL
                if target.kind == "janus" and janus_session is None:
                    from bench.janus import JanusSession

                    janus_session = JanusSession(http, target.url)
                    await janus_session.create()
                errors: list[str] = []
                new = [_Sub(spec.name, RawPeer(cert, publish=False, name=name), url or target.url)
                       for spec, name, url in specs]
                by_name = {spec.name: spec for spec, _, _ in specs}

                async def connect(s: _Sub, spec: RoomSpec, session: Any) -> None:
                    if target.kind == "janus":
                        from bench.janus import subscribe

                        await subscribe(session, s.peer, spec.janus_room, spec.feed,
                                        target.bind_host)
                    else:
                        await s.peer.connect(http, s.url, s.room,
                                             token(target, s.room, s.peer.name, "subscribe"))

                for i in range(0, len(new), CONNECT_BATCH):
                    batch = new[i : i + CONNECT_BATCH]
                    res = await asyncio.gather(
                        *(asyncio.wait_for(connect(s, by_name[s.room], janus_session), 30)
                          for s in batch),
                        return_exceptions=True)
                    for s, r in zip(batch, res, strict=True):
                        if isinstance(r, BaseException):
                            errors.append(f"{s.peer.name}: {r!r}"[:200])
                            await s.peer.close()
                        else:
                            subs.append(s)
                conn.send(("connected", (len(subs), errors)))
            elif cmd == "wait_video":
                for _ in range(int(float(arg) / 0.1)):
                    if all(s.peer.first_video_at is not None for s in subs):
                        break
                    await asyncio.sleep(0.1)
                conn.send(("video", sum(1 for s in subs if s.peer.first_video_at is None)))
            elif cmd == "snapshot":
                counts: dict[str, list[int]] = {}
                for s in subs:
                    c = counts.setdefault(s.room, [0, 0])
                    c[0] += s.peer.packets["video"] + s.peer.packets["audio"]
                    c[1] += 1
                conn.send(("snapshot", counts))
            elif cmd == "record":
                for s in subs:
                    s.peer.recording = bool(arg)
                    if arg:
                        s.peer.arrivals.clear()
                conn.send(("record", None))
            elif cmd == "latency":
                send_times: dict[str, dict[int, float]] = arg
                chunks: list[np.ndarray] = []
                for s in subs:
                    st = send_times.get(s.room, {})
                    arr = [(t - st[pid]) * 1000 for pid, t in s.peer.arrivals if pid in st]
                    chunks.append(np.asarray(arr, dtype=np.float32))
                    s.peer.arrivals.clear()
                lat = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
                conn.send(("latency", lat))
            elif cmd == "close":
                break
    finally:
        closers = []
        for s in subs:
            tok = "" if target.kind == "janus" else token(target, s.room, s.peer.name,
                                                          "subscribe")
            closers.append(s.peer.close(http if target.kind == "node" else None, tok))
        await asyncio.gather(*closers, return_exceptions=True)
        if janus_session is not None:
            await janus_session.destroy()
        await http.close()
        with contextlib.suppress(OSError):
            conn.send(("closed", None))


def _worker_main(conn: multiprocessing.connection.Connection, target: Target) -> None:
    try:
        import uvloop

        uvloop.run(_worker_async(conn, target))
    except (KeyboardInterrupt, EOFError):
        pass


class Workers:
    """The subscriber processes, each driven over a pipe; stopped by PID at the end."""

    def __init__(self, target: Target, count: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.procs: list[multiprocessing.process.BaseProcess] = []
        self.conns: list[multiprocessing.connection.Connection] = []
        for _ in range(count):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker_main, args=(child, target), daemon=True)
            p.start()
            child.close()
            self.procs.append(p)
            self.conns.append(parent)

    async def ask(self, cmds: list[tuple[str, Any]], limit: float = WORKER_REPLY_TIMEOUT
                  ) -> list[Any]:
        """Send one command per worker, wait for every reply (bounded)."""
        loop = asyncio.get_running_loop()
        for c, cmd in zip(self.conns, cmds, strict=True):
            c.send(cmd)

        def recv(c: multiprocessing.connection.Connection) -> Any:
            if not c.poll(limit):
                raise LoadError(f"a client worker did not answer {cmds[0][0]!r} in {limit}s")
            return c.recv()[1]

        return list(await asyncio.gather(*(loop.run_in_executor(None, recv, c)
                                           for c in self.conns)))

    async def all(self, cmd: str, arg: Any = None, limit: float = WORKER_REPLY_TIMEOUT
                  ) -> list[Any]:
        return await self.ask([(cmd, arg)] * len(self.conns), limit)

    def cpu_seconds(self) -> list[float]:
        from bench.forwarding import proc_cpu_seconds

        out = []
        for p in self.procs:
            try:
                out.append(proc_cpu_seconds(p.pid or 0))
            except OSError:
                out.append(0.0)
        return out

    async def close(self) -> None:
        for c in self.conns:
            with contextlib.suppress(OSError, BrokenPipeError):
                c.send(("close", None))
        loop = asyncio.get_running_loop()
        for p, c in zip(self.procs, self.conns, strict=True):
            await loop.run_in_executor(None, p.join, 15)
            if p.is_alive():
                p.kill()  # this process's own child, by PID
                await loop.run_in_executor(None, p.join, 5)
            c.close()


# --- one run ----------------------------------------------------------------------------------


@dataclass
class Scenario:
    rooms: int
    subscribers_per_room: int
    duration: float = 10.0
    warmup: float = 3.0
    client_procs: int = 0  # 0: auto


class Publishers:
    """One RawPublisher per room against the node (WHIP) or Janus (videoroom)."""

    def __init__(self, target: Target, stream: Any, cert: Any) -> None:
        self.target = target
        self.stream = stream
        self.cert = cert
        self.pubs: list[Any] = []
        self.specs: list[RoomSpec] = []
        self.janus: Any = None

    async def connect(self, http: aiohttp.ClientSession, rooms: int, budget: float) -> None:
        from bench.rawpeer import RawPublisher

        tag = secrets.token_hex(3)
        for i in range(rooms):
            pub = RawPublisher(self.cert, self.stream, name=f"pub{i}")
            self.pubs.append(pub)
            if self.target.kind == "janus":
                from bench.janus import JanusSession, create_room, publish

                if self.janus is None:
                    self.janus = JanusSession(http, self.target.url)
                    await self.janus.create()
                room_id = secrets.randbelow(2**40) + 1
                await create_room(self.janus, room_id)
                feed = await asyncio.wait_for(
                    publish(self.janus, pub, room_id, self.target.bind_host), 30)
                self.specs.append(RoomSpec(f"janus-{room_id}", room_id, feed))
            else:
                name = f"load-{tag}-{i}"
                await asyncio.wait_for(pub.connect(
                    http, self.target.url, name, token(self.target, name, pub.name, "publish")),
                    30)
                self.specs.append(RoomSpec(name))
            pub.start(budget)

    def pause(self, paused: bool) -> None:
        for p in self.pubs:
            p.paused = paused

    def sent(self) -> dict[str, int]:
        return {s.name: p.sent["video"] + p.sent["audio"] for s, p in zip(self.specs,
                                                                         self.pubs, strict=True)}

    async def close(self, http: aiohttp.ClientSession) -> None:
        for spec, p in zip(self.specs, self.pubs, strict=False):
            if self.target.kind == "node":
                await p.close(http, token(self.target, spec.name, p.name, "publish"))
            else:
                await p.close()
        for p in self.pubs[len(self.specs):]:
            await p.close()
        if self.janus is not None:
            await self.janus.destroy()


CpuReader = Callable[[], float]


async def _metrics(http: aiohttp.ClientSession, target: Target) -> dict[str, float] | None:
    if target.kind != "node":
        return None
    from bench.forwarding import parse_metrics

    with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
        async with http.get(target.url.rstrip("/") + "/metrics",
                            timeout=aiohttp.ClientTimeout(total=5)) as r:
            if r.status == 200:
                return parse_metrics(await r.text())
    return None


def _forwarded(m: dict[str, float]) -> float:
    return sum(m.get(f'sfu_packets_out_total{{kind="{k}"}}', 0.0) for k in ("video", "audio"))


@dataclass(frozen=True)
class NodeRef:
    """One node of a cluster under test: its id, base URL and CPU reader (if spawned here)."""

    node_id: str
    url: str
    cpu: CpuReader | None = None


def summed_cpu(readers: list[CpuReader]) -> CpuReader:
    return lambda: sum(r() for r in readers)


def _viewer_sessions(m: dict[str, float]) -> int:
    return int(sum(v for k, v in m.items()
                   if k.startswith('sfu_sessions_active{kind="whep"')))


def _cascade(m: dict[str, float], event: str) -> float:
    return m.get(f'sfu_cascade_events_total{{event="{event}"}}', 0.0)


def node_rows(nodes: list[NodeRef], m0: list[dict[str, float] | None],
              m1: list[dict[str, float] | None], cpu0: list[float | None],
              cpu1: list[float | None], window: float, cpu_window: float
              ) -> dict[str, dict[str, Any]]:
    """Per node of a cluster run: CPU, packets to viewers, cascade packets, viewers (pure)."""
    out: dict[str, dict[str, Any]] = {}
    for i, n in enumerate(nodes):
        row: dict[str, Any] = {"url": n.url}
        a, b = m0[i], m1[i]
        if a is not None and b is not None:
            fwd = _forwarded(b) - _forwarded(a)
            row["viewers"] = _viewer_sessions(b)
            row["forwarded_packets_per_second"] = round(fwd / window, 1)
            row["cascade_packets_out_per_second"] = round(
                (_cascade(b, "packets_out") - _cascade(a, "packets_out")) / window, 1)
            row["cascade_packets_in_per_second"] = round(
                (_cascade(b, "packets_in") - _cascade(a, "packets_in")) / window, 1)
        c0, c1 = cpu0[i], cpu1[i]
        if c0 is not None and c1 is not None and cpu_window > 0:
            row["cpu_percent"] = round(100 * (c1 - c0) / cpu_window, 1)
        out[n.node_id] = row
    return out


async def run_load(
    target: Target,
    sc: Scenario,
    stream: Any,
    cert: Any,
    http: aiohttp.ClientSession,
    *,
    server_cpu: CpuReader | None = None,
    log: Callable[[str], None] = print,
    nodes: list[NodeRef] | None = None,
    viewer_url: Callable[[int], str] | None = None,
) -> dict[str, Any]:
    """One measured run; returns a JSON-able dict (see module docstring).

    With ``nodes`` (a cluster), forwarded packets and server CPU are summed over the nodes and
    reported per node; ``viewer_url(i)`` is the node subscriber ``i`` of a room joins through
    (default: the target).
    """
    if nodes and server_cpu is None and all(n.cpu is not None for n in nodes):
        server_cpu = summed_cpu([n.cpu for n in nodes if n.cpu is not None])
    total = sc.rooms * sc.subscribers_per_room
    procs = sc.client_procs or auto_client_procs(total)
    res: dict[str, Any] = {
        "target": target.kind, "rooms": sc.rooms, "subscribers_per_room": sc.subscribers_per_room,
        "subscribers": total, "client_procs": procs, "duration": sc.duration,
        "warmup": sc.warmup, "connected": 0, "error": "",
    }
    connect_budget = CONNECT_TIMEOUT_BASE + CONNECT_TIMEOUT_PER_SUB * total / procs
    budget = connect_budget + FIRST_VIDEO_TIMEOUT + sc.warmup + sc.duration + 60
    pubs = Publishers(target, stream, cert)
    workers: Workers | None = None
    try:
        workers = Workers(target, procs)
        await pubs.connect(http, sc.rooms, budget)
        res["srtp_profile"] = pubs.pubs[0].srtp_profile if pubs.pubs else ""
        subs = [(spec, f"sub{r}-{j}", viewer_url(j) if viewer_url else "")
                for r, spec in enumerate(pubs.specs) for j in range(sc.subscribers_per_room)]
        t0 = time.monotonic()
        replies = await workers.ask([("connect", part) for part in split(subs, procs)],
                                    limit=connect_budget)
        res["connected"] = sum(r[0] for r in replies)
        errs = [e for r in replies for e in r[1]]
        res["connect_errors"] = errs[:10]
        res["connect_seconds"] = round(time.monotonic() - t0, 2)
        log(f"  connected {res['connected']}/{total} in {res['connect_seconds']} s "
            f"({procs} client process{'es' if procs > 1 else ''})")
        waiting = sum(await workers.all("wait_video", FIRST_VIDEO_TIMEOUT,
                                        FIRST_VIDEO_TIMEOUT + 30))
        if waiting:
            res["error"] = f"{waiting} subscribers got no video in {FIRST_VIDEO_TIMEOUT}s"
        if errs and not res["error"]:
            res["error"] = f"{len(errs)} subscribers failed to connect: {errs[0]}"
        await asyncio.sleep(sc.warmup)

        # --- measured window ---
        pubs.pause(True)
        await asyncio.sleep(SETTLE)
        m0 = await _metrics(http, target)
        nm0 = [await _metrics(http, Target("node", n.url)) for n in nodes or []]
        s0 = await workers.all("snapshot")
        sent0 = pubs.sent()
        await workers.all("record", True)
        for p in pubs.pubs:
            p.send_times.clear()
        cpu0 = server_cpu() if server_cpu else None
        ncpu0 = [n.cpu() if n.cpu else None for n in nodes or []]
        busy0 = machine_busy_seconds()
        wcpu0 = workers.cpu_seconds()
        mcpu0 = _own_cpu()
        w0 = time.monotonic()
        pubs.pause(False)
        await asyncio.sleep(sc.duration)
        pubs.pause(True)
        w1 = time.monotonic()
        await asyncio.sleep(SETTLE)
        w2 = time.monotonic()
        cpu1 = server_cpu() if server_cpu else None
        ncpu1 = [n.cpu() if n.cpu else None for n in nodes or []]
        busy1 = machine_busy_seconds()
        wcpu1 = workers.cpu_seconds()
        mcpu1 = _own_cpu()
        await workers.all("record", False)
        s1 = await workers.all("snapshot")
        sent1 = pubs.sent()
        m1 = await _metrics(http, target)
        nm1 = [await _metrics(http, Target("node", n.url)) for n in nodes or []]
        send_times = {spec.name: dict(p.send_times) for spec, p in zip(pubs.specs, pubs.pubs,
                                                                       strict=True)}
        pubs.pause(False)
        lat = np.concatenate(await workers.all("latency", send_times))

        window = w1 - w0
        res["window_seconds"] = round(window, 3)
        expected = received = 0
        for room in sent1:
            sent = sent1[room] - sent0[room]
            n_live = sum(s.get(room, [0, 0])[1] for s in s1)
            expected += sent * n_live
            received += sum(s.get(room, [0, 0])[0] for s in s1) - sum(
                s.get(room, [0, 0])[0] for s in s0)
        res["publisher_packets"] = sum(sent1[r] - sent0[r] for r in sent1)
        res["expected_packets"] = expected
        res["received_packets"] = received
        res["loss_percent"] = round(100 * (1 - received / expected), 3) if expected else 100.0
        res["received_packets_per_second"] = round(received / window, 1)
        if nodes:
            res["nodes"] = node_rows(nodes, nm0, nm1, ncpu0, ncpu1, window, w2 - w0)
        fwd: float
        full = [(a, b) for a, b in zip(nm0, nm1, strict=True) if a is not None and b is not None]
        if nodes and len(full) == len(nodes):
            fwd = sum(_forwarded(b) - _forwarded(a) for a, b in full)
            res["forwarded_source"] = ("every node's /metrics sfu_packets_out_total "
                                       "(video+audio), summed")
        elif m0 is not None and m1 is not None:
            fwd = _forwarded(m1) - _forwarded(m0)
            res["forwarded_source"] = "node /metrics sfu_packets_out_total (video+audio)"
        else:
            fwd = float(received)
            res["forwarded_source"] = "packets the subscribers received"
        res["forwarded_packets"] = fwd
        res["forwarded_packets_per_second"] = round(fwd / window, 1)
        if cpu0 is not None and cpu1 is not None:
            res["server_cpu_seconds"] = round(cpu1 - cpu0, 3)
            res["server_cpu_percent"] = round(100 * (cpu1 - cpu0) / (w2 - w0), 1)
            res["us_per_forwarded_packet"] = (round((cpu1 - cpu0) / fwd * 1e6, 2)
                                              if fwd else None)
        else:
            res["server_cpu_seconds"] = res["server_cpu_percent"] = None
            res["us_per_forwarded_packet"] = None
        res["latency_ms"] = percentiles(lat)
        wpct = [round(100 * (b - a) / (w2 - w0), 1) for a, b in zip(wcpu0, wcpu1, strict=True)]
        res["client_cpu_percent"] = {
            "publishers_process": round(100 * (mcpu1 - mcpu0) / (w2 - w0), 1),
            "subscriber_processes": wpct,
            "total": round(100 * (mcpu1 - mcpu0) / (w2 - w0) + sum(wpct), 1),
        }
        res["publisher_plis"] = sum(p.plis for p in pubs.pubs)
        # Everything else the machine ran meanwhile (other processes on a shared host):
        # busy CPU from /proc/stat minus the server and the clients, in % of one core.
        ours = res["client_cpu_percent"]["total"] + (res["server_cpu_percent"] or 0.0)
        res["machine_busy_percent"] = round(100 * (busy1 - busy0) / (w2 - w0), 1)
        res["other_processes_cpu_percent"] = round(res["machine_busy_percent"] - ours, 1)
        res["loadavg_1min"] = round(os.getloadavg()[0], 2)
    finally:
        if workers is not None:
            await workers.close()
        await pubs.close(http)
    ok, why = passes(res)
    res["passed"] = ok
    res["verdict"] = why
    return res


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy (not idle/iowait) since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def result_line(r: dict[str, Any]) -> str:
    lat = r.get("latency_ms", {})
    cpu = r.get("us_per_forwarded_packet")
    ccpu = r.get("client_cpu_percent", {})
    return (f"{r['rooms']}x{r['subscribers_per_room']} subs: {r.get('connected')}/"
            f"{r['subscribers']} connected, fwd {r.get('forwarded_packets_per_second', 0):.0f}"
            f" pkt/s, server CPU {r.get('server_cpu_percent')}% "
            f"({'n/a' if cpu is None else cpu} µs/pkt), latency p50/p95/p99 {lat.get('p50')}/"
            f"{lat.get('p95')}/{lat.get('p99')} ms, loss {r.get('loss_percent')}%, client CPU "
            f"{ccpu.get('publishers_process')}% + {ccpu.get('subscriber_processes')}% "
            f"(other processes {r.get('other_processes_cpu_percent')}%) "
            f"-> {r.get('verdict', '')}")


# --- the node: reached or spawned --------------------------------------------------------------


async def check_node(http: aiohttp.ClientSession, target: Target) -> None:
    """Raise LoadError (one line) if the node is unreachable or refuses the credentials."""
    url = target.url.rstrip("/")
    try:
        async with http.get(url + "/healthz", timeout=aiohttp.ClientTimeout(total=5)) as r:
            if r.status >= 500 or r.status == 404:
                raise LoadError(f"node at {url} answered /healthz with HTTP {r.status}")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise LoadError(f"cannot reach the node at {url}: {exc.__class__.__name__}: "
                        f"{str(exc) or 'timed out'}") from None
    room = f"load-check-{secrets.token_hex(3)}"
    tok = token(target, room, "load-check", "subscribe")
    # An unsigned or wrongly signed token is refused before the offer is read: 401/403.
    try:
        async with http.post(url + "/whep/" + room, data=b"v=0\r\n",
                             headers={"Content-Type": "application/sdp",
                                      "Authorization": f"Bearer {tok}"},
                             timeout=aiohttp.ClientTimeout(total=5)) as r:
            if r.status in (401, 403):
                raise LoadError(f"the node at {url} refused the credentials (HTTP {r.status}):"
                                " check SFU_API_KEY / SFU_API_SECRET")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise LoadError(f"cannot reach the node at {url}: {exc!r}") from None


@contextlib.asynccontextmanager
async def node_target(
    http: aiohttp.ClientSession, url: str | None, spawn: bool, workdir: Path
) -> AsyncIterator[tuple[Target, CpuReader | None, int | None]]:
    """Yield (Target, cpu reader or None, pid or None) for ``--url`` or ``--spawn``."""
    from bench.forwarding import API_KEY, API_SECRET, NodeProcess

    if spawn:
        node = NodeProcess(workdir)
        try:
            node.spawn()
            try:
                await node.wait_ready(http)
            except (RuntimeError, TimeoutError) as exc:
                raise LoadError(f"the spawned node did not start: {exc}".splitlines()[0]
                                ) from None
            yield Target("node", node.url, API_KEY, API_SECRET), node.cpu_seconds, node.pid
        finally:
            node.stop()
        return
    assert url is not None
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LoadError(f"--url must be http://host:port, got {url!r}")
    key, secret = os.environ.get("SFU_API_KEY", ""), os.environ.get("SFU_API_SECRET", "")
    if not key or not secret:
        raise LoadError("--url needs the node's credentials in SFU_API_KEY and SFU_API_SECRET")
    target = Target("node", url.rstrip("/"), key, secret)
    await check_node(http, target)
    yield target, None, None


# --- entry points -----------------------------------------------------------------------------


@dataclass
class Options:
    rooms: int = 1
    subscribers: int = 10  # per room
    duration: float = 10.0
    warmup: float = 3.0
    url: str | None = None
    spawn: bool = False
    client_procs: int = 0
    search: bool = False
    search_start: int = 20
    search_limit: int = 640
    search_max_steps: int = 10
    search_retries: int = 1
    out: Path = Path("bench-results/load.json")


def _stream() -> Any:
    from bench.rawpeer import encode_stream

    return encode_stream()


def _stream_info(stream: Any) -> dict[str, Any]:
    return {"size": f"{stream.width}x{stream.height}", "fps": stream.fps,
            "video_bitrate_bps": round(stream.video_bitrate),
            "video_packets_per_second": round(stream.video_packets_per_second, 1),
            "audio_packets_per_second": 50 if stream.audio else 0}


async def search_max(target: Target, opts: Options, stream: Any, cert: Any,
                     http: aiohttp.ClientSession, server_cpu: CpuReader | None,
                     *, nodes: list[NodeRef] | None = None,
                     viewer_url: Callable[[int], str] | None = None,
                     time_budget: float = 0.0) -> dict[str, Any]:
    """The search, over subscribers per room with ``opts.rooms`` rooms.

    ``time_budget`` (seconds, 0 = none): no new step starts once it is spent.
    """
    s = Search(start=opts.search_start, limit=opts.search_limit,
               max_steps=opts.search_max_steps)
    runs: list[dict[str, Any]] = []
    started = time.monotonic()
    out_of_time = False
    while (n := s.next()) is not None:
        if time_budget and time.monotonic() - started >= time_budget:
            out_of_time = True
            print(f"search: time budget of {time_budget:g} s spent, stopping")
            break
        print(f"search step {len(s.steps) + 1}: {opts.rooms} room(s) x {n} subscribers")
        for attempt in range(1 + opts.search_retries):
            r = await run_load(target, Scenario(opts.rooms, n, opts.duration, opts.warmup,
                                                opts.client_procs), stream, cert, http,
                               server_cpu=server_cpu, nodes=nodes, viewer_url=viewer_url)
            r["attempt"] = attempt + 1
            print("  " + result_line(r))
            runs.append(r)
            await asyncio.sleep(2.0)  # let the node drop the closed sessions
            if r["passed"]:
                break
            # On a shared machine one stall elsewhere can fail a step: measure once more.
        s.record(n, bool(r["passed"]))
    best = next((r for r in runs if r["subscribers_per_room"] == s.best and r["passed"]), None)
    per_core_at_max = None
    if best and best.get("server_cpu_percent"):
        per_core_at_max = round(best["subscribers"] * 100 / best["server_cpu_percent"])
    return {
        "criteria": {"latency_p99_ms_below": LATENCY_P99_LIMIT_MS,
                     "loss_percent_below": LOSS_LIMIT_PERCENT},
        "steps": s.steps,
        "max_subscribers_per_room": s.best,
        "max_subscribers": s.best * opts.rooms,
        "first_failing": s.first_fail,
        "retries_per_failing_step": opts.search_retries,
        "stopped_by_time_budget": out_of_time,
        "subscribers_per_core_extrapolated_at_max": per_core_at_max,
        "at_max": best,
        "runs": runs,
        "elapsed_seconds": round(time.monotonic() - started, 1),
    }


async def _run(opts: Options) -> dict[str, Any]:
    from aiortc.rtcdtlstransport import RTCCertificate


    started = time.monotonic()
    out: dict[str, Any] = {
        **runner.header(),
    }
    async with aiohttp.ClientSession() as http:
        with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
            async with node_target(http, opts.url, opts.spawn, Path(tmp)) as (target, cpu, pid):
                out["node"] = {"url": target.url, "spawned": opts.spawn, "pid": pid}
                print("encoding the stream (VP8 640x360 30 fps ~1 Mbit/s + Opus)")
                stream = _stream()
                out["stream"] = _stream_info(stream)
                cert = RTCCertificate.generateCertificate()
                if opts.search:
                    out["search"] = await search_max(target, opts, stream, cert, http, cpu)
                else:
                    print(f"load: {opts.rooms} room(s) x {opts.subscribers} subscribers, "
                          f"{opts.duration:g} s window")
                    r = await run_load(target, Scenario(opts.rooms, opts.subscribers,
                                                        opts.duration, opts.warmup,
                                                        opts.client_procs),
                                       stream, cert, http, server_cpu=cpu)
                    print("  " + result_line(r))
                    out["result"] = r
    out["elapsed_seconds"] = round(time.monotonic() - started, 1)
    return out


def main(opts: Options) -> int:
    try:
        results = runner.run(_run(opts))
    except LoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    runner.write_json(results, opts.out)
    if "search" in results:
        s = results["search"]
        at = s.get("at_max") or {}
        lat = at.get("latency_ms", {})
        print(f"\nmax subscribers on one node worker: {s['max_subscribers']} "
              f"(p99 {lat.get('p99')} ms, loss {at.get('loss_percent')}%, "
              f"{at.get('us_per_forwarded_packet')} µs/pkt); first failing: "
              f"{s['first_failing']} per room")
    print(f"wrote {opts.out} in {results['elapsed_seconds']} s")
    return 0


# --- compare with Janus ------------------------------------------------------------------------


@dataclass
class CompareOptions:
    peer: str = "janus"
    rooms: int = 1
    subscribers: int = 50
    duration: float = 10.0
    warmup: float = 3.0
    client_procs: int = 0
    search: bool = False
    out: Path = Path("bench-results/compare.json")


def per_core(us_per_packet: float | None, packets_per_subscriber_per_second: float
             ) -> int | None:
    """Subscribers one fully busy core could feed at this CPU cost per forwarded packet."""
    if not us_per_packet or packets_per_subscriber_per_second <= 0:
        return None
    return int(1e6 / us_per_packet / packets_per_subscriber_per_second)


def compare_table(results: dict[str, Any]) -> str:
    rows = results["rows"]
    head = (f"{'peer':<22} {'subs':>5} {'fwd pkt/s':>10} {'CPU %':>7} {'µs/fwd pkt':>11} "
            f"{'subs/core':>10} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'loss %':>7} "
            f"{'client CPU':>10}")
    lines = [head, "-" * len(head)]
    for row in rows:
        r = row["result"]
        lat = r.get("latency_ms", {})
        us = r.get("us_per_forwarded_packet")
        lines.append(
            f"{row['peer']:<22} {r['subscribers']:>5} {r.get('forwarded_packets_per_second', 0):>10.0f}"
            f" {r.get('server_cpu_percent') or float('nan'):>7.1f}"
            f" {us if us is not None else float('nan'):>11.2f}"
            f" {row.get('subscribers_per_core') or 0:>10}"
            f" {lat.get('p50', float('nan')):>8.2f} {lat.get('p95', float('nan')):>8.2f}"
            f" {lat.get('p99', float('nan')):>8.2f} {r.get('loss_percent', float('nan')):>7.3f}"
            f" {r.get('client_cpu_percent', {}).get('total', float('nan')):>9.1f}%")
    lines.append(f"subs/core: {results['subscribers_per_core_method']}")
    for row in rows:
        if row.get("search"):
            s = row["search"]
            lines.append(f"{row['peer']}: search max {s['max_subscribers']} subscribers "
                         f"(p99 < {LATENCY_P99_LIMIT_MS:g} ms, loss < {LOSS_LIMIT_PERCENT:g} %)")
    return "\n".join(lines)


async def _compare(opts: CompareOptions) -> dict[str, Any]:
    from aiortc.rtcdtlstransport import RTCCertificate

    from bench import janus, netns

    started = time.monotonic()
    version = janus.ensure_installed()
    print(f"janus {version}; encoding the stream (VP8 640x360 30 fps ~1 Mbit/s + Opus)")
    stream = _stream()
    cert = RTCCertificate.generateCertificate()
    pps = stream.video_packets_per_second + (50 if stream.audio else 0)
    out: dict[str, Any] = {
        **runner.header(),
        "stream": _stream_info(stream),
        "scenario": {"rooms": opts.rooms, "subscribers_per_room": opts.subscribers,
                     "duration": opts.duration, "warmup": opts.warmup},
        "janus_version": version,
        "rows": [],
        "subscribers_per_core_method": (
            "1e6 / (server µs per forwarded packet x packets/s per subscriber "
            f"= {pps:.0f}): a fully busy core, from the measured CPU per packet"),
    }
    sc = Scenario(opts.rooms, opts.subscribers, opts.duration, opts.warmup, opts.client_procs)
    sopts = Options(rooms=opts.rooms, duration=opts.duration, warmup=opts.warmup,
                    client_procs=opts.client_procs)
    async with aiohttp.ClientSession() as http:
        with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
            print(f"node: {opts.rooms} room(s) x {opts.subscribers} subscribers")
            async with node_target(http, None, True, Path(tmp) / "node") as (target, cpu, _pid):
                r = await run_load(target, sc, stream, cert, http, server_cpu=cpu)
                print("  " + result_line(r))
                row: dict[str, Any] = {"peer": "this node (1 worker)", "result": r,
                                       "subscribers_per_core": per_core(
                                           r.get("us_per_forwarded_packet"), pps)}
                if opts.search:
                    row["search"] = await search_max(target, sopts, stream, cert, http, cpu)
                out["rows"].append(row)
            print(f"janus {version}: {opts.rooms} room(s) x {opts.subscribers} subscribers "
                  "(own network namespace, veth pair)")
            with netns.namespace() as ns:
                out["netns"] = {"name": ns.name, "host": ns.host_ip, "janus": ns.ns_ip}
                jp = janus.JanusProcess(Path(tmp) / "janus", ns)
                try:
                    jp.spawn()
                    await jp.wait_ready(http)
                    jt = Target("janus", jp.url, bind_host=ns.host_ip)
                    r = await run_load(jt, sc, stream, cert, http, server_cpu=jp.cpu_seconds)
                    print("  " + result_line(r))
                    row = {"peer": f"Janus {version} videoroom", "result": r,
                           "subscribers_per_core": per_core(r.get("us_per_forwarded_packet"),
                                                            pps)}
                    if opts.search:
                        row["search"] = await search_max(jt, sopts, stream, cert, http,
                                                         jp.cpu_seconds)
                    out["rows"].append(row)
                finally:
                    out["janus_exit_code"] = jp.stop()
                    out["janus_log_tail"] = jp.log_tail(5)
    out["elapsed_seconds"] = round(time.monotonic() - started, 1)
    return out


def compare_main(opts: CompareOptions) -> int:
    if opts.peer != "janus":
        print(f"error: unknown peer {opts.peer!r} (only 'janus')", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("error: compare --peer janus needs root (apt-get, ip netns)", file=sys.stderr)
        return 2
    try:
        results = runner.run(_compare(opts))
    except (LoadError, RuntimeError) as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else exc!r}", file=sys.stderr)
        return 2
    runner.write_json(results, opts.out)
    print()
    print(compare_table(results))
    print(f"\nwrote {opts.out} in {results['elapsed_seconds']} s")
    return 0


# --- command line -------------------------------------------------------------------------------


def _count(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be in {lo}..{hi}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 600:
        raise argparse.ArgumentTypeError("must be in (0, 600] seconds")
    return value


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    load = sub.add_parser(
        "load", help="N rooms x M subscribers against a node: pkt/s, CPU/pkt, latency, loss")
    where = load.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running node, http://host:port (credentials from "
                       "SFU_API_KEY / SFU_API_SECRET)")
    where.add_argument("--spawn", action="store_true",
                       help="start a node subprocess on loopback (CPU per packet measured)")
    load.add_argument("--rooms", type=_count(1, 50), default=1, help="rooms (default 1)")
    load.add_argument("--subscribers", type=_count(1, MAX_SUBSCRIBERS), default=10,
                      help="subscribers per room (default 10)")
    load.add_argument("--duration", type=_seconds, default=10.0,
                      help="measured window, seconds (default 10)")
    load.add_argument("--warmup", type=_seconds, default=3.0, help="warm-up, s (default 3)")
    load.add_argument("--client-procs", type=_count(0, 16), default=0,
                      help=f"subscriber processes (default 0: one per {SUBS_PER_CLIENT_PROC} "
                      "subscribers, at most one per CPU)")
    load.add_argument("--search", action="store_true",
                      help=f"find the most subscribers per room with p99 added latency < "
                      f"{LATENCY_P99_LIMIT_MS:g} ms and loss < {LOSS_LIMIT_PERCENT:g} %%")
    load.add_argument("--search-start", type=_count(1, MAX_SUBSCRIBERS), default=20,
                      help="first count of the search (default 20)")
    load.add_argument("--search-limit", type=_count(1, MAX_SUBSCRIBERS), default=640,
                      help="largest count tried (default 640)")
    load.add_argument("--search-steps", type=_count(1, 20), default=10,
                      help="at most this many measured steps (default 10)")
    load.add_argument("--search-retries", type=_count(0, 3), default=1,
                      help="re-measure a failing step this many times (default 1)")
    load.add_argument("--out", type=Path, default=Path("bench-results/load.json"),
                      help="JSON results (default bench-results/load.json)")

    cmp_ = sub.add_parser(
        "compare", help="the load scenario against this node and a peer SFU (Janus) side by side")
    cmp_.add_argument("--peer", choices=["janus"], required=True)
    cmp_.add_argument("--rooms", type=_count(1, 20), default=1, help="rooms (default 1)")
    cmp_.add_argument("--subscribers", type=_count(1, MAX_SUBSCRIBERS), default=50,
                      help="subscribers per room (default 50)")
    cmp_.add_argument("--duration", type=_seconds, default=10.0, help="window, s (default 10)")
    cmp_.add_argument("--warmup", type=_seconds, default=3.0, help="warm-up, s (default 3)")
    cmp_.add_argument("--client-procs", type=_count(0, 16), default=0,
                      help="subscriber processes (default auto)")
    cmp_.add_argument("--search", action="store_true",
                      help="also run the max-subscribers search against both (slow)")
    cmp_.add_argument("--out", type=Path, default=Path("bench-results/compare.json"),
                      help="JSON results (default bench-results/compare.json)")

    cl = sub.add_parser(
        "cluster-load", help="viewers of one show a loopback cluster (redis + N nodes, "
        "cascade on) holds, optionally against one node in the same run")
    cl.add_argument("--nodes", type=_count(1, 5), default=3, help="nodes (default 3)")
    cl.add_argument("--subscribers", type=_count(1, MAX_SUBSCRIBERS), default=30,
                    help="viewers of the room without --search (default 30)")
    cl.add_argument("--duration", type=_seconds, default=6.0,
                    help="measured window, seconds (default 6)")
    cl.add_argument("--warmup", type=_seconds, default=2.0, help="warm-up, s (default 2)")
    cl.add_argument("--client-procs", type=_count(0, 16), default=0,
                    help="subscriber processes (default auto)")
    cl.add_argument("--search", action="store_true",
                    help="find the most viewers with p99 added latency < "
                    f"{LATENCY_P99_LIMIT_MS:g} ms and loss < {LOSS_LIMIT_PERCENT:g} %%")
    cl.add_argument("--compare", action="store_true",
                    help="first the same on a one-node cluster, then on --nodes; print the ratio")
    cl.add_argument("--search-start", type=_count(1, MAX_SUBSCRIBERS), default=10,
                    help="first count of the search (default 10)")
    cl.add_argument("--search-limit", type=_count(1, MAX_SUBSCRIBERS), default=640,
                    help="largest count tried (default 640)")
    cl.add_argument("--search-steps", type=_count(1, 20), default=7,
                    help="at most this many measured steps per search (default 7)")
    cl.add_argument("--search-retries", type=_count(0, 3), default=1,
                    help="re-measure a failing step this many times (default 1)")
    cl.add_argument("--max-seconds", type=_count(30, 3600), default=540,
                    help="time budget of the whole run: no new search step starts once a "
                    "search's share is spent (default 540)")
    cl.add_argument("--out", type=Path, default=Path("bench-results/cluster-load.json"),
                    help="JSON results (default bench-results/cluster-load.json)")

    from bench.replay import add_command

    add_command(sub)


def run_command(args: argparse.Namespace) -> int:
    if args.command == "load":
        if args.search and args.search_start > args.search_limit:
            print("error: --search-start must be <= --search-limit", file=sys.stderr)
            return 2
        return main(Options(
            rooms=args.rooms, subscribers=args.subscribers, duration=args.duration,
            warmup=args.warmup, url=args.url, spawn=args.spawn, client_procs=args.client_procs,
            search=args.search, search_start=args.search_start, search_limit=args.search_limit,
            search_max_steps=args.search_steps, search_retries=args.search_retries,
            out=args.out))
    if args.command == "cluster-load":
        from bench.cluster_load import ClusterOptions
        from bench.cluster_load import main as cluster_main

        if args.search and args.search_start > args.search_limit:
            print("error: --search-start must be <= --search-limit", file=sys.stderr)
            return 2
        return cluster_main(ClusterOptions(
            nodes=args.nodes, subscribers=args.subscribers, duration=args.duration,
            warmup=args.warmup, client_procs=args.client_procs, search=args.search,
            compare=args.compare, search_start=args.search_start,
            search_limit=args.search_limit, search_max_steps=args.search_steps,
            search_retries=args.search_retries, max_seconds=float(args.max_seconds),
            out=args.out))
    if args.command == "compare":
        return compare_main(CompareOptions(
            peer=args.peer, rooms=args.rooms, subscribers=args.subscribers,
            duration=args.duration, warmup=args.warmup, client_procs=args.client_procs,
            search=args.search, out=args.out))
    from bench.replay import run

    return run(args)
