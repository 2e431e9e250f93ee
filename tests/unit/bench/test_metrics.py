"""bench.metrics: freeze definition (webrtc-stats), percentiles, utilisation."""

from __future__ import annotations

import pytest

from bench import metrics as m


def frames(n: int, period: float = 1 / 30, start: float = 0.0) -> list[float]:
    return [start + i * period for i in range(n)]


def test_steady_30fps_has_no_freeze() -> None:
    f = m.freezes(frames(300))
    assert f.count == 0 and f.total_duration == 0.0


def test_gap_of_mean_plus_150ms_is_a_freeze_at_30fps() -> None:
    # At 30 fps (33.3 ms) max(3 * 33.3, 33.3 + 150) = 183.3 ms decides.
    base = frames(31)
    just_over = base + [base[-1] + 0.184]
    just_under = base + [base[-1] + 0.182]
    assert m.freezes(just_over).count == 1
    assert m.freezes(just_over).total_duration == pytest.approx(0.184)
    assert m.freezes(just_under).count == 0


def test_three_times_mean_decides_at_low_frame_rate() -> None:
    # At 2 fps (500 ms) 3 * 500 = 1500 ms > 500 + 150 ms.
    base = frames(10, period=0.5)
    assert m.freezes(base + [base[-1] + 1.4]).count == 0
    assert m.freezes(base + [base[-1] + 1.5]).count == 1


def test_freeze_durations_add_up_and_enter_the_mean() -> None:
    times = frames(31)
    times += [times[-1] + 1.0]  # freeze 1
    times += frames(30, start=times[-1] + 1 / 30)
    times += [times[-1] + 0.5]  # freeze 2 (mean now includes the 1 s gap, still < 0.5/3)
    f = m.freezes(times)
    assert f.count == 2
    assert f.total_duration == pytest.approx(1.5)
    assert f.starts[0] == pytest.approx(times[30])


def test_window_30_versus_running_mean() -> None:
    # 30 slow frames then fast ones: the 30-frame window forgets the slow part.
    times = frames(31, period=0.2)
    times += frames(60, period=1 / 30, start=times[-1] + 1 / 30)
    times += [times[-1] + 0.2]
    assert m.freezes(times, window=30).count == 1
    assert m.freezes(times, window=None).count == 0


def test_first_gap_is_never_a_freeze_and_empty_inputs() -> None:
    assert m.freezes([]).count == 0
    assert m.freezes([0.0]).count == 0
    assert m.freezes([0.0, 10.0]).count == 0


def test_time_without_video() -> None:
    assert m.time_without_video(1.0, [], 10.0) == 9.0
    times = frames(31, start=1.5)
    assert m.time_without_video(1.0, times, times[-1]) == pytest.approx(0.5)
    # a stream that stops for good: the tail counts once it would be a freeze
    assert m.time_without_video(1.0, times, times[-1] + 5) == pytest.approx(5.5)


def test_percentiles_interpolate_linearly() -> None:
    values = [float(v) for v in range(1, 101)]
    assert m.percentile(values, 50) == pytest.approx(50.5)
    assert m.percentile(values, 95) == pytest.approx(95.05)
    assert m.percentile(values, 99) == pytest.approx(99.01)
    assert m.percentile([3.0], 99) == 3.0
    assert m.percentile([], 50) is None
    with pytest.raises(ValueError):
        m.percentile(values, 101)
    s = m.latency_summary([0.010, 0.020, 0.030])
    assert s["p50"] == pytest.approx(20.0) and s["max"] == pytest.approx(30.0)


def test_bitrate_and_utilisation() -> None:
    # 1000 bytes every 10 ms = 800 kbit/s for 2 s.
    times = [i * 0.01 for i in range(200)]
    rates = m.bitrate_series(times, [1000] * 200, 0.5, 2.0)
    assert rates == pytest.approx([800_000.0] * 4)
    capacity = m.capacity_series(lambda t: 1e6 if t < 1 else 2e6, 0.5, 2.0)
    assert capacity == pytest.approx([1e6, 1e6, 2e6, 2e6])
    assert m.utilisation(rates, capacity, 0.5) == pytest.approx((0.8 + 0.8 + 0.4 + 0.4) / 4)
    assert m.utilisation(rates, capacity, 0.5, convergence=1.0) == pytest.approx(0.4)
    assert m.utilisation(rates, [None] * 4, 0.5) is None
    assert m.capacity_series(None, 0.5, 2.0) == [None] * 4


def test_loss_helpers() -> None:
    assert m.loss_fraction(100, 80) == pytest.approx(0.2)
    assert m.loss_fraction(0, 0) == 0.0
    assert m.loss_fraction(10, 12) == 0.0
    assert m.combine_loss(0.1, 0.2) == pytest.approx(0.28)
    assert m.ratio_series([1.0, 0.0], [4.0, 0.0]) == [0.25, None]
    assert m.join_to_first_frame(1.0, [1.25, 1.3]) == 0.25
    assert m.join_to_first_frame(1.0, []) is None
