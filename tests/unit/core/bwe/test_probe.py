"""ProbeController: after a large drop, after an outage, and the probe goal."""

from sfu.core.bwe.loss import LossBasedBound
from sfu.core.bwe.probe import AFTER_DROP, DROP_PROBE_DELAY, DROP_WINDOW, ProbeController


def _settled(desired: float = 3e6) -> ProbeController:
    pc = ProbeController(300_000, initial=False)
    pc.desired = desired
    pc.process(2.0e6, 0.0)  # an allocation probe: answer it so nothing is waiting
    (first,) = pc.pop()
    pc.on_result(first.id, 2.0e6, 2.0e6, 0.1)
    pc.pop()  # a further probe may follow; drop it
    pc._waiting = None
    return pc


def test_a_large_drop_is_probed_at_85_percent_of_the_rate_before_it() -> None:
    pc = _settled()
    pc.process(2.0e6, 10.0)
    pc.pop()
    pc._waiting = None
    pc.process(0.6e6, 10.2)  # an overuse on a fade cut the estimate to 30 %
    assert pc.pop() == []  # not at once: the queue drains first
    pc.process(0.6e6, 10.2 + DROP_PROBE_DELAY)
    (probe,) = pc.pop()
    assert probe.bitrate == AFTER_DROP * 2.0e6
    assert pc.drop_probes == 1


def test_a_drop_is_probed_once_and_not_after_the_window() -> None:
    pc = _settled()
    pc.process(2.0e6, 10.0)
    pc.pop()
    pc._waiting = None
    pc.process(0.6e6, 10.0)
    pc._last_probe = 10.0 + DROP_WINDOW  # the periodic rule is not due either
    pc.process(0.6e6, 10.0 + DROP_WINDOW + 0.1)
    assert pc.pop() == []
    assert pc.drop_probes == 0


def test_network_recovery_probes_at_once_despite_the_backoff() -> None:
    pc = _settled()
    pc._backoff = 30.0
    pc.process(0.5e6, 50.0)  # the periodic rule: one probe, it fails
    (p,) = pc.pop()
    pc.on_result(p.id, None, 0.5e6, 50.1)
    pc.process(0.5e6, 50.2)
    assert pc.pop() == []  # backed off
    pc.on_network_recovered()
    pc.process(0.5e6, 50.3)
    (probe,) = pc.pop()
    assert probe.bitrate == 2 * 0.5e6


def test_a_probe_result_lifts_the_loss_bound() -> None:
    bound = LossBasedBound()
    bound.update(0.5, 2e6, 0.1, 0.0)  # an outage: half of everything lost
    assert bound.bound is not None and bound.bound < 2e6
    bound.lift(1.8e6)
    assert bound.apply(5e6) == 1.8e6
    bound.lift(1.0e6)  # never lowers it
    assert bound.apply(5e6) == 1.8e6


def _dropped(pc: ProbeController, at: float) -> None:
    pc.process(2.0e6, at - 0.2)
    pc.pop()
    pc._waiting = None
    pc.process(0.6e6, at)  # an overuse cut the estimate to 30 %


def test_the_drop_probe_waits_while_the_detector_reports_overuse() -> None:
    pc = _settled()
    _dropped(pc, 10.0)
    pc.overusing = True  # the capacity is still falling: the queue grows
    pc._last_probe = 10.0  # the periodic rule is not due
    pc.process(0.5e6, 10.0 + DROP_PROBE_DELAY)
    pc.process(0.4e6, 10.0 + DROP_PROBE_DELAY + 0.5)
    assert pc.pop() == []
    assert pc.drop_probes == 0 and pc.drop_probes_deferred == 2
    pc.overusing = False  # back to normal: the old rate may be there again
    pc.process(0.4e6, 10.0 + DROP_PROBE_DELAY + 0.6)
    (probe,) = pc.pop()
    assert probe.bitrate == AFTER_DROP * 2.0e6
    assert pc.drop_probes == 1


def test_a_drop_probe_held_by_overuse_expires_with_the_window() -> None:
    pc = _settled()
    _dropped(pc, 10.0)
    pc.overusing = True
    pc.process(0.5e6, 10.0 + DROP_PROBE_DELAY)
    pc.pop()  # whatever the other rules sent
    pc._waiting = None
    pc.overusing = False
    pc._last_probe = 10.0 + DROP_WINDOW  # the periodic rule is not due either
    pc.process(0.5e6, 10.0 + DROP_WINDOW + 0.1)
    assert pc.pop() == []
    assert pc.drop_probes == 0
