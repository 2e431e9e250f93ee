"""promtool validates the Prometheus config, the alert rules and their unit tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.helpers import ALERT_RULE_TESTS, ALERT_RULES, PROMETHEUS_CONFIG, ROOT


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not found: `make system-deps` installs it (Debian package prometheus)")
    return path


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=60,
        check=False,
    )


def test_promtool_check_config() -> None:
    # Also loads the rule files the config names (alerts.yml, relative to the config).
    result = _run("check", "config", PROMETHEUS_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


def test_promtool_check_rules() -> None:
    result = _run("check", "rules", ALERT_RULES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_alert_unit_tests() -> None:
    result = _run("test", "rules", ALERT_RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
