"""The impairment link in virtual time: capacity bound, drop-tail, delay/jitter, loss,
determinism, outages."""

from __future__ import annotations

import random
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.link import Link, LinkConfig
from bench.loss import Bernoulli, parse_loss
from bench.traces import (
    CapacityTrace,
    JsonTrace,
    MahimahiTrace,
    constant,
    read_mahimahi,
    steps,
)

MTU = 1500
SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "traces"


def run(link: Link[int], sends: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """Drive the link as an event loop would: poll at each timer, send at each send time.
    Returns (arrival time, index into ``sends``)."""
    out: list[tuple[float, int]] = []
    for i, (t, size) in enumerate(sends):
        while (timer := link.get_timer()) is not None and timer <= t:
            out += link.poll(timer)
        link.send(i, size, t)
    while (timer := link.get_timer()) is not None:
        out += link.poll(timer)
    return out


def saturating_sends(rate_bps: float, duration: float, seed: int = 1) -> list[tuple[float, int]]:
    """Packets of 200..1500 bytes offered at ``rate_bps`` for ``duration`` seconds."""
    rng = random.Random(seed)
    t, out = 0.0, []
    while t < duration:
        size = rng.randint(200, MTU)
        out.append((t, size))
        t += size * 8 / rate_bps
    return out


def check_capacity(
    deliveries: list[tuple[float, int]],
    sizes: list[int],
    offered: Callable[[float, float], float],
    windows: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0),
) -> None:
    """Bytes delivered in every window [a, a + w] <= bytes offered in it + one MTU."""
    times = [t for t, _ in deliveries]
    assert times == sorted(times)
    prefix = [0]
    for _, i in deliveries:
        prefix.append(prefix[-1] + sizes[i])
    for w in windows:
        for i, a in enumerate(times):
            j = bisect_right(times, a + w)
            got = prefix[j] - prefix[i]
            assert got <= offered(a, a + w) + MTU, (w, a, got, offered(a, a + w))


def constant_offered(rate_bps: float) -> Callable[[float, float], float]:
    return lambda a, b: rate_bps / 8 * (b - a)


def steps_offered(segments: list[tuple[float, float]]) -> Callable[[float, float], float]:
    # Unrolled by hand over 20 loops; integrates the rate over [a, b].
    edges: list[tuple[float, float, float]] = []
    t = 0.0
    for _ in range(20):
        for dur, rate in segments:
            edges.append((t, t + dur, rate))
            t += dur

    def offered(a: float, b: float) -> float:
        return sum(max(0.0, min(b, e) - max(a, s)) * r / 8 for s, e, r in edges)

    return offered


def mahimahi_offered(stamps_ms: list[int], loops: int) -> Callable[[float, float], float]:
    period = stamps_ms[-1]
    looped = [k * period + s for k in range(loops) for s in stamps_ms]

    def offered(a: float, b: float) -> float:
        n = bisect_right(looped, b * 1000 + 1e-6) - bisect_left(looped, a * 1000 - 1e-6)
        return n * MTU

    return offered


def delivered_fraction(
    deliveries: list[tuple[float, int]], sizes: list[int], offered: float
) -> float:
    return sum(sizes[i] for _, i in deliveries) / offered


# --- capacity ---------------------------------------------------------------------------


def test_constant_capacity_is_never_exceeded_and_is_used() -> None:
    sends = saturating_sends(2e6, 3.0)
    link: Link[int] = Link(LinkConfig(capacity=constant(1e6), queue_bytes=60_000))
    got = run(link, sends)
    sizes = [s for _, s in sends]
    check_capacity(got, sizes, constant_offered(1e6))
    # It is a 1 Mbit/s link, not a slower one: busy from the start to the last departure.
    assert delivered_fraction(got, sizes, 1e6 / 8 * got[-1][0]) > 0.99
    assert link.stats.dropped_queue > 0
    assert link.stats.delivered == len(got) == link.stats.sent - link.stats.dropped_queue


def test_step_capacity_with_outage_is_never_exceeded() -> None:
    segments = [(0.5, 2e6), (0.3, 0.0), (0.7, 0.5e6), (0.5, 4e6)]
    sends = saturating_sends(5e6, 4.0)
    link: Link[int] = Link(LinkConfig(capacity=steps(segments), queue_bytes=80_000))
    got = run(link, sends)
    sizes = [s for _, s in sends]
    offered = steps_offered(segments)
    check_capacity(got, sizes, offered)
    before_end = [(t, i) for t, i in got if t <= 4.0]  # the sender kept it busy until 4 s
    assert delivered_fraction(before_end, sizes, offered(0.0, 4.0)) > 0.97
    in_outage = [t for t, _ in got if 0.5 < t % 2.0 < 0.8]
    assert not in_outage


