"""The bandwidth-estimation simulation (bench.sim.bwe) and its table, on the virtual clock."""

import pytest

from bench.sim import bwe_table
from bench.sim.bwe import DEFAULT_LAYERS, build_bwe, ladder, simulate_bwe
from bench.sim.bwe_table import NEVER, _cell, _secs


@pytest.fixture(scope="module")
def rfc8867() -> dict:
    # RFC 8867 5.1 up to just after the 2.5 -> 0.6 Mbit/s drop (the 1 -> 2.5 step is at 40 s)
    cfg = bwe_table.config("RFC 8867 5.1", "rfc8867", 70.0, seed=3)
    return simulate_bwe(cfg, "gcc", DEFAULT_LAYERS)["metrics"]


def test_gcc_answers_the_rfc8867_steps(rfc8867: dict) -> None:
    (drop,) = rfc8867["drops"]
    assert drop["from"] == 2.5e6 and drop["to"] == 0.6e6
    assert drop["sending_under_s"] is not None and drop["sending_under_s"] <= 1.0
    (up,) = rfc8867["step_ups"]
    assert up["target_rank"] == 2 and up["layer_up_s"] is not None and up["layer_up_s"] <= 5.0
    assert rfc8867["layer_switches_per_min_steady"] <= 2.0
    assert rfc8867["queuing_delay_ms"]["p95"] < 100
    # no allocator of these three layers could do better than the oracle
    assert rfc8867["utilisation"] <= rfc8867["oracle_utilisation"]
    assert rfc8867["utilisation_of_attainable"] > 0.85


def test_the_ladder_has_temporal_steps_only_when_the_allocator_uses_them() -> None:
    plain = build_bwe(bwe_table.config("x", "rfc8867", 1.0, temporal_steps=False), "gcc")
    assert ladder(plain) == DEFAULT_LAYERS
    steps = build_bwe(bwe_table.config("x", "rfc8867", 1.0, temporal_steps=True), "gcc")
    assert ladder(steps) == pytest.approx((60e3, 90e3, 150e3, 300e3, 500e3, 900e3, 1.5e6))


def test_a_never_in_the_middle_makes_the_median_never() -> None:
    assert _cell([12.15, NEVER, NEVER, 13.0], _secs) == "never [12.15-never]"
    assert _cell([1.0, 2.0, 3.0, 4.0], _secs) == "2.50 [1.00-4.00]"
    assert _cell([None, None], _secs) == "-"


def test_bad_seeds_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert bwe_table.main(["--seeds", "1,x", "--out", "/nonexistent"]) == 2
    assert "--seeds" in capsys.readouterr().err
