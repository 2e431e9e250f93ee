"""A real cluster on loopback: redis-server and N ``python -m sfu serve`` processes.

Each node has its own data dir, HTTP and UDP ports from the OS, the same credentials, the
same Redis as commerce store and cluster registry, and node id ``n1``..``nN``. With
``cascade=True`` every node also gets a ``--cascade-port``; the node relays rooms only once
the cascade package is built into it, and the tests then expect viewers to be served on
every node instead of on the room's origin.

    harness = ClusterHarness(tmp_path, nodes=3)
    await harness.start()
    ...
    harness.kill("n2")          # SIGKILL: no drain, no deregistration
    await harness.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.ports import free_port, free_udp_port
from tests.conftest import TEST_API_KEY, TEST_API_SECRET
from tests.integration.conftest import RedisServer

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


@dataclass
class NodeProcess:
    node_id: str
    http_port: int
    udp_port: int
    data_dir: Path
    cascade_port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "node.log"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class ClusterHarness:
    def __init__(self, tmp: Path, nodes: int = 3, *, cascade: bool = False) -> None:
        self.tmp = tmp
        self.cascade = cascade
        self.redis = RedisServer(tmp / "redis")
        self.nodes = [
            NodeProcess(
                node_id=f"n{i + 1}", http_port=free_port(), udp_port=free_udp_port(),
                data_dir=tmp / f"n{i + 1}", cascade_port=free_udp_port() if cascade else 0,
            )
            for i in range(nodes)
        ]

    def node(self, node_id: str) -> NodeProcess:
        return next(n for n in self.nodes if n.node_id == node_id)

    def by_url(self, url: str) -> NodeProcess:
        """The node a URL (a session Location, say) points at."""
        return next(n for n in self.nodes if url.startswith(n.url + "/") or url == n.url)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.redis.start()
        for n in self.nodes:
            self._spawn(n)
        await asyncio.gather(*(self.wait_ready(n) for n in self.nodes))
        await self.wait_members(len(self.nodes))

    def _spawn(self, n: NodeProcess) -> None:
        n.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable, "-m", "sfu", "serve",
            "--host", "127.0.0.1", "--http-port", str(n.http_port),
            "--udp-port", str(n.udp_port), "--data-dir", str(n.data_dir),
            "--store", self.redis.url, "--cluster-redis-url", self.redis.url,
            "--node-id", n.node_id, "--peer-network", "127.0.0.0/8",
            "--drain-timeout", "2", "--production",
        ]
        if n.cascade_port:
            args += ["--cascade-port", str(n.cascade_port)]
        env = {**os.environ, "SFU_API_KEY": TEST_API_KEY, "SFU_API_SECRET": TEST_API_SECRET,
               "PYTHONPATH": str(ROOT)}
        with open(n.log_path, "ab") as log:
            n.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=log)

    async def wait_ready(self, n: NodeProcess) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while True:
                if not n.alive():
                    raise RuntimeError(f"{n.node_id} exited:\n{n.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(n.url + "/healthz") as resp:
                        if resp.status == 200:
                            return
                if loop.time() > deadline:
                    raise TimeoutError(f"{n.node_id} not ready in {START_TIMEOUT}s:\n"
                                       f"{n.log_tail()}")
                await asyncio.sleep(0.1)

    async def cluster_nodes(self, n: NodeProcess) -> float:
        """``sfu_cluster_nodes`` as node ``n`` reports it."""
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
            http.get(n.url + "/metrics") as resp,
        ):
            text = await resp.text()
        for line in text.splitlines():
            if line.startswith("sfu_cluster_nodes "):
                return float(line.split()[1])
        raise AssertionError(f"{n.node_id} exports no sfu_cluster_nodes")

    async def wait_members(self, count: int, timeout: float = 10.0) -> float:  # noqa: ASYNC109
        """Wait until every live node knows exactly ``count`` nodes; return the wait."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            live = [n for n in self.nodes if n.alive()]
            counts = await asyncio.gather(*(self.cluster_nodes(n) for n in live))
            if all(c == count for c in counts):
                return loop.time() - started
            if loop.time() - started > timeout:
                raise TimeoutError(f"nodes report {counts}, expected {count}")
            await asyncio.sleep(0.05)

    def kill(self, node_id: str) -> None:
        """kill -9: the node neither drains nor leaves the registry."""
        n = self.node(node_id)
        assert n.proc is not None
        os.kill(n.proc.pid, signal.SIGKILL)
        n.proc.wait(timeout=10)

    async def stop(self) -> None:
        for n in self.nodes:
            if n.alive():
                assert n.proc is not None
                n.proc.send_signal(signal.SIGTERM)
        for n in self.nodes:
            if n.proc is None:
                continue
            try:
                await asyncio.to_thread(n.proc.wait, STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                n.proc.kill()
                await asyncio.to_thread(n.proc.wait, STOP_TIMEOUT)
        self.redis.stop()
