"""RtpMunger: continuity of the outgoing (seq, ts) timeline on a virtual clock."""

from __future__ import annotations

from collections import deque

import pytest

from sfu.core.munger import RtpMunger

CLOCK = 90_000
FRAME = 3000  # 30 fps at 90 kHz
TS_MAX = 2**32 - 1


def test_first_packet_maps_to_start_values() -> None:
    m = RtpMunger(CLOCK, seq_start=1000, ts_start=5000)
    assert m.last_out_seq == 999
    assert not m.has_source
    assert m.rewrite(40000, 123456, now=0.0) == (1000, 5000)
    assert m.rewrite(40001, 123456 + FRAME, now=1 / 30) == (1001, 5000 + FRAME)
    assert (m.last_out_seq, m.last_out_ts, m.packets_forwarded) == (1001, 5000 + FRAME, 2)
    assert m.has_source


def test_input_sequence_wrap_is_continuous() -> None:
    m = RtpMunger(CLOCK, seq_start=10, ts_start=0)
    outs = [m.rewrite(seq, 0, now=0.0) for seq in (65534, 65535, 0, 1)]
    assert [o[0] for o in outs if o] == [10, 11, 12, 13]


def test_output_sequence_wrap_is_continuous() -> None:
    m = RtpMunger(CLOCK, seq_start=65534, ts_start=0)
    outs = [m.rewrite(seq, 0, now=0.0) for seq in (100, 101, 102, 103)]
    assert [o[0] for o in outs if o] == [65534, 65535, 0, 1]
    assert m.last_out_seq == 1


def test_input_timestamp_wrap_is_continuous() -> None:
    m = RtpMunger(CLOCK, seq_start=0, ts_start=1_000_000)
    assert m.rewrite(1, TS_MAX - 1000, now=0.0) == (0, 1_000_000)
    assert m.rewrite(2, FRAME - 1001, now=0.033) == (1, 1_000_000 + FRAME)


def test_output_timestamp_wrap_is_continuous() -> None:
    m = RtpMunger(CLOCK, seq_start=0, ts_start=TS_MAX)
    assert m.rewrite(1, 500, now=0.0) == (0, TS_MAX)
    assert m.rewrite(2, 500 + FRAME, now=0.033) == (1, FRAME - 1)
    assert m.translate_ts(500 + 2 * FRAME) == 2 * FRAME - 1


def test_out_of_order_within_window_uses_same_offsets() -> None:
    m = RtpMunger(CLOCK, seq_start=200, ts_start=0)
    assert m.rewrite(10, 1000, now=0.0) == (200, 0)
    assert m.rewrite(12, 1000 + 2 * FRAME, now=0.1) == (202, 2 * FRAME)
    assert m.rewrite(11, 1000 + FRAME, now=0.2) == (201, FRAME)
    # A late packet does not move the newest position.
    assert (m.last_out_seq, m.last_out_ts) == (202, 2 * FRAME)
    assert m.rewrite(13, 1000 + 3 * FRAME, now=0.3) == (203, 3 * FRAME)


def test_out_of_order_across_input_wrap() -> None:
    m = RtpMunger(CLOCK, seq_start=0, ts_start=0)
    m.rewrite(65530, 0, now=0.0)
    assert m.rewrite(2, 0, now=0.0) == (8, 0)
    assert m.rewrite(65535, 0, now=0.0) == (5, 0)


def test_duplicate_gets_same_translation() -> None:
    m = RtpMunger(CLOCK, seq_start=0, ts_start=0)
    first = m.rewrite(500, 9000, now=0.0)
    m.rewrite(501, 9000, now=0.0)
    assert m.rewrite(500, 9000, now=0.5) == first
    assert m.packets_forwarded == 3


