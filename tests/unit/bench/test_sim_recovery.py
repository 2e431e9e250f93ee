"""bench.sim with the real loss-recovery cores (bench.sim.hooks.NackRtxRecovery)."""

from __future__ import annotations

import pytest

from bench.sim.run import ConfigError, PathSpec, SimConfig, simulate


def run(recovery: str, loss: str, delay: float = 50.0, duration: float = 20.0) -> dict:
    cfg = SimConfig(duration=duration, seed=1, bitrate=800_000, recovery=recovery,
                    up=PathSpec(delay_ms=10), down=PathSpec(delay_ms=delay, loss=loss))
    return simulate(cfg)["metrics"]["aggregate"]


def test_nack_rtx_repairs_twenty_percent_loss() -> None:
    off = run("none", "bernoulli:20%")
    on = run("nack", "bernoulli:20%")
    assert on["recovery"] == "nack" and off["recovery"] == "none"
    assert off["video_residual_loss"] > 0.15
    assert on["video_residual_loss"] < 0.01
    o = on["overhead_nack_rtx_fec"]
    assert o["rtx_packets"] > 0 and o["nack_bytes"] > 0 and o["fec_packets"] == 0
    assert o["red_bytes"] == 0


def test_full_recovery_meets_video_and_audio_targets_at_twenty_percent() -> None:
    on = run("nack+red+fec", "bernoulli:20%", duration=60.0)
    assert on["video_residual_loss"] < 0.01
    assert on["freeze_total_s"] < 0.02 * 60
    assert on["latency_p95_ms"] < 400
    assert on["audio_delivered_within_300ms"] > 0.99
    assert on["overhead_nack_rtx_fec"]["fec_packets"] > 0


def test_clean_link_costs_almost_nothing() -> None:
    on = run("nack+red+fec", "none", delay=25)
    o = on["overhead_nack_rtx_fec"]
    assert on["residual_loss"] == 0.0 and on["freeze_count"] == 0
    assert o["rtx_packets"] == 0 and o["fec_packets"] == 0
    assert 0 < o["ratio"] < 0.02  # RED's primary header and the first second's one copy


def test_unknown_recovery_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--recovery"):
        simulate(SimConfig(duration=1, recovery="magic"))
