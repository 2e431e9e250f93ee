"""GccEstimator tells its probe controller when the delay detector reports overuse."""

from sfu.core.bwe import GccEstimator
from sfu.core.bwe.base import OVERUSING
from sfu.core.twcc import FeedbackGenerator

PKT = 1200


def _feed(est: GccEstimator, fb: FeedbackGenerator, seq: int, t0: float, n: int,
          growth: float) -> tuple[int, float]:
    """n packets 5 ms apart; each one-way delay `growth` s longer than the one before."""
    t = t0
    delay = 0.05
    for _ in range(n):
        est.on_packet_sent(seq & 0xFFFF, PKT, t)
        fb.record(seq & 0xFFFF, t + delay)
        seq += 1
        delay += growth
        t += 0.005
        if (ft := fb.get_timer()) is not None and ft <= t:
            for m in fb.handle_timer(t):
                est.on_feedback(m, t + 0.05)
    return seq, t


def test_overuse_is_passed_to_the_probe_controller_and_cleared_after_it() -> None:
    est = GccEstimator(initial_probes=False)
    fb = FeedbackGenerator(media_ssrc=1)
    seq, t = _feed(est, fb, 0, 0.0, 200, 0.0)  # a steady queue
    assert est.state != OVERUSING
    assert not est._probes.overusing
    seq, t = _feed(est, fb, seq, t, 200, 0.002)  # the queue grows 2 ms per packet
    assert est.state == OVERUSING
    assert est._probes.overusing
    _feed(est, fb, seq, t, 400, 0.0)  # steady again
    assert est.state != OVERUSING
    assert not est._probes.overusing
