"""Commerce datachannel benchmark: order latency under a race, and fan-out to many viewers.

``python -m bench fanout`` starts a node in a subprocess (its own core), connects N viewers
from this process with :class:`DataPeer` (a datachannel-only WHEP peer: the project's raw
ICE + aiortc DTLS, and aiortc's ``RTCSctpTransport`` over it; no RTCPeerConnection, no
aioice, one shared certificate), then

1. **race**: every viewer places orders for a product with limited stock at once; prints
   the ``order.place`` -> ``order.result`` latency p50/p99 and checks no oversell;
2. **fan-out**: the operator API pins cards / schedules sales in a loop while the viewers
   count what they receive; prints messages delivered per second, and per second of node
   CPU (``/proc/<pid>/stat``), which is the "per core" figure.

Both numbers are written to ``--out`` as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCDataChannel, RTCSctpTransport
from aiortc.rtcdatachannel import RTCDataChannelParameters
from aiortc.rtcdtlstransport import RTCCertificate
from aiortc.rtcsctptransport import RTCSctpCapabilities

from bench import runner
from bench.ports import free_port, free_udp_port
from bench.rawpeer import RawPeer, certificate_fingerprint

SCTP_PORT = 5000
OPEN_TIMEOUT = 15.0


def datachannel_offer(
    *, ufrag: str, pwd: str, fingerprint: tuple[str, str], candidate: tuple[str, int]
) -> str:
    """An offer with a single m=application section (a datachannel, no media)."""
    ip, port = candidate
    lines = [
        "v=0",
        f"o=- {secrets.randbits(62)} 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "a=msid-semantic: WMS *",
        f"m=application {port} UDP/DTLS/SCTP webrtc-datachannel",
        f"c=IN IP4 {ip}",
        "a=mid:0",
        f"a=ice-ufrag:{ufrag}",
        f"a=ice-pwd:{pwd}",
        "a=ice-options:trickle",
        f"a=fingerprint:{fingerprint[0]} {fingerprint[1]}",
        "a=setup:active",
        f"a=sctp-port:{SCTP_PORT}",
        "a=max-message-size:262144",
        f"a=candidate:1 1 udp 2130706431 {ip} {port} typ host",
        "a=end-of-candidates",
    ]
    return "\r\n".join(lines) + "\r\n"


class DataPeer(RawPeer):
    """A WHEP session with only a datachannel ("events"), for load tests of commerce.

    Messages arrive in ``on_message`` (set it before ``connect``) or are appended to
    ``messages`` when it is None.
    """

    def __init__(self, certificate: RTCCertificate, name: str = "viewer") -> None:
        super().__init__(certificate, publish=False, audio=False, name=name)
        self.sctp: RTCSctpTransport | None = None
        self.channel: RTCDataChannel | None = None
        self.messages: list[str | bytes] = []
        self.on_message: Callable[[str | bytes], None] | None = None

    def offer(self) -> str:
        assert self.local is not None
        return datachannel_offer(
            ufrag=self.ufrag,
            pwd=self.pwd,
            fingerprint=certificate_fingerprint(self.certificate),
            candidate=self.local,
        )

    async def connect(
        self, http: aiohttp.ClientSession, http_url: str, room: str, token: str
    ) -> None:
        """WHEP POST, ICE, DTLS, SCTP, then wait (bounded) for the channel to open."""
        await super().connect(http, http_url, room, token)
        assert self._dtls is not None
        self.sctp = RTCSctpTransport(self._dtls, port=SCTP_PORT)
        await self.sctp.start(RTCSctpCapabilities(maxMessageSize=262144), SCTP_PORT)
        channel = RTCDataChannel(self.sctp, RTCDataChannelParameters(label="events"))
        self.channel = channel
        channel.on("message", self._received)
        opened = asyncio.Event()
        channel.on("open", opened.set)
        if channel.readyState != "open":
            await asyncio.wait_for(opened.wait(), OPEN_TIMEOUT)

    def _received(self, message: str | bytes) -> None:
        if self.on_message is not None:
            self.on_message(message)
        else:
            self.messages.append(message)

    def send(self, data: str) -> None:
        if self.channel is None or self.channel.readyState != "open":
            raise ConnectionError("datachannel is not open")
        self.channel.send(data)

    async def close(self, http: aiohttp.ClientSession | None = None, token: str = "") -> None:
        if self.sctp is not None and not self.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.sctp.stop(), 2)
        await super().close(http, token)


async def connect_many(
    factory: Callable[[int], DataPeer],
    count: int,
    http_url: str,
    room: str,
    token_for: Callable[[int], str],
    *,
    concurrency: int = 32,
    timeout: float = 120.0,  # noqa: ASYNC109
) -> list[DataPeer]:
    """Connect ``count`` peers, at most ``concurrency`` at a time, within ``timeout``."""
    peers: list[DataPeer] = []
    gate = asyncio.Semaphore(concurrency)
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as http:

        async def one(i: int) -> DataPeer:
            async with gate:
                peer = factory(i)
                try:
                    await peer.connect(http, http_url, room, token_for(i))
                except BaseException:
                    await peer.close()
                    raise
                return peer

        tasks = [asyncio.ensure_future(one(i)) for i in range(count)]
        try:
            done = await asyncio.wait_for(asyncio.gather(*tasks), timeout)
        except BaseException:
            for t in tasks:
                t.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for r in results:
                if isinstance(r, DataPeer):
                    await r.close()
            raise
        peers.extend(done)
    return peers


async def close_many(peers: list[DataPeer]) -> None:
    await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)


# --- node subprocess --------------------------------------------------------------------------


@dataclass
class NodeProcess:
    """``python -m sfu serve`` on 127.0.0.1 with fixed ports; started/stopped by PID."""

    data_dir: Path
    api_key: str = "benchkey"
    api_secret: str = "b" * 40
    store: str | None = None
    http_port: int = field(default_factory=free_port)
    udp_port: int = field(default_factory=free_udp_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 20.0) -> None:  # noqa: ASYNC109
        env = dict(os.environ)
        env.update(SFU_API_KEY=self.api_key, SFU_API_SECRET=self.api_secret)
        if self.store:
            env["SFU_STORE"] = self.store
        cmd = [
            sys.executable, "-m", "sfu", "serve", "--host", "127.0.0.1",
            "--http-port", str(self.http_port), "--udp-port", str(self.udp_port),
            "--data-dir", str(self.data_dir), "--peer-network", "127.0.0.0/8",
            "--log-level", "warning",
        ]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "node.log", "ab")  # noqa: SIM115 - closed by the child
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.http_port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"node not listening after {timeout}s: {self.log_tail()}")
            time.sleep(0.05)  # polling a process start, not timing logic

    def log_tail(self) -> str:
        try:
            return (self.data_dir / "node.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def cpu_seconds(self) -> float:
        """User + system CPU time of the node process so far."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def kill(self) -> None:
        """SIGKILL (crash) by PID."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def token(self, room: str, identity: str, grants: list[str]) -> str:
        from sfu.auth import mint_token

        return mint_token(
            api_key=self.api_key, api_secret=self.api_secret, room=room, identity=identity,
            grants=grants,
        )


# --- the benchmark ----------------------------------------------------------------------------


@dataclass
class Options:
    viewers: int = 1000
    race_viewers: int = 500
    orders: int = 2000
    stock: int = 100
    duration: float = 10.0
    store: str | None = None
    out: Path = Path("bench-results/fanout.json")


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _api(
    http: aiohttp.ClientSession, method: str, url: str, token: str, body: Any = None
) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    async with http.request(method, url, json=body, headers=headers) as resp:
        text = await resp.text()
        if resp.status >= 300:
            raise RuntimeError(f"{method} {url}: HTTP {resp.status}: {text.strip()}")
        return json.loads(text)


async def run_race(node: NodeProcess, opts: Options) -> dict[str, Any]:
    room = "race"
    admin = node.token(room, "host", ["admin"])
    base = f"{node.http_url}/api/rooms/{room}"
    cert = RTCCertificate.generateCertificate()
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    done = asyncio.Event()
    expected = opts.orders

    def factory(i: int) -> DataPeer:
        peer = DataPeer(cert, name=f"v{i}")

        def on_message(raw: str | bytes) -> None:
            msg = json.loads(raw)
            if msg.get("type") == "order.result":
                latencies.append(time.monotonic() - sent_at[f"{i}/{msg['idempotency_key']}"])
                statuses[msg["status"]] = statuses.get(msg["status"], 0) + 1
                if len(latencies) >= expected:
                    done.set()

        peer.on_message = on_message
        return peer

    async with aiohttp.ClientSession() as http:
        await _api(http, "POST", f"{base}/products", admin, {
            "id": "race-item", "name": "Race item", "price_cents": 1000, "currency": "EUR",
            "stock": opts.stock})
        now = time.time()
        await _api(http, "POST", f"{base}/sales", admin, {
            "product_id": "race-item", "sale_id": "race-sale", "starts_at": now,
            "ends_at": now + 3600})
    t0 = time.monotonic()
    peers = await connect_many(
        factory, opts.race_viewers, node.http_url, room,
        lambda i: node.token(room, f"v{i}", ["subscribe"]),
    )
    connect_s = time.monotonic() - t0
    per_viewer = max(1, opts.orders // len(peers))
    expected = per_viewer * len(peers)
    start = time.monotonic()
    for i, peer in enumerate(peers):
        for k in range(per_viewer):
            key = f"k{k}"
            sent_at[f"{i}/{key}"] = time.monotonic()
            peer.send(json.dumps({"v": 1, "type": "order.place", "idempotency_key": key,
                                  "product_id": "race-item", "quantity": 1,
                                  "sale_id": "race-sale"}))
    await asyncio.wait_for(done.wait(), 60)
    race_s = time.monotonic() - start
    async with aiohttp.ClientSession() as http:
        metrics = await _metrics(http, node.http_url, buckets=True)
    await close_many(peers)
    count = metrics.get("sfu_commerce_order_latency_seconds_count", 0.0)
    total = metrics.get("sfu_commerce_order_latency_seconds_sum", 0.0)
    store_p99 = next(
        (le for name, le in _buckets(metrics) if metrics[name] >= 0.99 * count), None
    )
    return {
        "viewers": len(peers), "orders": expected, "stock": opts.stock,
        "connect_seconds": round(connect_s, 2), "race_seconds": round(race_s, 3),
        "statuses": statuses,
        "latency_ms": {"p50": round(_percentile(latencies, 0.5) * 1000, 1),
                       "p99": round(_percentile(latencies, 0.99) * 1000, 1),
                       "max": round(max(latencies) * 1000, 1)},
        "node_store_latency_ms": {
            "mean": round(total / count * 1000, 1) if count else None,
            "p99_bucket_le": None if store_p99 is None else store_p99 * 1000},
    }


def _buckets(metrics: dict[str, float]) -> list[tuple[str, float]]:
    out = []
    for name in metrics:
        if name.startswith("sfu_commerce_order_latency_seconds_bucket") and "+Inf" not in name:
            out.append((name, float(name.split('le="')[1].split('"')[0])))
    return sorted(out, key=lambda x: x[1])


async def run_fanout(node: NodeProcess, opts: Options) -> dict[str, Any]:
    room = "fanout"
    admin = node.token(room, "host", ["admin"])
    base = f"{node.http_url}/api/rooms/{room}"
    cert = RTCCertificate.generateCertificate()
    received = [0]
    target = [-1]
    drained = asyncio.Event()

    def factory(i: int) -> DataPeer:
        peer = DataPeer(cert, name=f"f{i}")

        def on_message(raw: str | bytes) -> None:
            received[0] += 1
            if received[0] == target[0]:
                drained.set()

        peer.on_message = on_message
        return peer

    async with aiohttp.ClientSession() as http:
        for n in range(4):
            await _api(http, "POST", f"{base}/products", admin, {
                "id": f"item{n}", "name": f"Item {n}", "price_cents": 500, "currency": "EUR",
                "stock": 10})
        t0 = time.monotonic()
        peers = await connect_many(
            factory, opts.viewers, node.http_url, room,
            lambda i: node.token(room, f"f{i}", ["subscribe"]),
        )
        connect_s = time.monotonic() - t0
        received[0] = 0
        cpu0, wall0 = node.cpu_seconds(), time.monotonic()
        pins = 0
        deadline = wall0 + opts.duration
        # One pin per request, back to back: the API answers after the broadcast is queued,
        # the outboxes pace the writes; we keep at most a few requests in flight.
        while time.monotonic() < deadline:
            await asyncio.gather(*(
                _api(http, "POST", f"{base}/card", admin, {"product_id": f"item{(pins + j) % 4}"})
                for j in range(4)))
            pins += 4
        sent_target = target[0] = pins * len(peers)
        if received[0] < sent_target:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(drained.wait(), 30)
        wall = time.monotonic() - wall0
        cpu = node.cpu_seconds() - cpu0
        metrics = await _metrics(http, node.http_url)
    await close_many(peers)
    return {
        "viewers": len(peers), "connect_seconds": round(connect_s, 2), "cards": pins,
        "messages_expected": sent_target, "messages_received": received[0],
        "wall_seconds": round(wall, 2), "node_cpu_seconds": round(cpu, 2),
        "messages_per_second": round(received[0] / wall),
        "messages_per_cpu_second": round(received[0] / cpu) if cpu > 0 else None,
        "node_metrics": metrics,
    }


async def _metrics(
    http: aiohttp.ClientSession, url: str, *, buckets: bool = False
) -> dict[str, float]:
    async with http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("sfu_commerce_") and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            if buckets or "bucket" not in name:
                out[name] = float(value)
    return out


async def _main(opts: Options) -> dict[str, Any]:
    from bench.clients.loopback import restrict_ice_to_loopback

    restrict_ice_to_loopback()
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
        node = NodeProcess(Path(tmp) / "node", store=opts.store)
        node.start()
        try:
            race = await run_race(node, opts)
            print(json.dumps({"race": race}, indent=2), flush=True)
            fan = await run_fanout(node, opts)
            print(json.dumps({"fanout": {k: v for k, v in fan.items() if k != "node_metrics"}},
                             indent=2), flush=True)
        finally:
            node.stop()
    return {"race": race, "fanout": fan}


def main(opts: Options) -> int:
    result = runner.run(_main(opts))
    runner.write_json(result, opts.out)
    r, f = result["race"], result["fanout"]
    print(
        f"order.place -> order.result: p50 {r['latency_ms']['p50']} ms, p99 "
        f"{r['latency_ms']['p99']} ms ({r['orders']} orders, {r['viewers']} viewers, "
        f"stock {r['stock']}: {r['statuses']}); node-side store decision mean "
        f"{r['node_store_latency_ms']['mean']} ms, p99 <= "
        f"{r['node_store_latency_ms']['p99_bucket_le']} ms\n"
        f"fan-out to {f['viewers']} viewers: {f['messages_per_second']} msg/s delivered, "
        f"{f['messages_per_cpu_second']} msg per node-CPU-second "
        f"({f['messages_received']}/{f['messages_expected']} received)"
    )
    return 0
