"""RembEstimator: the viewer's REMB is the estimate; padding lets it grow."""

from sfu.core.bwe.remb import PAD_PAUSE, PAD_WINDOW, RembEstimator


def test_remb_is_the_estimate_and_goes_stale() -> None:
    est = RembEstimator(start_bitrate=300_000, stale_after=5.0)
    est.on_remb(1.2e6, 1.0)
    assert est.target_bitrate == 1.2e6
    est.handle_timer(6.5)
    assert est.target_bitrate == 300_000


def test_pads_while_the_goal_is_above_the_estimate() -> None:
    est = RembEstimator()
    est.on_remb(500_000, 0.0)
    est.set_desired_bitrate(2e6, 0.1)
    assert est.padding_rate() == 500_000  # up to what the viewer reported
    est.on_remb(900_000, 2.0)  # the viewer measured the padding: its estimate grows
    est.set_desired_bitrate(2e6, 2.1)
    assert est.padding_rate() == 900_000
    est.on_remb(2.1e6, 4.0)  # goal reached: no more padding
    est.set_desired_bitrate(2e6, 4.1)
    assert est.padding_rate() == 0.0


def test_padding_pauses_when_the_estimate_does_not_follow() -> None:
    est = RembEstimator()
    t = 0.0
    while t < PAD_WINDOW + 0.5:
        est.on_remb(500_000, t)  # a full link: the estimate stays
        est.set_desired_bitrate(2e6, t)
        t += 0.1
    assert est.padding_rate() == 0.0 and est.pad_pauses == 1
    while t < PAD_WINDOW + PAD_PAUSE + 1.0:
        est.set_desired_bitrate(2e6, t)
        t += 0.1
    assert est.padding_rate() > 0  # tries again after the pause


def test_padding_stops_at_once_when_the_estimate_falls() -> None:
    est = RembEstimator()
    est.on_remb(1e6, 0.0)
    est.set_desired_bitrate(2e6, 0.0)
    assert est.padding_rate() == 1e6
    est.on_remb(0.5e6, 1.0)  # congestion: the viewer's estimate halved
    est.set_desired_bitrate(2e6, 1.0)
    assert est.padding_rate() == 0.0 and est.pad_pauses == 1
