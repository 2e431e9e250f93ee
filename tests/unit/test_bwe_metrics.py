"""The downlink estimation metrics: the estimate histogram and the per-viewer gauges."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sfu.core import bwe
from sfu.core.allocator import Allocation
from sfu.core.downlink import Downlink
from sfu.metrics import Histogram, NodeMetrics
from sfu.net.downlink import bitrate_gauge, state_gauge


def test_histogram_buckets_are_cumulative() -> None:
    h = Histogram((100.0, 1000.0))
    for v in (50, 100, 500, 5000):
        h.observe(v)
    assert h.cumulative() == [("100.0", 2), ("1000.0", 3), ("+Inf", 4)]
    assert (h.count, h.sum) == (4, 5650)


def test_estimate_histogram_is_exported() -> None:
    m = NodeMetrics()
    m.bwe_estimate.observe(1.2e6)
    m.bwe["probe_clusters"] += 2
    text = m.render().decode()
    assert 'sfu_bwe_estimate_bps_bucket{le="1500000.0"} 1.0' in text
    assert "sfu_bwe_estimate_bps_count 1.0" in text
    assert 'sfu_bwe_events_total{event="probe_clusters"} 2.0' in text


def _peer(core: Downlink | None) -> Any:
    return SimpleNamespace(bwe=None if core is None else SimpleNamespace(core=core))


def test_gauges_sum_viewers_with_an_estimate() -> None:
    warm = Downlink(bwe.create("null"), 3)
    warm.last = Allocation(available=1e6, allocated=7e5, desired=2e6)
    warm.feedback_seen = True
    cold = Downlink(bwe.create("null"), 3)
    peers = [_peer(warm), _peer(cold), _peer(None)]
    assert bitrate_gauge(peers) == {("available",): 1e6, ("allocated",): 7e5,
                                    ("desired",): 2e6}
    states = state_gauge(peers)
    assert states[(bwe.NORMAL,)] == 1 and states[("no_feedback",)] == 1
