"""ReceiveStats/SendStats: loss, extended seq, jitter, LSR/DLSR and RTT on a virtual clock."""

from __future__ import annotations

import pytest

from sfu.core.rtpstats import ReceiveStats, SendStats
from sfu.wire.rtcp import ReportBlock, ntp_from_unix, ntp_middle32

CLOCK = 90_000
SSRC = 0xCAFE


def feed(stats: ReceiveStats, seqs: list[int], now: float = 0.0) -> None:
    for seq in seqs:
        stats.on_packet(seq, 0, now, 100)


def test_loss_reordering_and_wrap_across_report_intervals() -> None:
    stats = ReceiveStats(CLOCK)
    # 65535 lost, 1 and 2 swapped, across the 16-bit wrap.
    feed(stats, [65533, 65534, 0, 2, 1])
    block = stats.report_block(SSRC, now=1.0)
    assert block.ssrc == SSRC
    assert block.highest_seq == 0x0001_0002  # one cycle, seq 2
    assert block.packets_lost == 1
    assert block.fraction_lost == (1 << 8) // 6  # 1 of 6 expected
    assert (stats.packets, stats.bytes, stats.lost) == (5, 500, 1)

    # 6 and 7 lost, 8 duplicated.
    feed(stats, [3, 4, 5, 8, 8])
    block = stats.report_block(SSRC, now=2.0)
    assert block.highest_seq == 0x0001_0008
    assert block.packets_lost == 2  # 12 expected, 10 received (duplicate counts)
    assert block.fraction_lost == (1 << 8) // 6  # interval: 6 expected, 5 received

    # A duplicate and the late 7: nothing new expected, so no loss this interval.
    feed(stats, [8, 7])
    block = stats.report_block(SSRC, now=3.0)
    assert block.fraction_lost == 0
    assert block.packets_lost == 0
    assert stats.lost == 0


def test_more_received_than_expected_reports_zero_fraction_and_negative_loss() -> None:
    stats = ReceiveStats(CLOCK)
    feed(stats, [10, 11, 11, 11])
    block = stats.report_block(SSRC, now=1.0)
    assert block.fraction_lost == 0
    assert block.packets_lost == -2


def test_reordered_first_packet_lowers_the_base() -> None:
    stats = ReceiveStats(CLOCK)
    feed(stats, [2, 0, 1, 65535])
    assert stats.expected == 4
    assert stats.lost == 0
    assert stats.extended_highest_seq == 2


def test_many_cycles_in_extended_highest_seq() -> None:
    stats = ReceiveStats(CLOCK)
    for i in range(3 * 65536 + 10):
        stats.on_packet(i % 65536, 0, 0.0, 1)
    assert stats.extended_highest_seq == (3 << 16) | 9
    assert stats.lost == 0


def test_no_packets_gives_empty_block() -> None:
    block = ReceiveStats(CLOCK).report_block(SSRC, now=0.0)
    assert block == ReportBlock(SSRC, 0, 0, 0, 0, 0, 0)


def test_jitter_zero_for_perfect_pacing_even_across_ts_wrap() -> None:
    stats = ReceiveStats(CLOCK)
    ts0 = 2**32 - 5 * 1800
    for i in range(20):
        stats.on_packet(i, (ts0 + i * 1800) % 2**32, i * 0.02, 1000)
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)


def test_jitter_follows_rfc3550_a8() -> None:
    stats = ReceiveStats(CLOCK)
    stats.on_packet(0, 0, 0.0, 1)
    stats.on_packet(1, 1800, 0.02, 1)  # on time: D = 0
    stats.on_packet(2, 3600, 0.05, 1)  # 10 ms late: |D| = 900
    assert stats.jitter == pytest.approx(900 / 16)
    stats.on_packet(3, 5400, 0.06, 1)  # back on time: |D| = 900 again
    expected = 900 / 16 + (900 - 900 / 16) / 16
    assert stats.jitter == pytest.approx(expected)
    assert stats.report_block(SSRC, now=1.0).jitter == int(expected)


def test_late_and_retransmitted_packets_do_not_move_jitter() -> None:
    stats = ReceiveStats(CLOCK)
    for i in range(5):
        stats.on_packet(i * 2, i * 3600, i * 0.04, 1)
    before = stats.jitter
    stats.on_packet(3, 2700, 0.5, 1)  # arrives 0.4 s late
    assert stats.jitter == before
    assert stats.lost == 3  # 1, 5, 7 still missing


def test_lsr_and_dlsr_echo_last_sender_report() -> None:
    stats = ReceiveStats(CLOCK)
    stats.on_packet(1, 0, 0.0, 1)
    assert stats.report_block(SSRC, now=0.5).lsr == 0
    ntp = ntp_from_unix(1_700_000_000.75)
    stats.on_sender_report(ntp, now=5.0)
    block = stats.report_block(SSRC, now=5.25)
    assert block.lsr == ntp_middle32(ntp)
    assert block.dlsr == 16384  # 0.25 s in 1/65536 s


def test_send_counters_wrap_at_32_bits() -> None:
    send = SendStats()
    send.on_packet(1200, 1000, now=1.0)
    send.on_packet(2**32, 4000, now=1.1)
    assert send.packet_count == 2
    assert send.octet_count == 1200
    assert (send.last_rtp_timestamp, send.last_packet_at) == (4000, 1.1)


def test_rtt_from_report() -> None:
    send = SendStats()
    ntp = ntp_from_unix(1_700_000_000.0)
    send.on_sender_report_sent(ntp, now=10.0)
    block = ReportBlock(SSRC, 0, 0, 0, 0, ntp_middle32(ntp), int(0.1 * 65536))
    assert send.rtt_from_report(block, now=10.15) == pytest.approx(0.05, abs=1 / 65536)


def test_rtt_unknown_for_missing_or_forgotten_sender_report() -> None:
    send = SendStats()
    assert send.rtt_from_report(ReportBlock(SSRC, 0, 0, 0, 0, 0, 0), now=1.0) is None
    first = ntp_from_unix(1000.0)
    send.on_sender_report_sent(first, now=0.0)
    for i in range(1, 17):
        send.on_sender_report_sent(ntp_from_unix(1000.0 + i), now=float(i))
    assert send.rtt_from_report(ReportBlock(SSRC, 0, 0, 0, 0, ntp_middle32(first), 0), 20.0) is None
    recent = ntp_middle32(ntp_from_unix(1001.0))
    assert send.rtt_from_report(ReportBlock(SSRC, 0, 0, 0, 0, recent, 0), 1.5) == pytest.approx(0.5)


def test_rtt_end_to_end_between_sender_and_receiver_clocks() -> None:
    # Sender and receiver clocks are unrelated; only the sender's clock enters the RTT.
    send, recv = SendStats(), ReceiveStats(CLOCK)
    recv.on_packet(7, 0, now=500.0, size=100)
    ntp = ntp_from_unix(1_700_000_123.4)
    send.on_sender_report_sent(ntp, now=20.0)
    recv.on_sender_report(ntp, now=500.03)  # 30 ms one way
    block = recv.report_block(SSRC, now=500.23)  # held 200 ms
    rtt = send.rtt_from_report(block, now=20.26)  # 30 ms back
    assert rtt == pytest.approx(0.06, abs=2 / 65536)
