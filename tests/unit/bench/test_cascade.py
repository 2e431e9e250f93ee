"""bench.cascade: pairing the same packet's arrivals at two viewers, and the CLI's bounds."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from bench.cascade import _hop_latency
from bench.cli import main


def viewer(arrivals: list[tuple[int, float]]) -> Any:
    return SimpleNamespace(arrivals=arrivals)


def test_hop_pairs_packets_of_frames_complete_at_both_viewers() -> None:
    origin = viewer([(1, 10.000), (1, 10.001), (2, 10.033), (3, 10.066), (3, 10.067)])
    edge = viewer([(1, 10.002), (1, 10.004), (2, 10.036), (3, 10.069)])  # frame 3: one lost
    hop = _hop_latency(origin, edge)
    assert hop == pytest.approx([2.0, 3.0, 3.0])


def test_frames_missing_at_the_origin_viewer_are_skipped() -> None:
    assert _hop_latency(viewer([]), viewer([(1, 1.0)])) == []


@pytest.mark.parametrize("args", [["--edges", "0"], ["--edges", "9"], ["--viewers", "0"]])
def test_cli_bounds_the_run(args: list[str]) -> None:
    with pytest.raises(SystemExit):
        main(["cascade", *args])