def test_mahimahi_capacity_is_never_exceeded() -> None:
    stamps = [0, 0, 0, 0, 3, 3, 7, 8, 20, 20, 20, 21, 30, 30]
    trace = MahimahiTrace(stamps)
    sends = saturating_sends(2 * trace.mean_bps, 2.0)
    link: Link[int] = Link(LinkConfig(capacity=trace, queue_bytes=100_000))
    got = run(link, sends)
    sizes = [s for _, s in sends]
    offered = mahimahi_offered(stamps, 100)
    check_capacity(got, sizes, offered, windows=(0.0, 0.001, 0.005, 0.01, 0.1, 1.0))
    # Packets share opportunities (mm-link carries surplus bytes over): nearly all is used.
    assert delivered_fraction(got, sizes, offered(0.0, got[-1][0])) > 0.97
    # Every departure is at an opportunity instant.
    assert {round(t * 1000) % 30 for t, _ in got} <= {s % 30 for s in stamps}


def test_mahimahi_unused_opportunities_are_lost() -> None:
    link: Link[str] = Link(LinkConfig(capacity=MahimahiTrace([10, 20])))
    # Idle until 15 ms: the 10 ms opportunity is gone; 1200 + 300 share the 20 ms one,
    # 100 more bytes need the next (30 ms).
    link.send("a", 1200, 0.015)
    link.send("b", 300, 0.015)
    link.send("c", 100, 0.015)
    assert link.poll(1.0) == [(0.02, "a"), (0.02, "b"), (0.03, "c")]


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} absent")
def test_real_mahimahi_trace_capacity() -> None:
    path = SHARED / "mahimahi" / "Verizon-LTE-short.up"
    trace = read_mahimahi(path)
    stamps = [int(x) for x in path.read_text().split()]
    sends = saturating_sends(12e6, 4.0)
    link: Link[int] = Link(LinkConfig(capacity=trace, queue_bytes=150_000), start=0.0)
    got = run(link, sends)
    check_capacity(got, [s for _, s in sends], mahimahi_offered(stamps, 1))


# --- queue ------------------------------------------------------------------------------


def test_drop_tail_by_bytes() -> None:
    link: Link[int] = Link(LinkConfig(capacity=constant(1e6), queue_bytes=10_000))
    accepted = [link.send(i, 1000, 0.0) for i in range(20)]
    assert accepted == [True] * 10 + [False] * 10
    assert link.queued_bytes(0.0) == 10_000
    # 1000 bytes at 125 kB/s = 8 ms: after the first departure there is room for one.
    assert link.send(20, 1000, 0.008) and not link.send(21, 1000, 0.008)
    assert link.stats.dropped_queue == 11 and link.stats.dropped_queue_bytes == 11_000
    assert [t for t, _ in link.poll(1.0)] == pytest.approx([0.008 * k for k in range(1, 12)])


def test_drop_tail_by_delay_and_default_300_ms() -> None:
    link: Link[int] = Link(LinkConfig(capacity=constant(1e6), queue_ms=50))
    assert sum(link.send(i, 1000, 0.0) for i in range(20)) == 6  # departures 8..48 ms
    default: Link[int] = Link(LinkConfig(capacity=constant(1e6)))
    assert sum(default.send(i, 1000, 0.0) for i in range(100)) == 37  # 8 * 37 = 296 ms
    assert default.stats.max_queue_delay == pytest.approx(0.296)
    assert default.stats.queue_delay_percentile(50) == pytest.approx(0.152)


def test_unlimited_link_never_drops_by_queue() -> None:
    link: Link[int] = Link(LinkConfig(queue_bytes=0))
    link.send(1, 100_000, 0.0)  # a zero-byte queue still lets an unpaced packet through
    assert link.poll(0.0) == [(0.0, 1)]


# --- delay, jitter, reordering ----------------------------------------------------------


def test_delay_and_jitter_without_reordering() -> None:
    link: Link[int] = Link(LinkConfig(delay=0.05, jitter=0.02, seed=5))
    sends = [(i * 0.001, 100) for i in range(2000)]
    got = run(link, sends)
    assert [i for _, i in got] == list(range(2000))  # in send order
    delays = [t - sends[i][0] for t, i in got]
    assert min(delays) >= 0.05 and max(delays) <= 0.07 + 1e-12
    assert max(delays) - min(delays) > 0.015  # the jitter is there
    assert all(b >= a for (a, _), (b, _) in zip(got, got[1:], strict=False))


def test_jitter_with_reordering() -> None:
    link: Link[int] = Link(LinkConfig(delay=0.05, jitter=0.02, reorder=True, seed=5))
    sends = [(i * 0.001, 100) for i in range(2000)]
    got = run(link, sends)
    order = [i for _, i in got]
    assert sorted(order) == list(range(2000)) and order != list(range(2000))
    delays = [t - sends[i][0] for t, i in got]
    assert min(delays) >= 0.05 and max(delays) <= 0.07 + 1e-12
    assert [t for t, _ in got] == sorted(t for t, _ in got)  # still in arrival order


