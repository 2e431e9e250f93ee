"""Run the node:test suite of sfu/static/js/cluster.js (tests/unit/js/cluster.test.mjs)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
SUITE = HERE / "cluster.test.mjs"
NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="Node.js (`node`) is not installed: the JS suite needs it")
def test_cluster_js_suite() -> None:
    assert NODE is not None
    proc = subprocess.run(
        [NODE, "--test", "--test-reporter=tap", str(SUITE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "# fail 0" in output, output
    passed = [line for line in output.splitlines() if line.startswith("# pass ")]
    assert passed and int(passed[-1].split()[-1]) >= 6, output
