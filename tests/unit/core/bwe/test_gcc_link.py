"""GCC against bench.link: step changes of capacity, a saturating (non app-limited) sender."""

from bench.link import Link, LinkConfig
from bench.traces import steps
from sfu.core.bwe import GccEstimator
from sfu.core.pacer import Pacer
from sfu.core.twcc import FeedbackGenerator

PKT = 1200


def _run(segments: list[tuple[float, float]], until: float) -> list[tuple[float, float]]:
    """Sender fills the pacer at the estimate; returns (time, estimate) every 100 ms."""
    link: Link[int] = Link(LinkConfig(capacity=steps(segments), delay=0.05, queue_ms=300))
    est = GccEstimator()
    pacer = Pacer(target_bitrate=est.target_bitrate, factor=1.0)
    fb = FeedbackGenerator(media_ssrc=1)
    inflight: list[tuple[float, list]] = []  # feedback in flight back to the sender
    seq = 0
    credit = 0.0
    out = []
    t, dt = 0.0, 0.001
    next_sample = 0.0
    while t < until:
        credit += est.target_bitrate * dt / 8
        while credit >= PKT:  # media at the target rate
            pacer.enqueue(None, PKT, "video", t)
            credit -= PKT
        for c in est.pop_probes():
            pacer.start_probe(c, t)
        if (pt := pacer.get_timer()) is not None and pt <= t:
            for p in pacer.handle_timer(t):
                est.on_packet_sent(seq & 0xFFFF, p.size, t, p.probe_cluster)
                link.send(seq & 0xFFFF, p.size, t)
                seq += 1
        for arr, s in link.poll(t):
            fb.record(s, arr)
        if (ft := fb.get_timer()) is not None and ft <= t:
            inflight.append((t + 0.05, fb.handle_timer(t)))
        while inflight and inflight[0][0] <= t:
            for m in inflight.pop(0)[1]:
                est.on_feedback(m, t)
        if (et := est.get_timer()) is not None and et <= t:
            est.handle_timer(t)
        pacer.set_target(est.target_bitrate)
        if t >= next_sample:
            out.append((t, est.target_bitrate))
            next_sample += 0.1
        t += dt
    return out


def _mean(samples: list[tuple[float, float]], a: float, b: float) -> float:
    vals = [e for t, e in samples if a <= t < b]
    return sum(vals) / len(vals)


def test_converges_to_capacity_and_backs_off_after_drop() -> None:
    samples = _run([(20, 1.5e6), (20, 0.5e6)], 32.0)
    mean = _mean(samples, 10, 20)
    assert 0.85 * 1.5e6 <= mean <= 1.15 * 1.5e6, mean
    # within 1 s of the drop the estimate is at or below the new capacity (+15 %)
    after = [e for t, e in samples if 21.0 <= t < 21.1]
    assert after and after[0] <= 1.15 * 0.5e6, after
    mean_low = _mean(samples, 26, 32)
    assert 0.85 * 0.5e6 <= mean_low <= 1.15 * 0.5e6, mean_low


def test_step_up_is_found() -> None:
    samples = _run([(15, 0.6e6), (30, 2.0e6)], 35.0)
    assert _mean(samples, 8, 15) <= 1.15 * 0.6e6
    assert _mean(samples, 27, 35) >= 0.85 * 2.0e6
