"""Smoke test of ``python -m bench load``: a spawned node, 1 room x 3 subscribers, 3 s."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFU_API_")}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_load_smoke(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    res = _bench("load", "--spawn", "--rooms", "1", "--subscribers", "3", "--duration", "3",
                 "--warmup", "1", "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(out.read_text())
    r = report["result"]
    for key in ("forwarded_packets_per_second", "us_per_forwarded_packet", "latency_ms",
                "loss_percent", "client_cpu_percent", "server_cpu_percent", "connected",
                "expected_packets", "received_packets", "passed"):
        assert key in r, key
    assert r["connected"] == 3 and not r["error"]
    assert r["expected_packets"] > 0
    assert r["loss_percent"] == 0.0
    assert r["received_packets"] == r["expected_packets"]
    assert r["forwarded_packets_per_second"] > 0
    assert r["us_per_forwarded_packet"] > 0
    assert {"p50", "p95", "p99"} <= set(r["latency_ms"])
    assert report["node"]["spawned"] is True


def test_load_unreachable_node_is_one_line_exit_2() -> None:
    env_args = ("load", "--url", "http://127.0.0.1:9", "--duration", "1")
    env = dict(os.environ, SFU_API_KEY="k", SFU_API_SECRET="s" * 40)
    res = subprocess.run([sys.executable, "-m", "bench", *env_args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 2
    assert res.stderr.startswith("error: cannot reach the node")
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_load_without_credentials_is_exit_2() -> None:
    res = _bench("load", "--url", "http://127.0.0.1:9", timeout=60)
    assert res.returncode == 2
    assert "SFU_API_KEY" in res.stderr and "Traceback" not in res.stderr
