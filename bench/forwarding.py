"""``python -m bench forwarding``: what forwarding one packet costs the node, in CPU.

The node runs as a subprocess (``python -m sfu serve`` on 127.0.0.1, free ports, a temporary
data dir), so its CPU time (utime + stime from /proc/<pid>/stat) counts the node alone. One
:class:`~bench.rawpeer.RawPublisher` replays pre-encoded VP8 (~1 Mbit/s, 30 fps) plus Opus to
a room, and N :class:`~bench.rawpeer.RawPeer` subscribers that never decode count what they
receive. For each N: connect everyone, wait for video at every subscriber, warm up, then
measure a window: packets the node sent (``sfu_packets_out_total`` video+audio from
/metrics), node CPU seconds, and so CPU µs per forwarded packet; packets received against
expected (loss) and per-packet latency from send to receive.

The same run measures the floor (:mod:`bench.floor`) with the SRTP profile the node actually
negotiated, and join-to-first-frame: an aiortc WHEP player (decoding) started repeatedly
against a running publisher, from the call to its first decoded video frame.

Everything is bounded: each phase has a count and a time limit, the node is stopped by PID
(SIGTERM, then SIGKILL) in a ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiortc.rtcdtlstransport import RTCCertificate

from bench import runner
from bench.floor import FloorResult, run_floor
from bench.ports import free_port, free_udp_port
from bench.rawpeer import EncodedStream, RawPeer, RawPublisher, encode_stream

API_KEY = "benchkey"
API_SECRET = "bench-secret-" + "x" * 32
NODE_START_TIMEOUT = 20.0
NODE_STOP_TIMEOUT = 5.0
CONNECT_BATCH = 10
CONNECT_TIMEOUT = 60.0  # all subscribers of one scenario
FIRST_VIDEO_TIMEOUT = 15.0
JOIN_TIMEOUT = 10.0
SETTLE = 0.3  # publisher pause at each window edge
JOIN_GAP = 1.0  # > the node's 0.5 s keyframe-request throttle: joins do not share a PLI

_metric_line = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


# --- the node under test ----------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class NodeProcess:
    """``python -m sfu serve`` as a child process on loopback."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.http_port = free_port()
        self.udp_port = free_udp_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.log_path = workdir / "node.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def spawn(self) -> None:
        data_dir = self.workdir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, SFU_API_KEY=API_KEY, SFU_API_SECRET=API_SECRET)
        cmd = [
            sys.executable, "-m", "sfu", "serve", "--host", "127.0.0.1",
            "--http-port", str(self.http_port), "--udp-port", str(self.udp_port),
            "--data-dir", str(data_dir),
        ]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    async def wait_ready(self, http: aiohttp.ClientSession) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + NODE_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with http.get(
                    self.url + "/metrics", timeout=aiohttp.ClientTimeout(total=2)
                ) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"node not ready in {NODE_START_TIMEOUT}s: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after a timeout. Returns the exit code."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc is not None else None
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(NODE_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            return proc.wait(NODE_STOP_TIMEOUT)

    async def metrics(self, http: aiohttp.ClientSession) -> dict[str, float]:
        async with http.get(self.url + "/metrics", timeout=aiohttp.ClientTimeout(total=5)) as r:
            return parse_metrics(await r.text())


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text to {'name{labels}': value} (comments skipped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _metric_line.match(line)
        if m:
            with contextlib.suppress(ValueError):
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def _delta(after: dict[str, float], before: dict[str, float], key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


def _token(room: str, identity: str, grant: str) -> str:
    from sfu.auth import mint_token

    return mint_token(
        api_key=API_KEY, api_secret=API_SECRET, room=room, identity=identity, grants=[grant],
        ttl=3600,
    )


def _client_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _percentiles(values: list[float], qs: tuple[int, ...] = (50, 95, 99)) -> dict[str, float]:
    if not values:
        return {}
    arr = np.asarray(values)
    out = {f"p{q}": round(float(np.percentile(arr, q)), 3) for q in qs}
    out["max"] = round(float(arr.max()), 3)
    out["samples"] = len(values)
    return out


# --- one scenario -----------------------------------------------------------------------------


@dataclass
class Scenario:
    subscribers: int
    connected: int = 0
    connect_seconds: float = 0.0
    window_seconds: float = 0.0
    srtp_profile: str = ""
    publisher_sent: dict[str, int] = field(default_factory=dict)
    node_packets_out: dict[str, float] = field(default_factory=dict)
    node_packets_in: dict[str, float] = field(default_factory=dict)
    node_drops: dict[str, float] = field(default_factory=dict)
    node_cpu_seconds: float = 0.0
    node_cpu_percent: float = 0.0
    us_per_forwarded_packet: float = 0.0
    forwarded_packets_per_second: float = 0.0
    expected_packets: int = 0
    received_packets: int = 0
    loss_percent: float = 0.0
    unprotect_errors: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    client_cpu_percent: float = 0.0
    publisher_plis: int = 0
    error: str = ""


async def wait_first_video(live: list[Any]) -> int:
    """Wait (bounded by FIRST_VIDEO_TIMEOUT) until every subscriber has video; how many lack it."""
    for _ in range(int(FIRST_VIDEO_TIMEOUT / 0.1)):
        if all(s.first_video_at is not None for s in live):
            break
        await asyncio.sleep(0.1)
    return sum(1 for s in live if s.first_video_at is None)


async def _connect_all(
    peers: list[RawPeer], http: aiohttp.ClientSession, url: str, room: str
) -> int:
    ok = 0
    for i in range(0, len(peers), CONNECT_BATCH):
        batch = peers[i : i + CONNECT_BATCH]
        results = await asyncio.gather(
            *(p.connect(http, url, room, _token(room, p.name, "subscribe")) for p in batch),
            return_exceptions=True,
        )
        for r in results:
            if isinstance(r, BaseException):
                print(f"  subscriber connect failed: {r!r}", file=sys.stderr)
            else:
                ok += 1
    return ok


async def run_scenario(
    node: NodeProcess,
    http: aiohttp.ClientSession,
    stream: EncodedStream,
    cert: RTCCertificate,
    n: int,
    *,
    warmup: float,
    duration: float,
    twcc: bool = False,
    twcc_feedback: bool = True,
) -> Scenario:
    room = f"fwd-{n}-{secrets.token_hex(3)}"
    res = Scenario(subscribers=n)
    pub = RawPublisher(cert, stream, name="pub")
    subs = [RawPeer(cert, publish=False, audio=bool(stream.audio), name=f"sub{i}", twcc=twcc,
                    twcc_feedback=twcc_feedback)
            for i in range(n)]
    try:
        await asyncio.wait_for(pub.connect(http, node.url, room, _token(room, "pub", "publish")),
                               30)
        res.srtp_profile = pub.srtp_profile
        budget = warmup + duration + CONNECT_TIMEOUT + FIRST_VIDEO_TIMEOUT + 30
        pub.start(budget)
        t0 = time.monotonic()
        res.connected = await asyncio.wait_for(
            _connect_all(subs, http, node.url, room), CONNECT_TIMEOUT
        )
        res.connect_seconds = round(time.monotonic() - t0, 2)
        live = [s for s in subs if s.answer is not None and not s.closed and s._rx is not None]
        waiting = await wait_first_video(live)
        if waiting:
            res.error = f"{waiting} subscribers got no video in {FIRST_VIDEO_TIMEOUT}s"
        await asyncio.sleep(warmup)

        # --- measured window ---
        # The publisher pauses briefly at both edges so no packet is in flight when the
        # counters are read: everything sent inside the window is received (or lost) inside.
        pub.paused = True
        await asyncio.sleep(SETTLE)
        m0 = await node.metrics(http)
        cpu0 = node.cpu_seconds()
        ccpu0 = _client_cpu()
        sent0 = dict(pub.sent)
        recv0 = [s.packets["video"] + s.packets["audio"] for s in live]
        w0 = time.monotonic()
        for s in live:
            s.recording = True
        pub.paused = False
        await asyncio.sleep(duration)
        pub.paused = True
        w1 = time.monotonic()
        await asyncio.sleep(SETTLE)
        for s in live:
            s.recording = False
        w2 = time.monotonic()
        cpu1 = node.cpu_seconds()
        ccpu1 = _client_cpu()
        sent1 = dict(pub.sent)
        recv1 = [s.packets["video"] + s.packets["audio"] for s in live]
        m1 = await node.metrics(http)
        pub.paused = False

        window = w1 - w0  # sending time; the node's CPU is read over w0..w2 (drained)
        res.window_seconds = round(window, 3)
        res.publisher_sent = {k: sent1[k] - sent0[k] for k in sent1}
        for kind in ("video", "audio", "rtcp", "stun", "dtls"):
            res.node_packets_out[kind] = _delta(m1, m0, f'sfu_packets_out_total{{kind="{kind}"}}')
            res.node_packets_in[kind] = _delta(m1, m0, f'sfu_packets_in_total{{kind="{kind}"}}')
        for key in m1:
            if key.startswith("sfu_drops_total"):
                d = _delta(m1, m0, key)
                if d:
                    res.node_drops[key[len("sfu_drops_total") :]] = d
        forwarded = res.node_packets_out["video"] + res.node_packets_out["audio"]
        res.node_cpu_seconds = round(cpu1 - cpu0, 3)
        res.node_cpu_percent = round(100 * (cpu1 - cpu0) / (w2 - w0), 1)
        res.us_per_forwarded_packet = (
            round((cpu1 - cpu0) / forwarded * 1e6, 2) if forwarded else float("nan")
        )
        res.forwarded_packets_per_second = round(forwarded / window, 1)
        res.expected_packets = sum(res.publisher_sent.values()) * len(live)
        res.received_packets = sum(b - a for a, b in zip(recv0, recv1, strict=True))
        if res.expected_packets:
            res.loss_percent = round(
                100 * (1 - res.received_packets / res.expected_packets), 3
            )
        res.unprotect_errors = sum(s.unprotect_errors for s in live)
        res.client_cpu_percent = round(100 * (ccpu1 - ccpu0) / (w2 - w0), 1)
        res.publisher_plis = pub.plis
        lat: list[float] = []
        for s in live:
            for pid, t in s.arrivals:
                sent_at = pub.send_times.get(pid)
                if sent_at is not None:
                    lat.append((t - sent_at) * 1000)
        res.latency_ms = _percentiles(lat)
    finally:
        await asyncio.gather(*(s.close(http, _token(room, s.name, "subscribe")) for s in subs),
                             return_exceptions=True)
        await pub.close(http, _token(room, "pub", "publish"))
    return res


# --- join to first frame ----------------------------------------------------------------------


async def join_to_first_frame(
    node: NodeProcess,
    http: aiohttp.ClientSession,
    stream: EncodedStream,
    cert: RTCCertificate,
    joins: int,
) -> dict[str, Any]:
    """Start an aiortc WHEP player ``joins`` times; time the call to its first decoded frame."""
    from bench.clients.loopback import restrict_ice_to_loopback
    from bench.clients.whip import whep_play

    room = f"join-{secrets.token_hex(3)}"
    pub = RawPublisher(cert, stream, name="pub")
    undo = restrict_ice_to_loopback()
    samples: list[float] = []
    answers: list[float] = []
    failures: list[str] = []
    pli_offsets: list[list[float]] = []
    try:
        await asyncio.wait_for(pub.connect(http, node.url, room, _token(room, "pub", "publish")),
                               30)
        pub.start(joins * (JOIN_TIMEOUT + JOIN_GAP + 5) + 10)
        await asyncio.sleep(1.0)
        for i in range(joins):
            token = _token(room, f"viewer{i}", "subscribe")
            t0 = time.monotonic()
            plis_before = len(pub.pli_times)
            player = None
            try:
                player = await asyncio.wait_for(
                    whep_play(node.url, room, token, audio=bool(stream.audio)), JOIN_TIMEOUT
                )
                answered = time.monotonic()
                await player.wait_for_frames(video=1, timeout=JOIN_TIMEOUT)
                assert player.first_frame_at is not None
                samples.append((player.first_frame_at - t0) * 1000)
                answers.append((answered - t0) * 1000)
                pli_offsets.append(
                    [round((t - t0) * 1000, 1) for t in pub.pli_times[plis_before:]]
                )
            except Exception as exc:  # count it and go on: one bad join is a data point
                failures.append(repr(exc)[:200])
            finally:
                if player is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(player.close(), 10)
            await asyncio.sleep(JOIN_GAP)
    finally:
        undo()
        await pub.close(http, _token(room, "pub", "publish"))
    out: dict[str, Any] = {
        "joins": joins,
        "ok": len(samples),
        "failures": failures,
        "first_frame_ms": _percentiles(samples, (50, 95)),
        "answer_ms": _percentiles(answers, (50, 95)),
        "samples_ms": [round(s, 1) for s in samples],
        "publisher_plis": pub.plis,
        "pli_ms_after_join": pli_offsets,  # PLIs the publisher got, per join, from its start
    }
    return out


# --- the whole run ----------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


@dataclass
class Options:
    subscribers: list[int]
    duration: float = 12.0
    warmup: float = 3.0
    joins: int = 20
    out: Path = Path("bench-results/forwarding.json")
    skip_floor: bool = False
    twcc: bool = False  # subscribers offer transport-cc: the node numbers every egress packet
    twcc_feedback: bool = True  # ... and return transport-cc feedback (estimator + allocator)


async def _run(opts: Options) -> dict[str, Any]:
    started = time.monotonic()
    print(f"encoding the stream (VP8 640x360 30 fps ~1 Mbit/s + Opus), {machine_info()}")
    stream = encode_stream()
    cert = RTCCertificate.generateCertificate()
    results: dict[str, Any] = {
        **runner.header(),
        "stream": {
            "video_frames_per_loop": len(stream.video),
            "fps": stream.fps,
            "size": f"{stream.width}x{stream.height}",
            "video_bitrate_bps": round(stream.video_bitrate),
            "video_packets_per_second": round(stream.video_packets_per_second, 1),
            "audio_packets_per_second": 50 if stream.audio else 0,
        },
        "options": {"subscribers": opts.subscribers, "duration": opts.duration,
                    "warmup": opts.warmup, "joins": opts.joins, "twcc": opts.twcc,
                    "twcc_feedback": opts.twcc_feedback},
    }
    scenarios: list[Scenario] = []
    with tempfile.TemporaryDirectory(prefix="bench-fwd-") as tmp:
        node = NodeProcess(Path(tmp))
        async with aiohttp.ClientSession() as http:
            try:
                node.spawn()
                await node.wait_ready(http)
                results["node"] = {"pid": node.pid, "http_port": node.http_port,
                                   "udp_port": node.udp_port}
                print(f"node pid {node.pid} on {node.url}, udp {node.udp_port}")
                for n in opts.subscribers:
                    print(f"scenario: 1 publisher -> {n} subscribers")
                    sc = await run_scenario(node, http, stream, cert, n,
                                            warmup=opts.warmup, duration=opts.duration,
                                            twcc=opts.twcc, twcc_feedback=opts.twcc_feedback)
                    scenarios.append(sc)
                    print(f"  {_scenario_line(sc)}")
                    await asyncio.sleep(1.0)  # let the node close the sessions
                if opts.joins:
                    print(f"join-to-first-frame: {opts.joins} aiortc WHEP players")
                    m0 = await node.metrics(http)
                    jr = await join_to_first_frame(node, http, stream, cert, opts.joins)
                    m1 = await node.metrics(http)
                    jr["node_drops"] = {
                        k[len("sfu_drops_total"):]: _delta(m1, m0, k)
                        for k in m1 if k.startswith("sfu_drops_total") and _delta(m1, m0, k)
                    }
                    jr["node_keyframe_requests"] = {
                        k[len("sfu_keyframe_requests_total"):]: _delta(m1, m0, k)
                        for k in m1 if k.startswith("sfu_keyframe_requests_total")
                    }
                    results["join_to_first_frame"] = jr
                results["node_idle_cpu_percent"] = await _idle_cpu(node)
            finally:
                code = node.stop()
                results.setdefault("node", {})["exit_code"] = code
                results["node"]["log_tail"] = node.log_tail(5)
    results["scenarios"] = [sc.__dict__ for sc in scenarios]
    profile = next((sc.srtp_profile for sc in scenarios if sc.srtp_profile),
                   "SRTP_AEAD_AES_256_GCM")
    floors: list[FloorResult] = []
    live: list[FloorResult] = []
    if not opts.skip_floor:
        print(f"floor loop ({profile})")
        for n in opts.subscribers:
            floors.append(run_floor(stream, n, profile=profile))
            live.append(run_floor(stream, n, profile=profile, live=True))
    results["floor"] = [f.as_dict() for f in floors]
    # Diagnostic: the same loop sending to N sockets a helper process drains, so the kernel's
    # loopback delivery (charged to the sender) is paid as it is by the node.
    results["floor_live_receivers"] = [f.as_dict() for f in live]
    results["ratio_live_receivers"] = {
        str(sc.subscribers): round(sc.us_per_forwarded_packet / f.us_per_egress_packet, 2)
        for sc, f in zip(scenarios, live, strict=False)
        if f.us_per_egress_packet and sc.us_per_forwarded_packet == sc.us_per_forwarded_packet
    }
    results["ratio"] = {
        str(sc.subscribers): round(sc.us_per_forwarded_packet / f.us_per_egress_packet, 2)
        for sc, f in zip(scenarios, floors, strict=False)
        if f.us_per_egress_packet and sc.us_per_forwarded_packet == sc.us_per_forwarded_packet
    }
    results["marginal_us_per_packet"] = _marginal(scenarios)
    results["elapsed_seconds"] = round(time.monotonic() - started, 1)
    return results


async def _idle_cpu(node: NodeProcess, seconds: float = 2.0) -> float:
    """The node's CPU with no sessions (its timers), as a percentage of a core."""
    c0 = node.cpu_seconds()
    await asyncio.sleep(seconds)
    return round(100 * (node.cpu_seconds() - c0) / seconds, 2)


def _marginal(scenarios: list[Scenario]) -> dict[str, float]:
    """CPU per extra forwarded packet between consecutive scenarios (fixed costs cancel)."""
    out: dict[str, float] = {}
    for a, b in zip(scenarios, scenarios[1:], strict=False):
        fa = (a.node_packets_out.get("video", 0) + a.node_packets_out.get("audio", 0))
        fb = (b.node_packets_out.get("video", 0) + b.node_packets_out.get("audio", 0))
        if a.window_seconds and b.window_seconds and fb / b.window_seconds > fa / a.window_seconds:
            rate_a, rate_b = fa / a.window_seconds, fb / b.window_seconds
            cpu_a = a.node_cpu_seconds / a.window_seconds
            cpu_b = b.node_cpu_seconds / b.window_seconds
            out[f"{a.subscribers}->{b.subscribers}"] = round(
                (cpu_b - cpu_a) / (rate_b - rate_a) * 1e6, 2
            )
    return out


def _scenario_line(sc: Scenario) -> str:
    lat = sc.latency_ms
    return (
        f"connected {sc.connected}/{sc.subscribers} in {sc.connect_seconds}s, "
        f"forwarded {sc.forwarded_packets_per_second:.0f} pkt/s, node CPU "
        f"{sc.node_cpu_percent}%, {sc.us_per_forwarded_packet} µs/pkt, loss "
        f"{sc.loss_percent}%, latency p50 {lat.get('p50')} ms p95 {lat.get('p95')} ms, "
        f"client CPU {sc.client_cpu_percent}%" + (f" [{sc.error}]" if sc.error else "")
    )


def format_table(results: dict[str, Any]) -> str:
    floors = {f["subscribers"]: f for f in results.get("floor", [])}
    lives = {f["subscribers"]: f for f in results.get("floor_live_receivers", [])}
    head = (
        f"{'N':>4} {'fwd pkt/s':>10} {'node CPU':>9} {'µs/pkt':>8} {'floor µs':>9} "
        f"{'ratio':>6} {'live fl':>8} {'ratio':>6} {'loss %':>7} {'lat p50':>8} {'lat p95':>8} {'client CPU':>10}"
    )
    lines = [head, "-" * len(head)]
    for sc in results.get("scenarios", []):
        f = floors.get(sc["subscribers"])
        fl = f["us_per_egress_packet"] if f else float("nan")
        ratio = results.get("ratio", {}).get(str(sc["subscribers"]), float("nan"))
        lf = lives.get(sc["subscribers"])
        lfl = lf["us_per_egress_packet"] if lf else float("nan")
        lratio = results.get("ratio_live_receivers", {}).get(str(sc["subscribers"]), float("nan"))
        lat = sc["latency_ms"]
        lines.append(
            f"{sc['subscribers']:>4} {sc['forwarded_packets_per_second']:>10.0f} "
            f"{sc['node_cpu_percent']:>8.1f}% {sc['us_per_forwarded_packet']:>8.2f} "
            f"{fl:>9.2f} {ratio:>6.2f} {lfl:>8.2f} {lratio:>6.2f} {sc['loss_percent']:>7.3f} "
            f"{lat.get('p50', float('nan')):>6.2f}ms {lat.get('p95', float('nan')):>6.2f}ms "
            f"{sc['client_cpu_percent']:>9.1f}%"
        )
    if results.get("marginal_us_per_packet"):
        lines.append("marginal node µs per extra forwarded packet: " + ", ".join(
            f"{k}: {v}" for k, v in results["marginal_us_per_packet"].items()))
    j = results.get("join_to_first_frame")
    if j:
        ff = j["first_frame_ms"]
        lines.append(
            f"join-to-first-frame ({j['ok']}/{j['joins']} ok): p50 {ff.get('p50')} ms, "
            f"p95 {ff.get('p95')} ms (answer applied: p50 {j['answer_ms'].get('p50')} ms)"
        )
    prof = next((s["srtp_profile"] for s in results.get("scenarios", []) if s["srtp_profile"]), "")
    lines.append(f"SRTP profile negotiated: {prof}; node idle CPU "
                 f"{results.get('node_idle_cpu_percent')}%")
    return "\n".join(lines)


def main(opts: Options) -> int:
    results = runner.run(_run(opts))
    runner.write_json(results, opts.out)
    print()
    print(format_table(results))
    print(f"\nwrote {opts.out} in {results['elapsed_seconds']} s")
    return 0
