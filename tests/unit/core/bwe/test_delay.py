from sfu.core.bwe import NORMAL, OVERUSING, UNDERUSING
from sfu.core.bwe.delay import InterArrival, OveruseDetector, TrendlineEstimator


def test_inter_arrival_groups_5ms_bursts() -> None:
    ia = InterArrival()
    out = []
    for i in range(30):  # one packet per ms: groups of ~6 packets
        d = ia.add(i * 0.001, 0.050 + i * 0.001, 1000)
        if d is not None:
            out.append(d)
    assert out
    for d in out:
        assert abs(d.send_delta - d.arrival_delta) < 1e-9


def _feed(delay_growth_ms: float, groups: int = 60) -> tuple[TrendlineEstimator, OveruseDetector,
                                                             list[str]]:
    ia, tr, det = InterArrival(), TrendlineEstimator(), OveruseDetector()
    states = []
    extra = 0.0
    for g in range(groups):
        extra = max(0.0, extra + delay_growth_ms / 1000)
        send = g * 0.010
        arrival = 0.05 + send + extra
        d = ia.add(send, arrival, 1200)
        if d is not None:
            trend = tr.update(d)
            states.append(det.detect(trend, d.send_delta, tr.num_deltas, arrival))
    return tr, det, states


def test_steady_delay_is_normal() -> None:
    _, _, states = _feed(0.0)
    assert set(states) == {NORMAL}


def test_growing_delay_is_overuse() -> None:
    tr, _, states = _feed(2.0)
    assert tr.slope > 0
    assert OVERUSING in states


def test_draining_queue_is_underuse() -> None:
    ia, tr, det = InterArrival(), TrendlineEstimator(), OveruseDetector()
    states = []
    queue = 0.3
    for g in range(60):
        queue = max(0.0, queue - 0.004)
        send = g * 0.010
        d = ia.add(send, 0.05 + send + queue, 1200)
        if d is not None:
            states.append(det.detect(tr.update(d), d.send_delta, tr.num_deltas, 0.05 + send))
    assert UNDERUSING in states


def test_threshold_adapts_within_bounds() -> None:
    det = OveruseDetector()
    for i in range(1000):
        det.detect(20.0, 0.01, 60, i * 0.01)
    assert 12.5 < det.threshold <= 600
    for i in range(1000, 3000):
        det.detect(0.0, 0.01, 60, i * 0.01)
    assert det.threshold == 6.0
