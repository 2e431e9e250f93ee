"""The suite's time limits (tests/conftest.py): a stuck async test fails and the run goes on."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]


def test_a_stuck_async_test_fails_at_its_limit_and_the_next_one_runs(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeconftest("from tests.conftest import pytest_collection_modifyitems  # noqa\n")
    pytester.makeini("[pytest]\nasyncio_mode = auto\ntimeout = 60\ntimeout_method = thread\n")
    pytester.makepyfile(test_inner="""
import asyncio

import pytest


@pytest.mark.timeout(1)
async def test_stuck():
    await asyncio.Event().wait()


async def test_after():
    await asyncio.sleep(0)
""")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=50)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*timed out after 1 s*"])
