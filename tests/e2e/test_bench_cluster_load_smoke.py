"""Smoke test of ``python -m bench cluster-load``: redis + 2 nodes with the cascade, 4 viewers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cluster_load_smoke(tmp_path: Path) -> None:
    out = tmp_path / "cluster-load.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFU_")}
    res = subprocess.run(
        [sys.executable, "-m", "bench", "cluster-load", "--nodes", "2", "--subscribers", "4",
         "--duration", "3", "--warmup", "1", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-2000:] + res.stdout[-2000:]
    report = json.loads(out.read_text())
    [row] = report["runs"]
    assert row["nodes"] == 2 and row["spread"] == [2, 2]
    r = row["result"]
    assert r["connected"] == 4 and not r["error"]
    assert r["expected_packets"] > 0 and r["received_packets"] == r["expected_packets"]
    n1, n2 = r["nodes"]["n1"], r["nodes"]["n2"]
    # Both nodes serve their own viewers: the edge gets the room over the cascade.
    assert n1["viewers"] == 2 and n2["viewers"] == 2
    assert n1["forwarded_packets_per_second"] > 0 and n2["forwarded_packets_per_second"] > 0
    assert n1["cascade_packets_out_per_second"] > 0
    assert n2["cascade_packets_in_per_second"] > 0 and n2["cascade_packets_out_per_second"] == 0
    assert n1["cpu_percent"] > 0 and n2["cpu_percent"] > 0
    assert r["us_per_forwarded_packet"] > 0
