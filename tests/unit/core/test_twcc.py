"""FeedbackGenerator on a virtual clock: schedule, losses, reordering, splitting, memory."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.core.twcc import FeedbackGenerator
from sfu.wire.rtcp import parse_compound
from sfu.wire.twcc import TransportFeedback

T0 = 1000.0
TICK = 0.00025


def seqs(fb: TransportFeedback) -> list[int]:
    return [s for s, _ in fb.packets]


def lost(fb: TransportFeedback) -> list[int]:
    return [s for s, d in fb.packets if d is None]


def arrivals(fb: TransportFeedback) -> dict[int, float]:
    return dict(fb.received())


def wire_round_trip(fb: TransportFeedback) -> TransportFeedback:
    (parsed,) = parse_compound(bytes(fb))
    assert isinstance(parsed, TransportFeedback)
    return parsed


def test_nothing_to_report_means_no_timer() -> None:
    g = FeedbackGenerator()
    assert g.get_timer() is None
    assert g.handle_timer(T0) == []


def test_feedback_every_interval_covers_received_packets_in_order() -> None:
    g = FeedbackGenerator(sender_ssrc=7, media_ssrc=9)
    for i in range(10):
        g.record(100 + i, T0 + i * 0.004)
    assert g.get_timer() == pytest.approx(T0 + 0.05)
    assert g.handle_timer(T0 + 0.049) == []  # an early wake-up sends nothing
    (fb,) = g.handle_timer(T0 + 0.05)
    assert (fb.sender_ssrc, fb.media_ssrc, fb.base_seq, fb.fb_pkt_count) == (7, 9, 100, 0)
    assert seqs(fb) == list(range(100, 110)) and lost(fb) == []
    times = arrivals(wire_round_trip(fb))
    # Arrival times survive the wire to within one 250 us tick, relative to the first packet.
    for i in range(10):
        assert times[100 + i] - times[100] == pytest.approx(i * 0.004, abs=TICK)
    assert fb.reference_time == int(T0 / 0.064) & 0xFFFFFF
    assert g.get_timer() is None and g.pending == 0
    g.record(110, T0 + 0.06)
    assert g.get_timer() == pytest.approx(T0 + 0.11)
    (fb,) = g.handle_timer(T0 + 0.11)
    assert (fb.base_seq, fb.fb_pkt_count, seqs(fb)) == (110, 1, [110])


def test_losses_inside_the_window_are_reported_trailing_ones_wait() -> None:
    g = FeedbackGenerator()
    for s in (1, 2, 4, 7):
        g.record(s, T0)
    (fb,) = g.handle_timer(T0 + 1)
    assert seqs(fb) == list(range(1, 8)) and lost(fb) == [3, 5, 6]
    # 8 and 9 were lost; the next message starts right after 7 and reports them.
    g.record(10, T0 + 1.01)
    (fb,) = g.handle_timer(T0 + 2)
    assert fb.base_seq == 8 and seqs(fb) == [8, 9, 10] and lost(fb) == [8, 9]


def test_reordered_packet_fills_its_hole_before_feedback() -> None:
    g = FeedbackGenerator()
    g.record(1, T0)
    g.record(3, T0 + 0.001)
    g.record(2, T0 + 0.002)
    (fb,) = g.handle_timer(T0 + 1)
    assert seqs(fb) == [1, 2, 3] and lost(fb) == []
    deltas = dict(fb.packets)
    assert deltas[3] is not None and deltas[3] < 0  # 3 arrived before 2: negative delta
    times = arrivals(wire_round_trip(fb))
    assert times[2] - times[1] == pytest.approx(0.002, abs=TICK)
    assert times[3] - times[1] == pytest.approx(0.001, abs=TICK)


def test_late_packet_after_its_report_is_reported_again_as_received() -> None:
    g = FeedbackGenerator()
    for s in (1, 2, 4, 5):
        g.record(s, T0 + s * 0.001)
    (first,) = g.handle_timer(T0 + 0.06)
    assert lost(first) == [3]
    g.record(3, T0 + 0.07)  # arrived after its slot was reported lost
    g.record(6, T0 + 0.071)
    (second,) = g.handle_timer(T0 + 0.2)
    assert second.base_seq == 3 and seqs(second) == [3, 4, 5, 6] and lost(second) == []
    assert second.fb_pkt_count == first.fb_pkt_count + 1
    assert g.late == 1


def test_duplicates_are_ignored() -> None:
    g = FeedbackGenerator()
    g.record(5, T0)
    g.record(5, T0 + 0.01)
    g.record(6, T0 + 0.02)
    (fb,) = g.handle_timer(T0 + 1)
    assert seqs(fb) == [5, 6]
    assert arrivals(fb)[6] - arrivals(fb)[5] == pytest.approx(0.02, abs=TICK)
    assert g.duplicates == 1


def test_sequence_numbers_wrap() -> None:
    g = FeedbackGenerator()
    for i, s in enumerate([65533, 65534, 0, 1, 65535]):  # 65535 arrives late, 0..1 after wrap
        g.record(s, T0 + i * 0.001)
    (fb,) = g.handle_timer(T0 + 1)
    assert fb.base_seq == 65533
    assert seqs(fb) == [65533, 65534, 65535, 0, 1] and lost(fb) == []
    g.record(3, T0 + 1.001)
    (fb,) = g.handle_timer(T0 + 2)
    assert seqs(fb) == [2, 3] and lost(fb) == [2]


def test_early_feedback_when_many_packets_wait() -> None:
    g = FeedbackGenerator(early_packets=100)
    for i in range(99):
        g.record(i, T0 + i * 0.0001)
    assert g.get_timer() == pytest.approx(T0 + 0.05)
    g.record(99, T0 + 0.0099)
    assert g.get_timer() == pytest.approx(T0 + 0.0099)
    (fb,) = g.handle_timer(T0 + 0.0099)
    assert len(fb.packets) == 100


def test_long_lists_split_into_messages_with_incrementing_count() -> None:
    g = FeedbackGenerator(max_received=100, early_packets=1000)
    for i in range(250):
        g.record((65500 + i) & 0xFFFF, T0 + i * 0.0001)
    messages = g.handle_timer(T0 + 1)
    assert [len(m.packets) for m in messages] == [100, 100, 50]
    assert [m.fb_pkt_count for m in messages] == [0, 1, 2]
    assert [m.base_seq for m in messages] == [65500, (65500 + 100) & 0xFFFF, (65500 + 200) & 0xFFFF]
    for m in messages:
        wire_round_trip(m)  # each one encodes


def test_delta_overflow_splits_the_message() -> None:
    g = FeedbackGenerator()
    g.record(1, T0)
    g.record(2, T0 + 9.0)  # more than 8.19 s later: no 16-bit delta can say it
    messages = g.handle_timer(T0 + 9.0)
    assert [seqs(m) for m in messages] == [[1], [2]]
    assert arrivals(messages[1])[2] - arrivals(messages[0])[1] == pytest.approx(9.0, abs=TICK)


def test_feedback_packet_count_wraps() -> None:
    g = FeedbackGenerator()
    counts = []
    for i in range(300):
        g.record(i, T0 + i * 0.1)
        counts += [m.fb_pkt_count for m in g.handle_timer(T0 + i * 0.1 + 0.05)]
    assert counts == [i & 0xFF for i in range(300)]


def test_memory_is_bounded_and_ancient_packets_ignored() -> None:
    g = FeedbackGenerator(max_history=1000, history=0.5)
    now = T0
    for i in range(20000):
        now = T0 + i * 0.0002  # 5000 packets per second
        g.record(i & 0xFFFF, now)
        t = g.get_timer()
        if t is not None and t <= now:
            g.handle_timer(now)
        assert g.tracked <= 1000
    g.handle_timer(now + 1)
    assert g.tracked <= 1000
    # A packet older than everything still kept is not re-reported (its neighbours are gone).
    g.record(20000 - 5000, now + 1.0)
    assert g.too_old == 1 and g.get_timer() is None


def test_history_cap_never_reports_an_unseen_received_packet_as_lost() -> None:
    g = FeedbackGenerator(max_history=10, early_packets=1000)
    for i in range(30):
        g.record(i, T0 + i * 0.001)
    messages = g.handle_timer(T0 + 1)
    reported = [p for m in messages for p in m.packets]
    assert all(d is not None for _, d in reported)
    assert [s for s, _ in reported] == list(range(20, 30))


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 0xFFFF),
    st.lists(st.tuples(st.floats(0, 0.03), st.booleans(), st.integers(0, 3)), min_size=1, max_size=300),
    st.integers(0, 2**32 - 1),
)
def test_every_received_packet_is_reported_received_with_its_arrival_time(
    first: int, steps: list[tuple[float, bool, int]], seed: int
) -> None:
    """Random gaps, losses and small reorderings: the union of all feedback says each received
    packet arrived when it did (to a tick), and nothing received is left unreported."""
    rng = random.Random(seed)
    g = FeedbackGenerator()
    sent = [(first + i) & 0xFFFF for i in range(len(steps))]
    order = list(range(len(steps)))
    for i, (_, _, swap) in enumerate(steps):  # local reordering by up to 3 places
        j = min(len(order) - 1, i + swap)
        order[i], order[j] = order[j], order[i]
    now = T0
    truth: dict[int, float] = {}
    messages: list[TransportFeedback] = []
    for k, idx in enumerate(order):
        gap, drop, _ = steps[k]
        now += gap
        t = g.get_timer()
        if t is not None and t <= now:
            messages += g.handle_timer(now)
        if drop and rng.random() < 0.5:
            continue
        g.record(sent[idx], now)
        truth.setdefault(sent[idx], now)
    messages += g.handle_timer(now + 10)
    seen: dict[int, float] = {}
    for m in messages:
        m = wire_round_trip(m)
        for s, at in m.received():
            seen.setdefault(s, at)
    assert set(seen) == set(truth)
    if not truth:
        return
    # Times are relative to an unknown base: compare against the first received packet.
    anchor = next(iter(truth))
    for s, at in truth.items():
        assert seen[s] - seen[anchor] == pytest.approx(at - truth[anchor], abs=2 * TICK)
