"""Run the node:test suites of the browser client's modules (tests/unit/js/*.test.mjs)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="Node.js (`node`) is not installed: the JS suite needs it")
@pytest.mark.parametrize(
    ("suite", "min_passed"),
    [
        ("clock-sync.test.mjs", 15),  # sfu/static/js/clock-sync.js
        ("cluster.test.mjs", 6),  # sfu/static/js/cluster.js
    ],
)
def test_js_suite(suite: str, min_passed: int) -> None:
    assert NODE is not None
    proc = subprocess.run(
        [NODE, "--test", "--test-reporter=tap", str(HERE / suite)],
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
    assert passed and int(passed[-1].split()[-1]) >= min_passed, output