def test_packets_before_source_start_or_outside_window_are_refused() -> None:
    m = RtpMunger(CLOCK, seq_start=0, ts_start=0)
    m.rewrite(1000, 0, now=0.0)
    assert m.rewrite(999, 0, now=0.0) is None
    m.rewrite(20_000, 0, now=0.0)  # big forward jumps are still progress
    m.rewrite(39_000, 0, now=0.0)
    assert m.rewrite(39_000 - 32_767, 0, now=0.0) == (39_000 - 32_767 - 1000, 0)
    assert m.rewrite(39_000 - 32_768, 0, now=0.0) is None
    assert m.packets_forwarded == 4


def test_drop_of_newest_closes_the_gap() -> None:
    m = RtpMunger(CLOCK, seq_start=100, ts_start=0)
    m.rewrite(10, 0, now=0.0)
    m.drop(11)
    m.drop(12)
    assert m.last_out_seq == 100
    assert m.rewrite(13, FRAME, now=0.1) == (101, FRAME)
    # A retransmission of a dropped packet must not reuse the slot 13 took.
    assert m.rewrite(11, 0, now=0.2) is None
    assert m.rewrite(12, 0, now=0.2) is None
    assert m.rewrite(14, FRAME, now=0.2) == (102, FRAME)


def test_drop_ahead_of_a_loss_keeps_slots_for_late_packets() -> None:
    m = RtpMunger(CLOCK, seq_start=100, ts_start=0)
    m.rewrite(10, 0, now=0.0)
    m.drop(13)  # 11 and 12 not here yet
    assert m.rewrite(14, 0, now=0.0) == (103, 0)
    assert m.rewrite(11, 0, now=0.0) == (101, 0)
    assert m.rewrite(12, 0, now=0.0) == (102, 0)
    assert m.rewrite(13, 0, now=0.0) is None


def test_out_of_order_drop_leaves_a_hole() -> None:
    m = RtpMunger(CLOCK, seq_start=100, ts_start=0)
    m.rewrite(10, 0, now=0.0)
    m.rewrite(12, 0, now=0.0)
    m.drop(11)
    assert m.rewrite(11, 0, now=0.0) is None
    assert m.rewrite(13, 0, now=0.0) == (103, 0)


def test_drop_of_already_forwarded_newest_is_ignored() -> None:
    m = RtpMunger(CLOCK, seq_start=100, ts_start=0)
    m.rewrite(10, 0, now=0.0)
    m.drop(10)
    assert m.rewrite(11, 0, now=0.0) == (101, 0)
    assert m.rewrite(10, 0, now=0.0) == (100, 0)


def test_drop_before_first_packet_is_ignored() -> None:
    m = RtpMunger(CLOCK, seq_start=100, ts_start=7)
    m.drop(5)
    assert m.rewrite(6, 0, now=0.0) == (100, 7)


def test_switch_source_continues_seq_and_advances_ts_with_elapsed_time() -> None:
    m = RtpMunger(CLOCK, seq_start=65534, ts_start=TS_MAX - FRAME)
    m.rewrite(100, 50_000, now=10.0)
    m.rewrite(101, 50_000 + FRAME, now=10.033)  # out (65535, TS_MAX)
    m.switch_source(now=10.2)
    assert m.switched_at == 10.2
    assert not m.has_source
    # New source with unrelated numbering; 0.5 s of virtual time since the last forward.
    out = m.rewrite(7000, 3_000_000_000, now=10.533)
    assert out == (0, 45_000 - 1)  # TS_MAX + 45000 wraps
    assert m.rewrite(7001, 3_000_000_000 + FRAME, now=10.566) == (1, 45_000 - 1 + FRAME)
    assert m.translate_ts(3_000_000_000 + 10 * FRAME) == 45_000 - 1 + 10 * FRAME
    # Packets older than the new source's first one are not forwarded.
    assert m.rewrite(6999, 3_000_000_000, now=10.6) is None


def test_switch_source_before_any_packet_uses_start_values() -> None:
    m = RtpMunger(CLOCK, seq_start=300, ts_start=4000)
    m.switch_source(now=1.0)
    assert m.rewrite(9, 123, now=2.0) == (300, 4000)


