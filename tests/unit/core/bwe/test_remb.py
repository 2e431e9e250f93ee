"""RembEstimator: the viewer's REMB is a ceiling once it signals congestion; padding lets it
grow."""

from sfu.core.bwe.remb import HOLD, PAD_PAUSE, PAD_WINDOW, RembEstimator


def congested(start: float = 0.0) -> RembEstimator:
    """An estimator whose REMB has signalled congestion (it fell below the send rate)."""
    est = RembEstimator()
    est.set_send_rate(1.5e6, start)
    est.on_remb(1.4e6, start)
    est.on_remb(0.5e6, start + 0.5)
    assert est.capping
    return est


def test_no_ceiling_while_a_growing_remb_is_below_the_send_rate() -> None:
    """aiortc's first REMBs are low and grow ~8 %/s: that is not congestion."""
    est = RembEstimator()
    est.set_send_rate(1.5e6, 0.0)
    remb, t = 0.4e6, 3.0
    while t < 20.0:
        est.on_remb(remb, t)
        assert est.target_bitrate is None  # the viewer keeps its layer
        remb *= 1.04  # one REMB every 0.5 s
        t += 0.5
    assert est.rembs > 30 and not est.capping and est.padding_rate() == 0.0


def test_no_ceiling_while_the_remb_is_above_the_send_rate() -> None:
    est = RembEstimator()
    est.set_send_rate(0.5e6, 0.0)
    for i in range(20):
        est.on_remb(0.8e6, i * 0.5)  # converged, above what is sent
        est.set_desired_bitrate(2e6, i * 0.5)  # the allocator wants more (f came back)
    assert est.target_bitrate is None and est.padding_rate() == 0.0


def test_a_falling_remb_below_the_send_rate_caps_at_once() -> None:
    est = RembEstimator()
    est.set_send_rate(1.5e6, 0.0)
    est.on_remb(1.8e6, 3.0)
    est.on_remb(1.4e6, 3.5)  # fell, but still above 0.9 x the send rate: no ceiling
    assert est.target_bitrate is None
    est.on_remb(0.3e6, 4.0)  # the link narrowed
    assert est.target_bitrate == 0.3e6 and est.congestions == 1


def test_a_converged_remb_below_the_send_rate_caps() -> None:
    """A thin link from the start: the REMB never falls, it just stops growing."""
    est = RembEstimator()
    est.set_send_rate(1.5e6, 0.0)
    t = 3.0
    while est.target_bitrate is None and t < 10.0:
        est.on_remb(0.6e6, t)
        t += 0.5
    assert est.target_bitrate == 0.6e6
    assert 5.0 <= t <= 6.0  # two seconds of REMBs that did not grow


def test_the_ceiling_is_lifted_when_the_remb_covers_the_goal_after_the_hold() -> None:
    est = congested()
    est.set_send_rate(0.4e6, 0.6)
    est.on_remb(2e6, 2.0)
    est.set_desired_bitrate(1.8e6, 2.0)
    assert est.target_bitrate == 2e6  # still held: congestion was recent
    est.set_desired_bitrate(1.8e6, 0.5 + HOLD)
    assert est.target_bitrate is None
    est.set_desired_bitrate(1.8e6, 0.5 + HOLD)
    assert est.padding_rate() == 0.0


def test_remb_goes_stale() -> None:
    est = RembEstimator(start_bitrate=300_000, stale_after=5.0)
    est.on_remb(1.2e6, 1.0)
    est.handle_timer(6.5)
    assert est.target_bitrate == 300_000  # a viewer that stopped reporting may be congested


def test_pads_while_the_goal_is_above_the_estimate() -> None:
    est = congested(-1.0)
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
    est = congested(-1.0)
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
    est = congested(-1.0)
    est.on_remb(1e6, 0.0)
    est.set_desired_bitrate(2e6, 0.0)
    assert est.padding_rate() == 1e6
    est.on_remb(0.5e6, 1.0)  # congestion: the viewer's estimate halved
    est.set_desired_bitrate(2e6, 1.0)
    assert est.padding_rate() == 0.0 and est.pad_pauses == 1
