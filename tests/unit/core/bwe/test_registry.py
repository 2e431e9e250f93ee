import ast
from pathlib import Path

import pytest

from sfu.core import bwe
from sfu.core.bwe import GccEstimator, NullEstimator, RembEstimator


def test_registry_names_and_create() -> None:
    assert {"gcc", "remb", "null"} <= set(bwe.available())
    assert isinstance(bwe.create("gcc"), GccEstimator)
    assert isinstance(bwe.create("remb", start_bitrate=1e6), RembEstimator)
    assert bwe.create("null").target_bitrate is None
    with pytest.raises(ValueError, match="unknown estimator 'nope'"):
        bwe.create("nope")


def test_register_custom() -> None:
    bwe.register("test-null", NullEstimator)
    assert isinstance(bwe.create("test-null"), NullEstimator)


def test_remb_estimator_clamps_and_goes_stale() -> None:
    e = RembEstimator(start_bitrate=300e3, min_bitrate=50e3)
    e.set_send_rate(3e6, 0.0)
    e.on_remb(1e6, 0.5)
    e.on_remb(10, 1.0)  # fell below what is sent: congestion, the REMB caps
    assert e.target_bitrate == 50e3
    e.on_remb(2e6, 2.0)
    assert e.target_bitrate == 2e6
    assert e.get_timer() == pytest.approx(7.0)
    e.handle_timer(7.0)
    assert e.target_bitrate == 300e3


def test_sans_io_modules_import_no_io() -> None:
    root = Path(__file__).resolve().parents[4] / "sfu" / "core"
    files = list((root / "bwe").glob("*.py")) + [root / "allocator.py", root / "pacer.py"]
    for f in files:
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for n in names:
                assert n.split(".")[0] not in {"asyncio", "socket", "time"}, f"{f}: {n}"
