import pytest

from sfu.core.bwe import ProbeCluster
from sfu.core.pacer import Pacer


def _drain(p: Pacer, until: float) -> list[tuple[float, object, str, int]]:
    out = []
    while (t := p.get_timer()) is not None and t <= until:
        for pkt in p.handle_timer(t):
            out.append((t, pkt.packet, pkt.kind, pkt.size))
    return out


def test_keyframe_is_spread_in_bursts() -> None:
    p = Pacer(target_bitrate=1e6, factor=2.5, max_queue_time=10.0)
    for i in range(40):  # a 48 kB key frame at once
        p.enqueue(i, 1200, "video", 0.0)
    sent = _drain(p, 1.0)
    assert [s[1] for s in sent] == list(range(40))  # FIFO
    bursts: dict[float, int] = {}
    for t, _, _, size in sent:
        bursts[t] = bursts.get(t, 0) + size
    # 2.5 Mbit/s in 5 ms = 1562 bytes a burst: at most two 1200-byte packets per burst
    assert max(bursts.values()) <= 2 * 1200
    span = sent[-1][0] - sent[0][0]
    assert span == pytest.approx(48_000 * 8 / 2.5e6, rel=0.15)


def test_audio_goes_first() -> None:
    p = Pacer(target_bitrate=300e3)
    for i in range(10):
        p.enqueue(f"v{i}", 1200, "video", 0.0)
    p.enqueue("a0", 100, "audio", 0.0)
    sent = _drain(p, 1.0)
    assert sent[0][1] == "a0"  # queued last, sent first
    assert [s[1] for s in sent[1:]] == [f"v{i}" for i in range(10)]


def test_queue_time_limit_raises_rate() -> None:
    p = Pacer(target_bitrate=100e3, factor=1.0, max_queue_time=0.5)
    for i in range(100):  # 120 kB: 9.6 s at 100 kbit/s
        p.enqueue(i, 1200, "video", 0.0)
    sent = _drain(p, 5.0)
    assert len(sent) == 100
    assert sent[-1][0] <= 0.6


def test_probe_pads_to_cluster_size() -> None:
    p = Pacer(target_bitrate=300e3)
    p.start_probe(ProbeCluster(7, 2e6, 5, 5000, 0.02), 0.0)
    sent = _drain(p, 0.2)
    assert sum(s[3] for s in sent) >= 5000
    assert all(s[2] == "padding" and s[1] is None for s in sent)
    assert p.get_timer() is None  # idle again after the probe


def test_unknown_kind_rejected() -> None:
    with pytest.raises(ValueError):
        Pacer().enqueue(b"", 1, "bogus", 0.0)


def test_a_late_timer_gets_the_budget_of_the_time_that_passed() -> None:
    # A busy event loop runs the pacer every 50 ms instead of 5: it must still send at its
    # rate (1 Mbit/s), not at a few intervals' worth per call.
    p = Pacer(target_bitrate=1e6, factor=1.0)
    sent = 0
    for i in range(200):  # 10 s of 1 Mbit/s media in 1250-byte packets every 10 ms
        now = i * 0.01
        p.enqueue(i, 1250, "video", now)
        if i % 5 == 0:
            sent += sum(x.size for x in p.handle_timer(now))
    assert sent * 8 / 2.0 >= 0.9e6  # ~the media rate, no standing queue built up
    assert p.queued("video") <= 10


def test_try_send_is_what_an_idle_pacer_would_send_at_once() -> None:
    # The same arrivals through try_send-then-enqueue and through enqueue + handle_timer
    # leave at the same times (the node's fast path changes no pacing decision).
    quick = []

    def run(fast: bool) -> list[tuple[float, int]]:
        p = Pacer(target_bitrate=2e6, factor=1.0)  # media ~1.1 Mbit/s, key frames 25 packets
        sent: list[tuple[float, int]] = []
        arrivals = [(f * 0.033 + k * 0.0002, f * 10 + k) for f in range(30)
                    for k in range(4 if f % 10 else 25)]  # a key frame every 10 frames
        t = 0.0
        i = 0
        while t < 1.5:
            while i < len(arrivals) and arrivals[i][0] <= t:
                _, n = arrivals[i]
                i += 1
                if fast and p.try_send(1100, t):
                    sent.append((round(t, 4), n))
                    quick.append(n)
                    continue
                p.enqueue(n, 1100, "video", t)
                sent.extend((round(t, 4), x.packet) for x in p.handle_timer(t))
            if (at := p.get_timer()) is not None and at <= t:
                sent.extend((round(t, 4), x.packet) for x in p.handle_timer(t))
            t += 0.0001
        return sent

    slow, fast = run(False), run(True)
    assert fast == slow
    assert len(slow) == 4 * 27 + 25 * 3
    assert len(quick) > len(slow) / 2  # most packets take the fast path