def test_switch_source_without_elapsed_time_still_advances_ts() -> None:
    m = RtpMunger(CLOCK, seq_start=0, ts_start=1000)
    m.rewrite(1, 0, now=5.0)
    m.switch_source(now=5.0)
    assert m.rewrite(900, 77, now=5.0) == (1, 1001)


def test_switch_source_after_drop_stays_contiguous() -> None:
    m = RtpMunger(CLOCK, seq_start=0, ts_start=0)
    m.rewrite(1, 0, now=0.0)
    m.rewrite(2, 0, now=0.0)
    m.drop(3)
    m.switch_source(now=1.0)
    out = m.rewrite(40, 0, now=1.0)
    assert out is not None and out[0] == 2
    # Dropped state of the old source must not leak into the new one.
    assert m.rewrite(43, 0, now=1.0) == (5, CLOCK)


def test_translate_ts_needs_a_source() -> None:
    m = RtpMunger(CLOCK, seq_start=0, ts_start=0)
    with pytest.raises(RuntimeError):
        m.translate_ts(0)
    m.rewrite(1, 100, now=0.0)
    assert m.translate_ts(100 + CLOCK) == CLOCK
    m.switch_source(now=1.0)
    with pytest.raises(RuntimeError):
        m.translate_ts(0)


def test_long_run_with_alternate_drops_stays_contiguous() -> None:
    m = RtpMunger(CLOCK, seq_start=60_000, ts_start=0)
    next_out = 60_000
    history: deque[tuple[int, int, tuple[int, int]]] = deque()
    for i in range(150_000):  # 75k forwarded: the output wraps
        seq = (30_000 + i) % 65536
        if i % 2:
            m.drop(seq)
            continue
        ts = (i * 10) % 2**32
        out = m.rewrite(seq, ts, now=i / 1000)
        assert out == (next_out % 65536, ts)
        next_out += 1
        history.append((seq, ts, out))
        if len(history) > 10_000:
            # A retransmission 20k incoming seqs back is inside the window.
            old_seq, old_ts, old_out = history.popleft()
            assert m.rewrite(old_seq, old_ts, now=i / 1000) == old_out
            assert m.rewrite((old_seq + 1) % 65536, old_ts, now=i / 1000) is None
    assert m.last_out_seq == (next_out - 1) % 65536


def test_insert_takes_the_slots_after_the_newest_and_shifts_later_packets() -> None:
    m = RtpMunger(CLOCK, seq_start=65_534, ts_start=0)
    assert m.insert(2) is None  # no packet yet: nothing to follow
    assert m.rewrite(10, 0, now=0.0) == (65_534, 0)
    assert m.rewrite(12, 0, now=0.0) == (0, 0)  # 11 lost upstream: its slot 65535 is kept
    assert m.insert(2) == 1  # output wraps: slots 1 and 2
    assert m.last_out_seq == 2
    assert m.rewrite(13, FRAME, now=0.1) == (3, FRAME)
    assert m.rewrite(11, 0, now=0.2) == (65_535, 0)  # the late packet keeps its own slot
    assert m.rewrite(14, FRAME, now=0.2) == (4, FRAME)


def test_insert_after_a_closed_gap_and_many_frames_stays_contiguous() -> None:
    m = RtpMunger(CLOCK, seq_start=0, ts_start=0)
    out = []
    seq = 0
    for frame_no in range(5000):  # more frames than the window: old shifts are pruned
        for _ in range(3):
            got = m.rewrite(seq, frame_no * FRAME, now=frame_no / 30)
            assert got is not None
            out.append(got[0])
            seq = (seq + 1) & 0xFFFF
        m.drop(seq)  # the publisher's own FEC packet: closed
        seq = (seq + 1) & 0xFFFF
        first = m.insert(1)
        assert first is not None
        out.append(first)
    assert out == [i & 0xFFFF for i in range(len(out))]
    assert len(m._thresholds) < 32_768 // 4 + 2