def test_idle_capacity_is_not_saved_up() -> None:
    link: Link[int] = Link(LinkConfig(capacity=constant(1e6)))
    link.send(1, 1000, 3.0)  # 3 s idle first: still 8 ms on the wire
    link.send(2, 1000, 3.0)
    assert [t for t, _ in link.poll(4.0)] == pytest.approx([3.008, 3.016])


def test_delay_adds_after_the_bottleneck_and_poll_is_exact() -> None:
    link: Link[str] = Link(LinkConfig(capacity=constant(1e6), delay=0.1), start=10.0)
    link.send("x", 1250, 10.0)  # 10 ms on the wire
    assert link.get_timer() == pytest.approx(10.11)
    assert link.poll(10.1) == []
    [(t, item)] = link.poll(20.0)
    assert (t, item) == (pytest.approx(10.11), "x")
    assert link.get_timer() is None and len(link) == 0


def test_trace_rtt_adds_half_as_one_way_delay() -> None:
    trace = JsonTrace([(1.0, 1e9)], loss=[None], rtt_ms=[200.0], jitter_ms=[None])
    link: Link[str] = Link(LinkConfig(capacity=trace))
    link.send("x", 125, 0.0)
    assert link.get_timer() == pytest.approx(0.1 + 1e-6)
    off: Link[str] = Link(LinkConfig(capacity=trace, trace_delay=False))
    off.send("x", 125, 0.0)
    assert off.get_timer() == pytest.approx(1e-6)


def test_time_going_backwards_is_refused() -> None:
    link: Link[int] = Link(LinkConfig())
    link.send(1, 10, 5.0)
    with pytest.raises(ValueError, match="backwards"):
        link.send(2, 10, 4.0)


# --- loss -------------------------------------------------------------------------------


def test_random_loss_is_applied_and_counted_apart() -> None:
    link: Link[int] = Link(LinkConfig(loss=Bernoulli(0.3, random.Random(2))))
    got = run(link, [(i * 0.001, 100) for i in range(10_000)])
    assert link.stats.dropped_loss == pytest.approx(3000, rel=0.06)
    assert link.stats.dropped_queue == 0
    assert len(got) == link.stats.delivered == 10_000 - link.stats.dropped_loss
    assert link.stats.delivered_bytes == 100 * len(got)


def test_trace_loss_per_segment() -> None:
    trace = JsonTrace(
        [(1.0, 1e9), (1.0, 1e9)], loss=[0.0, 0.5], rtt_ms=[None, None], jitter_ms=[None, None]
    )
    link: Link[float] = Link(LinkConfig(capacity=trace, seed=3))
    sends = [(i * 0.0005, 100) for i in range(4000)]  # 0..2 s
    for t, size in sends:
        link.send(t, size, t)
    got = [item for _, item in link.poll(10.0)]
    first = sum(1 for t in got if t < 1.0)
    second = sum(1 for t in got if t >= 1.0)
    assert first == 2000
    assert second == pytest.approx(1000, rel=0.1)
    off: Link[float] = Link(LinkConfig(capacity=trace, trace_loss=False))
    assert all(off.send(t, s, t) for t, s in sends)


# --- determinism, outages ---------------------------------------------------------------


def impaired(seed: int) -> Link[int]:
    return Link(
        LinkConfig(
            capacity=MahimahiTrace([0, 0, 2, 5, 5, 5, 9]),
            queue_ms=100,
            delay=0.02,
            jitter=0.01,
            loss=parse_loss("ge:loss=5%,burst=2", seed),
            seed=seed,
        )
    )


def test_same_seed_same_deliveries() -> None:
    sends = saturating_sends(6e6, 2.0, seed=9)
    a = run(impaired(11), sends)
    assert a == run(impaired(11), sends)
    assert a != run(impaired(12), sends)


@pytest.mark.parametrize(
    "trace",
    [
        steps([(1.0, 1e6), (1.0, 0.0)]),
        JsonTrace([(1.0, 1e6), (1.0, 0.0)], [None] * 2, [None] * 2, [None] * 2),
    ],
)
def test_outage_holds_packets(trace: CapacityTrace) -> None:
    link: Link[int] = Link(LinkConfig(capacity=trace, queue_ms=2000))
    for i in range(10):
        assert link.send(i, 1000, 1.2 + i * 0.01)
    assert link.poll(1.999) == []
    assert link.get_timer() == pytest.approx(2.008)
    got = link.poll(3.0)
    assert [i for _, i in got] == list(range(10))
    assert [t for t, _ in got] == pytest.approx([2.0 + 0.008 * k for k in range(1, 11)])
    assert link.stats.queue_delays[0] == pytest.approx(0.808)


def test_permanent_outage_never_fires_a_timer() -> None:
    link: Link[int] = Link(LinkConfig(capacity=constant(0), queue_bytes=10_000))
    assert link.send(1, 100, 0.0)
    assert link.get_timer() is None and link.poll(1e6) == []
    # With a delay limit the packet would wait forever: dropped.
    limited: Link[int] = Link(LinkConfig(capacity=constant(0)))
    assert not limited.send(1, 100, 0.0)
