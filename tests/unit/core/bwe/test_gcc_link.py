"""GCC against bench.link: step changes of capacity, a saturating (non app-limited) sender."""

from bench.link import Link, LinkConfig
from bench.traces import steps
from sfu.core.bwe import NORMAL, GccEstimator
from sfu.core.bwe.aimd import AimdRateControl
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


def _run_app_limited(segments: list[tuple[float, float]], until: float, media_bps: float,
                     goal: float) -> list[tuple[float, float]]:
    """The SFU case: media at a fixed rate (one simulcast layer) far below the link, the
    allocator asking for `goal`; only probes (padding) can show the estimator more."""
    link: Link[int] = Link(LinkConfig(capacity=steps(segments), delay=0.05, queue_ms=300))
    est = GccEstimator()
    pacer = Pacer(target_bitrate=est.target_bitrate, factor=1.0)
    fb = FeedbackGenerator(media_ssrc=1)
    inflight: list[tuple[float, list]] = []
    seq = 0
    credit = 0.0
    out = []
    t, dt = 0.0, 0.001
    next_sample = 0.0
    while t < until:
        credit += media_bps * dt / 8
        while credit >= PKT:
            pacer.enqueue(None, PKT, "video", t)
            credit -= PKT
        if t >= next_sample:  # the node's 100 ms allocation tick
            est.set_desired_bitrate(goal, t)
            out.append((t, est.target_bitrate))
            next_sample += 0.1
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
        t += dt
    return out


def test_estimate_recovers_within_seconds_after_a_short_outage() -> None:
    # 2.5 Mbit/s, a 1.5 s outage at 12 s (an LTE fade), then 2.5 Mbit/s again; the viewer
    # receives a 1 Mbit/s layer and the allocator wants 2 Mbit/s.
    samples = _run_app_limited([(12, 2.5e6), (1.5, 0.0), (16.5, 2.5e6)], 30.0,
                               media_bps=1.0e6, goal=2.0e6)
    assert _mean(samples, 8, 12) >= 1.9e6
    during = min(e for t, e in samples if 12 <= t < 14)
    assert during < 1.0e6, during  # the outage was seen (feedback stopped, losses)
    # Back at the goal within 4 s of the link's return, not after tens of seconds of
    # additive increase and an 8 %/s loss-based bound.
    back = next(t for t, e in samples if t >= 13.5 and e >= 0.9 * 2.0e6)
    assert back - 13.5 <= 4.0, back
    assert _mean(samples, 20, 30) >= 1.9e6


def test_estimate_finds_a_step_up_while_application_limited() -> None:
    # 1 Mbit/s, then 3 Mbit/s: a 0.5 Mbit/s layer plays; the allocator wants 2 Mbit/s, so
    # probes must find the new capacity (the delay-based estimate cannot grow past 1.5x
    # what is sent).
    samples = _run_app_limited([(10, 1.0e6), (15, 3.0e6)], 25.0, media_bps=0.5e6, goal=2.0e6)
    assert _mean(samples, 6, 10) <= 1.15e6
    up = next(t for t, e in samples if t >= 10 and e >= 0.9 * 2.0e6)
    assert up - 10 <= 6.0, up


def test_no_delay_based_growth_while_application_limited() -> None:
    # Sending 64 % of the estimate (a key frame's burst lifts 1.5 x acknowledged above it):
    # application-limited, so no growth; at 90 % the usual increase applies.
    aimd = AimdRateControl(2.0e6)
    for i in range(100):
        aimd.update(NORMAL, 0.64 * 2.0e6, i * 0.1)
    assert aimd.bitrate == 2.0e6
    for i in range(100, 200):
        aimd.update(NORMAL, 0.9 * aimd.bitrate, i * 0.1)
    assert aimd.bitrate > 2.3e6
