"""NTP-style offset estimation, under a virtual network with asymmetric jitter."""

from __future__ import annotations

import random

import pytest

from signalling.domain.clock import ClockOffsetEstimator

TRUE_OFFSET = 1234.567  # server clock minus client clock


def exchange(est: ClockOffsetEstimator, client_now: float, up: float, down: float) -> float:
    """One ping/pong over a virtual link; returns the client time when the pong arrives."""
    server_time = client_now + up + TRUE_OFFSET
    recv = client_now + up + down
    est.add_sample(client_now, server_time, recv)
    return recv


def test_symmetric_path_is_exact() -> None:
    est = ClockOffsetEstimator()
    exchange(est, 10.0, 0.040, 0.040)
    assert est.offset == pytest.approx(TRUE_OFFSET)
    assert est.uncertainty == pytest.approx(0.040)
    assert est.server_time(20.0) == pytest.approx(20.0 + TRUE_OFFSET)


def test_no_estimate_before_samples() -> None:
    est = ClockOffsetEstimator()
    assert est.offset is None and est.uncertainty is None and est.server_time(1.0) is None
    assert est.needs_resync(0.0)


def test_min_delay_sample_wins_and_ages_out_of_the_window() -> None:
    est = ClockOffsetEstimator(window=3)
    t = exchange(est, 0.0, 0.001, 0.001)  # best: delay 2 ms, exact
    t = exchange(est, t, 0.100, 0.0)  # 100 ms, skewed by +50 ms
    t = exchange(est, t, 0.060, 0.0)  # 60 ms, skewed by +30 ms
    assert est.offset == pytest.approx(TRUE_OFFSET)
    exchange(est, t, 0.080, 0.0)  # pushes the best sample out of the window of 3
    assert est.offset == pytest.approx(TRUE_OFFSET + 0.030)
    assert est.uncertainty == pytest.approx(0.030)
    assert len(est.samples) == 3


def test_asymmetric_jitter_best_of_8_within_20ms() -> None:
    """Uplink jitter 0-50 ms, downlink 0-5 ms: one sample can be 25 ms off; the best of 8
    must be within 20 ms, and the reported uncertainty must bound the real error."""
    worst = 0.0
    for seed in range(300):
        rng = random.Random(seed)
        est = ClockOffsetEstimator()
        t = rng.uniform(0, 1e6)
        for _ in range(8):
            t = exchange(est, t, rng.uniform(0, 0.050), rng.uniform(0, 0.005)) + 0.1
        assert est.offset is not None and est.uncertainty is not None
        error = abs(est.offset - TRUE_OFFSET)
        assert error <= est.uncertainty + 1e-9
        worst = max(worst, error)
    assert worst < 0.020


def test_resync_every_30_seconds_after_the_latest_sample() -> None:
    est = ClockOffsetEstimator()
    recv = exchange(est, 100.0, 0.01, 0.01)
    assert not est.needs_resync(recv)
    assert not est.needs_resync(recv + 29.999)
    assert est.needs_resync(recv + 30.0)


def test_impossible_samples_are_rejected() -> None:
    est = ClockOffsetEstimator()
    with pytest.raises(ValueError):
        est.add_sample(10.0, 5.0, 9.0)  # received before sent
    with pytest.raises(ValueError):
        est.add_sample(10.0, float("nan"), 11.0)
    assert est.offset is None
    with pytest.raises(ValueError):
        ClockOffsetEstimator(window=0)
