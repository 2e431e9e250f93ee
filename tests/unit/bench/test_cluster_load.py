"""Pure parts of bench/cluster_load.py and the per-node rows of bench/load.py."""

from __future__ import annotations

import pytest

from bench.cli import main
from bench.cluster_load import fit_node_cost, projection, ratio, spread, viewer_node
from bench.load import NodeRef, node_rows


def test_viewers_go_round_robin_over_the_nodes() -> None:
    assert [viewer_node(i, 3) for i in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert [viewer_node(i, 1) for i in range(3)] == [0, 0, 0]
    with pytest.raises(ValueError):
        viewer_node(0, 0)


@pytest.mark.parametrize(("viewers", "nodes", "expected"), [
    (0, 3, [0, 0, 0]), (1, 3, [1, 0, 0]), (10, 3, [4, 3, 3]), (11, 3, [4, 4, 3]),
    (12, 3, [4, 4, 4]), (5, 1, [5]),
])
def test_spread_counts_match_viewer_node(viewers: int, nodes: int, expected: list[int]) -> None:
    assert spread(viewers, nodes) == expected
    assert sum(spread(viewers, nodes)) == viewers
    assert max(expected) - min(expected) <= 1


def test_fit_recovers_fixed_and_per_viewer_cost() -> None:
    # 5 % fixed, 0.5 % per viewer: one core holds (100 - 5) / 0.5 = 190 viewers.
    fit = fit_node_cost([(10, 10.0), (20, 15.0), (40, 25.0)])
    assert fit == {"fixed_percent": 5.0, "percent_per_viewer": 0.5, "viewers_at_one_core": 190}


def test_fit_needs_two_viewer_counts_and_a_rising_cost() -> None:
    assert fit_node_cost([]) is None
    assert fit_node_cost([(10, 10.0), (10, 12.0)]) is None
    assert fit_node_cost([(10, 20.0), (20, 10.0)]) is None


def test_fit_never_reports_negative_fixed_cost() -> None:
    fit = fit_node_cost([(10, 4.0), (20, 10.0)])  # the line crosses 0 at 3.3 viewers
    assert fit is not None and fit["fixed_percent"] == 0.0
    assert fit["viewers_at_one_core"] == int(100 / 0.6)


def run(nodes: dict[str, tuple[int, float]]) -> dict[str, object]:
    return {"nodes": {k: {"viewers": v, "cpu_percent": c} for k, (v, c) in nodes.items()}}


def test_projection_adds_up_the_nodes_over_the_runs() -> None:
    runs = [run({"n1": (4, 12.0), "n2": (3, 6.0)}), run({"n1": (8, 14.0), "n2": (6, 9.0)}),
            {"error": "did not connect"}]
    p = projection(runs)
    assert p["per_node"]["n1"]["viewers_at_one_core"] == int((100 - 10) / 0.5)
    assert p["per_node"]["n2"]["viewers_at_one_core"] == int((100 - 3) / 1.0)
    assert p["viewers_at_one_core_per_node_total"] == 180 + 97


def test_projection_has_no_total_if_a_node_cannot_be_fitted() -> None:
    runs = [run({"n1": (4, 12.0), "n2": (3, 6.0)}), run({"n1": (8, 14.0), "n2": (3, 7.0)})]
    p = projection(runs)
    assert "n2" not in p["per_node"]
    assert p["viewers_at_one_core_per_node_total"] is None


def test_ratio() -> None:
    assert ratio(75, 30) == 2.5
    assert ratio(10, 0) is None


def metrics(video: float, audio: float, cascade_out: float, cascade_in: float,
            viewers: int) -> dict[str, float]:
    return {'sfu_packets_out_total{kind="video"}': video,
            'sfu_packets_out_total{kind="audio"}': audio,
            'sfu_cascade_events_total{event="packets_out"}': cascade_out,
            'sfu_cascade_events_total{event="packets_in"}': cascade_in,
            'sfu_sessions_active{kind="whep",state="connected"}': float(viewers),
            'sfu_sessions_active{kind="whip",state="connected"}': 1.0}


def test_node_rows_per_node_rates_and_cpu() -> None:
    nodes = [NodeRef("n1", "http://a"), NodeRef("n2", "http://b")]
    rows = node_rows(
        nodes,
        [metrics(0, 0, 0, 0, 2), metrics(0, 0, 0, 0, 2)],
        [metrics(1000, 500, 340, 0, 2), metrics(800, 200, 0, 340, 2)],
        [1.0, None], [1.5, None], window=2.0, cpu_window=2.5)
    assert rows["n1"] == {"url": "http://a", "viewers": 2, "forwarded_packets_per_second": 750.0,
                          "cascade_packets_out_per_second": 170.0,
                          "cascade_packets_in_per_second": 0.0, "cpu_percent": 20.0}
    assert rows["n2"]["cascade_packets_in_per_second"] == 170.0
    assert "cpu_percent" not in rows["n2"]


def test_node_rows_without_metrics_keep_the_cpu() -> None:
    rows = node_rows([NodeRef("n1", "http://a")], [None], [None], [0.0], [0.5], 1.0, 1.0)
    assert rows == {"n1": {"url": "http://a", "cpu_percent": 50.0}}


@pytest.mark.parametrize("args", [["--nodes", "0"], ["--nodes", "6"], ["--max-seconds", "10"],
                                  ["--subscribers", "0"], ["--duration", "0"]])
def test_cli_bounds_the_run(args: list[str]) -> None:
    with pytest.raises(SystemExit):
        main(["cluster-load", *args])


def test_cli_search_start_above_limit_is_exit_2() -> None:
    assert main(["cluster-load", "--search", "--search-start", "100",
                 "--search-limit", "50"]) == 2
